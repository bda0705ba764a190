mod replica;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::db::constraint_violation;
use opsdeck_core::{ModelRef, OperationId, UserId};
use sqlx::PgPool;
use time::{Date, OffsetDateTime};

use crate::error::{Error, Result};
use crate::execution::{ErrorKind, Execution, Outcome, RecordSummary, prepare_batch};
use crate::histogram::LatencyHistogram;
use crate::ids::{ExecutionId, RecommendationId, RecommendationStatus};
use crate::limits::{DEFAULT_FUTURE_TOLERANCE, MAX_LIST};
use crate::money::Money;
use crate::recommend::{Finding, Recommendation, Resolution, dedupe_findings};
use crate::report::{
    DailyRollup, DateRange, ModelStats, PeriodSummary, RollupFilter, Totals, TrendPoint,
    TrendQuery, compare_models, complete_trend,
};
use crate::repository::{
    AnalyticsRepository, RetentionReport, check_expiry_cutoff, retention_horizon,
};
use crate::sla::{SlaStatus, SlaTarget, SuccessRate};
use replica::ReadReplica;
pub use replica::ReplicaStats;

/// Analytics in PostgreSQL: the tables and functions of
/// `migrations/0002_analytics.sql` (`opsdeck.operation_executions`,
/// `opsdeck.cost_trends`, `opsdeck.record_operation_execution(s)`, …).
///
/// Recording goes through the SQL functions, so services written in other
/// languages calling them directly get the same idempotency and rollups.
/// Every statement filters on `user_id`, the leading column of every key.
///
/// Reports — [`cost_trend`](AnalyticsRepository::cost_trend),
/// [`period_summary`](AnalyticsRepository::period_summary),
/// [`model_comparison`](AnalyticsRepository::model_comparison) and
/// [`sla_report`](AnalyticsRepository::sla_report) — can run on a read
/// replica ([`with_read_pool`](Self::with_read_pool)) without ever lagging
/// a write: see there. Writes, recommendations, the raw log and the raw
/// rollups stay on the primary.
#[derive(Debug, Clone)]
pub struct PgAnalyticsRepository {
    pool: PgPool,
    future_tolerance: Duration,
    replica: Option<Arc<ReadReplica>>,
    replica_max_wait: Duration,
}

impl PgAnalyticsRepository {
    /// A repository on `pool`; the schema must be migrated
    /// (`opsdeck::MIGRATOR`). Accepts executions up to
    /// [`DEFAULT_FUTURE_TOLERANCE`] in the future.
    pub fn new(pool: PgPool) -> Self {
        PgAnalyticsRepository {
            pool,
            future_tolerance: DEFAULT_FUTURE_TOLERANCE,
            replica: None,
            replica_max_wait: replica::DEFAULT_MAX_WAIT,
        }
    }

    /// Runs the reports on `read_pool`, a streaming replica of the primary
    /// (a pool on the primary itself also works, e.g. in tests).
    ///
    /// A replica replays the primary's WAL with a lag, so a report that
    /// simply read it could miss a write acknowledged just before — and the
    /// metrics cache would keep that stale report for its TTL. So a report
    /// first reads the primary's flushed WAL position
    /// (`pg_current_wal_flush_lsn()`, one tiny query) and runs on the
    /// replica only once the replica has replayed up to it
    /// (`pg_last_wal_replay_lsn()`), waiting up to 50 ms
    /// ([`with_replica_max_wait`](Self::with_replica_max_wait)); past that
    /// it runs on the primary. A report therefore reflects every write
    /// committed before it began, on any instance (with
    /// `synchronous_commit = off` only those already flushed). A replica
    /// error or a probe slower than 500 ms sends reports to the primary for
    /// a second. [`replica_stats`](Self::replica_stats) counts where
    /// reports went.
    pub fn with_read_pool(mut self, read_pool: PgPool) -> Self {
        self.replica = Some(Arc::new(ReadReplica::new(read_pool)));
        self
    }

    /// How long a report waits for the replica to catch up before it runs
    /// on the primary (default 50 ms; zero: only a replica that has already
    /// caught up serves). Without a read pool this changes nothing.
    pub fn with_replica_max_wait(mut self, max_wait: Duration) -> Self {
        self.replica_max_wait = max_wait;
        self
    }

    /// Where reports went (all zero without a read pool).
    pub fn replica_stats(&self) -> ReplicaStats {
        self.replica
            .as_ref()
            .map(|replica| replica.stats())
            .unwrap_or_default()
    }

    /// The pool a report runs on (see [`Self::with_read_pool`]).
    async fn report_pool(&self) -> Result<&PgPool> {
        match &self.replica {
            Some(replica) => {
                replica
                    .route(&self.pool, self.replica_max_wait, map_db_error)
                    .await
            }
            None => Ok(&self.pool),
        }
    }

    /// Sets how far in the future `executed_at` may be (checked in Rust and
    /// again by the SQL function against the database clock).
    pub fn with_future_tolerance(mut self, tolerance: Duration) -> Self {
        self.future_tolerance = tolerance;
        self
    }

    /// The pool this repository uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the monthly partitions of `months` months starting with
    /// `from`'s month (existing ones are skipped, rows waiting in the default
    /// partition are moved); returns the names created. Run it ahead of
    /// time, e.g. monthly for the next three months: without a partition,
    /// executions land in the default partition, which retention can only
    /// trim row by row.
    #[tracing::instrument(name = "analytics.pg.create_partitions", skip(self))]
    pub async fn create_partitions(&self, from: Date, months: u32) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT opsdeck.create_execution_partitions($1, $2)")
            .bind(from)
            .bind(i32::try_from(months).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(map_db_error)
    }

    /// Like [`AnalyticsRepository::purge_executions_before`], but the
    /// partitions are only detached — left as standalone tables for
    /// archiving — not dropped.
    pub async fn detach_executions_before(
        &self,
        cutoff: OffsetDateTime,
    ) -> Result<RetentionReport> {
        self.retention(cutoff, true).await
    }

    #[tracing::instrument(name = "analytics.pg.retention", skip(self))]
    async fn retention(
        &self,
        cutoff: OffsetDateTime,
        detach_only: bool,
    ) -> Result<RetentionReport> {
        retention_horizon(cutoff, OffsetDateTime::now_utc())?;
        let dropped_partitions: Vec<String> =
            sqlx::query_scalar("SELECT opsdeck.drop_execution_partitions($1, $2)")
                .bind(cutoff)
                .bind(detach_only)
                .fetch_all(&self.pool)
                .await
                .map_err(map_db_error)?;
        // A separate statement: the ledger scan must not run under the log's
        // exclusive lock that dropping partitions takes.
        let forgotten: i64 = sqlx::query_scalar("SELECT opsdeck.prune_execution_ids()")
            .fetch_one(&self.pool)
            .await
            .map_err(map_db_error)?;
        let horizon = sqlx::query_scalar("SELECT horizon FROM opsdeck.execution_retention")
            .fetch_one(&self.pool)
            .await
            .map_err(map_db_error)?;
        Ok(RetentionReport {
            horizon,
            dropped_partitions,
            forgotten_ids: u64::try_from(forgotten).unwrap_or_default(),
        })
    }
}

impl PgAnalyticsRepository {
    /// The user's daily rollups matching `filter`, read on `pool`.
    async fn rollups_on(
        pool: &PgPool,
        user: UserId,
        filter: &RollupFilter,
    ) -> Result<Vec<DailyRollup>> {
        let rows = sqlx::query_as::<_, RollupRow>(DAILY_ROLLUPS)
            .bind(user)
            .bind(filter.range.start())
            .bind(filter.range.end())
            .bind(filter.operation.as_ref())
            .bind(filter.model.as_ref())
            .fetch_all(pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        // Rows come ordered by key, shards of one key adjacent: merge them.
        let mut rollups: Vec<DailyRollup> = Vec::with_capacity(rows.len());
        for row in rows {
            let rollup = row.into_domain()?;
            match rollups.last_mut() {
                Some(last)
                    if last.day == rollup.day
                        && last.model == rollup.model
                        && last.operation_id == rollup.operation_id =>
                {
                    last.merge(&rollup);
                }
                _ => rollups.push(rollup),
            }
        }
        Ok(rollups)
    }

    /// The user's SLA targets, read on `pool`.
    async fn targets_on(pool: &PgPool, user: UserId) -> Result<Vec<SlaTarget>> {
        let rows: Vec<(OperationId, i32, i32)> = sqlx::query_as(
            "SELECT operation_id, min_success_rate_ppm, max_p95_latency_ms
             FROM opsdeck.sla_targets WHERE user_id = $1 ORDER BY operation_id",
        )
        .bind(user)
        .fetch_all(pool)
        .await
        .map_err(map_db_error)?;
        rows.into_iter()
            .map(|(operation, ppm, latency)| {
                let corrupt = |e: Error| Error::Corrupt(format!("SLA target of user {user}: {e}"));
                SlaTarget::new(
                    operation,
                    SuccessRate::from_ppm(u32::try_from(ppm).unwrap_or(u32::MAX))
                        .map_err(corrupt)?,
                    u32::try_from(latency).unwrap_or_default(),
                )
                .map_err(corrupt)
            })
            .collect()
    }
}

const RECORD_ONE: &str = "SELECT opsdeck.record_operation_execution(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const RECORD_MANY: &str = "SELECT opsdeck.record_operation_executions(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const EXECUTIONS: &str = include_str!("../queries/executions.sql");
const DAILY_ROLLUPS: &str = include_str!("../queries/daily_rollups.sql");
const COST_TREND: &str = include_str!("../queries/cost_trend.sql");
const SAVE_RECOMMENDATIONS: &str = include_str!("../queries/save_recommendations.sql");

const ALL_RECOMMENDATIONS: &str = "
    SELECT id, user_id, details, status, created_at, updated_at, status_changed_at
    FROM opsdeck.optimization_recommendations
    WHERE user_id = $1
    ORDER BY created_at, kind, subject, id";

/// `status = 'active'` spelled out so the planner can use the partial index.
const ACTIVE_RECOMMENDATIONS: &str = "
    SELECT id, user_id, details, status, created_at, updated_at, status_changed_at
    FROM opsdeck.optimization_recommendations
    WHERE user_id = $1 AND status = 'active'
    ORDER BY created_at, kind, subject, id";

const RECOMMENDATIONS_WITH_STATUS: &str = "
    SELECT id, user_id, details, status, created_at, updated_at, status_changed_at
    FROM opsdeck.optimization_recommendations
    WHERE user_id = $1 AND status = $2
    ORDER BY created_at, kind, subject, id";

const ONE_RECOMMENDATION: &str = "
    SELECT id, user_id, details, status, created_at, updated_at, status_changed_at
    FROM opsdeck.optimization_recommendations
    WHERE user_id = $1 AND id = $2";

/// Only an active recommendation moves; the caller reads the row to tell
/// "missing" from "already resolved".
const RESOLVE_RECOMMENDATION: &str = "
    UPDATE opsdeck.optimization_recommendations
    SET status = $3, status_changed_at = now(), updated_at = now()
    WHERE user_id = $1 AND id = $2 AND status = 'active'
    RETURNING id, user_id, details, status, created_at, updated_at, status_changed_at";

/// Every user's active recommendations not refreshed since $1 (served by
/// the partial index on `updated_at` of active rows, migration 0007).
const EXPIRE_RECOMMENDATIONS: &str = "
    UPDATE opsdeck.optimization_recommendations
    SET status = 'expired', status_changed_at = now(), updated_at = now()
    WHERE status = 'active' AND updated_at < $1";

/// The executions of a batch as the parallel arrays the SQL function takes.
#[derive(Default)]
struct Columns<'a> {
    user_ids: Vec<UserId>,
    execution_ids: Vec<ExecutionId>,
    operation_ids: Vec<&'a OperationId>,
    models: Vec<&'a ModelRef>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    cost_micros: Vec<i64>,
    latency_ms: Vec<i32>,
    success: Vec<bool>,
    error_kinds: Vec<Option<&'a ErrorKind>>,
    executed_at: Vec<OffsetDateTime>,
}

impl<'a> Columns<'a> {
    fn of(executions: &'a [Execution]) -> Self {
        let mut columns = Columns::default();
        for e in executions {
            columns.user_ids.push(e.user_id);
            columns.execution_ids.push(e.execution_id);
            columns.operation_ids.push(&e.operation_id);
            columns.models.push(&e.model);
            columns.input_tokens.push(e.input_tokens);
            columns.output_tokens.push(e.output_tokens);
            columns.cost_micros.push(e.cost.micros());
            // Validated to at most MAX_LATENCY_MS, which fits an i32.
            columns
                .latency_ms
                .push(i32::try_from(e.latency_ms).unwrap_or(i32::MAX));
            columns.success.push(e.is_success());
            columns.error_kinds.push(e.error_kind());
            columns.executed_at.push(e.executed_at);
        }
        columns
    }
}

#[async_trait]
impl AnalyticsRepository for PgAnalyticsRepository {
    #[tracing::instrument(
        name = "analytics.pg.record_operation_execution",
        skip(self, execution),
        fields(user = %execution.user_id, operation = %execution.operation_id, new)
    )]
    async fn record_operation_execution(&self, execution: Execution) -> Result<bool> {
        execution.validate(OffsetDateTime::now_utc(), self.future_tolerance)?;
        let new: bool = sqlx::query_scalar(RECORD_ONE)
            .bind(execution.user_id)
            .bind(execution.execution_id)
            .bind(&execution.operation_id)
            .bind(&execution.model)
            .bind(execution.input_tokens)
            .bind(execution.output_tokens)
            .bind(execution.cost.micros())
            .bind(i32::try_from(execution.latency_ms).unwrap_or(i32::MAX))
            .bind(execution.is_success())
            .bind(execution.error_kind())
            .bind(execution.executed_at)
            .bind(self.future_tolerance)
            .fetch_one(&self.pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("new", new);
        Ok(new)
    }

    #[tracing::instrument(
        name = "analytics.pg.record_many",
        skip(self, executions),
        fields(items = executions.len(), recorded)
    )]
    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary> {
        let received = executions.len();
        let executions = prepare_batch(
            executions,
            OffsetDateTime::now_utc(),
            self.future_tolerance,
            // The retention horizon is checked by the SQL function.
            |_| Ok(()),
        )?;
        if executions.is_empty() {
            return Ok(RecordSummary::new(received, 0));
        }
        let c = Columns::of(&executions);
        let recorded: i64 = sqlx::query_scalar(RECORD_MANY)
            .bind(c.user_ids)
            .bind(c.execution_ids)
            .bind(c.operation_ids)
            .bind(c.models)
            .bind(c.input_tokens)
            .bind(c.output_tokens)
            .bind(c.cost_micros)
            .bind(c.latency_ms)
            .bind(c.success)
            .bind(c.error_kinds)
            .bind(c.executed_at)
            .bind(self.future_tolerance)
            .fetch_one(&self.pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("recorded", recorded);
        Ok(RecordSummary::new(
            received,
            u64::try_from(recorded).unwrap_or_default(),
        ))
    }

    #[tracing::instrument(name = "analytics.pg.executions", skip(self), fields(%user, %range, rows))]
    async fn executions(
        &self,
        user: UserId,
        range: DateRange,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        let rows = sqlx::query_as::<_, ExecutionRow>(EXECUTIONS)
            .bind(user)
            .bind(range.start().midnight().assume_utc())
            .bind(range.end().midnight().assume_utc())
            .bind(i64::try_from(limit.min(MAX_LIST)).unwrap_or_default())
            .fetch_all(&self.pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        rows.into_iter().map(ExecutionRow::into_domain).collect()
    }

    #[tracing::instrument(
        name = "analytics.pg.daily_rollups",
        skip(self, filter),
        fields(%user, range = %filter.range, rows)
    )]
    async fn daily_rollups(&self, user: UserId, filter: &RollupFilter) -> Result<Vec<DailyRollup>> {
        Self::rollups_on(&self.pool, user, filter).await
    }

    #[tracing::instrument(
        name = "analytics.pg.cost_trend",
        skip(self, query),
        fields(%user, range = %query.filter.range, granularity = query.granularity.as_str())
    )]
    async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        let pool = self.report_pool().await?;
        let rows = sqlx::query_as::<_, TrendRow>(COST_TREND)
            .bind(user)
            .bind(query.filter.range.start())
            .bind(query.filter.range.end())
            .bind(query.granularity.as_str())
            .bind(query.filter.operation.as_ref())
            .bind(query.filter.model.as_ref())
            .fetch_all(pool)
            .await
            .map_err(map_db_error)?;
        Ok(complete_trend(
            query,
            rows.into_iter().map(|row| (row.start, row.totals.into())),
        ))
    }

    #[tracing::instrument(name = "analytics.pg.set_sla_target", skip(self, target), fields(%user, operation = %target.operation_id()))]
    async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        sqlx::query(
            "INSERT INTO opsdeck.sla_targets AS t
                 (user_id, operation_id, min_success_rate_ppm, max_p95_latency_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, operation_id) DO UPDATE
             SET min_success_rate_ppm = EXCLUDED.min_success_rate_ppm,
                 max_p95_latency_ms   = EXCLUDED.max_p95_latency_ms,
                 updated_at           = now()",
        )
        .bind(user)
        .bind(target.operation_id())
        // Both bounded by SlaTarget (≤ 1 000 000 and ≤ MAX_LATENCY_MS).
        .bind(i32::try_from(target.min_success_rate().ppm()).unwrap_or(i32::MAX))
        .bind(i32::try_from(target.max_p95_latency_ms()).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(map_db_error)?;
        Ok(())
    }

    #[tracing::instrument(name = "analytics.pg.sla_targets", skip(self), fields(%user))]
    async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        Self::targets_on(&self.pool, user).await
    }

    #[tracing::instrument(name = "analytics.pg.delete_sla_target", skip(self), fields(%user, %operation))]
    async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool> {
        let result =
            sqlx::query("DELETE FROM opsdeck.sla_targets WHERE user_id = $1 AND operation_id = $2")
                .bind(user)
                .bind(operation)
                .execute(&self.pool)
                .await
                .map_err(map_db_error)?;
        Ok(result.rows_affected() > 0)
    }

    #[tracing::instrument(
        name = "analytics.pg.save_recommendations",
        skip(self, findings),
        fields(%user, findings = findings.len(), rows)
    )]
    async fn save_recommendations(
        &self,
        user: UserId,
        findings: Vec<Finding>,
        cooldown: Duration,
    ) -> Result<Vec<Recommendation>> {
        // No early return without findings: the statement then expires
        // every active recommendation of the user.
        let findings = dedupe_findings(findings);
        let mut kinds = Vec::with_capacity(findings.len());
        let mut subjects = Vec::with_capacity(findings.len());
        let mut operations = Vec::with_capacity(findings.len());
        let mut models = Vec::with_capacity(findings.len());
        let mut details = Vec::with_capacity(findings.len());
        for finding in &findings {
            kinds.push(finding.kind());
            subjects.push(finding.subject());
            operations.push(finding.operation());
            models.push(finding.model());
            details.push(
                serde_json::to_string(finding)
                    .map_err(|e| Error::invalid("finding", e.to_string()))?,
            );
        }
        let rows = sqlx::query_as::<_, RecommendationRow>(SAVE_RECOMMENDATIONS)
            .bind(user)
            .bind(kinds)
            .bind(subjects)
            .bind(operations)
            .bind(models)
            .bind(details)
            .bind(cooldown)
            .fetch_all(&self.pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        let mut saved = rows
            .into_iter()
            .map(RecommendationRow::into_domain)
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no order; the contract's is (kind, subject).
        saved.sort_by_cached_key(|r| (r.finding.kind(), r.finding.subject()));
        Ok(saved)
    }

    #[tracing::instrument(name = "analytics.pg.recommendations", skip(self), fields(%user, ?status, rows))]
    async fn recommendations(
        &self,
        user: UserId,
        status: Option<RecommendationStatus>,
    ) -> Result<Vec<Recommendation>> {
        let query = match status {
            None => sqlx::query_as::<_, RecommendationRow>(ALL_RECOMMENDATIONS),
            Some(RecommendationStatus::Active) => sqlx::query_as(ACTIVE_RECOMMENDATIONS),
            Some(_) => sqlx::query_as(RECOMMENDATIONS_WITH_STATUS),
        }
        .bind(user);
        let query = match status {
            Some(
                status @ (RecommendationStatus::Dismissed
                | RecommendationStatus::Applied
                | RecommendationStatus::Expired),
            ) => query.bind(status.as_str()),
            _ => query,
        };
        let rows = query.fetch_all(&self.pool).await.map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        rows.into_iter()
            .map(RecommendationRow::into_domain)
            .collect()
    }

    #[tracing::instrument(name = "analytics.pg.resolve_recommendation", skip(self), fields(%user, %id, ?resolution))]
    async fn resolve_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
        resolution: Resolution,
    ) -> Result<Recommendation> {
        let to = resolution.status();
        let updated = sqlx::query_as::<_, RecommendationRow>(RESOLVE_RECOMMENDATION)
            .bind(user)
            .bind(id)
            .bind(to.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?;
        if let Some(row) = updated {
            return row.into_domain();
        }
        let current = sqlx::query_as::<_, RecommendationRow>(ONE_RECOMMENDATION)
            .bind(user)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?
            .ok_or(Error::NotFound(id))?
            .into_domain()?;
        if current.status == to {
            Ok(current)
        } else {
            Err(Error::InvalidTransition {
                id,
                from: current.status,
                to,
            })
        }
    }

    #[tracing::instrument(
        name = "analytics.pg.expire_recommendations_before",
        skip(self),
        fields(expired)
    )]
    async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        check_expiry_cutoff(cutoff, OffsetDateTime::now_utc())?;
        let expired = sqlx::query(EXPIRE_RECOMMENDATIONS)
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(map_db_error)?
            .rows_affected();
        tracing::Span::current().record("expired", expired);
        Ok(expired)
    }

    async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport> {
        self.retention(cutoff, false).await
    }

    // The reports: the provided methods' logic, on the report pool.

    #[tracing::instrument(name = "analytics.pg.period_summary", skip(self, filter), fields(%user, rows))]
    async fn period_summary(&self, user: UserId, filter: &RollupFilter) -> Result<PeriodSummary> {
        let rollups = Self::rollups_on(self.report_pool().await?, user, filter).await?;
        Ok(PeriodSummary::of(filter.range, &rollups))
    }

    #[tracing::instrument(name = "analytics.pg.model_comparison", skip(self), fields(%user, rows))]
    async fn model_comparison(
        &self,
        user: UserId,
        operation: &OperationId,
        range: DateRange,
    ) -> Result<Vec<ModelStats>> {
        let filter = RollupFilter::new(range).operation(operation.clone());
        let rollups = Self::rollups_on(self.report_pool().await?, user, &filter).await?;
        Ok(compare_models(&rollups))
    }

    #[tracing::instrument(name = "analytics.pg.sla_report", skip(self), fields(%user, rows))]
    async fn sla_report(&self, user: UserId, range: DateRange) -> Result<Vec<SlaStatus>> {
        let pool = self.report_pool().await?;
        let targets = Self::targets_on(pool, user).await?;
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let rollups = Self::rollups_on(pool, user, &RollupFilter::new(range)).await?;
        Ok(targets
            .into_iter()
            .map(|target| SlaStatus::of(target, &rollups))
            .collect())
    }
}

#[derive(sqlx::FromRow)]
struct ExecutionRow {
    execution_id: ExecutionId,
    user_id: UserId,
    operation_id: OperationId,
    model: ModelRef,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    latency_ms: i32,
    success: bool,
    error_kind: Option<ErrorKind>,
    executed_at: OffsetDateTime,
}

impl ExecutionRow {
    fn into_domain(self) -> Result<Execution> {
        let corrupt =
            |what: String| Error::Corrupt(format!("execution {}: {what}", self.execution_id));
        let outcome = match (self.error_kind, self.success) {
            (None, true) => Outcome::Success,
            (Some(kind), false) => Outcome::Failure(kind),
            _ => return Err(corrupt("success and error_kind disagree".into())),
        };
        Ok(Execution {
            execution_id: self.execution_id,
            user_id: self.user_id,
            operation_id: self.operation_id,
            model: self.model,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: Money::from_micros(self.cost_micros),
            latency_ms: i64::from(self.latency_ms),
            outcome,
            executed_at: self.executed_at,
        })
    }
}

/// The summed columns shared by rollup and trend rows.
#[derive(sqlx::FromRow)]
struct TotalsRow {
    executions: i64,
    successes: i64,
    failures: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    latency_ms_sum: i64,
}

impl From<TotalsRow> for Totals {
    fn from(row: TotalsRow) -> Self {
        Totals {
            executions: row.executions,
            successes: row.successes,
            failures: row.failures,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cost: Money::from_micros(row.cost_micros),
            latency_ms_sum: row.latency_ms_sum,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RollupRow {
    operation_id: OperationId,
    model: ModelRef,
    day: Date,
    #[sqlx(flatten)]
    totals: TotalsRow,
    latency_histogram: Vec<i64>,
}

impl RollupRow {
    fn into_domain(self) -> Result<DailyRollup> {
        let corrupt = |what: String| {
            Error::Corrupt(format!(
                "rollup {} {} {}: {what}",
                self.operation_id, self.model, self.day
            ))
        };
        let histogram = LatencyHistogram::from_counts(&self.latency_histogram).map_err(corrupt)?;
        Ok(DailyRollup {
            operation_id: self.operation_id,
            model: self.model,
            day: self.day,
            histogram,
            totals: self.totals.into(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct TrendRow {
    start: Date,
    #[sqlx(flatten)]
    totals: TotalsRow,
}

#[derive(sqlx::FromRow)]
struct RecommendationRow {
    id: RecommendationId,
    user_id: UserId,
    details: serde_json::Value,
    status: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    status_changed_at: Option<OffsetDateTime>,
}

impl RecommendationRow {
    fn into_domain(self) -> Result<Recommendation> {
        let corrupt = |what: String| Error::Corrupt(format!("recommendation {}: {what}", self.id));
        Ok(Recommendation {
            id: self.id,
            user_id: self.user_id,
            finding: serde_json::from_value(self.details).map_err(|e| corrupt(e.to_string()))?,
            status: self
                .status
                .parse::<RecommendationStatus>()
                .map_err(|e| corrupt(e.to_string()))?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            status_changed_at: self.status_changed_at,
        })
    }
}

/// The constraints a refused write can name, with the field at fault; the
/// SQL functions raise `check_violation` with such names for the checks
/// they make themselves. The Rust types and [`Execution::validate`] check
/// the same rules first, so these fire only for input that bypassed them.
/// The rollup's own sums and shapes are guarded under `execution`: only a
/// bad execution can break them.
const CONSTRAINT_FIELDS: &[(&str, &str)] = &[
    (
        "operation_executions_executed_at_future_check",
        "executed_at",
    ),
    (
        "operation_executions_executed_at_retention_check",
        "executed_at",
    ),
    ("operation_executions_input_tokens_check", "input_tokens"),
    ("operation_executions_output_tokens_check", "output_tokens"),
    ("operation_executions_cost_micros_check", "cost"),
    ("operation_executions_latency_ms_check", "latency_ms"),
    ("operation_executions_error_kind_check", "error_kind"),
    ("operation_executions_outcome_check", "error_kind"),
    ("cost_trends_operation_id_check", "operation_id"),
    ("sla_targets_operation_id_check", "operation_id"),
    ("cost_trends_model_check", "model"),
    ("record_operation_executions_batch_size", "batch"),
    ("cost_trends_shard_check", "execution"),
    ("cost_trends_counts_check", "execution"),
    ("cost_trends_sums_check", "execution"),
    ("cost_trends_histogram_check", "execution"),
    ("sla_targets_min_success_rate_ppm_check", "min_success_rate"),
    ("sla_targets_max_p95_latency_ms_check", "max_p95_latency_ms"),
    ("optimization_recommendations_kind_check", "finding"),
    ("optimization_recommendations_status_check", "status"),
    (
        "optimization_recommendations_status_changed_check",
        "status",
    ),
    (
        "optimization_recommendations_operation_id_check",
        "operation_id",
    ),
    ("optimization_recommendations_details_check", "finding"),
];

/// A refused write is the [`Error::Validation`] of its field; everything
/// else is a database error.
fn map_db_error(error: sqlx::Error) -> Error {
    match constraint_violation(&error, CONSTRAINT_FIELDS) {
        Some(validation) => Error::Validation(validation),
        None => Error::Database(error),
    }
}
