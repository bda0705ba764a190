use http::StatusCode;
use opsdeck_core::Snippet;

use crate::ids::EventId;
use crate::scheme::VerifyError;
use crate::secret::SecretError;

/// Everything that can go wrong in the webhook crate's async API (receiver,
/// event log, worker). Verification and secret loading have their own
/// precise enums, [`VerifyError`] and [`SecretError`], wrapped here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No endpoint of that name is configured.
    #[error("unknown webhook endpoint {endpoint:?}")]
    UnknownEndpoint {
        /// The requested name (cut to 80 characters).
        endpoint: Snippet,
    },
    /// The body is larger than the endpoint accepts; nothing was verified
    /// or stored.
    #[error("body of {len} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The body's size, or a lower bound when reading stopped early.
        len: usize,
        /// The endpoint's limit.
        limit: usize,
    },
    /// The request failed verification; nothing was stored.
    #[error("webhook refused: {0}")]
    Verification(#[from] VerifyError),
    /// The endpoint's keys could not be loaded.
    #[error("webhook keys unavailable")]
    Secret(#[from] SecretError),
    /// The input was refused (which field, and why); nothing was written.
    #[error(transparent)]
    Validation(#[from] opsdeck_core::Validation),
    /// A worker reported on an event it no longer holds: the event is not
    /// processing under that attempt any more (its lease ran out and another
    /// worker claimed it, or it never existed). Nothing was written.
    #[error("event {id} is no longer held by this attempt")]
    LeaseLost {
        /// The event.
        id: EventId,
    },
    /// A stored row broke an invariant the types enforce.
    #[error("stored webhook event is invalid: {0}")]
    Corrupt(String),
    /// The database failed.
    #[cfg(feature = "postgres")]
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl Error {
    /// The HTTP status a webhook endpoint answers with for this error:
    /// 404 unknown endpoint, 413 body too large, 400 malformed request,
    /// 401 bad or stale signature, 503 keys unavailable, 500 otherwise.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Verification(e) if e.is_unauthorized() => StatusCode::UNAUTHORIZED,
            Error::Verification(_) | Error::Validation(_) => StatusCode::BAD_REQUEST,
            Error::Secret(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
