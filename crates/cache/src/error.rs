use std::time::Duration;

/// A failure of a shared tier (the remote store or the invalidation bus).
///
/// The cache never returns these to readers: a failing tier degrades to L1 +
/// loader. They surface in `tracing` events, in [`crate::CacheStats`], and
/// from the tier types' own methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The operation did not finish within the configured timeout.
    #[error("shared cache tier timed out after {0:?}")]
    Timeout(Duration),
    /// The backend (Redis, PostgreSQL) failed.
    #[error("shared cache tier failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A value or message could not be encoded or decoded.
    #[error("could not encode or decode a cached value or message")]
    Codec(#[source] serde_json::Error),
}

impl TierError {
    /// Wraps a backend error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        TierError::Backend(Box::new(error))
    }
}

#[cfg(any(feature = "redis", feature = "postgres"))]
/// Runs `fut` with a deadline, turning an elapsed deadline into [`TierError::Timeout`].
pub(crate) async fn with_timeout<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, TierError>>,
) -> Result<T, TierError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(TierError::Timeout(timeout)))
}
