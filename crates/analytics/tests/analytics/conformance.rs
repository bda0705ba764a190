//! The conformance suite on both backends and on the cached stack over
//! each, and the schema's own guards.

use opsdeck_analytics::testing;
use opsdeck_analytics::{
    AnalyticsConfig, AnalyticsRepository, Cached, InMemoryAnalyticsRepository,
    LATENCY_BUCKET_BOUNDS, LatencyHistogram, MAX_BATCH, PgAnalyticsRepository,
};
use opsdeck_cache::Tiers;
use sqlx::PgPool;

/// `repo` behind the metrics cache, as `AnalyticsService` stacks it.
fn cached<R: AnalyticsRepository>(repo: R) -> Cached<R> {
    Cached::new(repo, &AnalyticsConfig::default(), Tiers::none())
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_passes_the_suite(pool: PgPool) {
    testing::run_all(&PgAnalyticsRepository::new(pool)).await;
}

/// Reports on a read pool (here a second pool on the same server, which is
/// not in recovery and so always current) keep the contract.
#[sqlx::test(migrations = "../../migrations")]
async fn postgres_with_a_read_pool_passes_the_suite(pool: PgPool) {
    let repo = PgAnalyticsRepository::new(pool.clone()).with_read_pool(pool);
    testing::run_all(&repo).await;
    let stats = repo.replica_stats();
    assert!(stats.replica_reads > 0, "{stats:?}");
    assert_eq!(
        stats.lagging_fallbacks + stats.error_fallbacks,
        0,
        "{stats:?}"
    );
}

/// An unreachable read replica costs nothing but the fallback: reports come
/// from the primary, the replica is skipped for a cooldown after a failure.
#[sqlx::test(migrations = "../../migrations")]
async fn a_dead_read_replica_falls_back_to_the_primary(pool: PgPool) {
    let dead = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(300))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    let repo = PgAnalyticsRepository::new(pool).with_read_pool(dead);
    let user = opsdeck_core::UserId::random();
    repo.record_many(testing::batch_of(user, "summarize", "m/a", 1, 10, 0, 7))
        .await
        .unwrap();
    let range = testing::last_days(3);
    for _ in 0..3 {
        let summary = repo
            .period_summary(user, &opsdeck_analytics::RollupFilter::new(range))
            .await
            .unwrap();
        assert_eq!(summary.totals.executions, 10);
    }
    let stats = repo.replica_stats();
    assert_eq!(stats.replica_reads, 0, "{stats:?}");
    assert_eq!(stats.error_fallbacks, 3, "{stats:?}");
    assert_eq!(
        PgAnalyticsRepository::new(repo.pool().clone()).replica_stats(),
        Default::default()
    );
}

#[tokio::test]
async fn in_memory_passes_the_suite() {
    testing::run_all(&InMemoryAnalyticsRepository::new()).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_retention(pool: PgPool) {
    testing::retention_forgets_old_executions_but_keeps_rollups(&PgAnalyticsRepository::new(pool))
        .await;
}

#[tokio::test]
async fn in_memory_retention() {
    testing::retention_forgets_old_executions_but_keeps_rollups(&InMemoryAnalyticsRepository::new())
        .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn conformance_pg_cached(pool: PgPool) {
    testing::run_all(&cached(PgAnalyticsRepository::new(pool))).await;
}

#[tokio::test]
async fn conformance_in_memory_cached() {
    testing::run_all(&cached(InMemoryAnalyticsRepository::new())).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn retention_pg_cached(pool: PgPool) {
    testing::retention_forgets_old_executions_but_keeps_rollups(&cached(
        PgAnalyticsRepository::new(pool),
    ))
    .await;
}

#[tokio::test]
async fn retention_in_memory_cached() {
    testing::retention_forgets_old_executions_but_keeps_rollups(&cached(
        InMemoryAnalyticsRepository::new(),
    ))
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_expiry(pool: PgPool) {
    testing::stale_recommendations_expire_before_a_cutoff(&PgAnalyticsRepository::new(pool)).await;
}

#[tokio::test]
async fn in_memory_expiry() {
    testing::stale_recommendations_expire_before_a_cutoff(&InMemoryAnalyticsRepository::new())
        .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn expiry_pg_cached(pool: PgPool) {
    testing::stale_recommendations_expire_before_a_cutoff(&cached(PgAnalyticsRepository::new(
        pool,
    )))
    .await;
}

#[tokio::test]
async fn expiry_in_memory_cached() {
    testing::stale_recommendations_expire_before_a_cutoff(&cached(
        InMemoryAnalyticsRepository::new(),
    ))
    .await;
}

/// SQL and Rust bucket latencies identically: same bounds, same histogram.
#[sqlx::test(migrations = "../../migrations")]
async fn histogram_buckets_match_the_database(pool: PgPool) {
    let bounds: Vec<i32> = sqlx::query_scalar("SELECT opsdeck.latency_bucket_bounds()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rust: Vec<i32> = LATENCY_BUCKET_BOUNDS.iter().map(|&b| b as i32).collect();
    assert_eq!(bounds, rust);

    // Every bound, its neighbours, and a spread of odd values.
    let mut latencies: Vec<i32> = Vec::new();
    for &bound in &LATENCY_BUCKET_BOUNDS {
        let bound = bound as i32;
        latencies.extend([bound, bound + 1, (bound - 1).max(0)]);
    }
    latencies.extend((0..2000).map(|i| (i * i * 37) % 3_000_000));
    latencies.push(86_400_000);
    let counts: Vec<i64> = sqlx::query_scalar("SELECT opsdeck.latency_histogram($1)")
        .bind(&latencies)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut histogram = LatencyHistogram::new();
    latencies.iter().for_each(|&ms| histogram.record(ms as u32));
    assert_eq!(counts, histogram.to_counts());
}

/// One direct call of the SQL function with one bad argument.
struct BadCall {
    operation: &'static str,
    model: &'static str,
    input_tokens: i64,
    cost_micros: i64,
    success: bool,
    error_kind: Option<&'static str>,
    in_the_future: bool,
    constraint: &'static str,
}

impl BadCall {
    /// A valid call, refused only through what the test changes.
    fn refused_by(constraint: &'static str) -> Self {
        BadCall {
            operation: "summarize",
            model: "a/m",
            input_tokens: 1,
            cost_micros: 5,
            success: true,
            error_kind: None,
            in_the_future: false,
            constraint,
        }
    }
}

/// A client calling the SQL function directly (bypassing the Rust checks)
/// meets the same rules, reported under named constraints, and nothing is
/// written.
#[sqlx::test(migrations = "../../migrations")]
async fn the_sql_function_refuses_bad_input_by_name(pool: PgPool) {
    let call = "SELECT opsdeck.record_operation_execution(
        gen_random_uuid(), gen_random_uuid(), $1, $2, $3, 10, $4, 100, $5, $6, $7)";
    let cases = [
        BadCall {
            input_tokens: -1,
            ..BadCall::refused_by("operation_executions_input_tokens_check")
        },
        BadCall {
            cost_micros: -5,
            ..BadCall::refused_by("operation_executions_cost_micros_check")
        },
        BadCall {
            operation: "Bad Op",
            ..BadCall::refused_by("cost_trends_operation_id_check")
        },
        BadCall {
            model: "no-slash",
            ..BadCall::refused_by("cost_trends_model_check")
        },
        BadCall {
            success: false,
            error_kind: Some("Bad Kind"),
            ..BadCall::refused_by("operation_executions_error_kind_check")
        },
        BadCall {
            error_kind: Some("timeout"),
            ..BadCall::refused_by("operation_executions_outcome_check")
        },
        BadCall {
            in_the_future: true,
            ..BadCall::refused_by("operation_executions_executed_at_future_check")
        },
    ];
    for case in cases {
        let mut executed_at = time::OffsetDateTime::now_utc();
        if case.in_the_future {
            executed_at += std::time::Duration::from_secs(3600);
        }
        let err = sqlx::query(call)
            .bind(case.operation)
            .bind(case.model)
            .bind(case.input_tokens)
            .bind(case.cost_micros)
            .bind(case.success)
            .bind(case.error_kind)
            .bind(executed_at)
            .execute(&pool)
            .await
            .expect_err(case.constraint);
        let db = err.as_database_error().expect("a database error");
        assert!(db.is_check_violation(), "{}: {db}", case.constraint);
        assert_eq!(db.constraint(), Some(case.constraint), "{db}");
    }
    // The SQL function's batch limit is the Rust one.
    let oversized = format!(
        "SELECT opsdeck.record_operation_executions(
             array_agg(gen_random_uuid()), array_agg(gen_random_uuid()), array_agg('op'::text),
             array_agg('a/m'::text), array_agg(1::bigint), array_agg(1::bigint), array_agg(1::bigint),
             array_agg(1), array_agg(true), array_agg(NULL::text), array_agg(now()))
         FROM generate_series(1, {})",
        MAX_BATCH + 1
    );
    let err = sqlx::query(sqlx::AssertSqlSafe(oversized))
        .execute(&pool)
        .await
        .unwrap_err();
    let db = err.as_database_error().unwrap();
    assert_eq!(
        db.constraint(),
        Some("record_operation_executions_batch_size"),
        "{db}"
    );

    for table in ["operation_executions", "cost_trends", "execution_ids"] {
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM opsdeck.{table}"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(rows, 0, "{table} must be empty");
    }
}
