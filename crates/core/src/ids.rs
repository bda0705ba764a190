use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ParseError, Snippet};

/// The owner of user data. Every user-owned row and cache key carries one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

crate::uuid_id!(UserId, "user id");

/// The name of an operation a user can run, e.g. `summarize` or
/// `translate.v2`: 1–64 characters of `[a-z0-9_.-]`.
///
/// The same rule is enforced by a `CHECK` constraint in the database, so a
/// row written by another client cannot smuggle in a value this type refuses.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperationId(Box<str>);

impl OperationId {
    /// The longest accepted operation id, in bytes (all allowed characters are ASCII).
    pub const MAX_LEN: usize = 64;

    /// Parses an operation id; see the type's documentation for the rule.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const KIND: &str = "operation id";
        if s.is_empty() {
            return Err(ParseError::Empty { kind: KIND });
        }
        if let Some(found) = s
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
        {
            return Err(ParseError::InvalidChar {
                kind: KIND,
                input: Snippet::new(s),
                found,
                allowed: "a-z, 0-9, '_', '.', '-'",
            });
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError::TooLong {
                kind: KIND,
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(OperationId(s.into()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

crate::text_id!(OperationId, ParseError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_documented_examples() {
        for ok in ["summarize", "translate.v2", "a", "x-y_z.0", &"a".repeat(64)] {
            assert_eq!(OperationId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_ids_with_a_reason() {
        assert_eq!(
            OperationId::parse(""),
            Err(ParseError::Empty {
                kind: "operation id"
            })
        );
        assert!(matches!(
            OperationId::parse(&"a".repeat(65)),
            Err(ParseError::TooLong {
                len: 65,
                max: 64,
                ..
            })
        ));
        assert!(matches!(
            OperationId::parse("Summarize"),
            Err(ParseError::InvalidChar { found: 'S', .. })
        ));
        assert!(matches!(
            OperationId::parse("x'; drop table t; --"),
            Err(ParseError::InvalidChar { found: '\'', .. })
        ));
        assert!(OperationId::parse("é").is_err());
    }

    #[test]
    fn serde_refuses_invalid_ids() {
        let ok: OperationId = serde_json::from_str("\"summarize\"").unwrap();
        assert_eq!(ok.as_str(), "summarize");
        assert!(serde_json::from_str::<OperationId>("\"BAD ID\"").is_err());
    }

    #[test]
    fn user_id_round_trips() {
        let id = UserId::random();
        assert_eq!(id.to_string().parse::<UserId>().unwrap(), id);
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_exactly_the_rule(s in "\\PC{0,80}") {
            let valid = !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'));
            prop_assert_eq!(OperationId::parse(&s).is_ok(), valid);
        }

        #[test]
        fn valid_ids_round_trip(s in "[a-z0-9_.-]{1,64}") {
            let id = OperationId::parse(&s).unwrap();
            prop_assert_eq!(id.to_string(), s);
        }
    }
}
