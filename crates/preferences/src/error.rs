use std::fmt;

use opsdeck_core::{ParseError, Snippet, Validation};

/// Everything that can go wrong in the preferences crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; nothing was written. For a batch, `item` is the
    /// zero-based position of the first bad item; the reason names the item's
    /// operation id.
    #[error(transparent)]
    Validation(#[from] Validation),
    /// A batch held more items than [`crate::MAX_BATCH`]; nothing was written.
    #[error("batch of {len} preferences exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Items in the refused batch.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The stored version did not match the caller's expected version;
    /// nothing was written. `actual` is `None` when the row does not exist.
    #[error("version conflict: expected version {expected}, found {}", match .actual { Some(v) => v.to_string(), None => "no row".to_string() })]
    Conflict {
        /// The version the caller expected.
        expected: i64,
        /// The version found, if any.
        actual: Option<i64>,
    },
    /// A row read from storage broke an invariant the types enforce (e.g. it
    /// was written by another client bypassing the constraints).
    #[error("stored preference is invalid: {0}")]
    Corrupt(String),
    /// The database failed.
    #[cfg(feature = "postgres")]
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl Error {
    /// A refusal of `field`, not tied to a batch position.
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Validation(Validation::new(field, reason))
    }

    /// A refusal of `field` of the item whose operation id is `operation`
    /// (as given, cut by [`Snippet`]), so a batch error names its item.
    pub(crate) fn of_operation(
        field: &'static str,
        operation: &str,
        reason: impl fmt::Display,
    ) -> Self {
        Error::invalid(
            field,
            format!("operation {:?}: {reason}", Snippet::new(operation).as_str()),
        )
    }

    /// Attaches a batch position to a validation error.
    pub(crate) fn at_item(self, index: usize) -> Self {
        match self {
            Error::Validation(v) => Error::Validation(v.at_item(index)),
            other => other,
        }
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<ParseError> for Error {
    /// An operation id that did not parse (the one raw id the edge takes alone).
    fn from(error: ParseError) -> Self {
        Error::invalid("operation_id", error.to_string())
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
