use std::convert::Infallible;

use opsdeck_core::Validation;

use crate::ids::{RecommendationId, RecommendationStatus};

/// Everything that can go wrong in the analytics crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; nothing was written. For a batch, `item` is the
    /// zero-based position of the first bad execution; `field` names the bad
    /// part (`cost`, `input_tokens`, `executed_at`, `model`, …).
    #[error(transparent)]
    Validation(#[from] Validation),
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

/// Lets the service's `impl TryInto<Execution>` inputs include an
/// [`crate::Execution`] itself, whose conversion cannot fail.
impl From<Infallible> for Error {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl Error {
    /// A validation error of `field`, not tied to a batch position.
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Validation(Validation::new(field, reason))
    }

    /// Attaches a batch position to a validation error.
    pub(crate) fn at_item(self, index: usize) -> Self {
        match self {
            Error::Validation(validation) => Error::Validation(validation.at_item(index)),
            other => other,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
