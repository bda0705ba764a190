//! Execution analytics: every execution of an operation is recorded exactly
//! once, rolled up per user, operation, model and UTC day in the same
//! statement, and turned into cost trends, period summaries, model
//! comparisons, SLA reports and optimization recommendations.
//!
//! - [`AnalyticsRepository`] is the storage contract, implemented by
//!   [`PgAnalyticsRepository`] (feature `postgres`, default) and
//!   [`InMemoryAnalyticsRepository`]; its provided methods derive the
//!   reports from any repository's daily rollups, and
//!   [`AnalyticsRepositoryExt`] adds the recommendation flow.
//! - [`Cached`] wraps any repository: it serves the metrics from a cache
//!   and drops a user's cached metrics on every write that can change them.
//!   Every backend, and the cached stack over each, passes one conformance
//!   suite ([`testing`], feature `testing`).
//! - [`AnalyticsService`] is what applications call: it parses raw
//!   [`ExecutionRecord`]s at the edge and works through the [`Cached`]
//!   stack (metrics cached for 5 minutes).
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
//! assert!(analytics.record_operation_execution(run.clone()).await?);
//! assert!(!analytics.record_operation_execution(run).await?, "a retry counts once");
//!
//! let today = DateRange::days_ending(now.date(), 1)?;
//! let summary = analytics.period_summary(user, today, None).await?;
//! assert_eq!(summary.totals.executions, 1);
//! assert_eq!(summary.totals.cost, Money::from_micros(3_000));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cached;
mod config;
mod error;
mod execution;
mod histogram;
mod ids;
mod limits;
mod memory;
mod money;
#[cfg(feature = "postgres")]
mod postgres;
mod recommend;
mod report;
mod repository;
mod service;
mod sla;
#[cfg(feature = "testing")]
pub mod testing;

pub use cached::Cached;
pub use config::AnalyticsConfig;
pub use error::{Error, Result};
pub use execution::{ErrorKind, Execution, ExecutionRecord, Outcome, RecordSummary};
pub use histogram::{LATENCY_BUCKET_BOUNDS, LATENCY_BUCKETS, LatencyHistogram, Percentiles};
pub use ids::{ExecutionId, RecommendationId, RecommendationStatus};
pub use limits::{
    DEFAULT_FUTURE_TOLERANCE, MAX_BATCH, MAX_COST, MAX_LATENCY_MS, MAX_LIST, MAX_TOKENS,
};
pub use memory::InMemoryAnalyticsRepository;
pub use money::{Money, ParseMoneyError};
#[cfg(feature = "postgres")]
pub use postgres::{PgAnalyticsRepository, ReplicaStats};
pub use recommend::{
    Finding, ModelEvidence, Recommendation, RecommendationThresholds, RecommendedAction,
    Resolution, WeekEvidence, evaluate,
};
pub use report::{
    DailyRollup, DateRange, Granularity, ModelStats, PeriodSummary, RollupFilter, Totals,
    TrendPoint, TrendQuery,
};
#[cfg(feature = "mock")]
pub use repository::MockAnalyticsRepository;
pub use repository::{AnalyticsRepository, AnalyticsRepositoryExt, RetentionReport};
pub use service::AnalyticsService;
pub use sla::{Breach, DailyBreach, ErrorBudget, SlaStatus, SlaTarget, SuccessRate};
