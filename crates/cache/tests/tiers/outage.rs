//! Redis going away: reads keep succeeding from L1 + loader with no error,
//! and the tier comes back by itself when Redis does.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsdeck_cache::{
    Cache, CacheConfig, CacheKey, InvalidationBus, RedisConfig, RedisInvalidationBus,
    RedisRemoteStore, RemoteStore, Tiers,
};
use opsdeck_core::UserId;

use crate::redis_config;

#[tokio::test]
async fn a_closed_port_never_fails_reads() {
    // Nothing listens on port 1: every Redis call fails fast.
    let config = RedisConfig::new("redis://127.0.0.1:1").with_timeout(Duration::from_millis(50));
    let cache = Cache::<Option<u32>>::with_tiers(
        CacheConfig::new("closed", Duration::from_secs(60)),
        Tiers::none()
            .with_remote(Arc::new(RedisRemoteStore::new(&config).unwrap()) as Arc<dyn RemoteStore>),
    );
    let user = UserId::random();
    for i in 0..20u32 {
        let key = CacheKey::new(user, format!("k{}", i % 5));
        let v = cache
            .get_or_load(&key, || async { Ok::<_, ()>(Some(i % 5)) })
            .await
            .expect("reads succeed without Redis");
        assert_eq!(v, Some(i % 5));
        cache.invalidate(&CacheKey::new(user, "w")).await; // writes don't fail either
    }
    let stats = cache.stats();
    assert!(stats.remote_errors >= 1);
    assert_eq!(stats.loads, 5, "L1 still serves repeats");
    assert!(!cache.remote_healthy());
}

/// A private redis-server on a free port, so the test can stop and restart
/// it without touching the shared one.
struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test suite's Redis)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_redis_restart_and_the_tier_recovers() {
    // Same availability rule as the other Redis tests.
    if redis_config().await.is_none() {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = PrivateRedis::start(port);
    let config = RedisConfig::new(format!("redis://127.0.0.1:{}", server.port))
        .with_timeout(Duration::from_millis(100));
    let store: Arc<dyn RemoteStore> = Arc::new(RedisRemoteStore::new(&config).unwrap());
    let bus = Arc::new(RedisInvalidationBus::start(&config).unwrap());
    assert!(bus.wait_until_subscribed(Duration::from_secs(5)).await);
    let make = || {
        Cache::<Option<u32>>::with_tiers(
            CacheConfig::new("restart", Duration::from_secs(60))
                .with_remote_cooldown(Duration::from_millis(200)),
            Tiers::none()
                .with_remote(store.clone())
                .with_bus(bus.clone() as Arc<dyn InvalidationBus>),
        )
    };
    let (a, b) = (make(), make());
    let user = UserId::random();
    let key = |i: u32| CacheKey::new(user, format!("k{i}"));
    let load = |c: &Cache<Option<u32>>, i: u32| {
        let (c, k) = (c.clone(), key(i));
        async move {
            c.get_or_load(&k, || async move { Ok::<_, ()>(Some(i)) })
                .await
        }
    };

    load(&a, 0).await.unwrap();
    assert_eq!(
        b.get(&key(0)).await,
        Some(Some(0)),
        "B reads A's fill from Redis"
    );

    server.stop();
    for i in 1..10 {
        assert_eq!(
            load(&b, i).await,
            Ok(Some(i)),
            "no error while Redis is down"
        );
    }
    assert!(b.stats().remote_errors >= 1);
    assert!(!b.remote_healthy());

    let _server = PrivateRedis::start(port);
    let recovered = Instant::now();
    // The subscription comes back too, and since pub/sub dropped whatever was
    // published meanwhile, every L1 is flushed.
    let resyncs_before = b.stats().resyncs;
    assert!(bus.wait_until_subscribed(Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        b.stats().resyncs > resyncs_before,
        "L1 flushed after the bus reconnected"
    );
    for probe in 1000.. {
        tokio::time::sleep(Duration::from_millis(50)).await;
        load(&b, probe).await.unwrap(); // an L1 miss lets the tier probe Redis
        if b.remote_healthy() {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "the tier never recovered"
        );
    }
    // Fills reach Redis again: a third instance reads B's value without loading.
    load(&b, 200).await.unwrap();
    let c = make();
    let v = c
        .get_or_load(&key(200), || async {
            Err::<Option<u32>, _>("must come from Redis")
        })
        .await;
    assert_eq!(v, Ok(Some(200)));
}
