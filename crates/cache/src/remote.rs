use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::UserId;

use crate::error::TierError;
use crate::key::CacheKey;

/// What a remote read found: the value (if any, and not expired) and the
/// partition generation at the time of the read, to hand back to
/// [`RemoteStore::put_if_generation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRead {
    /// The stored bytes, if present and not expired.
    pub value: Option<Vec<u8>>,
    /// The generation of the key's (namespace, user) partition.
    pub generation: u64,
}

/// A shared cache tier (L2) that several service instances read and write.
///
/// Values are opaque bytes. Entries are grouped in partitions of one
/// (namespace, user); each partition has a generation that every
/// invalidation increases, so that a load which read the generation before
/// an invalidation cannot store afterwards — even when the load and the
/// invalidation run on different instances.
///
/// # Contract
/// - `get` returns `value: None` for missing or expired entries.
/// - `put_if_generation` stores only if the partition's generation still
///   equals `generation`, and returns whether it stored.
/// - `invalidate` removes one entry and increases the partition generation;
///   `invalidate_user` removes every entry of the partition and increases it.
/// - Invalidating a missing entry or partition is not an error.
#[async_trait]
pub trait RemoteStore: Send + Sync + std::fmt::Debug {
    /// Reads one entry and its partition generation.
    async fn get(&self, namespace: &str, key: &CacheKey) -> Result<RemoteRead, TierError>;

    /// Stores one entry with a TTL if the partition generation is unchanged.
    async fn put_if_generation(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
        generation: u64,
    ) -> Result<bool, TierError>;

    /// Stores one entry with a TTL unconditionally.
    async fn put(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), TierError>;

    /// Removes one entry.
    async fn invalidate(&self, namespace: &str, key: &CacheKey) -> Result<(), TierError>;

    /// Removes every entry of `user` in `namespace`.
    async fn invalidate_user(&self, namespace: &str, user: UserId) -> Result<(), TierError>;
}
