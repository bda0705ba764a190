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
