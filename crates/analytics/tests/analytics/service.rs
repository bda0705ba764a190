//! The cached service: cache hits that never reach the repository,
//! invalidation on every write path, the load/record race, bad raw input.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_analytics::testing::{anchor, around_now, batch_of, last_days, noon, op};
use opsdeck_analytics::{
    AnalyticsRepository, AnalyticsService, DailyRollup, DateRange, Error, Execution,
    ExecutionRecord, Finding, Granularity, InMemoryAnalyticsRepository, MAX_BATCH,
    MockAnalyticsRepository, PgAnalyticsRepository, Recommendation, RecommendationId,
    RecommendationStatus, RecommendedAction, RecordSummary, Resolution, Result, RetentionReport,
    RollupFilter, SlaTarget, SuccessRate, TrendPoint, TrendQuery,
};
use opsdeck_core::{OperationId, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Mutex, oneshot};

fn raw(user: UserId) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: uuid::Uuid::new_v4(),
        user_id: user,
        operation_id: "summarize".into(),
        model: "anthropic/claude-sonnet-4".into(),
        input_tokens: 100,
        output_tokens: 20,
        cost_micros: 1_000,
        latency_ms: 300,
        success: true,
        error_kind: None,
        executed_at: noon(1),
    }
}

fn on_postgres(pool: PgPool) -> AnalyticsService {
    AnalyticsService::new(Arc::new(PgAnalyticsRepository::new(pool)))
}

fn in_memory() -> AnalyticsService {
    AnalyticsService::new(Arc::new(InMemoryAnalyticsRepository::new()))
}

async fn reads_see_every_write(service: &AnalyticsService) {
    let user = UserId::random();
    let range = last_days(3);
    let trend_query = TrendQuery::new(range, Granularity::Day);
    let summary = || service.period_summary(user, range, None);
    assert_eq!(summary().await.unwrap().totals.executions, 0);
    assert_eq!(
        service.cost_trend(user, &trend_query).await.unwrap().len(),
        3
    );
    assert!(
        service
            .model_comparison(user, "summarize", range)
            .await
            .unwrap()
            .is_empty()
    );

    // Single path.
    assert!(service.record_operation_execution(raw(user)).await.unwrap());
    assert_eq!(
        summary().await.unwrap().totals.executions,
        1,
        "cached zero was dropped"
    );
    let trend_cost: i64 = service
        .cost_trend(user, &trend_query)
        .await
        .unwrap()
        .iter()
        .map(|p| p.totals.cost.micros())
        .sum();
    assert_eq!(trend_cost, 1_000);
    assert_eq!(
        service
            .model_comparison(user, "summarize", range)
            .await
            .unwrap()
            .len(),
        1
    );

    // Batch path.
    let summary_batch = service
        .record_many(vec![raw(user), raw(user)])
        .await
        .unwrap();
    assert_eq!(summary_batch.recorded, 2);
    assert_eq!(summary().await.unwrap().totals.executions, 3);
    assert_eq!(
        service
            .period_summary(user, range, Some("summarize"))
            .await
            .unwrap()
            .totals
            .executions,
        3
    );

    // SLA targets invalidate the SLA report.
    assert!(service.sla_report(user, range).await.unwrap().is_empty());
    let target = SlaTarget::new(
        op("summarize"),
        SuccessRate::from_percent(99.0).unwrap(),
        1_023,
    )
    .unwrap();
    service.set_sla_target(user, target).await.unwrap();
    let report = service.sla_report(user, range).await.unwrap();
    assert_eq!(report.len(), 1);
    assert!(report[0].is_met());
    assert!(service.delete_sla_target(user, "summarize").await.unwrap());
    assert!(service.sla_report(user, range).await.unwrap().is_empty());

    // Repeated reads are cache hits.
    let before = service.cache_stats();
    summary().await.unwrap();
    summary().await.unwrap();
    assert_eq!(service.cache_stats().hits, before.hits + 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_reads_see_every_write(pool: PgPool) {
    reads_see_every_write(&on_postgres(pool)).await;
}

#[tokio::test]
async fn in_memory_reads_see_every_write() {
    reads_see_every_write(&in_memory()).await;
}

#[tokio::test]
async fn cached_metrics_are_loaded_once_until_a_record() {
    let mut mock = MockAnalyticsRepository::new();
    mock.expect_daily_rollups()
        .times(2)
        .returning(|_, _| Ok(Vec::new()));
    mock.expect_cost_trend()
        .times(1)
        .returning(|_, _| Ok(Vec::new()));
    mock.expect_sla_targets()
        .times(1)
        .returning(|_| Ok(Vec::new()));
    mock.expect_record_operation_execution()
        .times(1)
        .returning(|_| Ok(true));
    let service = AnalyticsService::new(Arc::new(mock));
    let user = UserId::random();
    let range = last_days(7);
    for _ in 0..5 {
        service.period_summary(user, range, None).await.unwrap();
        service
            .cost_trend(user, &TrendQuery::new(range, Granularity::Week))
            .await
            .unwrap();
        service.sla_report(user, range).await.unwrap();
    }
    // Another user's record does not touch this user's entries...
    assert!(
        service
            .record_operation_execution(raw(UserId::random()))
            .await
            .is_ok()
    );
    service.period_summary(user, range, None).await.unwrap();
    let stats = service.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.loads), (13, 3, 3));
    // The mock panics on drop if a method ran more often than expected; the
    // second daily_rollups is for the uncached operation-scoped summary.
    service
        .period_summary(user, range, Some("x"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_record_drops_only_its_users_metrics() {
    let service = in_memory();
    let (a, b) = (UserId::random(), UserId::random());
    let range = last_days(3);
    service.period_summary(a, range, None).await.unwrap();
    service.period_summary(b, range, None).await.unwrap();
    service.record_operation_execution(raw(a)).await.unwrap();
    let before = service.cache_stats();
    assert_eq!(
        service
            .period_summary(b, range, None)
            .await
            .unwrap()
            .totals
            .executions,
        0
    );
    assert_eq!(
        service
            .period_summary(a, range, None)
            .await
            .unwrap()
            .totals
            .executions,
        1
    );
    let after = service.cache_stats();
    assert_eq!(
        (after.hits - before.hits, after.loads - before.loads),
        (1, 1)
    );
}

/// A repository whose next `daily_rollups` blocks until released, to stage
/// a metrics read that started before a record and finishes after it.
#[derive(Debug, Default)]
struct GatedRepository {
    inner: InMemoryAnalyticsRepository,
    gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

#[async_trait]
impl AnalyticsRepository for GatedRepository {
    async fn record_operation_execution(&self, execution: Execution) -> Result<bool> {
        self.inner.record_operation_execution(execution).await
    }
    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary> {
        self.inner.record_many(executions).await
    }
    async fn executions(
        &self,
        user: UserId,
        range: DateRange,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        self.inner.executions(user, range, limit).await
    }
    async fn daily_rollups(&self, user: UserId, filter: &RollupFilter) -> Result<Vec<DailyRollup>> {
        let stale = self.inner.daily_rollups(user, filter).await;
        if let Some((started, release)) = self.gate.lock().await.take() {
            started.send(()).unwrap();
            release.await.unwrap();
        }
        stale
    }
    async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        self.inner.cost_trend(user, query).await
    }
    async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        self.inner.set_sla_target(user, target).await
    }
    async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        self.inner.sla_targets(user).await
    }
    async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool> {
        self.inner.delete_sla_target(user, operation).await
    }
    async fn save_recommendations(
        &self,
        user: UserId,
        findings: Vec<Finding>,
        cooldown: Duration,
    ) -> Result<Vec<Recommendation>> {
        self.inner
            .save_recommendations(user, findings, cooldown)
            .await
    }
    async fn recommendations(
        &self,
        user: UserId,
        status: Option<RecommendationStatus>,
    ) -> Result<Vec<Recommendation>> {
        self.inner.recommendations(user, status).await
    }
    async fn resolve_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
        resolution: Resolution,
    ) -> Result<Recommendation> {
        self.inner
            .resolve_recommendation(user, id, resolution)
            .await
    }
    async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        self.inner.expire_recommendations_before(cutoff).await
    }
    async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport> {
        self.inner.purge_executions_before(cutoff).await
    }
}

#[tokio::test]
async fn a_metrics_read_racing_a_record_never_leaves_stale_metrics_cached() {
    for batch in [false, true] {
        let repo = Arc::new(GatedRepository::default());
        let service = AnalyticsService::new(repo.clone());
        let user = UserId::random();
        let range = last_days(3);
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *repo.gate.lock().await = Some((started_tx, release_rx));

        let reader = {
            let service = service.clone();
            tokio::spawn(async move { service.period_summary(user, range, None).await })
        };
        started_rx.await.unwrap(); // the read has loaded "nothing yet"
        if batch {
            service.record_many(vec![raw(user)]).await.unwrap();
        } else {
            service.record_operation_execution(raw(user)).await.unwrap();
        }
        release_tx.send(()).unwrap();
        assert_eq!(
            reader.await.unwrap().unwrap().totals.executions,
            0,
            "it answers what it read"
        );
        assert_eq!(
            service
                .period_summary(user, range, None)
                .await
                .unwrap()
                .totals
                .executions,
            1,
            "batch={batch}: the stale read must not have been cached"
        );
        assert!(service.cache_stats().stale_loads_discarded >= 1);
    }
}

async fn bad_raw_input_is_a_typed_error_and_writes_nothing(service: &AnalyticsService) {
    let user = UserId::random();
    let good = || raw(user);
    let cases: Vec<(ExecutionRecord, &str)> = vec![
        (
            ExecutionRecord {
                model: "claude".into(),
                ..good()
            },
            "model",
        ),
        (
            ExecutionRecord {
                model: "Anthropic/claude".into(),
                ..good()
            },
            "model",
        ),
        (
            ExecutionRecord {
                operation_id: "Summarize!".into(),
                ..good()
            },
            "operation_id",
        ),
        (
            ExecutionRecord {
                input_tokens: -5,
                ..good()
            },
            "input_tokens",
        ),
        (
            ExecutionRecord {
                cost_micros: -1,
                ..good()
            },
            "cost",
        ),
        (
            ExecutionRecord {
                executed_at: OffsetDateTime::now_utc() + Duration::from_secs(600),
                ..good()
            },
            "executed_at",
        ),
    ];
    for (bad, field) in cases {
        let err = service
            .record_many(vec![good(), bad.clone(), good()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v) if v.item == Some(1) && v.field == field),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains("item 1"), "{err}");
        let err = service.record_operation_execution(bad).await.unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v) if v.field == field),
            "{field}: {err:?}"
        );
    }
    let err = service
        .record_many(vec![good(); MAX_BATCH + 1])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BatchTooLarge { .. }), "{err:?}");
    assert!(matches!(
        service
            .model_comparison(user, "Not An Op", last_days(3))
            .await,
        Err(Error::Validation(v)) if v.field == "operation_id"
    ));
    let summary = service
        .period_summary(user, around_now(), None)
        .await
        .unwrap();
    assert_eq!(summary.totals.executions, 0, "nothing was written");
    assert!(
        service
            .executions(user, around_now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_bad_raw_input(pool: PgPool) {
    bad_raw_input_is_a_typed_error_and_writes_nothing(&on_postgres(pool)).await;
}

#[tokio::test]
async fn in_memory_bad_raw_input() {
    bad_raw_input_is_a_typed_error_and_writes_nothing(&in_memory()).await;
}

/// The flow the facade builds on: generate, read the action, apply.
#[sqlx::test(migrations = "../../migrations")]
async fn recommendations_through_the_service(pool: PgPool) {
    let service = on_postgres(pool);
    let user = UserId::random();
    let mut runs = batch_of(user, "summarize", "vendor/pricey", 3, 200, 0, 1_000);
    runs.extend(batch_of(
        user,
        "summarize",
        "vendor/thrifty",
        3,
        200,
        0,
        100,
    ));
    service.record_many(runs).await.unwrap();
    let recs = service
        .generate_recommendations_as_of(user, anchor())
        .await
        .unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].action(),
        Some(RecommendedAction::SwitchModel {
            operation: op("summarize"),
            model: "vendor/thrifty".parse().unwrap(),
        })
    );
    let applied = service
        .mark_recommendation_applied(user, recs[0].id)
        .await
        .unwrap();
    assert_eq!(applied.status, RecommendationStatus::Applied);
    assert!(
        service
            .generate_recommendations(user)
            .await
            .unwrap()
            .is_empty(),
        "cooldown"
    );
    assert!(matches!(
        service.dismiss_recommendation(user, recs[0].id).await,
        Err(Error::InvalidTransition { .. })
    ));
}

/// Metrics travel through a shared cache tier as JSON: every cached type
/// must come back equal.
#[tokio::test]
async fn cached_metrics_survive_a_json_round_trip() {
    fn round_trip<
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    >(
        value: T,
    ) {
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
    }
    let service = in_memory();
    let user = UserId::random();
    let mut runs = batch_of(user, "summarize", "m/a", 1, 50, 20, 1_000);
    runs.extend(batch_of(user, "summarize", "m/b", 2, 50, 0, 10));
    service.record_many(runs).await.unwrap();
    let target = SlaTarget::new(
        op("summarize"),
        SuccessRate::from_percent(99.5).unwrap(),
        100,
    )
    .unwrap();
    service.set_sla_target(user, target).await.unwrap();
    let range = last_days(3);
    let sla = service.sla_report(user, range).await.unwrap();
    assert!(!sla[0].breaches.is_empty() && !sla[0].daily_breaches.is_empty());
    round_trip(sla);
    round_trip(service.period_summary(user, range, None).await.unwrap());
    round_trip(
        service
            .model_comparison(user, "summarize", range)
            .await
            .unwrap(),
    );
    round_trip(
        service
            .cost_trend(user, &TrendQuery::new(range, Granularity::Week))
            .await
            .unwrap(),
    );
}

/// What the service's cached reads and the repository's own (uncached)
/// reads answer for `user`: both must agree after every write.
#[derive(Debug, PartialEq)]
struct Metrics {
    summary: opsdeck_analytics::PeriodSummary,
    trend: Vec<TrendPoint>,
    comparison: Vec<opsdeck_analytics::ModelStats>,
    sla: Vec<opsdeck_analytics::SlaStatus>,
}

async fn cached_metrics(service: &AnalyticsService, user: UserId, range: DateRange) -> Metrics {
    Metrics {
        summary: service.period_summary(user, range, None).await.unwrap(),
        trend: service
            .cost_trend(user, &TrendQuery::new(range, Granularity::Day))
            .await
            .unwrap(),
        comparison: service
            .model_comparison(user, "summarize", range)
            .await
            .unwrap(),
        sla: service.sla_report(user, range).await.unwrap(),
    }
}

async fn fresh_metrics(repo: &dyn AnalyticsRepository, user: UserId, range: DateRange) -> Metrics {
    Metrics {
        summary: repo
            .period_summary(user, &RollupFilter::new(range))
            .await
            .unwrap(),
        trend: repo
            .cost_trend(user, &TrendQuery::new(range, Granularity::Day))
            .await
            .unwrap(),
        comparison: repo
            .model_comparison(user, &op("summarize"), range)
            .await
            .unwrap(),
        sla: repo.sla_report(user, range).await.unwrap(),
    }
}

/// Every public write path of the service drops the cached metrics it can
/// change: before each write all four metrics are read (so they are
/// cached), after it the cached reads must equal the repository's own
/// reads — and for the writes that change metrics, differ from before, so
/// a missing invalidation fails the test. Retention changes no metric (the
/// rollups stay), so there the proof is that every metric is loaded again.
#[tokio::test]
async fn every_public_write_path_invalidates_the_cached_metrics() {
    let repo = Arc::new(InMemoryAnalyticsRepository::new());
    let service = AnalyticsService::new(repo.clone());
    let user = UserId::random();
    let range = last_days(3);
    let typed = |days_before: i64| {
        opsdeck_analytics::testing::execution(user, "summarize", "m/typed", days_before, 70, 90)
    };
    let target = SlaTarget::new(
        op("summarize"),
        SuccessRate::from_percent(50.0).unwrap(),
        1_023,
    )
    .unwrap();

    let mut seen = Vec::new();
    for write in [
        "record_operation_execution(ExecutionRecord)",
        "record_operation_execution(Execution)",
        "record_many(Vec<ExecutionRecord>)",
        "record_many(Vec<Execution>)",
        "set_sla_target",
        "record_operation_execution with a target",
        "delete_sla_target",
    ] {
        let before = cached_metrics(&service, user, range).await;
        assert_eq!(before, cached_metrics(&service, user, range).await);
        match write {
            "record_operation_execution(ExecutionRecord)" => {
                assert!(service.record_operation_execution(raw(user)).await.unwrap());
            }
            "record_operation_execution(Execution)" => {
                assert!(service.record_operation_execution(typed(1)).await.unwrap());
            }
            "record_many(Vec<ExecutionRecord>)" => {
                let summary = service.record_many(vec![raw(user), raw(user)]).await;
                assert_eq!(summary.unwrap().recorded, 2);
            }
            "record_many(Vec<Execution>)" => {
                let summary = service.record_many(vec![typed(0), typed(2)]).await;
                assert_eq!(summary.unwrap().recorded, 2);
            }
            "set_sla_target" => service.set_sla_target(user, target.clone()).await.unwrap(),
            "record_operation_execution with a target" => {
                assert!(service.record_operation_execution(raw(user)).await.unwrap());
            }
            "delete_sla_target" => {
                assert!(service.delete_sla_target(user, "summarize").await.unwrap());
            }
            other => unreachable!("{other}"),
        }
        let after = cached_metrics(&service, user, range).await;
        assert_eq!(
            after,
            fresh_metrics(repo.as_ref(), user, range).await,
            "{write}: the cached metrics must show the write"
        );
        assert_ne!(after, before, "{write} changes the metrics");
        seen.push(after.summary.totals.executions);
    }
    assert_eq!(seen, [1, 2, 4, 6, 6, 7, 7]);

    // Retention changes no metric, but drops every cached one.
    cached_metrics(&service, user, range).await;
    let loads = service.cache_stats().loads;
    service
        .purge_executions_before(OffsetDateTime::now_utc() - Duration::from_secs(400 * 86_400))
        .await
        .unwrap();
    let after = cached_metrics(&service, user, range).await;
    assert_eq!(after, fresh_metrics(repo.as_ref(), user, range).await);
    assert_eq!(
        service.cache_stats().loads,
        loads + 4,
        "retention drops all four cached metrics"
    );

    // As does the explicit invalidation.
    service.invalidate_metrics(user).await;
    cached_metrics(&service, user, range).await;
    assert_eq!(service.cache_stats().loads, loads + 8);
}
