//! How a cache namespace is configured and which shared tiers it uses.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bus::InvalidationBus;
use crate::remote::RemoteStore;

/// What a cache can hold: cloneable for L1, serializable for L2.
pub trait CacheValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> CacheValue for T {}

/// How one cache namespace behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Namespace name: part of L2 keys and of invalidation messages.
    pub name: &'static str,
    /// How long an entry lives after it was stored (in L1 and L2).
    pub ttl: Duration,
    /// Most entries kept in L1; moka evicts by TinyLFU beyond it.
    pub max_capacity: u64,
    /// After an L2 failure, how long to skip L2 before trying it again.
    pub remote_cooldown: Duration,
}

impl CacheConfig {
    /// A namespace with the given TTL, 100 000 L1 entries and a 250 ms L2
    /// cooldown (short, so that a healed L2 is trusted again — after its
    /// deferred invalidations are replayed — well within a second).
    pub fn new(name: &'static str, ttl: Duration) -> Self {
        CacheConfig {
            name,
            ttl,
            max_capacity: 100_000,
            remote_cooldown: Duration::from_millis(250),
        }
    }

    /// Sets the L1 capacity.
    pub fn with_max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// Sets the L2 cooldown after a failure.
    pub fn with_remote_cooldown(mut self, cooldown: Duration) -> Self {
        self.remote_cooldown = cooldown;
        self
    }
}

/// The shared parts a cache may use beyond its in-process L1.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// A shared L2 (e.g. [`crate::RedisRemoteStore`]).
    pub remote: Option<Arc<dyn RemoteStore>>,
    /// The channel that tells other instances to drop their L1 entries.
    pub bus: Option<Arc<dyn InvalidationBus>>,
}

impl Tiers {
    /// L1 only.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds an L2.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteStore>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Adds an invalidation bus.
    pub fn with_bus(mut self, bus: Arc<dyn InvalidationBus>) -> Self {
        self.bus = Some(bus);
        self
    }
}
