use std::fmt;

/// Why a string could not be turned into one of opsdeck's value types.
///
/// The offending input is kept (truncated to 80 characters) so the message
/// tells the caller what to fix; none of these types carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of value was being parsed, e.g. `operation id`.
        kind: &'static str,
    },
    /// The input was longer than allowed.
    #[error("{kind} is {len} characters long; the maximum is {max}")]
    TooLong {
        /// Which kind of value was being parsed.
        kind: &'static str,
        /// The input's length in characters.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The input contained a character outside the allowed set.
    #[error("{kind} {input:?} contains {found:?}; allowed: {allowed}")]
    InvalidChar {
        /// Which kind of value was being parsed.
        kind: &'static str,
        /// The (possibly truncated) input.
        input: Snippet,
        /// The first offending character.
        found: char,
        /// Human description of the allowed set.
        allowed: &'static str,
    },
    /// The input did not have the expected shape.
    #[error("{kind} {input:?} is malformed: {reason}")]
    Malformed {
        /// Which kind of value was being parsed.
        kind: &'static str,
        /// The (possibly truncated) input.
        input: Snippet,
        /// What was expected.
        reason: &'static str,
    },
}

/// A piece of user input kept for an error message, cut to 80 characters so
/// that a hostile megabyte-long value cannot blow up logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Snippet(String);

impl Snippet {
    const MAX_CHARS: usize = 80;

    /// Keeps at most 80 characters of `input`.
    pub fn new(input: &str) -> Self {
        let mut s: String = input.chars().take(Self::MAX_CHARS).collect();
        if input.chars().nth(Self::MAX_CHARS).is_some() {
            s.push('…');
        }
        Snippet(s)
    }

    /// The kept text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
