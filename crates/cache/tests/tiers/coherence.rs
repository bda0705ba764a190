//! Two instances with separate L1s: a write through A makes B stop serving
//! the old value, through Redis pub/sub and through PostgreSQL NOTIFY.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opsdeck_cache::{
    Cache, CacheConfig, CacheKey, InvalidationBus, PgInvalidationBus, RedisInvalidationBus,
    RedisRemoteStore, RemoteStore, Tiers,
};
use opsdeck_core::UserId;
use sqlx::PgPool;

use crate::redis_config;

/// The bound the issue sets on cross-instance staleness after a write.
const MAX_DELAY: Duration = Duration::from_millis(100);

/// The "database": one number, read by the loaders.
async fn read_db(db: &AtomicU64) -> Result<Option<u64>, ()> {
    Ok(Some(db.load(Ordering::SeqCst)))
}

/// A writes; returns how long until B served the new value.
async fn b_sees_a_write(a: &Cache<Option<u64>>, b: &Cache<Option<u64>>) -> Duration {
    let db = AtomicU64::new(1);
    let key = CacheKey::new(UserId::random(), "value");
    assert_eq!(b.get_or_load(&key, || read_db(&db)).await.unwrap(), Some(1));
    db.store(2, Ordering::SeqCst);
    assert_eq!(
        b.get_or_load(&key, || read_db(&db)).await.unwrap(),
        Some(1),
        "B caches"
    );

    db.store(3, Ordering::SeqCst); // the write...
    a.invalidate(&key).await; // ...and its invalidation, through A
    let written = Instant::now();
    loop {
        let seen = b.get_or_load(&key, || read_db(&db)).await.unwrap();
        if seen == Some(3) {
            return written.elapsed();
        }
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "B never saw the write"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Two caches of namespace `name` — separate L1s, each with its own bus
/// from `start_bus`, sharing `remote` if given — once both buses listen.
async fn two_instances(
    name: &'static str,
    remote: Option<Arc<dyn RemoteStore>>,
    start_bus: impl Fn() -> Arc<dyn InvalidationBus>,
) -> (Cache<Option<u64>>, Cache<Option<u64>>) {
    let make = || async {
        let bus = start_bus();
        assert!(bus.wait_until_subscribed(Duration::from_secs(5)).await);
        let tiers = Tiers::none().with_bus(bus);
        let tiers = match &remote {
            Some(remote) => tiers.with_remote(remote.clone()),
            None => tiers,
        };
        Cache::with_tiers(CacheConfig::new(name, Duration::from_secs(900)), tiers)
    };
    (make().await, make().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pubsub_keeps_two_instances_coherent() {
    let Some(config) = redis_config().await else {
        return;
    };
    let store: Arc<dyn RemoteStore> = Arc::new(RedisRemoteStore::new(&config).unwrap());
    let (a, b) = two_instances("coherence", Some(store), || {
        Arc::new(RedisInvalidationBus::start(&config).unwrap())
    })
    .await;
    let delay = b_sees_a_write(&a, &b).await;
    println!("redis pub/sub: B saw A's write after {delay:?}");
    assert!(delay <= MAX_DELAY, "took {delay:?}");
    assert!(b.stats().remote_invalidations >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pubsub_alone_keeps_l1_only_instances_coherent() {
    let Some(config) = redis_config().await else {
        return;
    };
    let (a, b) = two_instances("coherence-l1", None, || {
        Arc::new(RedisInvalidationBus::start(&config).unwrap())
    })
    .await;
    let delay = b_sees_a_write(&a, &b).await;
    assert!(delay <= MAX_DELAY, "took {delay:?}");
}

#[sqlx::test(migrations = false)]
async fn postgres_notify_keeps_two_instances_coherent(pool: PgPool) {
    let channel = format!("opsdeck_cache_test_{}", std::process::id());
    let (a, b) = two_instances("coherence-pg", None, || {
        Arc::new(PgInvalidationBus::start(pool.clone(), channel.clone()))
    })
    .await;
    let delay = b_sees_a_write(&a, &b).await;
    println!("postgres NOTIFY: B saw A's write after {delay:?}");
    assert!(delay <= MAX_DELAY, "took {delay:?}");
    assert!(b.stats().remote_invalidations >= 1);
}
