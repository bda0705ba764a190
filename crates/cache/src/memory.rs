use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsdeck_core::UserId;

use crate::error::TierError;
use crate::key::CacheKey;
use crate::remote::{RemoteRead, RemoteStore};

/// An in-process [`RemoteStore`]: the test double for L2 (it passes the same
/// contract suite as [`crate::RedisRemoteStore`]) and a way to share one L2 between
/// caches of one process. [`InMemoryRemoteStore::set_failing`] simulates an outage.
#[derive(Debug, Default)]
pub struct InMemoryRemoteStore {
    partitions: Mutex<Partitions>,
    failing: AtomicBool,
}

/// Partitions by (namespace, user).
type Partitions = HashMap<(String, UserId), Partition>;

#[derive(Debug, Default)]
struct Partition {
    generation: u64,
    entries: HashMap<String, (Instant, Vec<u8>)>,
}

impl InMemoryRemoteStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call fails as if the backend were down.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn partitions(&self) -> Result<std::sync::MutexGuard<'_, Partitions>, TierError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(TierError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "memory store set to fail",
            )));
        }
        Ok(self.partitions.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn write(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
        generation: Option<u64>,
    ) -> Result<bool, TierError> {
        let mut partitions = self.partitions()?;
        let partition = partitions
            .entry((namespace.to_string(), key.user()))
            .or_default();
        if generation.is_some_and(|g| g != partition.generation) {
            return Ok(false);
        }
        partition.entries.insert(
            key.item().to_string(),
            (Instant::now() + ttl, value.to_vec()),
        );
        Ok(true)
    }
}

#[async_trait]
impl RemoteStore for InMemoryRemoteStore {
    async fn get(&self, namespace: &str, key: &CacheKey) -> Result<RemoteRead, TierError> {
        let partitions = self.partitions()?;
        let Some(partition) = partitions.get(&(namespace.to_string(), key.user())) else {
            return Ok(RemoteRead {
                value: None,
                generation: 0,
            });
        };
        let value = partition
            .entries
            .get(key.item())
            .filter(|(expires, _)| Instant::now() < *expires)
            .map(|(_, bytes)| bytes.clone());
        Ok(RemoteRead {
            value,
            generation: partition.generation,
        })
    }

    async fn put_if_generation(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
        generation: u64,
    ) -> Result<bool, TierError> {
        self.write(namespace, key, value, ttl, Some(generation))
    }

    async fn put(
        &self,
        namespace: &str,
        key: &CacheKey,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), TierError> {
        self.write(namespace, key, value, ttl, None).map(drop)
    }

    async fn invalidate(&self, namespace: &str, key: &CacheKey) -> Result<(), TierError> {
        let mut partitions = self.partitions()?;
        let partition = partitions
            .entry((namespace.to_string(), key.user()))
            .or_default();
        partition.generation += 1;
        partition.entries.remove(key.item());
        Ok(())
    }

    async fn invalidate_user(&self, namespace: &str, user: UserId) -> Result<(), TierError> {
        let mut partitions = self.partitions()?;
        let partition = partitions.entry((namespace.to_string(), user)).or_default();
        partition.generation += 1;
        partition.entries.clear();
        Ok(())
    }
}
