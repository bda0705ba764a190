//! The event log's ids. A leaf module: the error type, the event types and
//! the backends all name these, and they name nothing of this crate.

use std::borrow::Borrow;

use opsdeck_core::{OperationId, ParseError};
use uuid::Uuid;

/// The name of a receiving endpoint, e.g. `stripe` or `github-ci`: 1–64
/// characters of `[a-z0-9_.-]`. It is the `{endpoint}` of
/// `POST /webhook-trigger/{endpoint}` and the `source` of its events.
///
/// The rule is [`OperationId`]'s, checked by its parser, so the two cannot
/// drift apart; the database's `webhook_events_source_check` states it too.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointName(Box<str>);

impl EndpointName {
    /// The longest accepted name, in bytes (all allowed characters are ASCII).
    pub const MAX_LEN: usize = OperationId::MAX_LEN;

    /// Parses a name; see the type's documentation for the rule. The
    /// refusal names an `endpoint name`, not an operation id.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match OperationId::parse(s) {
            Ok(_) => Ok(EndpointName(s.into())),
            Err(error) => Err(as_endpoint_name(error)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The kind a refusal of [`EndpointName::parse`] names.
const KIND: &str = "endpoint name";

/// The same refusal, naming what the caller was parsing.
fn as_endpoint_name(error: ParseError) -> ParseError {
    match error {
        ParseError::Empty { .. } => ParseError::Empty { kind: KIND },
        ParseError::TooLong { len, max, .. } => ParseError::TooLong {
            kind: KIND,
            len,
            max,
        },
        ParseError::InvalidChar {
            input,
            found,
            allowed,
            ..
        } => ParseError::InvalidChar {
            kind: KIND,
            input,
            found,
            allowed,
        },
        ParseError::Malformed { input, reason, .. } => ParseError::Malformed {
            kind: KIND,
            input,
            reason,
        },
        // A refusal core adds later still refuses; only its kind is off.
        other => other,
    }
}

opsdeck_core::text_id!(EndpointName, ParseError);

/// Endpoints are looked up by the request's raw path segment.
impl Borrow<str> for EndpointName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// The log's own id of an event (a random UUID), returned in the 202 answer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(Uuid);

opsdeck_core::uuid_id!(EventId, "event id");

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule `EndpointName` had before it delegated to `OperationId`.
    fn old_rule(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
    }

    #[test]
    fn accepts_exactly_the_old_rule() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        for s in [
            "stripe",
            "github-ci",
            "a.b_c-0",
            long.as_str(),
            "",
            too_long.as_str(),
            "Stripe",
            "a b",
            "a/b",
            "é",
            "ａ",
            "a\0",
        ] {
            assert_eq!(EndpointName::parse(s).is_ok(), old_rule(s), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_agrees_with_the_old_rule(s in "\\PC{0,70}|[a-zA-Z0-9_. /-]{0,70}") {
            proptest::prop_assert_eq!(EndpointName::parse(&s).is_ok(), old_rule(&s));
        }
    }

    #[test]
    fn refusals_name_an_endpoint_name() {
        for bad in ["", "Bad Name", &"x".repeat(65)] {
            let error = EndpointName::parse(bad).unwrap_err();
            assert!(error.to_string().starts_with("endpoint name"), "{error}");
        }
        let error = EndpointName::parse(&format!("{}!", "y".repeat(100))).unwrap_err();
        assert!(
            matches!(error, ParseError::InvalidChar { found: '!', .. }),
            "{error:?}"
        );
        // The input is cut by core's snippet, not kept whole.
        assert!(error.to_string().len() < 200, "{error}");
    }

    #[test]
    fn ids_print_and_parse() {
        let name = EndpointName::parse("billing").unwrap();
        assert_eq!(
            format!("{name} {name:?}"),
            r#"billing EndpointName("billing")"#
        );
        let id = EventId::random();
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), format!("EventId({})", id.as_uuid()));
    }
}
