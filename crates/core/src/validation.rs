use std::fmt;

/// Why an input was refused, in the one shape every opsdeck crate uses:
/// which `field` is wrong, the human `reason`, and for a batch the
/// zero-based position of the first bad `item`. Each crate's error type has
/// a `Validation(Validation)` variant holding this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Which field is wrong, e.g. `operation_id`, `cost`, `schedule`.
    pub field: &'static str,
    /// What is wrong, for a human.
    pub reason: String,
    /// Position of the bad item in its batch, if the input was a batch.
    pub item: Option<usize>,
}

impl Validation {
    /// A refusal of `field`, not tied to a batch position.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Validation {
            field,
            reason: reason.into(),
            item: None,
        }
    }

    /// The same refusal, at position `index` of a batch.
    pub fn at_item(mut self, index: usize) -> Self {
        self.item = Some(index);
        self
    }
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.field)?;
        if let Some(item) = self.item {
            write!(f, " at item {item}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for Validation {}

impl From<(&'static str, crate::ParseError)> for Validation {
    /// `(field, parse error)` → a refusal of that field with the parser's message.
    fn from((field, error): (&'static str, crate::ParseError)) -> Self {
        Validation::new(field, error.to_string())
    }
}
