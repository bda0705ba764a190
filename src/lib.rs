//! opsdeck: the backend of "AI operations" for Rust services — per-user
//! operation preferences, execution analytics with exact atomic
//! aggregation, a read cache (moka with a Redis tier), a pg_cron job
//! registry and verified webhooks, all on PostgreSQL.
//!
//! This facade is the one dependency most services add. It wires the domain
//! crates onto one connection pool, owns the schema ([`MIGRATOR`]), runs the
//! flows that span domains ([`OpsDeck::apply_recommendation`],
//! [`RecordExecutionsFromWebhooks`]) and re-exports each domain crate:
//! [`preferences`], [`analytics`], [`cache`], [`cron`], [`webhooks`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use opsdeck::{OpsDeck, PreferenceUpdate, UserId};
//!
//! let deck = OpsDeck::builder()
//!     .database_url("postgres://postgres@127.0.0.1:5432/postgres")
//!     .redis_url("redis://127.0.0.1:6379") // optional shared cache tier
//!     .migrate(true)
//!     .build()
//!     .await?;
//! let user = UserId::random();
//! deck.preferences()
//!     .bulk_update_operation_preferences(user, vec![
//!         PreferenceUpdate::new("summarize").preferred_model("anthropic/claude-sonnet-4"),
//!     ])
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Without a database, [`OpsDeck::in_memory`] gives the same API over the
//! in-memory backends.

mod deck;
mod flows;

pub use deck::{Backend, InvalidationChannel, OpsDeck, OpsDeckBuilder};
pub use flows::{CronRequestsReport, FlowError, RecordExecutionsFromWebhooks};

pub use opsdeck_analytics as analytics;
pub use opsdeck_analytics::{AnalyticsConfig, AnalyticsService, ExecutionRecord, Money};
pub use opsdeck_cache as cache;
#[cfg(feature = "redis")]
pub use opsdeck_cache::RedisConfig;
pub use opsdeck_cache::{Cache, CacheConfig, CacheKey, CacheStats};
pub use opsdeck_core::{ModelRef, OperationId, ParseError, StatementCounter, UserId};
pub use opsdeck_cron_registry as cron;
pub use opsdeck_cron_registry::{CronService, JobCommand};
pub use opsdeck_preferences as preferences;
pub use opsdeck_preferences::{
    OperationPreference, PreferencePatch, PreferenceUpdate, PreferencesConfig, PreferencesService,
    Theme, UserPreferences, UserPreferencesPatch,
};
pub use opsdeck_webhook_verify as webhooks;

/// The schema of every opsdeck crate, applied in order by [`OpsDeck::migrate`]
/// (or by your own migration step: `opsdeck::MIGRATOR.run(&pool)`). Applies
/// on a database without pg_cron.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What can fail while setting opsdeck up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached or refused the connection.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("could not apply the opsdeck migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A cache tier could not be set up (e.g. an invalid Redis URL; an
    /// unreachable Redis is not an error: the cache degrades and retries).
    #[error("could not set up the cache tier")]
    Cache(#[source] opsdeck_cache::TierError),
    /// The cron registry could not be set up (e.g. pg_cron was required
    /// but is missing).
    #[error("could not set up the cron registry")]
    Cron(#[source] opsdeck_cron_registry::Error),
}

/// The README's Rust snippets, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
