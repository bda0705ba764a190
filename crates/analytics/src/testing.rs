//! The conformance suite every [`AnalyticsRepository`] backend must pass.
//!
//! Each check creates its own random users, so checks can share one
//! database and run in any order — except
//! [`retention_forgets_old_executions_but_keeps_rollups`], which moves the
//! backend's global retention horizon, and
//! [`stale_recommendations_expire_before_a_cutoff`], which expires every
//! user's active recommendations: each needs a backend of its own.
//! Backends call [`run_all`] (and the retention check on a fresh backend)
//! from their integration tests, and so does the [`crate::Cached`] stack
//! over each backend; see `tests/analytics/`.
//!
//! All data is placed relative to yesterday (UTC), so every timestamp is in
//! the past whatever the time of day the suite runs. The checks panic with
//! a message on failure, like assertions in a test.

use std::collections::BTreeMap;
use std::time::Duration;

use opsdeck_core::{ModelRef, OperationId, UserId};
use time::{Date, Duration as Days, OffsetDateTime};

use crate::{
    AnalyticsRepository, AnalyticsRepositoryExt, Breach, DateRange, Error, ErrorKind, Execution,
    Finding, Granularity, LatencyHistogram, MAX_BATCH, Money, RecommendationStatus,
    RecommendationThresholds, RecommendedAction, Resolution, RollupFilter, SlaTarget, SuccessRate,
    Totals, TrendQuery,
};

/// A valid operation id (panics on a typo in a test).
pub fn op(s: &str) -> OperationId {
    OperationId::parse(s).expect("valid operation id in test")
}

/// A valid model reference (panics on a typo in a test).
pub fn model(s: &str) -> ModelRef {
    ModelRef::parse(s).expect("valid model reference in test")
}

/// Yesterday, UTC: the suite's anchor day.
pub fn anchor() -> Date {
    OffsetDateTime::now_utc().date() - Days::days(1)
}

/// Noon UTC of the day `days_before` days before [`anchor`].
pub fn noon(days_before: i64) -> OffsetDateTime {
    (anchor() - Days::days(days_before))
        .with_time(time::macros::time!(12:00))
        .assume_utc()
}

/// A successful execution of `user` at noon `days_before` days before the
/// anchor, with some tokens, a cost and a latency.
pub fn execution(
    user: UserId,
    operation: &str,
    model_ref: &str,
    days_before: i64,
    cost_micros: i64,
    latency_ms: i64,
) -> Execution {
    Execution::new(user, op(operation), model(model_ref), noon(days_before))
        .tokens(100 + latency_ms % 7, 20 + cost_micros % 5)
        .cost(Money::from_micros(cost_micros))
        .latency_ms(latency_ms)
}

/// `n` executions of one (operation, model, day), `failures` of them failed.
pub fn batch_of(
    user: UserId,
    operation: &str,
    model_ref: &str,
    days_before: i64,
    n: usize,
    failures: usize,
    cost_micros: i64,
) -> Vec<Execution> {
    (0..n)
        .map(|i| {
            let run = execution(
                user,
                operation,
                model_ref,
                days_before,
                cost_micros,
                50 + i as i64,
            );
            if i < failures {
                run.failed(ErrorKind::parse("timeout").expect("valid kind"))
            } else {
                run
            }
        })
        .collect()
}

/// Sums executions the way a rollup must.
pub fn totals_of<'a>(executions: impl IntoIterator<Item = &'a Execution>) -> Totals {
    let mut totals = Totals::default();
    for e in executions {
        let success = i64::from(e.is_success());
        totals.add(&Totals {
            executions: 1,
            successes: success,
            failures: 1 - success,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cost: e.cost,
            latency_ms_sum: e.latency_ms,
        });
    }
    totals
}

/// The histogram of executions' latencies.
pub fn histogram_of<'a>(executions: impl IntoIterator<Item = &'a Execution>) -> LatencyHistogram {
    let mut histogram = LatencyHistogram::new();
    for e in executions {
        histogram.record(u32::try_from(e.latency_ms).expect("test latency fits"));
    }
    histogram
}

/// Panics unless `result` is a [`Error::Validation`] of `field` at batch
/// position `item` (`None`: not a batch).
pub fn assert_invalid<T: std::fmt::Debug>(
    result: crate::Result<T>,
    field: &str,
    item: Option<usize>,
) {
    match result {
        Err(Error::Validation(v)) if v.field == field && v.item == item => {}
        other => panic!("expected invalid {field} at {item:?}, got {other:?}"),
    }
}

/// The days `[anchor − days + 1, anchor]`.
pub fn last_days(days: u32) -> DateRange {
    DateRange::days_ending(anchor(), days).expect("valid test range")
}

/// The last 30 days through the day after tomorrow: wide enough that a
/// wrongly written future-dated execution would show up in "nothing was
/// written" checks.
pub fn around_now() -> DateRange {
    DateRange::days_ending(OffsetDateTime::now_utc().date() + Days::days(2), 33)
        .expect("valid test range")
}

/// Runs every check except the retention one against `repo`.
pub async fn run_all(repo: &dyn AnalyticsRepository) {
    records_and_reads_back(repo).await;
    retries_count_once(repo).await;
    bad_input_writes_nothing(repo).await;
    empty_batch_is_a_no_op(repo).await;
    users_are_isolated(repo).await;
    cost_trend_buckets_and_filters(repo).await;
    summary_and_model_comparison(repo).await;
    sla_report_tracks_targets_breaches_and_budget(repo).await;
    cheaper_model_is_recommended(repo).await;
    cheaper_model_needs_samples_and_reliability(repo).await;
    rising_cost_is_recommended_only_when_faster_than_usage(repo).await;
    failing_model_is_recommended_above_threshold(repo).await;
    recommendation_lifecycle(repo).await;
    recommendations_no_longer_found_expire(repo).await;
    reads_follow_writes(repo).await;
}

/// What is recorded reads back: the log rows and the daily rollups, exactly.
pub async fn records_and_reads_back(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let runs = vec![
        execution(
            user,
            "summarize",
            "anthropic/claude-sonnet-4",
            2,
            1_500,
            640,
        ),
        execution(
            user,
            "summarize",
            "anthropic/claude-sonnet-4",
            2,
            2_500,
            9_000,
        )
        .failed(ErrorKind::parse("rate_limited").unwrap()),
        execution(user, "translate", "deepseek/deepseek-chat", 1, 300, 3),
    ];
    for run in &runs {
        assert!(
            repo.record_operation_execution(run.clone()).await.unwrap(),
            "first time is new"
        );
    }
    let mut logged = repo.executions(user, last_days(5), 100).await.unwrap();
    logged.sort_by_key(|e| (e.executed_at, e.execution_id));
    let mut expected = runs.clone();
    expected.sort_by_key(|e| (e.executed_at, e.execution_id));
    assert_eq!(logged, expected, "the log holds exactly what was recorded");
    assert_eq!(
        repo.executions(user, last_days(5), 1).await.unwrap().len(),
        1,
        "limit"
    );

    let rollups = repo
        .daily_rollups(user, &RollupFilter::new(last_days(5)))
        .await
        .unwrap();
    assert_eq!(rollups.len(), 2, "one rollup per (operation, model, day)");
    let summarize = &rollups[0];
    assert_eq!(
        (summarize.operation_id.as_str(), summarize.day),
        ("summarize", runs[0].day())
    );
    assert_eq!(summarize.totals, totals_of(&runs[..2]));
    assert_eq!(summarize.totals.cost, Money::from_micros(4_000));
    assert_eq!(
        (summarize.totals.successes, summarize.totals.failures),
        (1, 1)
    );
    assert_eq!(summarize.histogram, histogram_of(&runs[..2]));
    assert_eq!(rollups[1].totals, totals_of(&runs[2..]));
}

/// Replays through either path — singly, in batches, repeated inside a
/// batch, with a changed payload — are counted once; the first write wins.
pub async fn retries_count_once(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let runs: Vec<Execution> = (0..50)
        .map(|i| {
            execution(
                user,
                "classify",
                "openai/gpt-4o-mini",
                i % 3,
                100 + i,
                10 + i,
            )
        })
        .collect();
    let first = repo.record_many(runs.clone()).await.unwrap();
    assert_eq!(
        (first.received, first.recorded, first.duplicates),
        (50, 50, 0)
    );
    let again = repo.record_many(runs.clone()).await.unwrap();
    assert_eq!(
        (again.recorded, again.duplicates),
        (0, 50),
        "a replayed batch adds nothing"
    );
    for run in &runs[..5] {
        assert!(
            !repo.record_operation_execution(run.clone()).await.unwrap(),
            "a single retry adds nothing"
        );
    }
    let changed = runs[7].clone().cost(Money::from_micros(999_999));
    assert!(
        !repo.record_operation_execution(changed).await.unwrap(),
        "same id, other payload: still a retry"
    );

    let fresh: Vec<Execution> = (0..10)
        .map(|i| execution(user, "classify", "openai/gpt-4o-mini", 0, 7, 70 + i))
        .collect();
    let mut mixed = runs[..20].to_vec();
    mixed.extend(fresh.iter().cloned());
    mixed.push(fresh[0].clone().cost(Money::from_micros(123_456))); // repeated in the batch
    let summary = repo.record_many(mixed).await.unwrap();
    assert_eq!(
        (summary.received, summary.recorded, summary.duplicates),
        (31, 10, 21)
    );

    let all: Vec<&Execution> = runs.iter().chain(fresh.iter()).collect();
    let rollups = repo
        .daily_rollups(user, &RollupFilter::new(last_days(5)))
        .await
        .unwrap();
    let mut stored = Totals::default();
    rollups.iter().for_each(|r| stored.add(&r.totals));
    assert_eq!(
        stored,
        totals_of(all.iter().copied()),
        "each execution counted once, first payload"
    );
    assert_eq!(
        repo.executions(user, last_days(5), 1000)
            .await
            .unwrap()
            .len(),
        60
    );
}

/// Negative tokens or cost, out-of-range latency, future timestamps and
/// oversized batches are typed errors naming the field, and write nothing.
pub async fn bad_input_writes_nothing(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let good = || execution(user, "summarize", "anthropic/claude-sonnet-4", 1, 100, 100);
    let mut future = good();
    future.executed_at = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    let cases: Vec<(Execution, &str)> = vec![
        (good().tokens(-1, 5), "input_tokens"),
        (good().tokens(5, -1), "output_tokens"),
        (good().cost(Money::from_micros(-1)), "cost"),
        (good().latency_ms(-3), "latency_ms"),
        (future, "executed_at"),
    ];
    for (bad, field) in cases {
        let batch = vec![good(), good(), bad.clone(), good()];
        assert_invalid(repo.record_many(batch).await, field, Some(2));
        assert_invalid(repo.record_operation_execution(bad).await, field, None);
    }
    let oversized: Vec<Execution> = (0..=MAX_BATCH).map(|_| good()).collect();
    let err = repo.record_many(oversized).await.unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { len, max } if len == MAX_BATCH + 1 && max == MAX_BATCH),
        "{err:?}"
    );
    assert!(
        repo.executions(user, around_now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "no log row"
    );
    let rollups = repo
        .daily_rollups(user, &RollupFilter::new(around_now()))
        .await
        .unwrap();
    assert!(rollups.is_empty(), "no rollup: {rollups:?}");
}

/// An empty batch writes nothing and reports nothing.
pub async fn empty_batch_is_a_no_op(repo: &dyn AnalyticsRepository) {
    let summary = repo.record_many(Vec::new()).await.unwrap();
    assert_eq!(
        (summary.received, summary.recorded, summary.duplicates),
        (0, 0, 0)
    );
}

/// No read of user A sees user B's data, even with the same execution ids.
pub async fn users_are_isolated(repo: &dyn AnalyticsRepository) {
    let (a, b) = (UserId::random(), UserId::random());
    let run_b = execution(b, "shared", "x/model", 1, 500, 20);
    let mut run_a = execution(a, "shared", "x/model", 1, 700, 30);
    run_a.execution_id = run_b.execution_id; // ids are scoped by user
    assert!(repo.record_operation_execution(run_b).await.unwrap());
    assert!(
        repo.record_operation_execution(run_a).await.unwrap(),
        "the same id of another user is new"
    );
    for (user, cost) in [(a, 700), (b, 500)] {
        let summary = repo
            .period_summary(user, &RollupFilter::new(last_days(3)))
            .await
            .unwrap();
        assert_eq!(summary.totals.executions, 1);
        assert_eq!(summary.totals.cost, Money::from_micros(cost));
        assert_eq!(
            repo.executions(user, last_days(3), 10).await.unwrap().len(),
            1
        );
    }
    repo.set_sla_target(
        b,
        SlaTarget::new(op("shared"), SuccessRate::from_ppm(0).unwrap(), 5).unwrap(),
    )
    .await
    .unwrap();
    assert!(repo.sla_targets(a).await.unwrap().is_empty());
    assert!(!repo.delete_sla_target(a, &op("shared")).await.unwrap());
    assert_eq!(repo.sla_targets(b).await.unwrap().len(), 1);
}

/// Trend buckets: days, ISO weeks, months; gaps filled with zeros; filters.
pub async fn cost_trend_buckets_and_filters(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let mut runs = Vec::new();
    for (days_before, operation, model_ref, cost) in [
        (0, "summarize", "a/one", 100),
        (0, "summarize", "a/two", 200),
        (2, "translate", "a/one", 400),
        (9, "summarize", "a/one", 800),
        (40, "summarize", "a/one", 1_600),
    ] {
        runs.push(execution(user, operation, model_ref, days_before, cost, 10));
    }
    repo.record_many(runs.clone()).await.unwrap();
    let range = last_days(45);
    for granularity in [Granularity::Day, Granularity::Week, Granularity::Month] {
        let trend = repo
            .cost_trend(user, &TrendQuery::new(range, granularity))
            .await
            .unwrap();
        let mut expected: BTreeMap<Date, Totals> = BTreeMap::new();
        for run in &runs {
            expected
                .entry(granularity.bucket_start(run.day()))
                .or_default()
                .add(&totals_of([run]));
        }
        let first = granularity.bucket_start(range.start());
        let last = granularity.bucket_start(anchor());
        assert_eq!(
            trend.first().map(|p| p.start),
            Some(first),
            "{granularity:?}"
        );
        assert_eq!(trend.last().map(|p| p.start), Some(last), "{granularity:?}");
        for pair in trend.windows(2) {
            assert_eq!(
                granularity.bucket_start(pair[1].start - Days::days(1)),
                pair[0].start,
                "{granularity:?}: consecutive buckets, no gap"
            );
        }
        for point in &trend {
            assert_eq!(
                point.totals,
                expected.get(&point.start).copied().unwrap_or_default(),
                "{granularity:?} bucket {}",
                point.start
            );
        }
        let total: Money = trend.iter().map(|p| p.totals.cost).sum();
        assert_eq!(total, Money::from_micros(3_100));
    }
    let daily = repo
        .cost_trend(user, &TrendQuery::new(last_days(3), Granularity::Day))
        .await
        .unwrap();
    assert_eq!(daily.len(), 3);
    assert_eq!(
        daily[1].totals,
        Totals::default(),
        "an empty day is a zero point"
    );
    let trend_cost = |query: TrendQuery| async move {
        let points = repo.cost_trend(user, &query).await.unwrap();
        points.iter().map(|p| p.totals.cost).sum::<Money>()
    };
    let only_summarize = TrendQuery::new(range, Granularity::Month).operation(op("summarize"));
    assert_eq!(
        trend_cost(only_summarize.clone()).await,
        Money::from_micros(2_700)
    );
    let one_model = only_summarize.model(model("a/two"));
    assert_eq!(trend_cost(one_model).await, Money::from_micros(200));
}

/// Summaries and model comparisons: exact sums, rates, cost per success
/// and percentiles of the merged histograms.
pub async fn summary_and_model_comparison(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for day in 0..4 {
        for i in 0..25 {
            fast.push(execution(
                user,
                "summarize",
                "cheap/fast",
                day,
                1_000,
                40 + i * 3,
            ));
            let run = execution(user, "summarize", "big/slow", day, 9_000, 900 + i * 40);
            slow.push(if i < 5 {
                run.failed(ErrorKind::parse("timeout").unwrap())
            } else {
                run
            });
        }
    }
    let other = execution(user, "translate", "cheap/fast", 0, 5, 5);
    let mut all = fast.clone();
    all.extend(slow.iter().cloned());
    all.push(other.clone());
    repo.record_many(all.clone()).await.unwrap();

    let range = last_days(7);
    let summary = repo
        .period_summary(user, &RollupFilter::new(range))
        .await
        .unwrap();
    assert_eq!(summary.range, range);
    assert_eq!(summary.totals, totals_of(&all));
    assert_eq!(summary.latency, histogram_of(&all).percentiles());
    assert!(
        summary.latency.p50 <= summary.latency.p95 && summary.latency.p95 <= summary.latency.p99
    );
    let only = repo
        .period_summary(user, &RollupFilter::new(range).operation(op("translate")))
        .await
        .unwrap();
    assert_eq!(only.totals, totals_of([&other]));

    let stats = repo
        .model_comparison(user, &op("summarize"), range)
        .await
        .unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.model.as_str()).collect();
    assert_eq!(names, ["big/slow", "cheap/fast"], "ordered by model");
    let (big, cheap) = (&stats[0], &stats[1]);
    assert_eq!(big.totals, totals_of(&slow));
    assert_eq!(big.totals.success_rate(), Some(0.8));
    assert_eq!(
        big.totals.cost_per_success(),
        Some(Money::from_micros(11_250))
    );
    assert_eq!(
        cheap.totals.cost_per_success(),
        Some(Money::from_micros(1_000))
    );
    assert_eq!(big.latency, histogram_of(&slow).percentiles());
    assert_eq!(cheap.latency, histogram_of(&fast).percentiles());
    assert!(cheap.totals.average_input_tokens().is_some());
    assert!(
        repo.model_comparison(user, &op("nothing"), range)
            .await
            .unwrap()
            .is_empty(),
        "an operation without data has no models"
    );
}

/// SLA: targets vs actuals per period and per day, and the error budget.
pub async fn sla_report_tracks_targets_breaches_and_budget(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    assert!(
        repo.sla_report(user, last_days(7))
            .await
            .unwrap()
            .is_empty(),
        "no targets, no report"
    );
    let rate = SuccessRate::from_ppm(900_000).unwrap(); // 90%
    // 1023 ms: one below a bucket bound, so the p95 judgement is exact.
    let healthy = SlaTarget::new(op("healthy"), rate, 1_023).unwrap();
    let flaky = SlaTarget::new(op("flaky"), rate, 1_023).unwrap();
    repo.set_sla_target(user, SlaTarget::new(op("flaky"), rate, 5).unwrap())
        .await
        .unwrap();
    repo.set_sla_target(user, flaky.clone()).await.unwrap(); // replaces
    repo.set_sla_target(user, healthy.clone()).await.unwrap();
    assert_eq!(
        repo.sla_targets(user).await.unwrap(),
        vec![flaky.clone(), healthy.clone()]
    );

    let mut runs = batch_of(user, "healthy", "m/a", 1, 100, 5, 10);
    // flaky: day 3 fails too often (30 of 100), day 2 is slow, day 1 fine.
    runs.extend(batch_of(user, "flaky", "m/a", 3, 100, 30, 10));
    runs.extend(
        batch_of(user, "flaky", "m/a", 2, 100, 0, 10)
            .into_iter()
            .map(|e| e.latency_ms(2_000)),
    );
    runs.extend(batch_of(user, "flaky", "m/a", 1, 100, 0, 10));
    repo.record_many(runs).await.unwrap();

    let report = repo.sla_report(user, last_days(7)).await.unwrap();
    assert_eq!(report.len(), 2);
    let (flaky_status, healthy_status) = (&report[0], &report[1]);
    assert_eq!(healthy_status.target, healthy);
    assert!(healthy_status.is_met() && healthy_status.daily_breaches.is_empty());
    assert_eq!(healthy_status.error_budget.allowed_failures, 10);
    assert_eq!(healthy_status.error_budget.remaining(), 5);

    assert_eq!(flaky_status.totals.executions, 300);
    assert_eq!(flaky_status.totals.failures, 30);
    // Over the period: 270/300 = 90% meets the rate; the p95 (the slow day
    // is a third of the executions) breaks 1023 ms.
    assert_eq!(
        flaky_status.breaches,
        vec![Breach::P95Latency {
            actual_ms: 2_047,
            target_ms: 1_023
        }]
    );
    let days: Vec<(Date, &Breach)> = flaky_status
        .daily_breaches
        .iter()
        .map(|b| (b.day, &b.breach))
        .collect();
    assert_eq!(
        days,
        vec![
            (
                anchor() - Days::days(3),
                &Breach::SuccessRate {
                    actual: SuccessRate::from_ppm(700_000).unwrap(),
                    target: rate
                }
            ),
            (
                anchor() - Days::days(2),
                &Breach::P95Latency {
                    actual_ms: 2_047,
                    target_ms: 1_023
                }
            ),
        ]
    );
    assert_eq!(flaky_status.error_budget.allowed_failures, 30);
    assert_eq!(flaky_status.error_budget.remaining(), 0);
    assert_eq!(flaky_status.error_budget.remaining_fraction(), Some(0.0));

    assert!(repo.delete_sla_target(user, &op("healthy")).await.unwrap());
    assert!(!repo.delete_sla_target(user, &op("healthy")).await.unwrap());
    assert_eq!(repo.sla_report(user, last_days(7)).await.unwrap().len(), 1);
}

fn thresholds() -> RecommendationThresholds {
    RecommendationThresholds::default()
}

/// Cheaper model rule, positive: B is as reliable and half the price per
/// success; C is cheaper but less reliable (92% < 95%); D is cheaper and
/// better but has too few samples. Only B is suggested.
pub async fn cheaper_model_is_recommended(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let mut runs = batch_of(user, "summarize", "vendor/a-current", 20, 200, 10, 1_000); // 95%
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/b-cheaper",
        20,
        150,
        6,
        500,
    )); // 96%
    // 92%: worse than A, yet under the failing-model threshold.
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/c-unreliable",
        20,
        150,
        12,
        100,
    ));
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/d-too-few",
        20,
        20,
        0,
        50,
    )); // 100%
    repo.record_many(runs).await.unwrap();

    let recs = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let rec = &recs[0];
    assert_eq!(rec.status, RecommendationStatus::Active);
    assert_eq!(rec.user_id, user);
    match &rec.finding {
        Finding::CheaperModel {
            operation,
            current_model,
            suggested_model,
            current,
            suggested,
            estimated_savings,
        } => {
            assert_eq!(operation.as_str(), "summarize");
            assert_eq!(current_model.as_str(), "vendor/a-current");
            assert_eq!(suggested_model.as_str(), "vendor/b-cheaper");
            assert_eq!((current.executions, current.successes), (200, 190));
            assert_eq!(suggested.cost, Money::from_micros(75_000));
            // 190 successes at 200_000/190 vs 75_000/144 each.
            assert_eq!(
                *estimated_savings,
                Money::from_micros(200_000 - 75_000 * 190 / 144)
            );
        }
        other => panic!("expected a cheaper-model finding, got {other:?}"),
    }
    assert_eq!(
        rec.action(),
        Some(RecommendedAction::SwitchModel {
            operation: op("summarize"),
            model: model("vendor/b-cheaper"),
        })
    );
}

/// Cheaper model rule, negative: a cheaper model with a worse success rate,
/// one with too few samples, one barely cheaper (under the savings margin),
/// or a current model with too few samples → no recommendation.
pub async fn cheaper_model_needs_samples_and_reliability(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let mut runs = batch_of(user, "summarize", "vendor/a-current", 20, 200, 10, 1_000); // 95%
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/c-unreliable",
        20,
        150,
        12,
        100,
    )); // 92%
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/d-too-few",
        20,
        99,
        0,
        50,
    )); // 100%
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/e-barely",
        20,
        150,
        0,
        950,
    )); // 5% cheaper
    // Another operation whose current model lacks samples.
    runs.extend(batch_of(
        user,
        "translate",
        "vendor/a-current",
        20,
        99,
        0,
        1_000,
    ));
    runs.extend(batch_of(
        user,
        "translate",
        "vendor/b-cheaper",
        20,
        50,
        0,
        10,
    ));
    repo.record_many(runs).await.unwrap();
    let recs = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert!(recs.is_empty(), "{recs:#?}");

    // Lowering the bars makes the same data qualify: the test can fail.
    let lenient = thresholds().min_samples(20).min_savings_percent(0);
    let recs = repo
        .generate_recommendations(user, anchor(), &lenient)
        .await
        .unwrap();
    let suggested: Vec<String> = recs
        .iter()
        .filter_map(|r| match &r.finding {
            Finding::CheaperModel {
                suggested_model, ..
            } => Some(suggested_model.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(suggested, ["vendor/d-too-few", "vendor/b-cheaper"]);
}

/// Cost rising faster than usage week over week: flagged when cost per
/// execution grows past the margin; not when cost grows with usage, not
/// without enough executions, not when cost falls.
pub async fn rising_cost_is_recommended_only_when_faster_than_usage(
    repo: &dyn AnalyticsRepository,
) {
    let user = UserId::random();
    let mut runs = Vec::new();
    // rising: 100 runs at 100 → 110 runs at 200 (+120% cost, +10% usage).
    runs.extend(batch_of(user, "rising", "m/a", 10, 100, 0, 100));
    runs.extend(batch_of(user, "rising", "m/a", 2, 110, 0, 200));
    // proportional: usage and cost both double.
    runs.extend(batch_of(user, "proportional", "m/a", 10, 100, 0, 100));
    runs.extend(batch_of(user, "proportional", "m/a", 2, 200, 0, 100));
    // sparse: cost per run triples but only 20 runs a week.
    runs.extend(batch_of(user, "sparse", "m/a", 10, 20, 0, 100));
    runs.extend(batch_of(user, "sparse", "m/a", 2, 20, 0, 300));
    // shrinking: usage halves, cost per run +40%, total cost falls.
    runs.extend(batch_of(user, "shrinking", "m/a", 10, 100, 0, 100));
    runs.extend(batch_of(user, "shrinking", "m/a", 2, 50, 0, 140));
    repo.record_many(runs).await.unwrap();

    let recs = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    let operations: Vec<&str> = recs
        .iter()
        .map(|r| r.finding.operation().as_str())
        .collect();
    assert_eq!(operations, ["rising"], "{recs:#?}");
    match &recs[0].finding {
        Finding::CostRising {
            previous_week,
            this_week,
            ..
        } => {
            assert_eq!(
                (previous_week.executions, previous_week.cost),
                (100, Money::from_micros(10_000))
            );
            assert_eq!(
                (this_week.executions, this_week.cost),
                (110, Money::from_micros(22_000))
            );
            assert_eq!(this_week.start, anchor() - Days::days(6));
        }
        other => panic!("expected a cost-rising finding, got {other:?}"),
    }
    assert_eq!(recs[0].action(), None);
}

/// Failing model: flagged at the threshold with enough samples only.
pub async fn failing_model_is_recommended_above_threshold(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let mut runs = batch_of(user, "extract", "m/failing", 5, 120, 36, 10); // 30%
    runs.extend(batch_of(user, "extract", "m/edge", 5, 100, 10, 10)); // exactly 10%
    runs.extend(batch_of(user, "extract", "m/fine", 5, 100, 9, 10)); // 9%
    runs.extend(batch_of(user, "extract", "m/few", 5, 20, 10, 10)); // 50% of too few
    repo.record_many(runs).await.unwrap();
    let recs = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    let failing: Vec<(String, i64, i64)> = recs
        .iter()
        .filter_map(|r| match &r.finding {
            Finding::FailingModel {
                model,
                executions,
                failures,
                ..
            } => Some((model.to_string(), *executions, *failures)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failing,
        [
            ("m/edge".to_string(), 100, 10),
            ("m/failing".to_string(), 120, 36)
        ]
    );
}

/// Generation is idempotent; dismiss/apply move only active
/// recommendations; resolved ones are not raised again within the
/// cooldown; ids of other users are not found.
pub async fn recommendation_lifecycle(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let mut runs = batch_of(user, "a", "m/failing", 3, 100, 50, 10);
    runs.extend(batch_of(user, "b", "m/failing", 3, 100, 50, 10));
    runs.extend(batch_of(user, "c", "m/failing", 3, 100, 50, 10));
    repo.record_many(runs).await.unwrap();

    let first = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    let second = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let ids = |recs: &[crate::Recommendation]| recs.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&first),
        ids(&second),
        "running twice reuses the active recommendations"
    );
    let active = repo
        .recommendations(user, Some(RecommendationStatus::Active))
        .await
        .unwrap();
    assert_eq!(active.len(), 3, "no duplicates: {active:#?}");

    let (a, b, c) = (first[0].id, first[1].id, first[2].id);
    let dismissed = repo
        .resolve_recommendation(user, a, Resolution::Dismiss)
        .await
        .unwrap();
    assert_eq!(dismissed.status, RecommendationStatus::Dismissed);
    assert!(dismissed.status_changed_at.is_some());
    let again = repo
        .resolve_recommendation(user, a, Resolution::Dismiss)
        .await
        .unwrap();
    assert_eq!(
        again.status,
        RecommendationStatus::Dismissed,
        "repeating is a no-op"
    );
    let err = repo
        .resolve_recommendation(user, a, Resolution::Apply)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: RecommendationStatus::Dismissed,
                to: RecommendationStatus::Applied,
                ..
            }
        ),
        "{err:?}"
    );
    let applied = repo
        .resolve_recommendation(user, b, Resolution::Apply)
        .await
        .unwrap();
    assert_eq!(applied.status, RecommendationStatus::Applied);

    let stranger = UserId::random();
    let err = repo
        .resolve_recommendation(stranger, c, Resolution::Dismiss)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(id) if id == c), "{err:?}");

    // Within the cooldown, resolved findings stay resolved.
    let third = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert_eq!(ids(&third), vec![c]);
    let by_status = |status| async move {
        repo.recommendations(user, Some(status))
            .await
            .unwrap()
            .len()
    };
    assert_eq!(by_status(RecommendationStatus::Active).await, 1);
    assert_eq!(by_status(RecommendationStatus::Dismissed).await, 1);
    assert_eq!(by_status(RecommendationStatus::Applied).await, 1);
    assert_eq!(repo.recommendations(user, None).await.unwrap().len(), 3);

    // Without a cooldown they come back, as new active recommendations.
    let fourth = repo
        .generate_recommendations(user, anchor(), &thresholds().cooldown_days(0))
        .await
        .unwrap();
    assert_eq!(fourth.len(), 3);
    assert!(
        fourth
            .iter()
            .all(|r| r.status == RecommendationStatus::Active)
    );
    assert!(!ids(&fourth).contains(&a) && !ids(&fourth).contains(&b) && ids(&fourth).contains(&c));
    assert_eq!(repo.recommendations(user, None).await.unwrap().len(), 5);
    assert!(
        repo.recommendations(stranger, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A recommendation the rules no longer produce stops being active: a
/// failing model that recovered is expired by the next generation (not
/// resolved: the user decided nothing), cannot be dismissed any more, and
/// comes back as a new active recommendation when it fails again — the
/// cooldown of dismissals does not apply to expiries.
pub async fn recommendations_no_longer_found_expire(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    repo.record_many(batch_of(user, "extract", "m/flaky", 4, 100, 50, 10))
        .await
        .unwrap();
    let raised = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let stale = raised[0].id;

    // 900 successes later the failure rate is 5%: the finding is gone.
    repo.record_many(batch_of(user, "extract", "m/flaky", 3, 900, 0, 10))
        .await
        .unwrap();
    let now = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert!(now.is_empty(), "{now:#?}");
    let active = repo
        .recommendations(user, Some(RecommendationStatus::Active))
        .await
        .unwrap();
    assert!(
        active.is_empty(),
        "the stale one is not active: {active:#?}"
    );
    let expired = repo
        .recommendations(user, Some(RecommendationStatus::Expired))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, stale);
    assert!(expired[0].status_changed_at.is_some());
    let err = repo
        .resolve_recommendation(user, stale, Resolution::Dismiss)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: RecommendationStatus::Expired,
                to: RecommendationStatus::Dismissed,
                ..
            }
        ),
        "{err:?}"
    );

    // Failing again (300 of 1 200): raised anew despite the cooldown.
    repo.record_many(batch_of(user, "extract", "m/flaky", 2, 200, 200, 10))
        .await
        .unwrap();
    let again = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_ne!(again[0].id, stale, "a new recommendation");
    assert_eq!(again[0].status, RecommendationStatus::Active);
    assert_eq!(repo.recommendations(user, None).await.unwrap().len(), 2);
}

/// `expire_recommendations_before` expires every user's active
/// recommendations not refreshed since the cutoff, and nothing else;
/// refuses a cutoff in the future. It changes every user's data: run it on
/// a backend of its own.
pub async fn stale_recommendations_expire_before_a_cutoff(repo: &dyn AnalyticsRepository) {
    let (user, other) = (UserId::random(), UserId::random());
    for owner in [user, other] {
        repo.record_many(batch_of(owner, "extract", "m/failing", 3, 100, 50, 10))
            .await
            .unwrap();
    }
    let dismissed = repo
        .generate_recommendations(other, anchor(), &thresholds())
        .await
        .unwrap()[0]
        .id;
    repo.resolve_recommendation(other, dismissed, Resolution::Dismiss)
        .await
        .unwrap();
    let raised = repo
        .generate_recommendations(user, anchor(), &thresholds())
        .await
        .unwrap();
    assert_eq!(raised.len(), 1);

    let an_hour_ago = OffsetDateTime::now_utc() - Days::hours(1);
    assert_eq!(
        repo.expire_recommendations_before(an_hour_ago)
            .await
            .unwrap(),
        0
    );
    assert_invalid(
        repo.expire_recommendations_before(OffsetDateTime::now_utc() + Days::hours(1))
            .await,
        "cutoff",
        None,
    );
    let still = repo
        .recommendations(user, Some(RecommendationStatus::Active))
        .await
        .unwrap();
    assert_eq!(still.len(), 1, "neither call expired anything");

    let expired = repo
        .expire_recommendations_before(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(expired, 1, "only the active one; the dismissed one stays");
    let mine = repo.recommendations(user, None).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].status, RecommendationStatus::Expired);
    assert!(mine[0].status_changed_at.is_some());
    let theirs = repo.recommendations(other, None).await.unwrap();
    assert_eq!(theirs[0].status, RecommendationStatus::Dismissed);
    assert_eq!(
        repo.expire_recommendations_before(OffsetDateTime::now_utc())
            .await
            .unwrap(),
        0,
        "nothing active is left"
    );
}

/// What [`reads_follow_writes`] reads: executions in the summary, cost of
/// the daily trend, models compared, SLA statuses and the executions the
/// first status counts.
async fn metrics_of(
    repo: &dyn AnalyticsRepository,
    user: UserId,
    range: DateRange,
) -> (i64, Money, usize, usize, Option<i64>) {
    let summary = repo
        .period_summary(user, &RollupFilter::new(range))
        .await
        .unwrap();
    let trend = repo
        .cost_trend(user, &TrendQuery::new(range, Granularity::Day))
        .await
        .unwrap();
    let models = repo
        .model_comparison(user, &op("summarize"), range)
        .await
        .unwrap();
    let sla = repo.sla_report(user, range).await.unwrap();
    (
        summary.totals.executions,
        trend.iter().map(|p| p.totals.cost).sum(),
        models.len(),
        sla.len(),
        sla.first().map(|s| s.totals.executions),
    )
}

/// Every metric read sees every write before it — a single record, a
/// batch, an SLA target set and deleted — even when the same read was made
/// just before the write. Trivial for a plain backend; for a caching
/// wrapper it proves each write drops what it changes.
pub async fn reads_follow_writes(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let range = last_days(3);
    let money = Money::from_micros;
    assert_eq!(
        metrics_of(repo, user, range).await,
        (0, money(0), 0, 0, None)
    );

    let one = execution(user, "summarize", "m/a", 1, 100, 10);
    assert!(repo.record_operation_execution(one).await.unwrap());
    assert_eq!(
        metrics_of(repo, user, range).await,
        (1, money(100), 1, 0, None)
    );

    let batch = vec![
        execution(user, "summarize", "m/b", 1, 200, 10),
        execution(user, "summarize", "m/b", 2, 400, 10),
    ];
    assert_eq!(repo.record_many(batch).await.unwrap().recorded, 2);
    assert_eq!(
        metrics_of(repo, user, range).await,
        (3, money(700), 2, 0, None)
    );

    let target = SlaTarget::new(op("summarize"), SuccessRate::from_ppm(0).unwrap(), 1_023)
        .expect("valid target");
    repo.set_sla_target(user, target).await.unwrap();
    assert_eq!(
        metrics_of(repo, user, range).await,
        (3, money(700), 2, 1, Some(3))
    );

    let another = execution(user, "summarize", "m/a", 0, 800, 10);
    assert!(repo.record_operation_execution(another).await.unwrap());
    assert_eq!(
        metrics_of(repo, user, range).await,
        (4, money(1_500), 2, 1, Some(4)),
        "a record changes the SLA report too"
    );

    assert!(
        repo.delete_sla_target(user, &op("summarize"))
            .await
            .unwrap()
    );
    assert_eq!(
        metrics_of(repo, user, range).await,
        (4, money(1_500), 2, 0, None)
    );
}

/// Retention: executions before the cutoff's month are forgotten and
/// refused from then on, rollups stay, the horizon never moves back, and a
/// cutoff in the future is refused. Needs a backend of its own.
pub async fn retention_forgets_old_executions_but_keeps_rollups(repo: &dyn AnalyticsRepository) {
    let user = UserId::random();
    let old: Vec<Execution> = (0..5)
        .map(|i| execution(user, "archive", "m/a", 100, 10 + i, 10))
        .collect();
    let recent = execution(user, "archive", "m/a", 0, 1, 10);
    let mut all = old.clone();
    all.push(recent.clone());
    repo.record_many(all.clone()).await.unwrap();
    let long_range = last_days(120);
    let before = repo
        .period_summary(user, &RollupFilter::new(long_range))
        .await
        .unwrap();

    let tomorrow = OffsetDateTime::now_utc() + Duration::from_secs(86_400);
    assert_invalid(repo.purge_executions_before(tomorrow).await, "cutoff", None);

    let cutoff = OffsetDateTime::now_utc() - Duration::from_secs(35 * 86_400);
    let report = repo.purge_executions_before(cutoff).await.unwrap();
    let month_start = cutoff
        .date()
        .replace_day(1)
        .unwrap()
        .midnight()
        .assume_utc();
    assert_eq!(report.horizon, month_start);
    assert!(report.forgotten_ids >= old.len() as u64, "{report:?}");

    let logged = repo.executions(user, long_range, 100).await.unwrap();
    assert_eq!(logged, vec![recent.clone()], "old log rows are gone");
    let after = repo
        .period_summary(user, &RollupFilter::new(long_range))
        .await
        .unwrap();
    assert_eq!(after.totals, before.totals, "rollups stay");
    assert_eq!(after.totals, totals_of(&all));

    // The SQL function cannot tell which item; the in-memory backend can.
    assert_invalid(
        repo.record_operation_execution(old[0].clone()).await,
        "executed_at",
        None,
    );
    match repo.record_many(old.clone()).await {
        Err(Error::Validation(v)) if v.field == "executed_at" => {}
        other => panic!("expected invalid executed_at, got {other:?}"),
    }
    assert!(
        !repo.record_operation_execution(recent).await.unwrap(),
        "recent ids are still known"
    );

    let earlier = repo
        .purge_executions_before(cutoff - Duration::from_secs(200 * 86_400))
        .await
        .unwrap();
    assert_eq!(earlier.horizon, month_start, "the horizon never moves back");
}
