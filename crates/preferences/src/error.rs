use opsdeck_core::ParseError;

/// Everything that can go wrong in the preferences crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; nothing was written. For a batch, `item` is the
    /// zero-based position of the first bad item and `operation` its id (or
    /// the raw text that failed to parse as one).
    #[error("invalid preference{}: {reason}", describe_item(*.item, .operation.as_deref()))]
    Validation {
        /// Position of the bad item in its batch, if the input was a batch.
        item: Option<usize>,
        /// The item's operation id (raw text when it was the bad part).
        operation: Option<String>,
        /// What is wrong.
        reason: String,
    },
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

fn describe_item(item: Option<usize>, operation: Option<&str>) -> String {
    match (item, operation) {
        (Some(i), Some(op)) => format!(" at item {i} ({op:?})"),
        (Some(i), None) => format!(" at item {i}"),
        (None, Some(op)) => format!(" {op:?}"),
        (None, None) => String::new(),
    }
}

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::Validation {
            item: None,
            operation: None,
            reason: reason.into(),
        }
    }

    /// A field that failed to parse; `operation` is the item's operation id
    /// as given (cut to 80 characters).
    pub(crate) fn parse(operation: &str, error: ParseError) -> Self {
        Error::Validation {
            item: None,
            operation: Some(operation.chars().take(80).collect()),
            reason: error.to_string(),
        }
    }

    /// Attaches a batch position to a validation error.
    pub(crate) fn at_item(self, index: usize) -> Self {
        match self {
            Error::Validation {
                operation, reason, ..
            } => Error::Validation {
                item: Some(index),
                operation,
                reason,
            },
            other => other,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
