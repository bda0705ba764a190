//! The storage contract ([`AnalyticsRepository`]), its conveniences
//! ([`AnalyticsRepositoryExt`]) and what retention reports.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use time::{Date, OffsetDateTime};

use crate::error::{Error, Result};
use crate::execution::{Execution, RecordSummary};
use crate::ids::{RecommendationId, RecommendationStatus};
use crate::recommend::{Finding, Recommendation, RecommendationThresholds, Resolution, evaluate};
use crate::report::{
    DailyRollup, DateRange, ModelStats, PeriodSummary, RollupFilter, TrendPoint, TrendQuery,
    compare_models,
};
use crate::sla::{SlaStatus, SlaTarget};

/// What [`AnalyticsRepository::purge_executions_before`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Executions before this instant are gone and are refused from now on.
    pub horizon: OffsetDateTime,
    /// Storage units removed (PostgreSQL: the dropped monthly partitions;
    /// in memory: none).
    pub dropped_partitions: Vec<String>,
    /// Idempotency ids forgotten (one per removed execution).
    pub forgotten_ids: u64,
}

/// Storage of executions, rollups, SLA targets and recommendations. Every
/// read and write is scoped by user.
///
/// The required methods are the storage; the provided ones
/// ([`period_summary`](Self::period_summary),
/// [`model_comparison`](Self::model_comparison),
/// [`sla_report`](Self::sla_report)) derive reports from
/// [`daily_rollups`](Self::daily_rollups) for every backend, and a wrapper
/// such as [`crate::Cached`] overrides them to serve them from its cache.
/// Percentiles come from merged histograms, never from raw executions.
///
/// # Contract (checked by [`crate::testing`] for every backend)
/// - `record_operation_execution`/`record_many` validate everything first
///   ([`Execution::validate`] with the backend's future tolerance, batch
///   size ≤ [`crate::MAX_BATCH`], `executed_at` not before the retention
///   horizon); any failure is an error and writes nothing. A batch is all
///   or nothing.
/// - An execution is identified by (user, execution id): recording it again,
///   in any call, concurrently or not, changes nothing
///   (`record_operation_execution` returns `false`; `record_many` counts it
///   in `duplicates`). Within one batch the first occurrence wins.
/// - The log row and the rollup change together: the rollups' totals always
///   equal the sums of the logged executions (until retention removes log
///   rows; rollups are kept).
/// - `daily_rollups` returns one rollup per (operation, model, day) in that
///   order; `cost_trend` returns one point per bucket from the range's first
///   to its last day, zeros included.
/// - `save_recommendations` takes the user's complete current findings and
///   leaves at most one active recommendation per (kind, subject): an
///   existing one is refreshed with the new evidence; one dismissed or
///   applied less than `cooldown` ago suppresses the finding (an expired
///   one does not); an active one whose (kind, subject) is not among the
///   findings no longer holds and becomes expired — all in one atomic step.
///   It returns the active recommendations of the findings, ordered by
///   kind and subject.
/// - `resolve_recommendation` moves an active recommendation to dismissed
///   or applied; repeating the same resolution is a no-op; anything else is
///   [`Error::InvalidTransition`]; an unknown id is [`Error::NotFound`].
/// - `expire_recommendations_before` expires every active recommendation
///   (of every user) last refreshed before the cutoff.
/// - A read after a write sees the write, also through a caching wrapper.
#[async_trait]
pub trait AnalyticsRepository: Send + Sync + std::fmt::Debug {
    /// Records one execution; `Ok(false)` if its id was already recorded.
    /// The name is the seed's (and the SQL function's).
    async fn record_operation_execution(&self, execution: Execution) -> Result<bool>;

    /// Records a batch (one statement on PostgreSQL).
    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary>;

    /// The user's logged executions in `range`, ordered by `executed_at`
    /// then id, at most `limit` (capped at [`crate::MAX_LIST`]).
    async fn executions(
        &self,
        user: UserId,
        range: DateRange,
        limit: usize,
    ) -> Result<Vec<Execution>>;

    /// The user's daily rollups matching `filter`.
    async fn daily_rollups(&self, user: UserId, filter: &RollupFilter) -> Result<Vec<DailyRollup>>;

    /// The user's cost trend.
    async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>>;

    /// Creates or replaces the user's target for the target's operation.
    async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()>;

    /// The user's targets, ordered by operation.
    async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>>;

    /// Removes a target; `Ok(false)` if there was none.
    async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool>;

    /// Stores the user's current findings as active recommendations and
    /// expires the active ones they no longer include (see the contract).
    async fn save_recommendations(
        &self,
        user: UserId,
        findings: Vec<Finding>,
        cooldown: Duration,
    ) -> Result<Vec<Recommendation>>;

    /// The user's recommendations, optionally of one status, oldest first.
    async fn recommendations(
        &self,
        user: UserId,
        status: Option<RecommendationStatus>,
    ) -> Result<Vec<Recommendation>>;

    /// Dismisses or applies an active recommendation.
    async fn resolve_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
        resolution: Resolution,
    ) -> Result<Recommendation>;

    /// Expires every active recommendation, of every user, whose last
    /// refresh (`updated_at`: its creation or the last generation that
    /// still found it) is before `cutoff`; returns how many. For users
    /// whose recommendations are no longer regenerated, e.g. a daily job
    /// with `now - 30 days`. `cutoff` must not be in the future.
    async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64>;

    /// Retention: forgets every execution before the start of `cutoff`'s
    /// UTC month (whole months, as partitions are monthly) and refuses such
    /// executions from then on; rollups stay. `cutoff` must not be in the
    /// future. The horizon never moves back.
    async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport>;

    /// Totals and latency percentiles of the rollups matching `filter`.
    async fn period_summary(&self, user: UserId, filter: &RollupFilter) -> Result<PeriodSummary> {
        let rollups = self.daily_rollups(user, filter).await?;
        Ok(PeriodSummary::of(filter.range, &rollups))
    }

    /// Per-model stats of `operation` over `range`, ordered by model.
    async fn model_comparison(
        &self,
        user: UserId,
        operation: &OperationId,
        range: DateRange,
    ) -> Result<Vec<ModelStats>> {
        let filter = RollupFilter::new(range).operation(operation.clone());
        let rollups = self.daily_rollups(user, &filter).await?;
        Ok(compare_models(&rollups))
    }

    /// Every SLA target of the user against `range`, ordered by operation.
    async fn sla_report(&self, user: UserId, range: DateRange) -> Result<Vec<SlaStatus>> {
        let targets = self.sla_targets(user).await?;
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let rollups = self.daily_rollups(user, &RollupFilter::new(range)).await?;
        Ok(targets
            .into_iter()
            .map(|target| SlaStatus::of(target, &rollups))
            .collect())
    }
}

/// Flows built from [`AnalyticsRepository`] calls, for every repository
/// (including `dyn AnalyticsRepository` and wrappers).
#[async_trait]
pub trait AnalyticsRepositoryExt: AnalyticsRepository {
    /// Runs the rules ([`evaluate`]) on the user's rollups as of the UTC
    /// day `as_of` and stores the findings, expiring the user's active
    /// recommendations the rules no longer produce; returns the resulting
    /// active recommendations. Running it again with the same data changes
    /// nothing but `updated_at`.
    async fn generate_recommendations(
        &self,
        user: UserId,
        as_of: Date,
        thresholds: &RecommendationThresholds,
    ) -> Result<Vec<Recommendation>> {
        thresholds.validate()?;
        let range = thresholds.analysis_range(as_of)?;
        let rollups = self.daily_rollups(user, &RollupFilter::new(range)).await?;
        let findings = evaluate(&rollups, as_of, thresholds)?;
        let cooldown = Duration::from_secs(u64::from(thresholds.cooldown_days) * 86_400);
        self.save_recommendations(user, findings, cooldown).await
    }
}

impl<R: AnalyticsRepository + ?Sized> AnalyticsRepositoryExt for R {}

/// A shared repository is a repository, so wrappers such as
/// [`crate::Cached`] can hold an `Arc<dyn AnalyticsRepository>`. Every
/// method, the provided ones included, goes to the shared value, so its own
/// overrides are kept.
#[async_trait]
impl<R: AnalyticsRepository + ?Sized> AnalyticsRepository for Arc<R> {
    async fn record_operation_execution(&self, execution: Execution) -> Result<bool> {
        (**self).record_operation_execution(execution).await
    }
    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary> {
        (**self).record_many(executions).await
    }
    async fn executions(
        &self,
        user: UserId,
        range: DateRange,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        (**self).executions(user, range, limit).await
    }
    async fn daily_rollups(&self, user: UserId, filter: &RollupFilter) -> Result<Vec<DailyRollup>> {
        (**self).daily_rollups(user, filter).await
    }
    async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        (**self).cost_trend(user, query).await
    }
    async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        (**self).set_sla_target(user, target).await
    }
    async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        (**self).sla_targets(user).await
    }
    async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool> {
        (**self).delete_sla_target(user, operation).await
    }
    async fn save_recommendations(
        &self,
        user: UserId,
        findings: Vec<Finding>,
        cooldown: Duration,
    ) -> Result<Vec<Recommendation>> {
        (**self)
            .save_recommendations(user, findings, cooldown)
            .await
    }
    async fn recommendations(
        &self,
        user: UserId,
        status: Option<RecommendationStatus>,
    ) -> Result<Vec<Recommendation>> {
        (**self).recommendations(user, status).await
    }
    async fn resolve_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
        resolution: Resolution,
    ) -> Result<Recommendation> {
        (**self).resolve_recommendation(user, id, resolution).await
    }
    async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        (**self).expire_recommendations_before(cutoff).await
    }
    async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport> {
        (**self).purge_executions_before(cutoff).await
    }
    async fn period_summary(&self, user: UserId, filter: &RollupFilter) -> Result<PeriodSummary> {
        (**self).period_summary(user, filter).await
    }
    async fn model_comparison(
        &self,
        user: UserId,
        operation: &OperationId,
        range: DateRange,
    ) -> Result<Vec<ModelStats>> {
        (**self).model_comparison(user, operation, range).await
    }
    async fn sla_report(&self, user: UserId, range: DateRange) -> Result<Vec<SlaStatus>> {
        (**self).sla_report(user, range).await
    }
}

// A mock of the storage methods only: the provided report methods keep
// their defaults, so a test of a caller sets expectations on the storage
// calls the reports make (mockall would otherwise mock them too).
#[cfg(feature = "mock")]
mockall::mock! {
    /// A mockall mock of [`AnalyticsRepository`] (feature `mock`), for
    /// testing callers; the derived reports go through its `daily_rollups`
    /// and `sla_targets`.
    pub AnalyticsRepository {}

    #[async_trait]
    impl AnalyticsRepository for AnalyticsRepository {
        async fn record_operation_execution(&self, execution: Execution) -> Result<bool>;
        async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary>;
        async fn executions(
            &self,
            user: UserId,
            range: DateRange,
            limit: usize,
        ) -> Result<Vec<Execution>>;
        async fn daily_rollups(
            &self,
            user: UserId,
            filter: &RollupFilter,
        ) -> Result<Vec<DailyRollup>>;
        async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>>;
        async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()>;
        async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>>;
        async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool>;
        async fn save_recommendations(
            &self,
            user: UserId,
            findings: Vec<Finding>,
            cooldown: Duration,
        ) -> Result<Vec<Recommendation>>;
        async fn recommendations(
            &self,
            user: UserId,
            status: Option<RecommendationStatus>,
        ) -> Result<Vec<Recommendation>>;
        async fn resolve_recommendation(
            &self,
            user: UserId,
            id: RecommendationId,
            resolution: Resolution,
        ) -> Result<Recommendation>;
        async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64>;
        async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport>;
    }
}

#[cfg(feature = "mock")]
impl std::fmt::Debug for MockAnalyticsRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockAnalyticsRepository")
    }
}

/// Refuses an expiry cutoff in the future (it would expire what the rules
/// still produce).
pub(crate) fn check_expiry_cutoff(cutoff: OffsetDateTime, now: OffsetDateTime) -> Result<()> {
    if cutoff > now {
        return Err(Error::invalid(
            "cutoff",
            format!("{cutoff} is in the future"),
        ));
    }
    Ok(())
}

/// The retention horizon for `cutoff`: the start of its UTC month. Refuses
/// a cutoff in the future (a typo there would erase live data).
pub(crate) fn retention_horizon(
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<OffsetDateTime> {
    if cutoff > now {
        return Err(Error::invalid(
            "cutoff",
            format!("{cutoff} is in the future"),
        ));
    }
    let day = cutoff.to_offset(time::UtcOffset::UTC).date();
    Ok(day.replace_day(1).unwrap_or(day).midnight().assume_utc())
}
