//! [`AnalyticsConfig`]: how the metrics cache ([`crate::Cached`]) and the
//! recommendation rules of [`crate::AnalyticsService`] are set up.

use std::time::Duration;

use crate::recommend::RecommendationThresholds;

/// How [`crate::AnalyticsService`] caches and recommends.
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
