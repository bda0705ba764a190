//! Integration tests of opsdeck-webhook-verify: scheme vectors and negative
//! cases, a property test over header parsing, secret sources, the event
//! log's conformance suite on PostgreSQL and in memory, the receiver, the
//! worker and (feature `axum`) the HTTP endpoint.
//!
//! PostgreSQL tests use `#[sqlx::test]`, which gives each test a fresh,
//! migrated database and needs `DATABASE_URL`.

mod conformance;
#[cfg(feature = "axum")]
mod http_endpoint;
mod properties;
mod receiver;
mod schemes;
mod secrets;
mod worker;

use http::{HeaderMap, HeaderName, HeaderValue};
use opsdeck_webhook_verify::{Key, KeySet, Scheme, Secret, StandardWebhooks};

/// The secret of the Standard Webhooks specification's example.
pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Headers from name/value pairs.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::try_from(*value).unwrap(),
        );
    }
    map
}

/// A one-key set for `scheme` from `secret`.
pub fn keys(scheme: &dyn Scheme, secret: &str) -> KeySet {
    KeySet::single(key(scheme, "current", secret))
}

/// One key for `scheme` from `secret`.
pub fn key(scheme: &dyn Scheme, id: &str, secret: &str) -> Key {
    scheme.key(id, &Secret::from(secret)).unwrap()
}

/// The Standard Webhooks key of [`STANDARD_SECRET`].
pub fn standard_key() -> Key {
    key(&StandardWebhooks, "current", STANDARD_SECRET)
}
