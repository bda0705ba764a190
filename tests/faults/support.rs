//! The rig every fault scenario uses: a private PostgreSQL and Redis behind
//! loopback proxies, two `OpsDeck` instances under a small concurrent load,
//! and the checks and figures of a scenario.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opsdeck::analytics::{Execution, Money};
use opsdeck::{OpsDeck, PreferenceUpdate, RedisConfig, UserId};
use opsdeck_core::testing::{PrivatePostgres, PrivateRedis, TcpProxy, or_skip};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Every scenario ends within this, or fails.
pub(crate) const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
/// One load operation may take this long before it counts as failed
/// (a frozen PostgreSQL holds a query until it is thawed).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound the issue sets on recovery after a service is back.
pub(crate) const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// The coherence bound: once the faults heal, every instance serves a value
/// at least as new as every acknowledged write within this.
pub(crate) const COHERENCE_BOUND: Duration = Duration::from_secs(1);
/// How long a fault lasts.
pub(crate) const FAULT: Duration = Duration::from_secs(2);

const OPERATION: &str = "summarize";

/// Runs `scenario` under [`SCENARIO_LIMIT`].
pub(crate) async fn bounded<F: Future<Output = ()>>(name: &str, scenario: F) {
    if tokio::time::timeout(SCENARIO_LIMIT, scenario)
        .await
        .is_err()
    {
        panic!("{name}: exceeded {SCENARIO_LIMIT:?}");
    }
}

/// Runs a blocking service control (pg_ctl, signals) off the runtime's
/// workers, so the load keeps running meanwhile.
pub(crate) async fn control<T, F>(what: &str, action: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, opsdeck_core::testing::Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(action).await {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{what}: {error}"),
        Err(error) => panic!("{what}: {error}"),
    }
}

/// A private PostgreSQL (migrated) and Redis, each behind proxies: one
/// PostgreSQL proxy both instances use, one Redis proxy per instance (so
/// one instance can be cut off from Redis alone).
pub(crate) struct Services {
    pub(crate) postgres: Arc<PrivatePostgres>,
    pub(crate) redis: Arc<PrivateRedis>,
    pub(crate) postgres_proxy: TcpProxy,
    pub(crate) redis_proxy_a: TcpProxy,
    pub(crate) redis_proxy_b: TcpProxy,
    /// Straight to PostgreSQL, past the proxy: how the checks read the truth.
    pub(crate) direct: PgPool,
}

impl Services {
    /// Starts the services; `None` (skip) when a tool is missing outside CI.
    pub(crate) async fn start() -> Option<Services> {
        let postgres = tokio::task::spawn_blocking(PrivatePostgres::create)
            .await
            .expect("setup task");
        let postgres = Arc::new(or_skip(postgres)?);
        let redis = tokio::task::spawn_blocking(PrivateRedis::create)
            .await
            .expect("setup task");
        let redis = Arc::new(or_skip(redis)?);
        let direct = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&postgres.url())
            .await
            .expect("connect to the private PostgreSQL");
        opsdeck::MIGRATOR
            .run(&direct)
            .await
            .expect("migrate the private PostgreSQL");
        let proxy = |addr| async move { TcpProxy::start(addr).await.expect("start a proxy") };
        Some(Services {
            postgres_proxy: proxy(postgres.addr()).await,
            redis_proxy_a: proxy(redis.addr()).await,
            redis_proxy_b: proxy(redis.addr()).await,
            postgres,
            redis,
            direct,
        })
    }

    /// The two instances, A on `redis_proxy_a` and B on `redis_proxy_b`,
    /// both on `postgres_proxy`, with default cache settings (15 min
    /// preferences TTL: a stale value would outlive any scenario).
    pub(crate) async fn decks(&self) -> (OpsDeck, OpsDeck) {
        let build = |redis_port: u16| {
            OpsDeck::builder()
                .database_url(format!(
                    "postgres://postgres@127.0.0.1:{}/postgres",
                    self.postgres_proxy.port()
                ))
                .redis(
                    RedisConfig::new(format!("redis://127.0.0.1:{redis_port}"))
                        .with_key_prefix("faults"),
                )
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(2))
                .build()
        };
        let a = build(self.redis_proxy_a.port()).await.expect("instance A");
        let b = build(self.redis_proxy_b.port()).await.expect("instance B");
        for deck in [&a, &b] {
            assert!(
                deck.wait_for_invalidation_channel(Duration::from_secs(5))
                    .await,
                "invalidation channel never subscribed"
            );
        }
        (a, b)
    }
}

/// One user's preference, written by one writer on one instance.
pub(crate) struct Key {
    pub(crate) user: UserId,
    /// The version of the last acknowledged write.
    pub(crate) acked: AtomicI64,
    /// The instance index that writes it (0 = A, 1 = B).
    pub(crate) writer: usize,
}

/// Counters of the load.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) writes_ok: AtomicU64,
    pub(crate) writes_failed: AtomicU64,
    /// The slowest failed write, in ms (defect 2 of the issue).
    pub(crate) slowest_failed_write_ms: AtomicU64,
    pub(crate) reads_ok: AtomicU64,
    pub(crate) reads_failed: AtomicU64,
    pub(crate) batches_acked: AtomicU64,
    pub(crate) batch_retries: AtomicU64,
    /// Executions and cost (micro-dollars) of the acknowledged batches.
    pub(crate) executions_acked: AtomicI64,
    pub(crate) cost_acked: AtomicI64,
}

/// A small concurrent load on both instances: per instance two preference
/// writers (each owning one key), two readers (every key, plus a cold key
/// per read so every read also misses L1) and one analytics writer
/// (batches of 10, retried with the same ids until acknowledged).
pub(crate) struct Load {
    pub(crate) keys: Arc<Vec<Key>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) analytics_users: [UserId; 2],
    writers_run: Arc<AtomicBool>,
    others_run: Arc<AtomicBool>,
    writers: Vec<JoinHandle<()>>,
    others: Vec<JoinHandle<()>>,
}

impl Load {
    /// Creates the keys (through A, so each has a row) and starts the load.
    pub(crate) async fn start(a: &OpsDeck, b: &OpsDeck) -> Load {
        let keys: Vec<Key> = (0..4)
            .map(|i| Key {
                user: UserId::random(),
                acked: AtomicI64::new(0),
                writer: i % 2,
            })
            .collect();
        for key in &keys {
            let created = a
                .preferences()
                .update_operation_preference(key.user, update(0), None)
                .await
                .expect("create the key");
            key.acked.store(created.version, Ordering::SeqCst);
        }
        let keys = Arc::new(keys);
        let counters = Arc::new(Counters::default());
        let writers_run = Arc::new(AtomicBool::new(true));
        let others_run = Arc::new(AtomicBool::new(true));
        let decks = [a.clone(), b.clone()];
        let mut writers = Vec::new();
        for index in 0..keys.len() {
            writers.push(tokio::spawn(write_preferences(
                decks[keys[index].writer].clone(),
                keys.clone(),
                index,
                counters.clone(),
                writers_run.clone(),
            )));
        }
        let analytics_users = [UserId::random(), UserId::random()];
        let mut others = Vec::new();
        for (deck, user) in decks.iter().zip(analytics_users) {
            for _ in 0..2 {
                others.push(tokio::spawn(read_preferences(
                    deck.clone(),
                    keys.clone(),
                    counters.clone(),
                    others_run.clone(),
                )));
            }
            others.push(tokio::spawn(record_executions(
                deck.clone(),
                user,
                counters.clone(),
                others_run.clone(),
            )));
        }
        Load {
            keys,
            counters,
            analytics_users,
            writers_run,
            others_run,
            writers,
            others,
        }
    }

    /// Stops the preference writers and waits until their last operation
    /// settled: from then on every key's acknowledged version is final.
    pub(crate) async fn stop_writers(&mut self) {
        self.writers_run.store(false, Ordering::SeqCst);
        for writer in self.writers.drain(..) {
            writer.await.expect("writer task");
        }
    }

    /// Stops everything else; the analytics writers first get every batch
    /// they sent acknowledged (retrying), so the totals can be exact.
    pub(crate) async fn stop(mut self) {
        self.stop_writers().await;
        self.others_run.store(false, Ordering::SeqCst);
        for task in self.others.drain(..) {
            task.await.expect("load task");
        }
    }
}

fn update(seq: u64) -> PreferenceUpdate {
    PreferenceUpdate::new(OPERATION).settings(serde_json::json!({ "seq": seq }))
}

async fn write_preferences(
    deck: OpsDeck,
    keys: Arc<Vec<Key>>,
    index: usize,
    counters: Arc<Counters>,
    run: Arc<AtomicBool>,
) {
    let key = &keys[index];
    let mut seq = 0;
    while run.load(Ordering::SeqCst) {
        seq += 1;
        let started = Instant::now();
        let result = tokio::time::timeout(
            OP_TIMEOUT,
            deck.preferences()
                .update_operation_preference(key.user, update(seq), None),
        )
        .await;
        match result {
            Ok(Ok(saved)) => {
                key.acked.fetch_max(saved.version, Ordering::SeqCst);
                counters.writes_ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counters.writes_failed.fetch_add(1, Ordering::Relaxed);
                counters
                    .slowest_failed_write_ms
                    .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                // Do not spin on a dead service.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_preferences(
    deck: OpsDeck,
    keys: Arc<Vec<Key>>,
    counters: Arc<Counters>,
    run: Arc<AtomicBool>,
) {
    let mut next = 0;
    while run.load(Ordering::SeqCst) {
        next = (next + 1) % keys.len();
        for user in [keys[next].user, UserId::random()] {
            let read = tokio::time::timeout(
                OP_TIMEOUT,
                deck.preferences().get_operation_preference(user, OPERATION),
            )
            .await;
            match read {
                Ok(Ok(_)) => counters.reads_ok.fetch_add(1, Ordering::Relaxed),
                _ => counters.reads_failed.fetch_add(1, Ordering::Relaxed),
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn record_executions(
    deck: OpsDeck,
    user: UserId,
    counters: Arc<Counters>,
    run: Arc<AtomicBool>,
) {
    let mut n: i64 = 0;
    while run.load(Ordering::SeqCst) {
        let now = time::OffsetDateTime::now_utc();
        let batch: Vec<Execution> = (0..10)
            .map(|_| {
                n += 1;
                Execution::new(
                    user,
                    OPERATION.parse().expect("operation id"),
                    "vendor/model".parse().expect("model"),
                    now,
                )
                .tokens(10, 5)
                .cost(Money::from_micros(n % 97 + 1))
                .latency_ms(n % 500)
            })
            .collect();
        let cost: i64 = batch.iter().map(|e| e.cost.micros()).sum();
        // The same batch (same ids) until it is acknowledged: a retry of a
        // batch that was committed but not acknowledged must count once.
        // Past the load's end it still retries, for at most 20 s.
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let result =
                tokio::time::timeout(OP_TIMEOUT, deck.analytics().record_many(batch.clone())).await;
            if let Ok(Ok(_)) = result {
                counters.batches_acked.fetch_add(1, Ordering::Relaxed);
                counters.executions_acked.fetch_add(10, Ordering::SeqCst);
                counters.cost_acked.fetch_add(cost, Ordering::SeqCst);
                break;
            }
            counters.batch_retries.fetch_add(1, Ordering::Relaxed);
            assert!(
                Instant::now() < give_up,
                "an analytics batch was never acknowledged: {result:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after `back` each instance's writes succeed again (a probe
/// preference write on its own user every 20 ms, all instances at once).
pub(crate) async fn recovery(decks: &[&OpsDeck], back: Instant) -> Vec<Duration> {
    let probes: Vec<JoinHandle<Duration>> = decks
        .iter()
        .map(|deck| {
            let deck = (*deck).clone();
            tokio::spawn(async move {
                let user = UserId::random();
                loop {
                    let probe = tokio::time::timeout(
                        Duration::from_secs(1),
                        deck.preferences()
                            .update_operation_preference(user, update(1), None),
                    )
                    .await;
                    if let Ok(Ok(_)) = probe {
                        return back.elapsed();
                    }
                    assert!(
                        back.elapsed() < Duration::from_secs(20),
                        "writes never recovered: {probe:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    for probe in probes {
        times.push(probe.await.expect("recovery probe"));
    }
    times
}

/// What the coherence check saw after the heal.
#[derive(Debug)]
pub(crate) struct Coherence {
    /// When every instance first served, for every key, a version at least
    /// the last acknowledged one (`None`: not within the watch).
    pub(crate) coherent_after: Option<Duration>,
    /// Reads that returned an older version than acknowledged, after the
    /// bound.
    pub(crate) stale_after_bound: u64,
    /// All reads that returned an older version, from the heal on.
    pub(crate) stale_total: u64,
    /// Example of a stale read past the bound.
    pub(crate) example: Option<String>,
}

/// Watches both instances for `watch` after `healed`, reading every key
/// every 10 ms; the writers must be stopped (acknowledged versions final).
pub(crate) async fn coherence(
    decks: &[&OpsDeck],
    keys: &[Key],
    healed: Instant,
    watch: Duration,
) -> Coherence {
    let mut seen = Coherence {
        coherent_after: None,
        stale_after_bound: 0,
        stale_total: 0,
        example: None,
    };
    while healed.elapsed() < watch {
        let mut all_fresh = true;
        for (instance, deck) in decks.iter().enumerate() {
            for key in keys {
                let acked = key.acked.load(Ordering::SeqCst);
                let before = deck.preferences().cache_stats();
                let read = tokio::time::timeout(
                    OP_TIMEOUT,
                    deck.preferences()
                        .get_operation_preference(key.user, OPERATION),
                )
                .await;
                let served = match read {
                    Ok(Ok(Some(preference))) => preference.version,
                    // A failed read is not a stale read, but not fresh either.
                    _ => {
                        all_fresh = false;
                        continue;
                    }
                };
                if served < acked {
                    all_fresh = false;
                    seen.stale_total += 1;
                    if healed.elapsed() > COHERENCE_BOUND {
                        seen.stale_after_bound += 1;
                        seen.example.get_or_insert_with(|| {
                            let after = deck.preferences().cache_stats();
                            format!(
                                "instance {} served version {served} of a key acknowledged at \
                                 version {acked} (written by {}), {:?} after the heal; \
                                 from L1 {} L2 {} loaded {}; this instance applied {} \
                                 remote invalidations and {} resyncs so far",
                                ["A", "B"][instance],
                                ["A", "B"][key.writer],
                                healed.elapsed(),
                                after.l1_hits - before.l1_hits,
                                after.l2_hits - before.l2_hits,
                                after.loads - before.loads,
                                after.remote_invalidations,
                                after.resyncs,
                            )
                        });
                    }
                }
            }
        }
        if all_fresh && seen.coherent_after.is_none() {
            seen.coherent_after = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

/// The coherence property without a fault, under load: every instance
/// serves, within [`COHERENCE_BOUND`], for every key a version at least
/// the one the database holds now. Returns how long that took, or the
/// first (instance, key) that did not get there, with how far behind it
/// was.
pub(crate) async fn steady_coherence(
    decks: &[&OpsDeck],
    keys: &[Key],
    direct: &PgPool,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut targets = Vec::new();
    for key in keys {
        targets.push(stored_version(direct, key).await);
    }
    for (instance, deck) in decks.iter().enumerate() {
        for (key, &target) in keys.iter().zip(&targets) {
            loop {
                let served = deck
                    .preferences()
                    .get_operation_preference(key.user, OPERATION)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |p| p.version);
                if served >= target {
                    break;
                }
                if started.elapsed() > COHERENCE_BOUND {
                    return Err(format!(
                        "before any fault, instance {} still served version {served} of a key \
                         the database held at version {target} {:?} earlier (written by {}); \
                         its cache applied {} remote invalidations and {} resyncs",
                        ["A", "B"][instance],
                        started.elapsed(),
                        ["A", "B"][key.writer],
                        deck.preferences().cache_stats().remote_invalidations,
                        deck.preferences().cache_stats().resyncs,
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    Ok(started.elapsed())
}

async fn stored_version(direct: &PgPool, key: &Key) -> i64 {
    sqlx::query_scalar(
        "SELECT version FROM opsdeck.user_operation_preferences
         WHERE user_id = $1 AND operation_id = $2",
    )
    .bind(key.user)
    .bind(OPERATION)
    .fetch_one(direct)
    .await
    .expect("read a key back")
}

/// 0 acknowledged preference writes lost: the database holds, for every
/// key, at least the last acknowledged version. Returns how many keys were
/// checked.
pub(crate) async fn assert_no_write_lost(direct: &PgPool, keys: &[Key]) -> usize {
    for key in keys {
        let stored = stored_version(direct, key).await;
        let acked = key.acked.load(Ordering::SeqCst);
        assert!(
            stored >= acked,
            "an acknowledged write was lost: stored version {stored} < acknowledged {acked}"
        );
    }
    keys.len()
}

/// Analytics totals exact: the rollups hold exactly the acknowledged
/// batches (each once, retries included). Returns the executions.
pub(crate) async fn assert_totals_exact(
    direct: &PgPool,
    users: &[UserId],
    counters: &Counters,
) -> i64 {
    let (executions, cost): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(executions)::bigint, sum(cost_micros)::bigint
         FROM opsdeck.cost_trends WHERE user_id = ANY($1)",
    )
    .bind(users.to_vec())
    .fetch_one(direct)
    .await
    .expect("read the totals");
    let expected = counters.executions_acked.load(Ordering::SeqCst);
    assert_eq!(
        (executions.unwrap_or(0), cost.unwrap_or(0)),
        (expected, counters.cost_acked.load(Ordering::SeqCst)),
        "rollup totals must equal the acknowledged executions"
    );
    expected
}

/// Prints a scenario's figures (shown with `--nocapture`).
pub(crate) fn report(name: &str, load_counters: &Counters, figures: &[(&str, String)]) {
    let c = load_counters;
    let mut line = format!(
        "FAULTS {name}: writes ok {} failed {} (slowest failed {} ms); reads ok {} failed {}; \
         analytics batches {} (retries {}), executions {}",
        c.writes_ok.load(Ordering::Relaxed),
        c.writes_failed.load(Ordering::Relaxed),
        c.slowest_failed_write_ms.load(Ordering::Relaxed),
        c.reads_ok.load(Ordering::Relaxed),
        c.reads_failed.load(Ordering::Relaxed),
        c.batches_acked.load(Ordering::Relaxed),
        c.batch_retries.load(Ordering::Relaxed),
        c.executions_acked.load(Ordering::Relaxed),
    );
    for (what, value) in figures {
        line.push_str(&format!("; {what} {value}"));
    }
    eprintln!("{line}");
}
