//! Unit tests of one namespace with and without shared tiers.

use std::time::Duration;

use super::*;
use crate::bus::InMemoryInvalidationBus;
use crate::memory::InMemoryRemoteStore;
use crate::remote::RemoteStore;
use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;

fn cache() -> Cache<Option<u32>> {
    Cache::new(CacheConfig::new("test", Duration::from_secs(60)))
}

fn tiered(
    store: &Arc<InMemoryRemoteStore>,
    bus: &Arc<InMemoryInvalidationBus>,
) -> Cache<Option<u32>> {
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
    let store = Arc::new(InMemoryRemoteStore::new());
    let bus = Arc::new(InMemoryInvalidationBus::new());
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
    let store = Arc::new(InMemoryRemoteStore::new());
    let bus = Arc::new(InMemoryInvalidationBus::new());
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
    let store = Arc::new(InMemoryRemoteStore::new());
    let bus = Arc::new(InMemoryInvalidationBus::new());
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
    let store = Arc::new(InMemoryRemoteStore::new());
    let bus = Arc::new(InMemoryInvalidationBus::new());
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
    let store = Arc::new(InMemoryRemoteStore::new());
    let bus = Arc::new(InMemoryInvalidationBus::new());
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

/// Coherence after a fault heals (issue 10, defect 1): one instance cut off
/// from L2 and/or the bus writes; once the fault heals, every instance
/// serves the new value within a second.
mod coherence_after_faults {
    use std::sync::atomic::{AtomicBool, AtomicU32};

    use async_trait::async_trait;
    use tokio::sync::broadcast;

    use super::*;
    use crate::bus::{BusEvent, Invalidation};
    use crate::error::TierError;
    use crate::remote::RemoteRead;

    /// One instance's view of the shared tiers; `cut` makes every call of
    /// that instance fail, as a network partition (or a frozen server) would.
    #[derive(Debug)]
    struct CutOff {
        store: Arc<InMemoryRemoteStore>,
        bus: Arc<InMemoryInvalidationBus>,
        cut_store: Arc<AtomicBool>,
        cut_bus: Arc<AtomicBool>,
    }

    fn down() -> TierError {
        TierError::backend(std::io::Error::other("partitioned"))
    }

    impl CutOff {
        fn check(flag: &AtomicBool) -> Result<(), TierError> {
            if flag.load(Ordering::SeqCst) {
                Err(down())
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl RemoteStore for CutOff {
        async fn get(&self, namespace: &str, key: &CacheKey) -> Result<RemoteRead, TierError> {
            Self::check(&self.cut_store)?;
            self.store.get(namespace, key).await
        }
        async fn put_if_generation(
            &self,
            namespace: &str,
            key: &CacheKey,
            value: &[u8],
            ttl: Duration,
            generation: u64,
        ) -> Result<bool, TierError> {
            Self::check(&self.cut_store)?;
            self.store
                .put_if_generation(namespace, key, value, ttl, generation)
                .await
        }
        async fn put(
            &self,
            namespace: &str,
            key: &CacheKey,
            value: &[u8],
            ttl: Duration,
        ) -> Result<(), TierError> {
            Self::check(&self.cut_store)?;
            self.store.put(namespace, key, value, ttl).await
        }
        async fn invalidate(&self, namespace: &str, key: &CacheKey) -> Result<(), TierError> {
            Self::check(&self.cut_store)?;
            self.store.invalidate(namespace, key).await
        }
        async fn invalidate_user(&self, namespace: &str, user: UserId) -> Result<(), TierError> {
            Self::check(&self.cut_store)?;
            self.store.invalidate_user(namespace, user).await
        }
    }

    #[async_trait]
    impl InvalidationBus for CutOff {
        async fn publish(&self, invalidation: &Invalidation) -> Result<(), TierError> {
            Self::check(&self.cut_bus)?;
            self.bus.publish(invalidation).await
        }
        fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
            self.bus.subscribe()
        }
    }

    /// A "database" row and an instance reading it through its cache.
    struct Instance {
        cache: Cache<Option<u32>>,
    }

    impl Instance {
        fn new(tiers: &Arc<CutOff>) -> Self {
            Instance {
                cache: Cache::with_tiers(
                    CacheConfig::new("coherence", Duration::from_secs(600)),
                    Tiers::none()
                        .with_remote(tiers.clone() as Arc<dyn RemoteStore>)
                        .with_bus(tiers.clone() as Arc<dyn InvalidationBus>),
                ),
            }
        }

        async fn read(&self, key: &CacheKey, db: &Arc<AtomicU32>) -> Option<u32> {
            let db = Arc::clone(db);
            self.cache
                .get_or_load(key, || async move {
                    Ok::<_, Infallible>(Some(db.load(Ordering::SeqCst)))
                })
                .await
                .unwrap()
        }
    }

    struct World {
        store: Arc<InMemoryRemoteStore>,
        bus: Arc<InMemoryInvalidationBus>,
    }

    impl World {
        fn new() -> Self {
            World {
                store: Arc::new(InMemoryRemoteStore::new()),
                bus: Arc::new(InMemoryInvalidationBus::new()),
            }
        }

        fn view(&self, cut_store: &Arc<AtomicBool>, cut_bus: &Arc<AtomicBool>) -> Arc<CutOff> {
            Arc::new(CutOff {
                store: self.store.clone(),
                bus: self.bus.clone(),
                cut_store: cut_store.clone(),
                cut_bus: cut_bus.clone(),
            })
        }
    }

    /// Reads through `instance` until it serves `wanted`; the time it took,
    /// or `None` after `within`.
    async fn converges(
        instance: &Instance,
        key: &CacheKey,
        db: &Arc<AtomicU32>,
        wanted: u32,
        within: Duration,
    ) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        while start.elapsed() < within {
            if instance.read(key, db).await == Some(wanted) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Both instances cached version 1 (L1 and L2); then `fault` cuts A
    /// (as the flags say), A writes version 2, the fault heals and B must
    /// serve version 2 within a second — A staying idle after the heal.
    async fn write_during_a_fault_reaches_b(a_store: bool, a_bus: bool, b_store: bool) {
        let world = World::new();
        let (cut_a_store, cut_a_bus, cut_b_store, healthy) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let a = Instance::new(&world.view(&cut_a_store, &cut_a_bus));
        let b = Instance::new(&world.view(&cut_b_store, &healthy));
        let db = Arc::new(AtomicU32::new(1));
        let key = CacheKey::new(UserId::random(), "summarize");
        assert_eq!(a.read(&key, &db).await, Some(1));
        assert_eq!(b.read(&key, &db).await, Some(1));

        cut_a_store.store(a_store, Ordering::SeqCst);
        cut_a_bus.store(a_bus, Ordering::SeqCst);
        cut_b_store.store(b_store, Ordering::SeqCst);
        db.store(2, Ordering::SeqCst);
        a.cache.invalidate(&key).await; // the write's invalidation, during the fault
        settle().await;
        cut_a_store.store(false, Ordering::SeqCst);
        cut_a_bus.store(false, Ordering::SeqCst);
        cut_b_store.store(false, Ordering::SeqCst);

        let took = converges(&b, &key, &db, 2, Duration::from_secs(1)).await;
        assert!(
            took.is_some(),
            "B still serves the old value 1 s after the heal (A cut from L2: {a_store}, \
             from the bus: {a_bus}; B cut from L2: {b_store})"
        );
        assert_eq!(a.read(&key, &db).await, Some(2), "A serves its own write");
    }

    #[tokio::test]
    async fn a_partitioned_from_l2_and_bus() {
        write_during_a_fault_reaches_b(true, true, false).await;
    }

    #[tokio::test]
    async fn a_partitioned_from_l2_only() {
        write_during_a_fault_reaches_b(true, false, false).await;
    }

    #[tokio::test]
    async fn a_partitioned_from_the_bus_only() {
        write_during_a_fault_reaches_b(false, true, false).await;
    }

    #[tokio::test]
    async fn l2_unreachable_for_everyone() {
        write_during_a_fault_reaches_b(true, true, true).await;
    }
}

/// A bus whose subscription starts with an event, as a network bus's first
/// `Resync` may arrive while the cache is still being built.
#[derive(Debug, Default)]
struct EagerBus(InMemoryInvalidationBus);

#[async_trait::async_trait]
impl InvalidationBus for EagerBus {
    async fn publish(
        &self,
        invalidation: &crate::bus::Invalidation,
    ) -> Result<(), crate::error::TierError> {
        self.0.publish(invalidation).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::bus::BusEvent> {
        let receiver = self.0.subscribe();
        self.0.resync();
        receiver
    }
}

/// The listener must keep applying other instances' invalidations even
/// when its first event arrives before the cache is fully built (it used
/// to find no cache yet and stop for good, leaving that instance stale for
/// a whole TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_an_event_during_construction() {
    for round in 0..50 {
        let bus = Arc::new(EagerBus::default());
        let cache: Cache<Option<u32>> = Cache::with_tiers(
            CacheConfig::new("eager", Duration::from_secs(60)),
            Tiers::none().with_bus(bus.clone() as Arc<dyn InvalidationBus>),
        );
        let key = CacheKey::new(UserId::random(), "k");
        settle().await;
        assert_eq!(load(&cache, &key, 1).await, Some(1));
        bus.0
            .publish(&crate::bus::Invalidation {
                origin: Uuid::new_v4(),
                namespace: "eager".into(),
                scope: crate::bus::Scope::Key {
                    user: key.user(),
                    item: "k".into(),
                },
                remote_pending: false,
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while cache.get(&key).await.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the invalidation was never applied (listener gone)"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
