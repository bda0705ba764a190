//! Analytics benchmarks (`cargo bench -p opsdeck-analytics --bench analytics`):
//!
//! 1. **batch vs single**: 10 000 executions through one `record_many` call
//!    vs one `record_operation_execution` call each (what the seed did);
//!    prints both throughputs and the ratio measured in this run.
//! 2. **hot key**: 16 concurrent writers recording into one (user,
//!    operation, model, day) vs 1 writer, through the single path and in
//!    batches of 100; prints the throughputs.
//! 3. **queries over 10M executions**: a 30-day cost trend and a 30-day
//!    model comparison for one user, through the repository (no cache),
//!    with 10 000 000 executions in the log; prints p50/p95.
//!
//! The benches use `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Parts 1 and 2 recreate a
//! scratch database `opsdeck_bench_analytics_writes` on every run. Part 3
//! builds `opsdeck_bench_analytics` once — one `INSERT … SELECT
//! generate_series` for the log and one `INSERT … SELECT … GROUP BY` for the
//! rollups, a few minutes — and reuses it while its marker table says it is
//! complete. **It takes about 2–3 GB of disk**; drop it with
//! `DROP DATABASE opsdeck_bench_analytics` when done. Without a database the
//! benches print a skip message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use opsdeck_analytics::{
    AnalyticsRepository, DateRange, Execution, Granularity, Money, PgAnalyticsRepository,
    TrendQuery,
};
use opsdeck_core::{ModelRef, OperationId, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use time::{Date, OffsetDateTime};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const WRITES_DB: &str = "opsdeck_bench_analytics_writes";
const DATASET_DB: &str = "opsdeck_bench_analytics";
const DATASET_ROWS: i64 = 10_000_000;
/// The user the query bench reads: every tenth execution is theirs.
const BIG_USER: &str = "00000000-0000-0000-0000-0000000000b1";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The server's connect options, or `None` (with a message) without one.
async fn server() -> Option<PgConnectOptions> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let options: PgConnectOptions = match url.parse() {
        Ok(options) => options,
        Err(e) => {
            println!("analytics benches skipped: DATABASE_URL is invalid ({e})");
            return None;
        }
    };
    let reachable = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options.clone())
        .await;
    match reachable {
        Ok(pool) => {
            pool.close().await;
            Some(options.disable_statement_logging())
        }
        Err(e) => {
            println!("analytics benches skipped: no database at {url} ({e})");
            None
        }
    }
}

async fn admin(options: &PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .expect("connect to the server")
}

async fn recreate(options: &PgConnectOptions, name: &'static str) -> PgPool {
    let admin = admin(options).await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .expect("create a bench database");
    }
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options.clone().database(name))
        .await
        .expect("connect to the bench database");
    MIGRATOR
        .run(&pool)
        .await
        .expect("migrate the bench database");
    pool
}

fn op(s: &str) -> OperationId {
    s.parse().expect("valid operation id")
}

fn model(s: &str) -> ModelRef {
    s.parse().expect("valid model")
}

/// `n` fresh executions of `user`, all on one (operation, model, day).
fn executions(user: UserId, n: usize) -> Vec<Execution> {
    let at = OffsetDateTime::now_utc() - Duration::from_secs(60);
    (0..n)
        .map(|i| {
            Execution::new(
                user,
                op("summarize"),
                model("anthropic/claude-sonnet-4"),
                at,
            )
            .tokens(1_000 + i as i64 % 500, 200)
            .cost(Money::from_micros(2_000 + i as i64 % 97))
            .latency_ms(200 + (i as i64 * 7919) % 3_000)
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(samples: &mut [Duration], per_mille: usize) -> Duration {
    samples.sort();
    let rank = (samples.len() * per_mille).div_ceil(1000).max(1);
    samples[rank - 1]
}

/// A runtime and a freshly migrated scratch database for the write benches.
fn write_bench() -> Option<(tokio::runtime::Runtime, PgPool, PgAnalyticsRepository)> {
    let rt = runtime();
    let options = rt.block_on(server())?;
    let pool = rt.block_on(recreate(&options, WRITES_DB));
    let repo = PgAnalyticsRepository::new(pool.clone());
    Some((rt, pool, repo))
}

fn per_second(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Part 1: one statement per 10k vs one round trip per execution.
fn batch_vs_single(c: &mut Criterion) {
    let Some((rt, pool, repo)) = write_bench() else {
        return;
    };
    const N: usize = 10_000;

    let (batch, single) = rt.block_on(async {
        let mut batch = Vec::new();
        for _ in 0..7 {
            let runs = executions(UserId::random(), N);
            let started = Instant::now();
            let summary = repo.record_many(runs).await.expect("record_many");
            batch.push(started.elapsed());
            assert_eq!(summary.recorded, N as u64);
        }
        let runs = executions(UserId::random(), N);
        let started = Instant::now();
        for run in runs {
            repo.record_operation_execution(run).await.expect("record");
        }
        (median(batch), started.elapsed())
    });
    println!(
        "analytics: record_many of {N}: {:.1} ms (median of 7) = {:.0} executions/s",
        batch.as_secs_f64() * 1e3,
        per_second(N, batch)
    );
    println!(
        "analytics: {N} x record_operation_execution: {:.2} s = {:.0} executions/s",
        single.as_secs_f64(),
        per_second(N, single)
    );
    println!(
        "analytics: record_many is {:.1}x faster than one call per execution",
        single.as_secs_f64() / batch.as_secs_f64()
    );

    let mut group = c.benchmark_group("analytics_write");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    group.bench_function("record_many_10k", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let repo = repo.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let runs = executions(UserId::random(), N);
                    let started = Instant::now();
                    repo.record_many(runs).await.expect("record_many");
                    total += started.elapsed();
                }
                total
            }
        });
    });
    group.finish();
    rt.block_on(pool.close());
}

/// Records into one key from `writers` tasks for `for_how_long`; returns
/// executions per second.
async fn hot_key_throughput(
    repo: &PgAnalyticsRepository,
    writers: usize,
    batch: usize,
    for_how_long: Duration,
) -> f64 {
    let user = UserId::random();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + for_how_long;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (repo, done) = (repo.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let runs = executions(user, batch);
                if batch == 1 {
                    repo.record_operation_execution(runs.into_iter().next().expect("one"))
                        .await
                        .expect("record");
                } else {
                    repo.record_many(runs).await.expect("record_many");
                }
                done.fetch_add(batch as u64, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Part 2: concurrent writers of one rollup key.
fn hot_key(_c: &mut Criterion) {
    let Some((rt, pool, repo)) = write_bench() else {
        return;
    };
    for (path, batch) in [("single path", 1), ("batches of 100", 100)] {
        let (one, sixteen) = rt.block_on(async {
            let one = hot_key_throughput(&repo, 1, batch, Duration::from_secs(3)).await;
            let sixteen = hot_key_throughput(&repo, 16, batch, Duration::from_secs(3)).await;
            (one, sixteen)
        });
        println!(
            "analytics: one key, {path}: 1 writer {one:.0} executions/s, 16 writers {sixteen:.0} executions/s ({:.2}x)",
            sixteen / one
        );
    }
    rt.block_on(pool.close());
}

/// Part 3's dataset: reused when its marker says it is complete.
async fn dataset(options: &PgConnectOptions) -> (PgPool, Date) {
    let connect = || {
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().database(DATASET_DB))
    };
    if let Ok(pool) = connect().await {
        let marker: Result<(i64, Date), _> =
            sqlx::query_as("SELECT executions, built_on FROM public.opsdeck_bench_marker")
                .fetch_one(&pool)
                .await;
        if let Ok((DATASET_ROWS, built_on)) = marker {
            println!("analytics: reusing the {DATASET_ROWS}-execution dataset built on {built_on}");
            return (pool, built_on);
        }
        pool.close().await;
    }
    println!("analytics: building the {DATASET_ROWS}-execution dataset (once; 2-3 GB)...");
    let started = Instant::now();
    let pool = recreate(options, DATASET_DB).await;
    let mut conn = pool.acquire().await.expect("connection");
    for sql in [
        "SET synchronous_commit = off",
        "SET work_mem = '256MB'",
        "SET maintenance_work_mem = '512MB'",
        "SELECT count(*) FROM opsdeck.create_execution_partitions(
             (now() AT TIME ZONE 'UTC')::date - 100, 5)",
        // Loading first and indexing after is faster than 10M index inserts.
        "ALTER TABLE opsdeck.operation_executions DROP CONSTRAINT operation_executions_pkey",
        include_str!("generate_executions.sql"),
        "ALTER TABLE opsdeck.operation_executions
             ADD CONSTRAINT operation_executions_pkey PRIMARY KEY (user_id, executed_at, execution_id)",
        include_str!("build_rollups.sql"),
        "VACUUM (ANALYZE) opsdeck.cost_trends",
        "ANALYZE opsdeck.operation_executions",
        "CREATE TABLE public.opsdeck_bench_marker AS
             SELECT count(*) AS executions, (now() AT TIME ZONE 'UTC')::date AS built_on
             FROM opsdeck.operation_executions",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("building the dataset failed at {sql:.60}…: {e}"));
    }
    drop(conn);
    let built_on: Date = sqlx::query_scalar("SELECT built_on FROM public.opsdeck_bench_marker")
        .fetch_one(&pool)
        .await
        .expect("marker");
    println!(
        "analytics: dataset built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    (pool, built_on)
}

/// Part 3: dashboard queries for one user over 30 days, 10M executions.
fn queries_over_ten_million(c: &mut Criterion) {
    let rt = runtime();
    let Some(options) = rt.block_on(server()) else {
        return;
    };
    let (pool, built_on) = rt.block_on(dataset(&options));
    let repo = PgAnalyticsRepository::new(pool.clone());
    let user: UserId = BIG_USER.parse().expect("uuid");
    let range = DateRange::days_ending(built_on, 30).expect("range");
    let trend = TrendQuery::new(range, Granularity::Day);
    let operation = op("op0");

    let (trend_samples, comparison_samples, both_samples, rows) = rt.block_on(async {
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM opsdeck.cost_trends WHERE user_id = $1 AND day >= $2 AND day < $3",
        )
        .bind(user)
        .bind(range.start())
        .bind(range.end())
        .fetch_one(&pool)
        .await
        .expect("count");
        let (mut t, mut m, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..520 {
            let started = Instant::now();
            let points = repo.cost_trend(user, &trend).await.expect("cost trend");
            let after_trend = Instant::now();
            let models = repo
                .model_comparison(user, &operation, range)
                .await
                .expect("model comparison");
            let done = Instant::now();
            assert_eq!((points.len(), models.len()), (30, 4));
            if i >= 20 {
                // The first calls warm the caches and prepare the statements.
                t.push(after_trend - started);
                m.push(done - after_trend);
                b.push(done - started);
            }
        }
        (t, m, b, rows)
    });
    for (name, mut samples) in [
        ("cost trend (30 days, daily)", trend_samples),
        ("model comparison (30 days)", comparison_samples),
        ("cost trend + model comparison", both_samples),
    ] {
        println!(
            "analytics: 10M executions, {rows} rollup rows of the user in range: {name}: p50 {:.2} ms, p95 {:.2} ms",
            percentile(&mut samples, 500).as_secs_f64() * 1e3,
            percentile(&mut samples, 950).as_secs_f64() * 1e3
        );
    }

    let mut group = c.benchmark_group("analytics_queries_10m");
    group.bench_function("cost_trend_30d", |b| {
        b.to_async(&rt)
            .iter(|| async { repo.cost_trend(user, &trend).await.expect("cost trend") });
    });
    group.bench_function("model_comparison_30d", |b| {
        b.to_async(&rt).iter(|| async {
            repo.model_comparison(user, &operation, range)
                .await
                .expect("model comparison")
        });
    });
    group.finish();
    rt.block_on(pool.close());
}

criterion_group!(benches, batch_vs_single, hot_key, queries_over_ten_million);
criterion_main!(benches);
