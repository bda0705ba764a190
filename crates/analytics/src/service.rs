use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opsdeck_cache::{Cache, CacheConfig, CacheKey, CacheStats, CacheValue, Tiers};
use opsdeck_core::{OperationId, UserId};
use time::{Date, OffsetDateTime};

use crate::error::{Error, Result};
use crate::{
    AnalyticsReports, AnalyticsRepository, DateRange, Execution, ExecutionRecord, MAX_BATCH,
    ModelStats, PeriodSummary, Recommendation, RecommendationId, RecommendationStatus,
    RecommendationThresholds, RecordSummary, Resolution, RetentionReport, RollupFilter, SlaStatus,
    SlaTarget, TrendPoint, TrendQuery,
};

/// How [`AnalyticsService`] caches and recommends.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AnalyticsConfig {
    /// How long a cached metric lives (default 5 minutes, as in the seed).
    pub metrics_ttl: Duration,
    /// Most entries per cache namespace.
    pub cache_capacity: u64,
    /// Thresholds of the recommendation rules.
    pub thresholds: RecommendationThresholds,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            metrics_ttl: Duration::from_secs(5 * 60),
            cache_capacity: 100_000,
            thresholds: RecommendationThresholds::default(),
        }
    }
}

impl AnalyticsConfig {
    /// Sets the metrics TTL.
    pub fn with_metrics_ttl(mut self, ttl: Duration) -> Self {
        self.metrics_ttl = ttl;
        self
    }

    /// Sets the most entries per cache namespace.
    pub fn with_cache_capacity(mut self, capacity: u64) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Sets the recommendation thresholds.
    pub fn with_thresholds(mut self, thresholds: RecommendationThresholds) -> Self {
        self.thresholds = thresholds;
        self
    }
}

/// What applications call: parses raw input, records through the
/// repository, serves metrics through a 5-minute cache and drops a user's
/// cached metrics on every write that can change them.
///
/// Cloning is cheap and clones share the caches.
#[derive(Debug, Clone)]
pub struct AnalyticsService {
    repository: Arc<dyn AnalyticsRepository>,
    trends: Cache<Arc<Vec<TrendPoint>>>,
    summaries: Cache<Arc<PeriodSummary>>,
    comparisons: Cache<Arc<Vec<ModelStats>>>,
    sla_reports: Cache<Arc<Vec<SlaStatus>>>,
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
            repository,
            trends: namespace("analytics.trend", &config, &tiers),
            summaries: namespace("analytics.summary", &config, &tiers),
            comparisons: namespace("analytics.comparison", &config, &tiers),
            sla_reports: namespace("analytics.sla", &config, &tiers),
            thresholds: config.thresholds,
        }
    }

    /// The repository behind the cache.
    pub fn repository(&self) -> &Arc<dyn AnalyticsRepository> {
        &self.repository
    }

    /// Cache counters summed over the service's namespaces.
    pub fn cache_stats(&self) -> CacheStats {
        self.trends.stats()
            + self.summaries.stats()
            + self.comparisons.stats()
            + self.sla_reports.stats()
    }

    /// Records one raw execution (the seed's `recordExecution`); `Ok(false)`
    /// if its id was already recorded.
    #[tracing::instrument(
        name = "analytics.record",
        skip(self, record),
        fields(user = %record.user_id, execution = %record.execution_id)
    )]
    pub async fn record(&self, record: ExecutionRecord) -> Result<bool> {
        self.record_execution(record.parse()?).await
    }

    /// Records one typed execution.
    #[tracing::instrument(
        name = "analytics.record_execution",
        skip(self, execution),
        fields(user = %execution.user_id, operation = %execution.operation_id)
    )]
    pub async fn record_execution(&self, execution: Execution) -> Result<bool> {
        let user = execution.user_id;
        let result = self.repository.record(execution).await;
        // Even on error: a database error can hide a commit.
        self.invalidate_metrics(user).await;
        result
    }

    /// Records a batch of raw executions in one statement. Every record is
    /// parsed first; the first bad one is reported with its position and
    /// nothing is written.
    #[tracing::instrument(name = "analytics.record_many", skip(self, records), fields(items = records.len()))]
    pub async fn record_many(&self, records: Vec<ExecutionRecord>) -> Result<RecordSummary> {
        if records.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                len: records.len(),
                max: MAX_BATCH,
            });
        }
        let executions = records
            .into_iter()
            .enumerate()
            .map(|(index, record)| record.parse().map_err(|e| e.at_item(index)))
            .collect::<Result<Vec<_>>>()?;
        self.record_executions(executions).await
    }

    /// Records a batch of typed executions in one statement.
    #[tracing::instrument(
        name = "analytics.record_executions",
        skip(self, executions),
        fields(items = executions.len())
    )]
    pub async fn record_executions(&self, executions: Vec<Execution>) -> Result<RecordSummary> {
        let users: BTreeSet<UserId> = executions.iter().map(|e| e.user_id).collect();
        let result = self.repository.record_many(executions).await;
        for user in users {
            self.invalidate_metrics(user).await;
        }
        result
    }

    /// The user's cost trend (cached).
    #[tracing::instrument(name = "analytics.cost_trend", skip(self, query), fields(%user, cache = "hit"))]
    pub async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        let key = format!(
            "{}|{}",
            query.filter.cache_key(),
            query.granularity.as_str()
        );
        cached(&self.trends, user, key, || {
            self.repository.cost_trend(user, query)
        })
        .await
    }

    /// Totals and latency percentiles over `range`, optionally for one
    /// operation (cached).
    #[tracing::instrument(name = "analytics.period_summary", skip(self), fields(%user, cache = "hit"))]
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
        cached(&self.summaries, user, filter.cache_key(), || {
            self.repository.period_summary(user, &filter)
        })
        .await
    }

    /// Per-model stats of `operation` over `range` (cached).
    #[tracing::instrument(name = "analytics.model_comparison", skip(self), fields(%user, cache = "hit"))]
    pub async fn model_comparison(
        &self,
        user: UserId,
        operation: &str,
        range: DateRange,
    ) -> Result<Vec<ModelStats>> {
        let operation = parse_operation(operation)?;
        let key = RollupFilter::new(range)
            .operation(operation.clone())
            .cache_key();
        cached(&self.comparisons, user, key, || {
            self.repository.model_comparison(user, &operation, range)
        })
        .await
    }

    /// Every SLA target of the user against `range` (cached).
    #[tracing::instrument(name = "analytics.sla_report", skip(self), fields(%user, cache = "hit"))]
    pub async fn sla_report(&self, user: UserId, range: DateRange) -> Result<Vec<SlaStatus>> {
        cached(&self.sla_reports, user, range.to_string(), || {
            self.repository.sla_report(user, range)
        })
        .await
    }

    /// Creates or replaces the user's SLA target for its operation.
    #[tracing::instrument(name = "analytics.set_sla_target", skip(self, target), fields(%user))]
    pub async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        let result = self.repository.set_sla_target(user, target).await;
        self.sla_reports.invalidate_user(user).await;
        result
    }

    /// Removes the user's SLA target of `operation`; `Ok(false)` if none.
    #[tracing::instrument(name = "analytics.delete_sla_target", skip(self), fields(%user))]
    pub async fn delete_sla_target(&self, user: UserId, operation: &str) -> Result<bool> {
        let operation = parse_operation(operation)?;
        let result = self.repository.delete_sla_target(user, &operation).await;
        self.sla_reports.invalidate_user(user).await;
        result
    }

    /// The user's SLA targets.
    #[tracing::instrument(name = "analytics.sla_targets", skip(self), fields(%user))]
    pub async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        self.repository.sla_targets(user).await
    }

    /// Runs the recommendation rules on the user's data up to today (UTC)
    /// with the configured thresholds and stores the findings.
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
        self.repository
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
        self.repository.recommendations(user, status).await
    }

    /// Dismisses an active recommendation.
    #[tracing::instrument(name = "analytics.dismiss_recommendation", skip(self), fields(%user, %id))]
    pub async fn dismiss_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
    ) -> Result<Recommendation> {
        self.repository
            .resolve_recommendation(user, id, Resolution::Dismiss)
            .await
    }

    /// Marks an active recommendation applied. Carrying out its
    /// [`Recommendation::action`] (e.g. changing a preferred model) is the
    /// caller's part: the opsdeck facade does both.
    #[tracing::instrument(name = "analytics.apply_recommendation", skip(self), fields(%user, %id))]
    pub async fn apply_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
    ) -> Result<Recommendation> {
        self.repository
            .resolve_recommendation(user, id, Resolution::Apply)
            .await
    }

    /// Retention (see [`AnalyticsRepository::purge_executions_before`]).
    /// Metrics come from the rollups, which stay, so no cache is dropped.
    #[tracing::instrument(name = "analytics.purge", skip(self))]
    pub async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport> {
        self.repository.purge_executions_before(cutoff).await
    }

    /// Drops every cached metric of `user` (e.g. after an out-of-band write).
    pub async fn invalidate_metrics(&self, user: UserId) {
        self.trends.invalidate_user(user).await;
        self.summaries.invalidate_user(user).await;
        self.comparisons.invalidate_user(user).await;
        self.sla_reports.invalidate_user(user).await;
    }
}

/// One metrics cache namespace.
fn namespace<V: CacheValue>(
    name: &'static str,
    config: &AnalyticsConfig,
    tiers: &Tiers,
) -> Cache<V> {
    let cache = CacheConfig::new(name, config.metrics_ttl).with_max_capacity(config.cache_capacity);
    Cache::with_tiers(cache, tiers.clone())
}

fn parse_operation(operation: &str) -> Result<OperationId> {
    OperationId::parse(operation).map_err(|e| Error::invalid("operation_id", e.to_string()))
}

/// `cache.get_or_load` of a shared value, recording a miss in the current
/// span's `cache` field; the caller gets its own copy.
async fn cached<T, F, Fut>(cache: &Cache<Arc<T>>, user: UserId, item: String, load: F) -> Result<T>
where
    T: Clone,
    Arc<T>: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    cache
        .get_or_load(&CacheKey::new(user, item), || async {
            tracing::Span::current().record("cache", "miss");
            load().await.map(Arc::new)
        })
        .await
        .map(|value| value.as_ref().clone())
}
