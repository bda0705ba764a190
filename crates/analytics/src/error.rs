use crate::recommend::{RecommendationId, RecommendationStatus};

/// Everything that can go wrong in the analytics crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; nothing was written. For a batch, `item` is the
    /// zero-based position of the first bad execution; `field` names the bad
    /// part (`cost`, `input_tokens`, `executed_at`, `model`, …).
    #[error("invalid {field}{}: {reason}", item.map(|i| format!(" at item {i}")).unwrap_or_default())]
    Validation {
        /// Position of the bad item in its batch, if the input was a batch.
        item: Option<usize>,
        /// Which field is wrong.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A batch held more executions than [`crate::MAX_BATCH`]; nothing was written.
    #[error("batch of {len} executions exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Executions in the refused batch.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// No recommendation with this id belongs to the user.
    #[error("recommendation {0} not found")]
    NotFound(RecommendationId),
    /// A recommendation can only leave the `active` status, once.
    #[error("recommendation {id} is {from}; it cannot become {to}")]
    InvalidTransition {
        /// The recommendation.
        id: RecommendationId,
        /// Its current status.
        from: RecommendationStatus,
        /// The refused new status.
        to: RecommendationStatus,
    },
    /// A row read from storage broke an invariant the types enforce.
    #[error("stored analytics data is invalid: {0}")]
    Corrupt(String),
    /// The database failed.
    #[cfg(feature = "postgres")]
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl Error {
    /// A validation error of `field`, not tied to a batch position.
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Validation {
            item: None,
            field,
            reason: reason.into(),
        }
    }

    /// Attaches a batch position to a validation error.
    pub(crate) fn at_item(self, index: usize) -> Self {
        match self {
            Error::Validation { field, reason, .. } => Error::Validation {
                item: Some(index),
                field,
                reason,
            },
            other => other,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
