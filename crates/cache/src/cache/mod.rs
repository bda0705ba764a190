use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use opsdeck_core::UserId;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::bus::{InvalidationBus, Scope};
use crate::key::CacheKey;
use crate::stats::{CacheStats, Counters};

mod config;
mod l1;
mod propagation;
mod remote;
#[cfg(test)]
mod tests;

pub use config::{CacheConfig, CacheValue, Tiers};
use l1::GENERATION_STRIPES;
use propagation::{Backlog, apply_remote_invalidations};
use remote::{Remote, RemoteState, encode};

type Inflight<V> = Mutex<HashMap<(CacheKey, u64), Arc<OnceCell<V>>>>;

/// One cache namespace; cheap to clone (clones share the same entries).
///
/// See the crate documentation for what it guarantees.
pub struct Cache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.inner.config)
            .field("remote", &self.inner.remote.is_some())
            .field("bus", &self.inner.bus.is_some())
            .field("stats", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

struct Inner<V> {
    /// Identifies this instance's messages on the bus.
    id: Uuid,
    config: CacheConfig,
    l1: moka::future::Cache<CacheKey, V>,
    generations: Box<[AtomicU64]>,
    inflight: Inflight<V>,
    counters: Counters,
    remote: Option<Remote>,
    bus: Option<Arc<dyn InvalidationBus>>,
    /// Set right after construction: spawning the listener inside
    /// `Arc::new_cyclic` let its first event find no cache yet, and it
    /// stopped for good.
    listener: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
    /// Invalidations still to announce on the bus, oldest first, and
    /// whether a repair task is running (see `propagation.rs`).
    backlog: Mutex<Backlog>,
    /// This namespace, for the tasks it spawns (they must not keep it alive).
    me: Weak<Inner<V>>,
}

impl<V> Drop for Inner<V> {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

/// How far an invalidation must have travelled before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Propagation {
    /// Return once L1, L2 and the bus were told (or the failures queued for
    /// replay): the caller's next read anywhere sees the change.
    #[default]
    Await,
    /// Drop the local L1 entries now and tell L2 and the bus from a
    /// background task: for error paths, whose caller must not wait on a
    /// slow or unreachable tier to learn that the write failed.
    Background,
}

impl Propagation {
    /// `Await` after a successful write, `Background` after a failed one (a
    /// failed write may still have committed, so it is invalidated too).
    pub fn after<T, E>(result: &Result<T, E>) -> Self {
        match result {
            Ok(_) => Propagation::Await,
            Err(_) => Propagation::Background,
        }
    }
}

impl<V: CacheValue> Cache<V> {
    /// A new, empty namespace with L1 only.
    pub fn new(config: CacheConfig) -> Self {
        Self::with_tiers(config, Tiers::none())
    }

    /// A new, empty namespace using `tiers`. With a bus, this spawns a task
    /// that applies other instances' invalidations, so it must be called
    /// inside a tokio runtime.
    pub fn with_tiers(config: CacheConfig, tiers: Tiers) -> Self {
        let l1 = moka::future::Cache::builder()
            .name(config.name)
            .max_capacity(config.max_capacity)
            .time_to_live(config.ttl)
            // Needed for invalidate_user; predicates only cost while pending.
            .support_invalidation_closures()
            .build();
        let generations = (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect();
        let remote = tiers.remote.map(|store| Remote {
            store,
            healthy: AtomicBool::new(true),
            state: Mutex::new(RemoteState::default()),
            recovery: tokio::sync::Mutex::new(()),
        });
        // Subscribe before anything can be invalidated, so no message is
        // missed; start listening once the cache exists.
        let events = tiers.bus.as_ref().map(|bus| bus.subscribe());
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<V>>| Inner {
            id: Uuid::new_v4(),
            config,
            l1,
            generations,
            inflight: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            remote,
            bus: tiers.bus,
            listener: std::sync::OnceLock::new(),
            backlog: Mutex::new(Backlog::default()),
            me: weak.clone(),
        });
        if let Some(events) = events {
            let listener = tokio::spawn(apply_remote_invalidations(Arc::downgrade(&inner), events));
            let _ = inner.listener.set(listener);
        }
        Cache { inner }
    }

    /// The namespace's configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The cached value for `key` from L1 or L2, without loading.
    pub async fn get(&self, key: &CacheKey) -> Option<V> {
        let inner = &self.inner;
        if let Some(value) = inner.l1.get(key).await {
            Counters::bump(&inner.counters.l1_hits);
            return Some(value);
        }
        let generation = inner.generation(key.user());
        if let Some((Some(value), _)) = inner.remote_read(key).await {
            Counters::bump(&inner.counters.l2_hits);
            inner
                .store_l1_if_current(key, generation, value.clone())
                .await;
            return Some(value);
        }
        Counters::bump(&inner.counters.misses);
        None
    }

    /// Stores `value` under `key` in L1 and L2 unconditionally (e.g. a
    /// write-through after a successful write).
    pub async fn insert(&self, key: CacheKey, value: V) {
        let inner = &self.inner;
        if let Some(store) = inner.remote_ready().await {
            match encode(&value) {
                Ok(bytes) => {
                    let result = store
                        .put(inner.config.name, &key, &bytes, inner.config.ttl)
                        .await;
                    if let Err(error) = result {
                        inner.remote_failed(&error, None);
                    }
                }
                Err(error) => inner.codec_failed(&error),
            }
        }
        inner.l1.insert(key, value).await;
    }

    /// Drops `key` here, in L2, and (through the bus) in the other
    /// instances' L1. A load of it that is running now will not store.
    pub async fn invalidate(&self, key: &CacheKey) {
        self.invalidate_with(key, Propagation::Await).await;
    }

    /// [`Cache::invalidate`], returning as `propagation` says.
    pub async fn invalidate_with(&self, key: &CacheKey, propagation: Propagation) {
        let scope = Scope::Key {
            user: key.user(),
            item: key.item().to_string(),
        };
        self.inner.invalidate_with(scope, propagation).await;
    }

    /// Drops every key of `user` in this namespace, everywhere.
    pub async fn invalidate_user(&self, user: UserId) {
        self.invalidate_user_with(user, Propagation::Await).await;
    }

    /// [`Cache::invalidate_user`], returning as `propagation` says.
    pub async fn invalidate_user_with(&self, user: UserId, propagation: Propagation) {
        self.inner
            .invalidate_with(Scope::User { user }, propagation)
            .await;
    }

    /// Invalidations waiting to be announced on the bus (it was unreachable
    /// when they were made); a background task replays them in order.
    pub fn pending_announcements(&self) -> usize {
        self.inner.backlog_len()
    }

    /// Drops every entry of this instance's L1 and asks the other instances
    /// to do the same. L2 entries are not scanned; they expire by TTL, so use
    /// [`Cache::invalidate_user`] after writes.
    pub async fn invalidate_all(&self) {
        self.inner.invalidate_everywhere(Scope::All).await;
    }

    /// The cached value for `key` (L1, then L2), or the loader's result,
    /// which is then cached unless `key` (or its user) was invalidated —
    /// here or on another instance — while it ran.
    ///
    /// # Contract
    /// - Concurrent callers missing on the same key share one loader call.
    /// - A loader error is returned to the caller whose loader ran and is not
    ///   cached; callers that were waiting run their own loader in turn.
    /// - A failing or slow L2 never fails the call: it is skipped.
    /// - To cache "not found", make `V` an `Option`.
    pub async fn get_or_load<F, Fut, E>(&self, key: &CacheKey, loader: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let inner = &self.inner;
        if let Some(value) = inner.l1.get(key).await {
            Counters::bump(&inner.counters.l1_hits);
            return Ok(value);
        }

        let generation = inner.generation(key.user());
        // Keyed by generation too: a caller arriving after an invalidation must
        // not join a load that started before it.
        let slot = (key.clone(), generation);
        let cell = {
            let mut inflight = inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(inflight.entry(slot.clone()).or_default())
        };

        let mut served_by_l2 = false;
        let result = cell
            .get_or_try_init(|| async {
                let remote_generation = match inner.remote_read(key).await {
                    Some((Some(value), _)) => {
                        served_by_l2 = true;
                        inner
                            .store_l1_if_current(key, generation, value.clone())
                            .await;
                        return Ok(value);
                    }
                    Some((None, remote_generation)) => Some(remote_generation),
                    None => None,
                };
                Counters::bump(&inner.counters.loads);
                match loader().await {
                    Ok(value) => {
                        let stored = inner
                            .store_l1_if_current(key, generation, value.clone())
                            .await;
                        // Fill L2 only with what L1 kept, under the generation
                        // L2 had before the loader ran.
                        if let (true, Some(remote_generation)) = (stored, remote_generation) {
                            inner.fill_remote(key, &value, remote_generation).await;
                        }
                        Ok(value)
                    }
                    Err(error) => {
                        Counters::bump(&inner.counters.load_errors);
                        Err(error)
                    }
                }
            })
            .await
            .cloned();
        Counters::bump(if served_by_l2 {
            &inner.counters.l2_hits
        } else {
            &inner.counters.misses
        });

        let mut inflight = inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&slot)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            inflight.remove(&slot);
        }
        result
    }

    /// Reloads `key` right after a write: runs the loader without looking at
    /// the cache and stores its result in L1 unless `key` is invalidated
    /// again while it runs. Readers that come next (typically the writer's
    /// own "save then show" read) hit instead of missing.
    ///
    /// Call it after [`Cache::invalidate`], never instead: the loader must
    /// start after the write's invalidation so that a concurrent writer's
    /// later invalidation discards it. Storing the write's own returned row
    /// would not be safe, since two writers' invalidations can arrive in the
    /// opposite order of their commits. L2 is left to be filled by the next
    /// miss (it holds no stale value: the invalidation removed it).
    /// Counts as a load, not as a lookup.
    pub async fn refresh<F, Fut, E>(&self, key: &CacheKey, loader: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let inner = &self.inner;
        let generation = inner.generation(key.user());
        Counters::bump(&inner.counters.loads);
        match loader().await {
            Ok(value) => {
                inner
                    .store_l1_if_current(key, generation, value.clone())
                    .await;
                Ok(value)
            }
            Err(error) => {
                Counters::bump(&inner.counters.load_errors);
                Err(error)
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// Entries currently in L1 (approximate: moka applies writes lazily).
    pub fn entry_count(&self) -> u64 {
        self.inner.l1.entry_count()
    }

    /// Whether L2 is configured and currently trusted (not cooling down
    /// after a failure, no invalidation waiting to be replayed).
    pub fn remote_healthy(&self) -> bool {
        self.inner
            .remote
            .as_ref()
            .is_some_and(|r| r.healthy.load(Ordering::Acquire))
    }
}
