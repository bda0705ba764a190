use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use opsdeck_core::UserId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::bus::{BusEvent, Invalidation, InvalidationBus, Scope};
use crate::error::TierError;
use crate::key::CacheKey;
use crate::remote::RemoteStore;
use crate::stats::{CacheStats, Counters};

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
    /// A namespace with the given TTL, 100 000 L1 entries and a 1 s L2 cooldown.
    pub fn new(name: &'static str, ttl: Duration) -> Self {
        CacheConfig {
            name,
            ttl,
            max_capacity: 100_000,
            remote_cooldown: Duration::from_secs(1),
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
    /// A shared L2 (e.g. [`crate::RedisStore`]).
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

/// Generation counters are striped by user: an invalidation of any key of a
/// user bumps that user's stripe, and a load stores its value only if the
/// stripe did not move while it ran. Collisions between users sharing a
/// stripe can only make a load skip storing (a later miss), never keep a
/// stale value; a fixed array keeps memory bounded however many users exist.
const GENERATION_STRIPES: usize = 4096;

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
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl<V> Drop for Inner<V> {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// The L2 and its health. While unhealthy, reads and fills skip L2 (the
/// cache degrades to L1 + loader) and failed invalidations wait in
/// `pending`; after the cooldown the next operation replays them, and only
/// when all went through is L2 trusted again — otherwise a value that a
/// failed invalidation should have removed could be served after recovery.
struct Remote {
    store: Arc<dyn RemoteStore>,
    healthy: AtomicBool,
    state: Mutex<RemoteState>,
    /// Serializes recovery so one task replays the pending invalidations.
    recovery: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RemoteState {
    retry_at: Option<Instant>,
    pending: Vec<Scope>,
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
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<V>>| {
            let listener = tiers
                .bus
                .as_ref()
                .map(|bus| tokio::spawn(apply_remote_invalidations(weak.clone(), bus.subscribe())));
            Inner {
                id: Uuid::new_v4(),
                config,
                l1,
                generations,
                inflight: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                remote,
                bus: tiers.bus,
                listener,
            }
        });
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
        self.inner
            .invalidate_everywhere(Scope::Key {
                user: key.user(),
                item: key.item().to_string(),
            })
            .await;
    }

    /// Drops every key of `user` in this namespace, everywhere.
    pub async fn invalidate_user(&self, user: UserId) {
        self.inner.invalidate_everywhere(Scope::User { user }).await;
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

impl<V: CacheValue> Inner<V> {
    fn stripe(&self, user: UserId) -> &AtomicU64 {
        let bits = user.as_uuid().as_u128();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        &self.generations[(folded % GENERATION_STRIPES as u64) as usize]
    }

    fn generation(&self, user: UserId) -> u64 {
        self.stripe(user).load(Ordering::SeqCst)
    }

    /// Drops `scope` from L1, making running loads of it discard their result.
    /// Bump before removing: a loader that stores after our removal then
    /// sees the new generation on its re-check and removes its own value.
    async fn invalidate_local(&self, scope: &Scope) {
        match scope {
            Scope::Key { user, item } => {
                self.stripe(*user).fetch_add(1, Ordering::SeqCst);
                self.l1
                    .invalidate(&CacheKey::new(*user, item.as_str()))
                    .await;
            }
            Scope::User { user } => {
                let user = *user;
                self.stripe(user).fetch_add(1, Ordering::SeqCst);
                if let Err(error) = self
                    .l1
                    .invalidate_entries_if(move |key, _| key.user() == user)
                {
                    // Only possible if closures were not enabled at build time,
                    // which `with_tiers` always does; clearing is the safe fallback.
                    tracing::error!(cache = self.config.name, %error, "predicate invalidation failed; clearing L1");
                    self.l1.invalidate_all();
                }
            }
            Scope::All => {
                for generation in self.generations.iter() {
                    generation.fetch_add(1, Ordering::SeqCst);
                }
                self.l1.invalidate_all();
            }
        }
    }

    async fn invalidate_everywhere(&self, scope: Scope) {
        Counters::bump(&self.counters.invalidations);
        self.invalidate_local(&scope).await;
        // `All` is not sent to L2: it would need a SCAN; entries expire by TTL.
        if let Some(remote) = self
            .remote
            .as_ref()
            .filter(|_| !matches!(scope, Scope::All))
        {
            match self.remote_ready().await {
                Some(store) => {
                    if let Err(error) =
                        remote_invalidate(store.as_ref(), self.config.name, &scope).await
                    {
                        self.remote_failed(&error, Some(scope.clone()));
                    }
                }
                None => remote.defer(scope.clone()),
            }
        }
        if let Some(bus) = &self.bus {
            let message = Invalidation {
                origin: self.id,
                namespace: self.config.name.to_string(),
                scope,
            };
            if let Err(error) = bus.publish(&message).await {
                // At-most-once anyway: the other instances flush their L1 when
                // their own subscription reconnects, and entries expire by TTL.
                Counters::bump(&self.counters.bus_errors);
                tracing::warn!(cache = self.config.name, %error, "could not publish cache invalidation");
            }
        }
        tracing::trace!(cache = self.config.name, "invalidated");
    }

    /// Stores into L1 unless the user's generation moved since `generation`;
    /// returns whether the value stayed stored.
    async fn store_l1_if_current(&self, key: &CacheKey, generation: u64, value: V) -> bool {
        if self.generation(key.user()) != generation {
            Counters::bump(&self.counters.stale_loads_discarded);
            return false;
        }
        self.l1.insert(key.clone(), value).await;
        // An invalidation may have slipped in between the check and the insert;
        // its removal may have run before our insert, so undo the insert.
        if self.generation(key.user()) != generation {
            Counters::bump(&self.counters.stale_loads_discarded);
            self.l1.invalidate(key).await;
            return false;
        }
        true
    }

    /// Reads L2 if it is usable: `None` when skipped or failed, otherwise
    /// the decoded value (if any) and the partition generation.
    async fn remote_read(&self, key: &CacheKey) -> Option<(Option<V>, u64)> {
        let store = self.remote_ready().await?;
        match store.get(self.config.name, key).await {
            Ok(read) => {
                let value = match read.value.as_deref().map(decode::<V>) {
                    None => None,
                    Some(Ok(value)) => Some(value),
                    Some(Err(error)) => {
                        // Treat an undecodable entry (e.g. from an older
                        // release) as a miss; the fill below overwrites it.
                        self.codec_failed(&error);
                        None
                    }
                };
                Some((value, read.generation))
            }
            Err(error) => {
                self.remote_failed(&error, None);
                None
            }
        }
    }

    async fn fill_remote(&self, key: &CacheKey, value: &V, generation: u64) {
        let Some(store) = self.remote_ready().await else {
            return;
        };
        let bytes = match encode(value) {
            Ok(bytes) => bytes,
            Err(error) => return self.codec_failed(&error),
        };
        match store
            .put_if_generation(self.config.name, key, &bytes, self.config.ttl, generation)
            .await
        {
            Ok(true) => {}
            Ok(false) => Counters::bump(&self.counters.stale_loads_discarded),
            Err(error) => self.remote_failed(&error, None),
        }
    }

    /// The L2 store if it may be used now, replaying deferred invalidations
    /// first when it is recovering.
    async fn remote_ready(&self) -> Option<&Arc<dyn RemoteStore>> {
        let remote = self.remote.as_ref()?;
        if remote.healthy.load(Ordering::Acquire) {
            return Some(&remote.store);
        }
        if remote.cooling_down() {
            return None;
        }
        let _recovering = remote.recovery.try_lock().ok()?;
        if remote.healthy.load(Ordering::Acquire) {
            return Some(&remote.store);
        }
        loop {
            let next = remote.state().pending.last().cloned();
            let Some(scope) = next else { break };
            if let Err(error) =
                remote_invalidate(remote.store.as_ref(), self.config.name, &scope).await
            {
                self.remote_failed(&error, None);
                return None;
            }
            remote.state().pending.pop();
        }
        remote.state().retry_at = None;
        remote.healthy.store(true, Ordering::Release);
        tracing::info!(cache = self.config.name, "shared cache tier recovered");
        Some(&remote.store)
    }

    fn remote_failed(&self, error: &TierError, deferred: Option<Scope>) {
        Counters::bump(&self.counters.remote_errors);
        if let Some(remote) = &self.remote {
            let was_healthy = remote.healthy.swap(false, Ordering::AcqRel);
            let mut state = remote.state();
            state.retry_at = Some(Instant::now() + self.config.remote_cooldown);
            if let Some(scope) = deferred {
                state.pending.push(scope);
            }
            if was_healthy {
                tracing::warn!(cache = self.config.name, %error, cooldown = ?self.config.remote_cooldown,
                    "shared cache tier failed; serving from L1 and the loader");
            } else {
                tracing::debug!(cache = self.config.name, %error, "shared cache tier still failing");
            }
        }
    }

    fn codec_failed(&self, error: &TierError) {
        Counters::bump(&self.counters.remote_errors);
        tracing::warn!(cache = self.config.name, %error, "cache value codec failed");
    }

    fn apply_bus_event(&self, event: Result<BusEvent, RecvError>) -> Option<Scope> {
        match event {
            Ok(BusEvent::Invalidated(message)) => {
                if message.origin == self.id || message.namespace != self.config.name {
                    return None;
                }
                Counters::bump(&self.counters.remote_invalidations);
                Some(message.scope)
            }
            Ok(BusEvent::Resync) | Err(RecvError::Lagged(_)) => {
                // Messages may have been lost: nothing in L1 can be trusted.
                Counters::bump(&self.counters.resyncs);
                tracing::info!(
                    cache = self.config.name,
                    "invalidation channel resync: flushing L1"
                );
                Some(Scope::All)
            }
            Err(RecvError::Closed) => None,
        }
    }
}

impl Remote {
    fn state(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cooling_down(&self) -> bool {
        self.state().retry_at.is_some_and(|at| Instant::now() < at)
    }

    fn defer(&self, scope: Scope) {
        self.state().pending.push(scope);
    }
}

async fn remote_invalidate(
    store: &dyn RemoteStore,
    namespace: &str,
    scope: &Scope,
) -> Result<(), TierError> {
    match scope {
        Scope::Key { user, item } => {
            store
                .invalidate(namespace, &CacheKey::new(*user, item.as_str()))
                .await
        }
        Scope::User { user } => store.invalidate_user(namespace, *user).await,
        Scope::All => Ok(()),
    }
}

/// Applies other instances' invalidations to this instance's L1 until the
/// cache is dropped or the bus closes.
async fn apply_remote_invalidations<V: CacheValue>(
    cache: Weak<Inner<V>>,
    mut events: tokio::sync::broadcast::Receiver<BusEvent>,
) {
    loop {
        let event = events.recv().await;
        let closed = matches!(event, Err(RecvError::Closed));
        let Some(inner) = cache.upgrade() else { return };
        if let Some(scope) = inner.apply_bus_event(event) {
            inner.invalidate_local(&scope).await;
        }
        if closed {
            return;
        }
    }
}

fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, TierError> {
    serde_json::to_vec(value).map_err(TierError::Codec)
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, TierError> {
    serde_json::from_slice(bytes).map_err(TierError::Codec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;
    use crate::memory::MemoryStore;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    fn cache() -> Cache<Option<u32>> {
        Cache::new(CacheConfig::new("test", Duration::from_secs(60)))
    }

    fn tiered(store: &Arc<MemoryStore>, bus: &Arc<LocalBus>) -> Cache<Option<u32>> {
        Cache::with_tiers(
            CacheConfig::new("test", Duration::from_secs(60))
                .with_remote_cooldown(Duration::from_millis(50)),
            Tiers::none()
                .with_remote(store.clone() as Arc<dyn RemoteStore>)
                .with_bus(bus.clone() as Arc<dyn InvalidationBus>),
        )
    }

    async fn load(c: &Cache<Option<u32>>, key: &CacheKey, value: u32) -> Option<u32> {
        c.get_or_load(key, || async move { Ok::<_, Infallible>(Some(value)) })
            .await
            .unwrap()
    }

    /// Lets spawned bus listeners run (they are on the same runtime).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    #[tokio::test]
    async fn caches_values_and_not_found() {
        let c = cache();
        let key = CacheKey::new(UserId::random(), "k");
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let v = c
                .get_or_load(&key, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(None)
                })
                .await
                .unwrap();
            assert_eq!(v, None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not-found must be cached");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.loads), (2, 1, 1));
        assert!((s.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let c = cache();
        let key = CacheKey::new(UserId::random(), "k");
        let r: Result<_, &str> = c.get_or_load(&key, || async { Err("db down") }).await;
        assert_eq!(r, Err("db down"));
        assert_eq!(load(&c, &key, 7).await, Some(7));
        assert_eq!(c.stats().load_errors, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_load() {
        let c = cache();
        let key = CacheKey::new(UserId::random(), "k");
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (c, key, calls) = (c.clone(), key.clone(), Arc::clone(&calls));
            tasks.push(tokio::spawn(async move {
                c.get_or_load(&key, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, Infallible>(Some(1))
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn load_racing_an_invalidation_is_not_stored() {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(LocalBus::new());
        for c in [cache(), tiered(&store, &bus)] {
            let key = CacheKey::new(UserId::random(), "k");
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
            let loader = {
                let (c, key) = (c.clone(), key.clone());
                tokio::spawn(async move {
                    c.get_or_load(&key, || async move {
                        started_tx.send(()).unwrap();
                        release_rx.await.unwrap();
                        Ok::<_, Infallible>(Some(1)) // read before the write
                    })
                    .await
                    .unwrap()
                })
            };
            started_rx.await.unwrap();
            c.invalidate(&key).await; // the write happens and invalidates
            release_tx.send(()).unwrap();
            assert_eq!(
                loader.await.unwrap(),
                Some(1),
                "the caller still gets its answer"
            );
            assert_eq!(
                c.get(&key).await,
                None,
                "but nothing stale was cached, in L1 or L2"
            );
            assert_eq!(c.stats().stale_loads_discarded, 1);
            assert_eq!(load(&c, &key, 2).await, Some(2));
        }
    }

    #[tokio::test]
    async fn invalidate_user_drops_only_that_users_keys() {
        let c = cache();
        let (a, b) = (UserId::random(), UserId::random());
        for item in ["x", "y"] {
            c.insert(CacheKey::new(a, item), Some(1)).await;
            c.insert(CacheKey::new(b, item), Some(2)).await;
        }
        c.invalidate_user(a).await;
        assert_eq!(c.get(&CacheKey::new(a, "x")).await, None);
        assert_eq!(c.get(&CacheKey::new(a, "y")).await, None);
        assert_eq!(c.get(&CacheKey::new(b, "x")).await, Some(Some(2)));
    }

    #[tokio::test]
    async fn entries_expire_after_ttl() {
        let c: Cache<u32> = Cache::new(CacheConfig::new("ttl", Duration::from_millis(50)));
        let key = CacheKey::new(UserId::random(), "k");
        c.insert(key.clone(), 1).await;
        assert_eq!(c.get(&key).await, Some(1));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.get(&key).await, None);
    }

    #[tokio::test]
    async fn l2_fills_other_instances_and_counts_l2_hits() {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(LocalBus::new());
        let (a, b) = (tiered(&store, &bus), tiered(&store, &bus));
        let key = CacheKey::new(UserId::random(), "k");
        assert_eq!(load(&a, &key, 5).await, Some(5));
        // B has an empty L1 but finds A's value in L2 without loading.
        let v = b
            .get_or_load(&key, || async {
                panic!("must be served by L2") as Result<_, Infallible>
            })
            .await
            .unwrap();
        assert_eq!(v, Some(5));
        assert_eq!(b.stats().l2_hits, 1);
        assert_eq!(load(&b, &key, 6).await, Some(5), "now an L1 hit");
        assert_eq!(b.stats().l1_hits, 1);
    }

    #[tokio::test]
    async fn a_write_on_one_instance_evicts_the_others() {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(LocalBus::new());
        let (a, b) = (tiered(&store, &bus), tiered(&store, &bus));
        let key = CacheKey::new(UserId::random(), "k");
        assert_eq!(load(&b, &key, 1).await, Some(1));
        assert_eq!(load(&b, &key, 9).await, Some(1), "B serves from its L1");
        a.invalidate(&key).await;
        settle().await;
        assert_eq!(load(&b, &key, 2).await, Some(2), "B dropped its L1 entry");
        assert!(b.stats().remote_invalidations >= 1);
        assert_eq!(a.stats().remote_invalidations, 0, "A skips its own message");

        // A resync (lost messages) flushes everything.
        let other = CacheKey::new(UserId::random(), "o");
        load(&b, &other, 3).await;
        bus.resync();
        settle().await;
        assert_eq!(b.entry_count_after_sync().await, 0);
        assert!(b.stats().resyncs >= 1);
    }

    #[tokio::test]
    async fn cross_instance_race_cannot_poison_l2() {
        // B starts a load (reads L2's generation), A writes and invalidates,
        // then B's stale result must not land in L2 for others to read.
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(LocalBus::new());
        let (a, b, c) = (
            tiered(&store, &bus),
            tiered(&store, &bus),
            tiered(&store, &bus),
        );
        let key = CacheKey::new(UserId::random(), "k");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let loading = {
            let (b, key) = (b.clone(), key.clone());
            tokio::spawn(async move {
                b.get_or_load(&key, || async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok::<_, Infallible>(Some(1))
                })
                .await
            })
        };
        started_rx.await.unwrap();
        a.invalidate(&key).await;
        release_tx.send(()).unwrap();
        loading.await.unwrap().unwrap();
        settle().await;
        assert_eq!(
            load(&c, &key, 2).await,
            Some(2),
            "C must not read B's stale value from L2"
        );
    }

    #[tokio::test]
    async fn an_l2_outage_degrades_to_the_loader_and_recovers() {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(LocalBus::new());
        let (a, b) = (tiered(&store, &bus), tiered(&store, &bus));
        let key = CacheKey::new(UserId::random(), "k");
        load(&a, &key, 1).await; // now in L2

        store.set_failing(true);
        let fresh = CacheKey::new(UserId::random(), "f");
        assert_eq!(load(&b, &fresh, 7).await, Some(7), "reads never fail");
        assert!(b.stats().remote_errors >= 1);
        assert!(!b.remote_healthy());
        // A write during the outage: L1s are dropped, the L2 delete is deferred.
        a.invalidate(&key).await;
        settle().await;

        store.set_failing(false);
        tokio::time::sleep(Duration::from_millis(80)).await; // past the cooldown
        // A's deferred delete is replayed before A trusts L2 again...
        assert_eq!(load(&a, &key, 2).await, Some(2));
        assert!(a.remote_healthy());
        // ...so nobody reads the value the write replaced.
        let c = tiered(&store, &bus);
        assert_eq!(
            load(&c, &key, 3).await,
            Some(2),
            "C gets A's fresh fill from L2"
        );
    }

    #[tokio::test]
    async fn refresh_after_a_write_serves_the_next_read_from_l1() {
        let c = cache();
        let key = CacheKey::new(UserId::random(), "k");
        assert_eq!(load(&c, &key, 1).await, Some(1));
        c.invalidate(&key).await;
        let refreshed = c
            .refresh(&key, || async { Ok::<_, Infallible>(Some(2)) })
            .await;
        assert_eq!(refreshed, Ok(Some(2)));
        assert_eq!(
            load(&c, &key, 3).await,
            Some(2),
            "a hit on the refreshed value"
        );
        // A refresh overtaken by another invalidation stores nothing.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let refreshing = {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move {
                c.refresh(&key, || async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok::<_, Infallible>(Some(4))
                })
                .await
            })
        };
        started_rx.await.unwrap();
        c.invalidate(&key).await;
        release_tx.send(()).unwrap();
        refreshing.await.unwrap().unwrap();
        assert_eq!(c.get(&key).await, None);
    }

    impl<V: CacheValue> Cache<V> {
        async fn entry_count_after_sync(&self) -> u64 {
            self.inner.l1.run_pending_tasks().await;
            self.inner.l1.entry_count()
        }
    }
}
