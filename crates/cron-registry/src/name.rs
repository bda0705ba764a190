//! [`JobName`]: the per-user name of a job.

use opsdeck_core::{ParseError, Snippet};
use serde::{Deserialize, Serialize};

const KIND: &str = "job name";

/// The name of a job, unique per user: 1–63 bytes of ASCII letters, digits,
/// `_`, `-`, `.` and `:`, starting with a letter or digit.
///
/// 63 bytes is PostgreSQL's `name` length, at which pg_cron 1.4 cuts job
/// names. The name pg_cron itself sees is derived from the registry row
/// (`{prefix}{id}`, see `PgCronRegistry`), so two users' `nightly` jobs never
/// collide in pg_cron, whose job names are unique per database role only.
///
/// ```
/// use opsdeck_cron_registry::JobName;
///
/// let name: JobName = "nightly-summary".parse().unwrap();
/// assert_eq!(name.as_str(), "nightly-summary");
/// assert!("x'; drop table t; --".parse::<JobName>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(Box<str>);

impl JobName {
    /// The longest accepted job name, in bytes.
    pub const MAX_LEN: usize = 63;

    /// Parses a job name; see the type's documentation for the rule.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let Some(first) = s.chars().next() else {
            return Err(ParseError::Empty { kind: KIND });
        };
        if let Some(found) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
        {
            return Err(invalid_char(
                s,
                found,
                "A-Z, a-z, 0-9, '_', '-', '.', ':' (starting with a letter or digit)",
            ));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(invalid_char(s, first, "a letter or digit first"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError::TooLong {
                kind: KIND,
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(JobName(s.into()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `ParseError::InvalidChar` for `s`, with core's one input cut.
fn invalid_char(s: &str, found: char, allowed: &'static str) -> ParseError {
    ParseError::InvalidChar {
        kind: KIND,
        input: Snippet::new(s),
        found,
        allowed,
    }
}

opsdeck_core::text_id!(JobName, ParseError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in [
            "nightly",
            "Nightly-Summary_2",
            "a",
            "user:42.daily",
            &"x".repeat(63),
        ] {
            assert_eq!(JobName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(
            JobName::parse(""),
            Err(ParseError::Empty { kind: "job name" })
        );
        assert!(matches!(
            JobName::parse(&"x".repeat(64)),
            Err(ParseError::TooLong {
                len: 64,
                max: 63,
                ..
            })
        ));
        match JobName::parse("x'; drop table t; --") {
            Err(ParseError::InvalidChar { found, input, .. }) => {
                assert_eq!(found, '\'');
                assert_eq!(input.as_str(), "x'; drop table t; --");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            JobName::parse("-leading"),
            Err(ParseError::InvalidChar { found: '-', .. })
        ));
        assert!(JobName::parse("é").is_err());
        assert!(JobName::parse("{67e55044-10b1-426f-9247-bb680e5fe0c8}").is_err());
        assert!(serde_json::from_str::<JobName>("\"bad name\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_follows_the_rule(s in "\\PC{0,80}") {
            let valid = !s.is_empty()
                && s.len() <= 63
                && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
            prop_assert_eq!(JobName::parse(&s).is_ok(), valid);
        }
    }
}
