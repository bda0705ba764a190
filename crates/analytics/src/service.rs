use std::sync::Arc;

use opsdeck_cache::{CacheStats, Tiers};
use opsdeck_core::{OperationId, UserId, Validation};
use time::{Date, OffsetDateTime};

use crate::cached::Cached;
use crate::config::AnalyticsConfig;
use crate::error::{Error, Result};
use crate::execution::{Execution, RecordSummary};
use crate::ids::{RecommendationId, RecommendationStatus};
use crate::limits::MAX_BATCH;
use crate::recommend::{Recommendation, RecommendationThresholds, Resolution};
use crate::report::{DateRange, ModelStats, PeriodSummary, RollupFilter, TrendPoint, TrendQuery};
use crate::repository::{AnalyticsRepository, AnalyticsRepositoryExt, RetentionReport};
use crate::sla::{SlaStatus, SlaTarget};

/// What applications call. It holds the [`Cached`] stack over the
/// repository — so metrics are cached for 5 minutes and every write drops
/// the cached metrics it can change — and adds only what sits at the edge:
/// parsing raw input ([`crate::ExecutionRecord`], operation ids as text)
/// and the configured recommendation thresholds.
///
/// A method that does what one [`AnalyticsRepository`] method does has its
/// name (`record_operation_execution`, `record_many`, `period_summary`, …)
/// and takes raw input where the trait takes typed values; recommendations
/// are resolved through `dismiss_recommendation` and
/// `mark_recommendation_applied` (the trait's `resolve_recommendation`).
/// There is deliberately no accessor of the repository underneath: a write
/// through it would skip the cache invalidation.
///
/// Cloning is cheap and clones share the caches.
#[derive(Debug, Clone)]
pub struct AnalyticsService {
    stack: Arc<Cached<Arc<dyn AnalyticsRepository>>>,
    thresholds: RecommendationThresholds,
}

impl AnalyticsService {
    /// A service over `repository` with the default configuration.
    pub fn new(repository: Arc<dyn AnalyticsRepository>) -> Self {
        Self::with_config(repository, AnalyticsConfig::default())
    }

    /// A service over `repository` with `config`.
    pub fn with_config(repository: Arc<dyn AnalyticsRepository>, config: AnalyticsConfig) -> Self {
        Self::with_tiers(repository, config, Tiers::none())
    }

    /// A service whose metric caches also use a shared L2 and/or an
    /// invalidation bus (see `opsdeck_cache::Tiers`), so that a record on one
    /// instance drops the user's metrics on all. With a bus this spawns
    /// listener tasks: call it inside a tokio runtime.
    pub fn with_tiers(
        repository: Arc<dyn AnalyticsRepository>,
        config: AnalyticsConfig,
        tiers: Tiers,
    ) -> Self {
        AnalyticsService {
            stack: Arc::new(Cached::new(repository, &config, tiers)),
            thresholds: config.thresholds,
        }
    }

    /// Cache counters summed over the service's namespaces.
    pub fn cache_stats(&self) -> CacheStats {
        self.stack.cache_stats()
    }

    /// Drops every cached metric of `user` (e.g. after an out-of-band write).
    pub async fn invalidate_metrics(&self, user: UserId) {
        self.stack.invalidate_metrics(user).await;
    }

    /// Records one execution (the seed's `record_operation_execution`):
    /// a raw [`crate::ExecutionRecord`], parsed here, or a typed
    /// [`Execution`]. `Ok(false)` if its id was already recorded.
    #[tracing::instrument(
        name = "analytics.record_operation_execution",
        skip_all,
        fields(user, operation)
    )]
    pub async fn record_operation_execution<E>(&self, execution: E) -> Result<bool>
    where
        E: TryInto<Execution>,
        Error: From<E::Error>,
    {
        let execution = execution.try_into()?;
        let span = tracing::Span::current();
        span.record("user", tracing::field::display(execution.user_id));
        span.record(
            "operation",
            tracing::field::display(&execution.operation_id),
        );
        self.stack.record_operation_execution(execution).await
    }

    /// Records a batch of raw records or typed executions in one statement.
    /// Every item is parsed first; the first bad one is reported with its
    /// position and nothing is written.
    #[tracing::instrument(name = "analytics.record_many", skip_all, fields(items = executions.len()))]
    pub async fn record_many<E>(&self, executions: Vec<E>) -> Result<RecordSummary>
    where
        E: TryInto<Execution>,
        Error: From<E::Error>,
    {
        // Before parsing: an oversized batch is refused without the work.
        if executions.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                len: executions.len(),
                max: MAX_BATCH,
            });
        }
        let executions = executions
            .into_iter()
            .enumerate()
            .map(|(index, item)| item.try_into().map_err(|e| Error::from(e).at_item(index)))
            .collect::<Result<Vec<_>>>()?;
        self.stack.record_many(executions).await
    }

    /// The user's logged executions in `range`, ordered by `executed_at`
    /// then id, at most `limit` (not cached: the log is not a metric).
    #[tracing::instrument(name = "analytics.executions", skip(self), fields(%user))]
    pub async fn executions(
        &self,
        user: UserId,
        range: DateRange,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        self.stack.executions(user, range, limit).await
    }

    /// The user's cost trend (cached).
    #[tracing::instrument(name = "analytics.cost_trend", skip(self, query), fields(%user))]
    pub async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        self.stack.cost_trend(user, query).await
    }

    /// Totals and latency percentiles over `range`, optionally for one
    /// operation (cached).
    #[tracing::instrument(name = "analytics.period_summary", skip(self), fields(%user))]
    pub async fn period_summary(
        &self,
        user: UserId,
        range: DateRange,
        operation: Option<&str>,
    ) -> Result<PeriodSummary> {
        let mut filter = RollupFilter::new(range);
        if let Some(operation) = operation {
            filter = filter.operation(parse_operation(operation)?);
        }
        self.stack.period_summary(user, &filter).await
    }

    /// Per-model stats of `operation` over `range` (cached).
    #[tracing::instrument(name = "analytics.model_comparison", skip(self), fields(%user))]
    pub async fn model_comparison(
        &self,
        user: UserId,
        operation: &str,
        range: DateRange,
    ) -> Result<Vec<ModelStats>> {
        let operation = parse_operation(operation)?;
        self.stack.model_comparison(user, &operation, range).await
    }

    /// Every SLA target of the user against `range` (cached).
    #[tracing::instrument(name = "analytics.sla_report", skip(self), fields(%user))]
    pub async fn sla_report(&self, user: UserId, range: DateRange) -> Result<Vec<SlaStatus>> {
        self.stack.sla_report(user, range).await
    }

    /// Creates or replaces the user's SLA target for its operation.
    #[tracing::instrument(name = "analytics.set_sla_target", skip(self, target), fields(%user))]
    pub async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        self.stack.set_sla_target(user, target).await
    }

    /// Removes the user's SLA target of `operation`; `Ok(false)` if none.
    #[tracing::instrument(name = "analytics.delete_sla_target", skip(self), fields(%user))]
    pub async fn delete_sla_target(&self, user: UserId, operation: &str) -> Result<bool> {
        let operation = parse_operation(operation)?;
        self.stack.delete_sla_target(user, &operation).await
    }

    /// The user's SLA targets.
    #[tracing::instrument(name = "analytics.sla_targets", skip(self), fields(%user))]
    pub async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        self.stack.sla_targets(user).await
    }

    /// Runs the recommendation rules on the user's data up to today (UTC)
    /// with the configured thresholds and stores the findings; the user's
    /// active recommendations the rules no longer produce expire.
    pub async fn generate_recommendations(&self, user: UserId) -> Result<Vec<Recommendation>> {
        let today = OffsetDateTime::now_utc().date();
        self.generate_recommendations_as_of(user, today).await
    }

    /// Like [`Self::generate_recommendations`], as of the UTC day `as_of`.
    #[tracing::instrument(name = "analytics.generate_recommendations", skip(self), fields(%user, %as_of))]
    pub async fn generate_recommendations_as_of(
        &self,
        user: UserId,
        as_of: Date,
    ) -> Result<Vec<Recommendation>> {
        self.stack
            .generate_recommendations(user, as_of, &self.thresholds)
            .await
    }

    /// The user's recommendations, optionally of one status, oldest first.
    #[tracing::instrument(name = "analytics.recommendations", skip(self), fields(%user))]
    pub async fn recommendations(
        &self,
        user: UserId,
        status: Option<RecommendationStatus>,
    ) -> Result<Vec<Recommendation>> {
        self.stack.recommendations(user, status).await
    }

    /// Dismisses an active recommendation.
    #[tracing::instrument(name = "analytics.dismiss_recommendation", skip(self), fields(%user, %id))]
    pub async fn dismiss_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
    ) -> Result<Recommendation> {
        self.stack
            .resolve_recommendation(user, id, Resolution::Dismiss)
            .await
    }

    /// Marks an active recommendation applied — only marks it: carrying out
    /// its [`Recommendation::action`] (e.g. changing a preferred model) is
    /// the caller's part; the opsdeck facade's `apply_recommendation` does
    /// both.
    #[tracing::instrument(name = "analytics.mark_recommendation_applied", skip(self), fields(%user, %id))]
    pub async fn mark_recommendation_applied(
        &self,
        user: UserId,
        id: RecommendationId,
    ) -> Result<Recommendation> {
        self.stack
            .resolve_recommendation(user, id, Resolution::Apply)
            .await
    }

    /// Expires every user's active recommendations not refreshed since
    /// `cutoff` (see [`AnalyticsRepository::expire_recommendations_before`]);
    /// returns how many.
    #[tracing::instrument(name = "analytics.expire_recommendations", skip(self))]
    pub async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        self.stack.expire_recommendations_before(cutoff).await
    }

    /// Retention (see [`AnalyticsRepository::purge_executions_before`]);
    /// drops every cached metric.
    #[tracing::instrument(name = "analytics.purge", skip(self))]
    pub async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport> {
        self.stack.purge_executions_before(cutoff).await
    }
}

fn parse_operation(operation: &str) -> Result<OperationId> {
    OperationId::parse(operation).map_err(|e| Validation::from(("operation_id", e)).into())
}
