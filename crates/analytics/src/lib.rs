//! Execution analytics: every execution of an operation is recorded exactly
//! once, rolled up per user, operation, model and UTC day in the same
//! statement, and turned into cost trends, period summaries, model
//! comparisons, SLA reports and optimization recommendations.
//!
//! - [`AnalyticsRepository`] is the storage contract, implemented by
//!   [`PgAnalyticsRepository`] (feature `postgres`, default) and
//!   [`InMemoryAnalyticsRepository`]; both pass one conformance suite
//!   ([`testing`], feature `testing`). [`AnalyticsReports`] derives the
//!   reports from any repository's daily rollups.
//! - [`AnalyticsService`] is what applications call: it parses raw
//!   [`ExecutionRecord`]s, caches metrics for 5 minutes and drops a user's
//!   cached metrics whenever executions of that user are recorded.
//!
//! Guarantees:
//! - **exact**: money is integer micro-dollars ([`Money`]); rollup totals
//!   equal the sums of the log, under any concurrency;
//! - **idempotent**: an [`ExecutionId`] recorded again — by a retry, a
//!   replayed batch, concurrently — is counted once;
//! - **one statement** per [`AnalyticsRepository::record_many`] batch of up
//!   to [`MAX_BATCH`] executions, all or nothing;
//! - **percentiles from histograms**: each rollup carries a fixed log-scale
//!   [`LatencyHistogram`]; p50/p95/p99 over any period merge the daily
//!   histograms and are within one bucket (≤ 25%) of the exact value.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), opsdeck_analytics::Error> {
//! use std::sync::Arc;
//! use opsdeck_analytics::{AnalyticsService, DateRange, Execution, InMemoryAnalyticsRepository, Money};
//! use opsdeck_core::UserId;
//! use time::OffsetDateTime;
//!
//! let analytics = AnalyticsService::new(Arc::new(InMemoryAnalyticsRepository::new()));
//! let user = UserId::random();
//! let now = OffsetDateTime::now_utc();
//! let run = Execution::new(user, "summarize".parse().unwrap(), "anthropic/claude-sonnet-4".parse().unwrap(), now)
//!     .tokens(1_000, 200)
//!     .cost(Money::from_micros(3_000))
//!     .latency_ms(640);
//! assert!(analytics.record_execution(run.clone()).await?);
//! assert!(!analytics.record_execution(run).await?, "a retry counts once");
//!
//! let today = DateRange::days_ending(now.date(), 1)?;
//! let summary = analytics.period_summary(user, today, None).await?;
//! assert_eq!(summary.totals.executions, 1);
//! assert_eq!(summary.totals.cost, Money::from_micros(3_000));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod execution;
mod histogram;
mod memory;
mod money;
#[cfg(feature = "postgres")]
mod postgres;
mod recommend;
mod report;
mod service;
mod sla;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use time::{Date, OffsetDateTime};

pub use error::{Error, Result};
pub use execution::{ErrorKind, Execution, ExecutionId, ExecutionRecord, Outcome, RecordSummary};
pub use histogram::{LATENCY_BUCKET_BOUNDS, LATENCY_BUCKETS, LatencyHistogram, Percentiles};
pub use memory::InMemoryAnalyticsRepository;
pub use money::{Money, ParseMoneyError};
#[cfg(feature = "postgres")]
pub use postgres::PgAnalyticsRepository;
pub use recommend::{
    Finding, ModelEvidence, Recommendation, RecommendationId, RecommendationStatus,
    RecommendationThresholds, RecommendedAction, Resolution, WeekEvidence, evaluate,
};
pub use report::{
    DailyRollup, DateRange, Granularity, ModelStats, PeriodSummary, RollupFilter, Totals,
    TrendPoint, TrendQuery,
};
pub use service::{AnalyticsConfig, AnalyticsService};
pub use sla::{Breach, DailyBreach, ErrorBudget, SlaStatus, SlaTarget, SuccessRate};

/// Most executions one [`AnalyticsRepository::record_many`] call accepts
/// (the SQL function enforces the same number). Larger batches get
/// [`Error::BatchTooLarge`]; split them, each part is atomic on its own.
pub const MAX_BATCH: usize = 10_000;

/// Most input or output tokens one execution may report.
pub const MAX_TOKENS: i64 = 1_000_000_000;

/// Most one execution may cost: 10 000 dollars. With it, no sum of a
/// realistic history comes near `i64` overflow.
pub const MAX_COST: Money = Money::from_micros(10_000 * Money::MICROS_PER_DOLLAR);

/// Longest latency one execution may report: 24 hours.
pub const MAX_LATENCY_MS: i64 = 86_400_000;

/// How far in the future `executed_at` may be (clock skew between the
/// caller and the recorder) by default: 5 minutes.
pub const DEFAULT_FUTURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Most executions one [`AnalyticsRepository::executions`] call returns.
pub const MAX_LIST: usize = 10_000;

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
/// # Contract (checked by [`testing`] for every backend)
/// - `record`/`record_many` validate everything first
///   ([`Execution::validate`] with the backend's future tolerance, batch
///   size ≤ [`MAX_BATCH`], `executed_at` not before the retention horizon);
///   any failure is an error and writes nothing. A batch is all or nothing.
/// - An execution is identified by (user, execution id): recording it again,
///   in any call, concurrently or not, changes nothing (`record` returns
///   `false`; `record_many` counts it in `duplicates`). Within one batch
///   the first occurrence wins.
/// - The log row and the rollup change together: the rollups' totals always
///   equal the sums of the logged executions (until retention removes log
///   rows; rollups are kept).
/// - `daily_rollups` returns one rollup per (operation, model, day) in that
///   order; `cost_trend` returns one point per bucket from the range's first
///   to its last day, zeros included.
/// - `save_recommendations` leaves at most one active recommendation per
///   (kind, subject): an existing one is refreshed with the new evidence;
///   one dismissed or applied less than `cooldown` ago suppresses the
///   finding. It returns the active recommendations of the findings,
///   ordered by kind and subject.
/// - `resolve_recommendation` moves an active recommendation to dismissed
///   or applied; repeating the same resolution is a no-op; anything else is
///   [`Error::InvalidTransition`]; an unknown id is [`Error::NotFound`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AnalyticsRepository: Send + Sync + std::fmt::Debug {
    /// Records one execution; `Ok(false)` if its id was already recorded.
    async fn record(&self, execution: Execution) -> Result<bool>;

    /// Records a batch (one statement on PostgreSQL).
    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary>;

    /// The user's logged executions in `range`, ordered by `executed_at`
    /// then id, at most `limit` (capped at [`MAX_LIST`]).
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

    /// Stores findings as active recommendations (see the contract).
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

    /// Retention: forgets every execution before the start of `cutoff`'s
    /// UTC month (whole months, as partitions are monthly) and refuses such
    /// executions from then on; rollups stay. `cutoff` must not be in the
    /// future. The horizon never moves back.
    async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport>;
}

/// Reports derived from [`AnalyticsRepository::daily_rollups`], for every
/// repository (including `dyn AnalyticsRepository`). Percentiles come from
/// merged histograms, never from raw executions.
#[async_trait]
pub trait AnalyticsReports: AnalyticsRepository {
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
        Ok(report::compare_models(&rollups))
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

    /// Runs the rules ([`evaluate`]) on the user's rollups as of the UTC
    /// day `as_of` and stores the findings; returns the resulting active
    /// recommendations. Running it again with the same data changes nothing
    /// but `updated_at`.
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

impl<R: AnalyticsRepository + ?Sized> AnalyticsReports for R {}

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

/// Orders findings by (kind, subject), keeping the last of repeated ones:
/// the order rows are locked in and the order results are returned in.
pub(crate) fn dedupe_findings(findings: Vec<Finding>) -> Vec<Finding> {
    let mut by_key = std::collections::BTreeMap::new();
    for finding in findings {
        by_key.insert((finding.kind(), finding.subject()), finding);
    }
    by_key.into_values().collect()
}
