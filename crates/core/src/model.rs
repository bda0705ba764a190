use serde::{Deserialize, Serialize};

use crate::error::{ParseError, Snippet};

/// A model reference `provider/model`, e.g. `anthropic/claude-sonnet-4` or
/// `openrouter/meta-llama/llama-3.1-70b`.
///
/// - provider: 1–32 characters of `[a-z0-9_-]`;
/// - model: 1–128 characters of `[A-Za-z0-9._:/@-]` (it may contain `/`,
///   since routers such as OpenRouter nest vendor names), not starting or
///   ending with `/`.
///
/// Stored in the database as the single text `provider/model`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelRef {
    // The whole reference, kept once so `as_str` is free; `split` marks the '/'.
    text: Box<str>,
    split: usize,
}

impl ModelRef {
    /// Longest provider name.
    pub const MAX_PROVIDER_LEN: usize = 32;
    /// Longest model name.
    pub const MAX_MODEL_LEN: usize = 128;

    /// Parses `provider/model`; see the type's documentation for the rule.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const KIND: &str = "model reference";
        if s.is_empty() {
            return Err(ParseError::Empty { kind: KIND });
        }
        let Some((provider, model)) = s.split_once('/') else {
            return Err(ParseError::Malformed {
                kind: KIND,
                input: Snippet::new(s),
                reason: "expected provider/model, e.g. anthropic/claude-sonnet-4",
            });
        };
        if provider.is_empty() || model.is_empty() || model.ends_with('/') {
            return Err(ParseError::Malformed {
                kind: KIND,
                input: Snippet::new(s),
                reason: "provider and model must both be non-empty",
            });
        }
        if provider.len() > Self::MAX_PROVIDER_LEN {
            return Err(ParseError::TooLong {
                kind: "model provider",
                len: provider.len(),
                max: Self::MAX_PROVIDER_LEN,
            });
        }
        if let Some(found) = provider
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        {
            return Err(ParseError::InvalidChar {
                kind: "model provider",
                input: Snippet::new(s),
                found,
                allowed: "a-z, 0-9, '_', '-'",
            });
        }
        if let Some(found) = model.chars().find(
            |c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | ':' | '/' | '@' | '-'),
        ) {
            return Err(ParseError::InvalidChar {
                kind: "model name",
                input: Snippet::new(s),
                found,
                allowed: "A-Z, a-z, 0-9, '.', '_', ':', '/', '@', '-'",
            });
        }
        if model.len() > Self::MAX_MODEL_LEN {
            return Err(ParseError::TooLong {
                kind: "model name",
                len: model.len(),
                max: Self::MAX_MODEL_LEN,
            });
        }
        Ok(ModelRef {
            text: s.into(),
            split: provider.len(),
        })
    }

    /// The provider, e.g. `anthropic`.
    pub fn provider(&self) -> &str {
        &self.text[..self.split]
    }

    /// The model within the provider, e.g. `claude-sonnet-4`.
    pub fn model(&self) -> &str {
        &self.text[self.split + 1..]
    }

    /// The whole reference, `provider/model`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

crate::text_id!(ModelRef, ParseError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_provider_and_model() {
        let m = ModelRef::parse("anthropic/claude-sonnet-4").unwrap();
        assert_eq!((m.provider(), m.model()), ("anthropic", "claude-sonnet-4"));
        let nested = ModelRef::parse("openrouter/meta-llama/llama-3.1-70b").unwrap();
        assert_eq!(nested.provider(), "openrouter");
        assert_eq!(nested.model(), "meta-llama/llama-3.1-70b");
        assert_eq!(nested.to_string(), "openrouter/meta-llama/llama-3.1-70b");
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "anthropic",
            "/claude",
            "anthropic/",
            "anthropic/claude/",
            "Anthropic/claude",
            "anthropic/claude sonnet",
            "anthropic/claude';--",
        ] {
            assert!(ModelRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ModelRef::parse(&format!("a/{}", "m".repeat(129))).is_err());
        assert!(ModelRef::parse(&format!("{}/m", "a".repeat(33))).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            if let Ok(m) = ModelRef::parse(&s) {
                prop_assert_eq!(format!("{}/{}", m.provider(), m.model()), s);
            }
        }
    }
}
