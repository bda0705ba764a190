//! The fault scenarios: one fault each, mid-load, then the checks.

use std::time::{Duration, Instant};

use crate::support::{
    COHERENCE_BOUND, FAULT, Load, RECOVERY_BOUND, Services, assert_no_write_lost,
    assert_totals_exact, bounded, coherence, control, recovery, report, steady_coherence,
};

/// What a scenario does to which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `pg_ctl restart -m fast` mid-load.
    PostgresRestart,
    /// PostgreSQL stopped for [`FAULT`], then started.
    PostgresStop,
    /// PostgreSQL frozen (`SIGSTOP`) for [`FAULT`], then thawed.
    PostgresFreeze,
    /// Both instances cut off from PostgreSQL for [`FAULT`].
    PostgresPartition,
    /// Redis stopped (its data gone) for [`FAULT`], then started.
    RedisStop,
    /// Redis frozen for [`FAULT`], then thawed.
    RedisFreeze,
    /// Instance A cut off from Redis (B still reaches it) for [`FAULT`].
    RedisPartitionFromA,
}

impl Fault {
    fn is_redis(self) -> bool {
        matches!(
            self,
            Fault::RedisStop | Fault::RedisFreeze | Fault::RedisPartitionFromA
        )
    }

    /// Starts the fault.
    async fn inject(self, services: &Services) {
        let (postgres, redis) = (services.postgres.clone(), services.redis.clone());
        match self {
            Fault::PostgresRestart => {
                control("restart PostgreSQL", move || postgres.restart()).await
            }
            Fault::PostgresStop => control("stop PostgreSQL", move || postgres.stop()).await,
            Fault::PostgresFreeze => control("freeze PostgreSQL", move || postgres.freeze()).await,
            Fault::PostgresPartition => services.postgres_proxy.cut(),
            Fault::RedisStop => control("stop Redis", move || redis.stop()).await,
            Fault::RedisFreeze => control("freeze Redis", move || redis.freeze()).await,
            Fault::RedisPartitionFromA => services.redis_proxy_a.cut(),
        }
    }

    /// Ends the fault (a restart has already ended).
    async fn heal(self, services: &Services) {
        let (postgres, redis) = (services.postgres.clone(), services.redis.clone());
        match self {
            Fault::PostgresRestart => {}
            Fault::PostgresStop => control("start PostgreSQL", move || postgres.start()).await,
            Fault::PostgresFreeze => control("thaw PostgreSQL", move || postgres.thaw()).await,
            Fault::PostgresPartition => services.postgres_proxy.heal(),
            Fault::RedisStop => control("start Redis", move || redis.start()).await,
            Fault::RedisFreeze => control("thaw Redis", move || redis.thaw()).await,
            Fault::RedisPartitionFromA => services.redis_proxy_a.heal(),
        }
    }
}

/// One scenario: warm up, fault mid-load, heal, then measure and check.
/// The coherence property is asserted after every fault: PostgreSQL faults
/// do not touch the invalidation channel, so it must hold there too.
async fn scenario(name: &str, fault: Fault) {
    let Some(services) = Services::start().await else {
        return;
    };
    let (a, b) = services.decks().await;
    let mut load = Load::start(&a, &b).await;
    // Both instances read every key, so B holds the values in its caches
    // before A writes through the fault.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_fault = steady_coherence(&[&a, &b], &load.keys, &services.direct).await;

    fault.inject(&services).await;
    tokio::time::sleep(FAULT).await;
    // The acknowledged versions are final from here on (in-flight writes
    // settle or time out), so "at least as new as every acknowledged
    // write" has a fixed target.
    load.stop_writers().await;
    fault.heal(&services).await;
    let back = Instant::now();

    let decks = [&a, &b];
    let (recovered, seen) = tokio::join!(
        recovery(&decks, back),
        coherence(&decks, &load.keys, back, Duration::from_secs(3)),
    );
    let (counters, keys, users) = (
        load.counters.clone(),
        load.keys.clone(),
        load.analytics_users,
    );
    load.stop().await;
    let executions = assert_totals_exact(&services.direct, &users, &counters).await;
    let checked = assert_no_write_lost(&services.direct, &keys).await;
    report(
        name,
        &counters,
        &[
            ("coherent before the fault", format!("{before_fault:?}")),
            ("recovery after back (A, B)", format!("{recovered:?}")),
            ("coherent after heal", format!("{:?}", seen.coherent_after)),
            (
                "stale reads after heal (total / past 1 s)",
                format!("{} / {}", seen.stale_total, seen.stale_after_bound),
            ),
            ("keys read back", checked.to_string()),
            (
                "first stale read past 1 s",
                seen.example.clone().unwrap_or_else(|| "none".into()),
            ),
            ("executions counted exactly", executions.to_string()),
        ],
    );

    if let Err(stale) = &before_fault {
        panic!("{name}: {stale}");
    }
    for time in &recovered {
        assert!(*time <= RECOVERY_BOUND, "{name}: recovery took {time:?}");
    }
    if fault.is_redis() {
        let failed = counters
            .reads_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(failed, 0, "{name}: reads failed while Redis was away");
    }
    assert_eq!(
        seen.stale_after_bound,
        0,
        "{name}: stale reads more than {COHERENCE_BOUND:?} after the heal: {}",
        seen.example.as_deref().unwrap_or("")
    );
    let coherent = seen
        .coherent_after
        .unwrap_or_else(|| panic!("{name}: never coherent after the heal: {seen:?}"));
    assert!(
        coherent <= COHERENCE_BOUND,
        "{name}: coherent only {coherent:?} after the heal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_load() {
    bounded(
        "postgres_restart",
        scenario("postgres_restart", Fault::PostgresRestart),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stop_mid_load() {
    bounded(
        "postgres_stop",
        scenario("postgres_stop", Fault::PostgresStop),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_freeze_mid_load() {
    bounded(
        "postgres_freeze",
        scenario("postgres_freeze", Fault::PostgresFreeze),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partition_mid_load() {
    bounded(
        "postgres_partition",
        scenario("postgres_partition", Fault::PostgresPartition),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stop_mid_load() {
    bounded("redis_stop", scenario("redis_stop", Fault::RedisStop)).await;
}

/// Defect 1 of issue 10, with Redis frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_freeze_mid_load_heals_coherent() {
    bounded("redis_freeze", scenario("redis_freeze", Fault::RedisFreeze)).await;
}

/// Defect 1 of issue 10: A cannot reach Redis, B can; A writes; after the
/// heal B must not serve its old value for the rest of its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_partition_from_one_instance_heals_coherent() {
    bounded(
        "redis_partition_from_a",
        scenario("redis_partition_from_a", Fault::RedisPartitionFromA),
    )
    .await;
}
