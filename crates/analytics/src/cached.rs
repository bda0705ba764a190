//! `Cached<R>`: the metrics cache as a policy wrapper over any
//! [`AnalyticsRepository`]. It owns invalidation, so no write can reach the
//! backend without dropping the cached metrics it can change.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_cache::{Cache, CacheConfig, CacheKey, CacheStats, CacheValue, Tiers};
use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

use crate::config::AnalyticsConfig;
use crate::error::Result;
use crate::execution::{Execution, RecordSummary};
use crate::ids::{RecommendationId, RecommendationStatus};
use crate::recommend::{Finding, Recommendation, Resolution};
use crate::report::{
    DailyRollup, DateRange, ModelStats, PeriodSummary, RollupFilter, TrendPoint, TrendQuery,
};
use crate::repository::{AnalyticsRepository, RetentionReport};
use crate::sla::{SlaStatus, SlaTarget};

/// An [`AnalyticsRepository`] that serves the metrics — cost trends, period
/// summaries, model comparisons, SLA reports — from a cache (moka L1,
/// optionally a shared L2 and an invalidation bus, see [`Tiers`]) and drops
/// a user's cached metrics on every write that can change them:
///
/// - recording (one or many) drops all four kinds for each user written;
/// - setting or deleting an SLA target drops the user's SLA reports;
/// - retention drops every cached metric of every user (it is global and
///   rare; the rollups the metrics come from stay, so this only costs
///   reloads, but no write path is left to reason about);
/// - recommendations are not metrics: their writes drop nothing.
///
/// Invalidation happens even when the write failed, since a database error
/// can hide a commit. Everything else goes to the inner repository as is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), opsdeck_analytics::Error> {
/// use opsdeck_analytics::{AnalyticsConfig, AnalyticsRepository, Cached, DateRange, InMemoryAnalyticsRepository, RollupFilter};
/// use opsdeck_cache::Tiers;
/// use opsdeck_core::UserId;
///
/// let repo = Cached::new(InMemoryAnalyticsRepository::new(), &AnalyticsConfig::default(), Tiers::none());
/// let week = RollupFilter::new(DateRange::days_ending(time::OffsetDateTime::now_utc().date(), 7)?);
/// let user = UserId::random();
/// repo.period_summary(user, &week).await?;
/// repo.period_summary(user, &week).await?;
/// assert_eq!(repo.cache_stats().hits, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Cached<R> {
    inner: R,
    trends: Cache<Arc<Vec<TrendPoint>>>,
    summaries: Cache<Arc<PeriodSummary>>,
    comparisons: Cache<Arc<Vec<ModelStats>>>,
    sla_reports: Cache<Arc<Vec<SlaStatus>>>,
}

impl<R: AnalyticsRepository> Cached<R> {
    /// Caches `inner`'s metrics for `config.metrics_ttl`, at most
    /// `config.cache_capacity` entries per kind, over `tiers`. With a bus
    /// this spawns listener tasks: call it inside a tokio runtime.
    ///
    /// The namespaces (`analytics.trend`, `analytics.summary`,
    /// `analytics.comparison`, `analytics.sla`) are what other instances
    /// share through the tiers: keep them stable.
    pub fn new(inner: R, config: &AnalyticsConfig, tiers: Tiers) -> Self {
        fn namespace<V: CacheValue>(
            name: &'static str,
            config: &AnalyticsConfig,
            tiers: &Tiers,
        ) -> Cache<V> {
            let cache =
                CacheConfig::new(name, config.metrics_ttl).with_max_capacity(config.cache_capacity);
            Cache::with_tiers(cache, tiers.clone())
        }
        Cached {
            inner,
            trends: namespace("analytics.trend", config, &tiers),
            summaries: namespace("analytics.summary", config, &tiers),
            comparisons: namespace("analytics.comparison", config, &tiers),
            sla_reports: namespace("analytics.sla", config, &tiers),
        }
    }

    /// Cache counters summed over the four namespaces.
    pub fn cache_stats(&self) -> CacheStats {
        self.trends.stats()
            + self.summaries.stats()
            + self.comparisons.stats()
            + self.sla_reports.stats()
    }

    /// Drops every cached metric of `user` (e.g. after an out-of-band write).
    pub async fn invalidate_metrics(&self, user: UserId) {
        self.trends.invalidate_user(user).await;
        self.summaries.invalidate_user(user).await;
        self.comparisons.invalidate_user(user).await;
        self.sla_reports.invalidate_user(user).await;
    }

    async fn invalidate_everything(&self) {
        self.trends.invalidate_all().await;
        self.summaries.invalidate_all().await;
        self.comparisons.invalidate_all().await;
        self.sla_reports.invalidate_all().await;
    }
}

#[async_trait]
impl<R: AnalyticsRepository> AnalyticsRepository for Cached<R> {
    async fn record_operation_execution(&self, execution: Execution) -> Result<bool> {
        let user = execution.user_id;
        let result = self.inner.record_operation_execution(execution).await;
        self.invalidate_metrics(user).await;
        result
    }

    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary> {
        let users: BTreeSet<UserId> = executions.iter().map(|e| e.user_id).collect();
        let result = self.inner.record_many(executions).await;
        for user in users {
            self.invalidate_metrics(user).await;
        }
        result
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
        self.inner.daily_rollups(user, filter).await
    }

    #[tracing::instrument(name = "analytics.cached.cost_trend", skip_all, fields(%user, cache = "hit"))]
    async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        let key = format!(
            "{}|{}",
            query.filter.cache_key(),
            query.granularity.as_str()
        );
        cached(&self.trends, user, key, || {
            self.inner.cost_trend(user, query)
        })
        .await
    }

    async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        let result = self.inner.set_sla_target(user, target).await;
        self.sla_reports.invalidate_user(user).await;
        result
    }

    async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        self.inner.sla_targets(user).await
    }

    async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool> {
        let result = self.inner.delete_sla_target(user, operation).await;
        self.sla_reports.invalidate_user(user).await;
        result
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
        let result = self.inner.purge_executions_before(cutoff).await;
        self.invalidate_everything().await;
        result
    }

    #[tracing::instrument(name = "analytics.cached.period_summary", skip_all, fields(%user, cache = "hit"))]
    async fn period_summary(&self, user: UserId, filter: &RollupFilter) -> Result<PeriodSummary> {
        cached(&self.summaries, user, filter.cache_key(), || {
            self.inner.period_summary(user, filter)
        })
        .await
    }

    #[tracing::instrument(name = "analytics.cached.model_comparison", skip_all, fields(%user, cache = "hit"))]
    async fn model_comparison(
        &self,
        user: UserId,
        operation: &OperationId,
        range: DateRange,
    ) -> Result<Vec<ModelStats>> {
        let key = RollupFilter::new(range)
            .operation(operation.clone())
            .cache_key();
        cached(&self.comparisons, user, key, || {
            self.inner.model_comparison(user, operation, range)
        })
        .await
    }

    #[tracing::instrument(name = "analytics.cached.sla_report", skip_all, fields(%user, cache = "hit"))]
    async fn sla_report(&self, user: UserId, range: DateRange) -> Result<Vec<SlaStatus>> {
        cached(&self.sla_reports, user, range.to_string(), || {
            self.inner.sla_report(user, range)
        })
        .await
    }
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
