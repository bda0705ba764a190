use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsdeck_core::UserId;
use tokio::sync::OnceCell;

use crate::key::CacheKey;
use crate::stats::{CacheStats, Counters};

/// How one cache namespace behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Namespace name, used in tracing fields (and later in shared-tier keys).
    pub name: &'static str,
    /// How long an entry lives after it was stored.
    pub ttl: Duration,
    /// Most entries kept; moka evicts by TinyLFU beyond it.
    pub max_capacity: u64,
}

impl CacheConfig {
    /// A namespace with the given TTL and a capacity of 100 000 entries.
    pub fn new(name: &'static str, ttl: Duration) -> Self {
        CacheConfig {
            name,
            ttl,
            max_capacity: 100_000,
        }
    }

    /// Sets the capacity.
    pub fn with_max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
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

struct Inner<V> {
    config: CacheConfig,
    l1: moka::future::Cache<CacheKey, V>,
    generations: Box<[AtomicU64]>,
    inflight: Inflight<V>,
    counters: Counters,
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.inner.config)
            .field("stats", &self.inner.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> Cache<V> {
    /// A new, empty namespace.
    pub fn new(config: CacheConfig) -> Self {
        let l1 = moka::future::Cache::builder()
            .name(config.name)
            .max_capacity(config.max_capacity)
            .time_to_live(config.ttl)
            // Needed for invalidate_user; predicates only cost while pending.
            .support_invalidation_closures()
            .build();
        let generations = (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect();
        Cache {
            inner: Arc::new(Inner {
                config,
                l1,
                generations,
                inflight: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }

    /// The namespace's configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The cached value for `key`, counting a hit or a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<V> {
        let found = self.inner.l1.get(key).await;
        Counters::bump(if found.is_some() {
            &self.inner.counters.hits
        } else {
            &self.inner.counters.misses
        });
        found
    }

    /// Stores `value` under `key` unconditionally (write-through after a
    /// successful write, for example).
    pub async fn insert(&self, key: CacheKey, value: V) {
        self.inner.l1.insert(key, value).await;
    }

    /// Drops `key`. A load of it that is running now will not store its result.
    pub async fn invalidate(&self, key: &CacheKey) {
        Counters::bump(&self.inner.counters.invalidations);
        // Bump before removing: a loader that stores after our removal then
        // sees the new generation on its re-check and removes its own value.
        self.bump_generation(key.user());
        self.inner.l1.invalidate(key).await;
        tracing::trace!(cache = self.inner.config.name, %key, "invalidated key");
    }

    /// Drops every key of `user` in this namespace.
    pub async fn invalidate_user(&self, user: UserId) {
        Counters::bump(&self.inner.counters.invalidations);
        self.bump_generation(user);
        let result = self
            .inner
            .l1
            .invalidate_entries_if(move |key, _| key.user() == user);
        if let Err(error) = result {
            // Only possible if closures were not enabled at build time, which
            // `new` always does; fall back to dropping everything rather than
            // serving stale entries.
            tracing::error!(cache = self.inner.config.name, %error, "predicate invalidation failed; clearing namespace");
            self.inner.l1.invalidate_all();
        }
        tracing::trace!(cache = self.inner.config.name, %user, "invalidated user");
    }

    /// Drops every entry of the namespace.
    pub fn invalidate_all(&self) {
        Counters::bump(&self.inner.counters.invalidations);
        for generation in self.inner.generations.iter() {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.l1.invalidate_all();
    }

    /// The cached value for `key`, or the loader's result, which is then
    /// cached unless `key` (or its user) was invalidated while it ran.
    ///
    /// # Contract
    /// - Concurrent callers missing on the same key share one loader call.
    /// - A loader error is returned to the caller whose loader ran and is not
    ///   cached; callers that were waiting run their own loader in turn.
    /// - To cache "not found", make `V` an `Option`.
    pub async fn get_or_load<F, Fut, E>(&self, key: &CacheKey, loader: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.inner.l1.get(key).await {
            Counters::bump(&self.inner.counters.hits);
            return Ok(value);
        }
        Counters::bump(&self.inner.counters.misses);

        let generation = self.generation(key.user());
        // Keyed by generation too: a caller arriving after an invalidation must
        // not join a load that started before it.
        let slot = (key.clone(), generation);
        let cell = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            Arc::clone(inflight.entry(slot.clone()).or_default())
        };

        let result = cell
            .get_or_try_init(|| async {
                Counters::bump(&self.inner.counters.loads);
                match loader().await {
                    Ok(value) => {
                        self.store_if_current(key, generation, value.clone()).await;
                        Ok(value)
                    }
                    Err(error) => {
                        Counters::bump(&self.inner.counters.load_errors);
                        Err(error)
                    }
                }
            })
            .await
            .cloned();

        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&slot)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            inflight.remove(&slot);
        }
        result
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// Entries currently held (approximate: moka applies writes lazily).
    pub fn entry_count(&self) -> u64 {
        self.inner.l1.entry_count()
    }

    async fn store_if_current(&self, key: &CacheKey, generation: u64, value: V) {
        if self.generation(key.user()) != generation {
            Counters::bump(&self.inner.counters.stale_loads_discarded);
            return;
        }
        self.inner.l1.insert(key.clone(), value).await;
        // An invalidation may have slipped in between the check and the insert;
        // its removal may have run before our insert, so undo the insert.
        if self.generation(key.user()) != generation {
            Counters::bump(&self.inner.counters.stale_loads_discarded);
            self.inner.l1.invalidate(key).await;
        }
    }

    fn stripe(&self, user: UserId) -> &AtomicU64 {
        let bits = user.as_uuid().as_u128();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        &self.inner.generations[(folded % GENERATION_STRIPES as u64) as usize]
    }

    fn generation(&self, user: UserId) -> u64 {
        self.stripe(user).load(Ordering::SeqCst)
    }

    fn bump_generation(&self, user: UserId) {
        self.stripe(user).fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    fn cache() -> Cache<Option<u32>> {
        Cache::new(CacheConfig::new("test", Duration::from_secs(60)))
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
        let r = c
            .get_or_load(&key, || async { Ok::<_, &str>(Some(7)) })
            .await;
        assert_eq!(r, Ok(Some(7)));
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
        let c = cache();
        let key = CacheKey::new(UserId::random(), "k");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let loader = {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move {
                c.get_or_load(&key, || async move {
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok::<_, Infallible>(Some(1)) // the value read before the write
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
            "but the stale value was not cached"
        );
        assert_eq!(c.stats().stale_loads_discarded, 1);
        let fresh = c
            .get_or_load(&key, || async { Ok::<_, Infallible>(Some(2)) })
            .await
            .unwrap();
        assert_eq!(fresh, Some(2));
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

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_ttl() {
        let c: Cache<u32> = Cache::new(CacheConfig::new("ttl", Duration::from_millis(50)));
        let key = CacheKey::new(UserId::random(), "k");
        c.insert(key.clone(), 1).await;
        assert_eq!(c.get(&key).await, Some(1));
        // moka reads the real clock, so wait on it rather than tokio's paused one.
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(c.get(&key).await, None);
    }
}
