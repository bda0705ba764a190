//! Percentiles from rollup histograms against exact percentiles of the raw
//! rows (computed by PostgreSQL from the log, which reports never read).

use opsdeck_analytics::testing::{execution, last_days, op};
use opsdeck_analytics::{
    AnalyticsRepository, LATENCY_BUCKETS, LatencyHistogram, PgAnalyticsRepository, RollupFilter,
};
use opsdeck_core::UserId;
use sqlx::PgPool;

/// A deterministic, heavy-tailed latency (1 ms to ~2 minutes).
fn latency(seed: &mut u64) -> i64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let uniform = (*seed >> 11) as f64 / (1u64 << 53) as f64;
    (2f64.powf(uniform * 17.0) * (1.0 + uniform)).round() as i64
}

fn assert_within_one_bucket(what: &str, estimate: Option<u32>, exact: i32) {
    let estimate = estimate.expect("data present");
    let exact = u32::try_from(exact).unwrap();
    let (bucket, exact_bucket) = (
        LatencyHistogram::bucket_of(estimate),
        LatencyHistogram::bucket_of(exact),
    );
    assert_eq!(
        bucket, exact_bucket,
        "{what}: estimate {estimate} vs exact {exact}"
    );
    if bucket < LATENCY_BUCKETS - 1 {
        let (lower, upper) = LatencyHistogram::bucket_range(bucket).unwrap();
        assert!(
            estimate >= exact && estimate < upper.unwrap() && exact >= lower,
            "{what}"
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn percentiles_are_within_one_bucket_of_the_exact_value(pool: PgPool) {
    let repo = PgAnalyticsRepository::new(pool.clone());
    let user = UserId::random();
    let mut seed = 42;
    let models = ["a/fast", "b/medium", "c/slow"];
    let runs: Vec<_> = (0..6000)
        .map(|i| {
            let scale = (i % 3) as i64 + 1;
            execution(
                user,
                "summarize",
                models[i % 3],
                (i % 7) as i64,
                10,
                latency(&mut seed) * scale,
            )
        })
        .collect();
    for part in runs.chunks(2000) {
        repo.record_many(part.to_vec()).await.unwrap();
    }
    let range = last_days(7);
    let exact = |model: Option<&'static str>| {
        let pool = pool.clone();
        async move {
            let row: Vec<i32> = sqlx::query_scalar(
                "SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
                 FROM opsdeck.operation_executions
                 WHERE user_id = $1 AND ($2::text IS NULL OR model = $2)",
            )
            .bind(user)
            .bind(model)
            .fetch_one(&pool)
            .await
            .unwrap();
            row
        }
    };
    let stats = repo
        .model_comparison(user, &op("summarize"), range)
        .await
        .unwrap();
    assert_eq!(stats.len(), 3);
    for s in &stats {
        let model = models.iter().find(|m| **m == s.model.as_str()).copied();
        let e = exact(model).await;
        assert_within_one_bucket(&format!("{model:?} p50"), s.latency.p50, e[0]);
        assert_within_one_bucket(&format!("{model:?} p95"), s.latency.p95, e[1]);
        assert_within_one_bucket(&format!("{model:?} p99"), s.latency.p99, e[2]);
    }
    let summary = repo
        .period_summary(user, &RollupFilter::new(range))
        .await
        .unwrap();
    let e = exact(None).await;
    assert_within_one_bucket("all p50", summary.latency.p50, e[0]);
    assert_within_one_bucket("all p95", summary.latency.p95, e[1]);
    assert_within_one_bucket("all p99", summary.latency.p99, e[2]);
    assert_eq!(summary.totals.executions, 6000);
}
