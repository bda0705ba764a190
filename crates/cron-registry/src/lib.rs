//! Named, per-user scheduled jobs: run by pg_cron inside PostgreSQL when it
//! is installed, by an in-process tokio runner otherwise.
//!
//! - Values are parsed, never trusted: [`JobName`] (≤ 63 bytes, pg_cron's
//!   limit), [`CronSchedule`] (pg_cron's own syntax, checked against the
//!   detected [`PgCronVersion`]) and [`JobCommand`] (a typed command
//!   rendered to SQL with quoted literals; no caller string ever becomes SQL).
//! - [`CronRegistry`] is the storage and scheduling contract. Backends:
//!   [`PgCronRegistry`] (feature `postgres`, default: registry table in the
//!   application database, jobs in pg_cron, which may live in another
//!   database, or fired by [`CronRunner`] when pg_cron is absent) and
//!   [`InMemoryCronRegistry`] (embedded default and test double). Policy
//!   wrappers implement the same trait over any backend: [`AllowList`]
//!   (which SQL functions jobs may call). Backends and wrappers pass the
//!   conformance suite (`testing`, feature `testing`).
//! - [`CronService`] parses raw input for applications and holds the
//!   policy stack; it hands out no reference to the backend under it.
//! - Fired `RunOperation`/`RefreshRecommendations` jobs queue requests the
//!   application takes with [`CronRegistry::take_requests`]: leased, not
//!   removed, until [`CronRegistry::complete_request`], so a consumer's
//!   crash loses none (delivery is at least once).
//! - [`CronRunner`] (no pg_cron) bounds each run by a timeout, runs at most
//!   one run of a job at a time across runners (overlapping slots are
//!   recorded as skipped), recovers runs of dead runners as failed, and
//!   handles slots missed while no runner was up ([`MissedRunPolicy`]).
//! - The SQL entry points (`opsdeck.register_cron_job(...)` and the other
//!   functions of the migrations) check what the Rust types check, so other
//!   clients cannot store a row this crate would read as corrupt.
//!
//! Job names are unique **per user**: two users may both have a `nightly`
//! job, and no call can read, pause or remove another user's job.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), opsdeck_cron_registry::Error> {
//! use std::sync::Arc;
//! use opsdeck_core::UserId;
//! use opsdeck_cron_registry::{CronService, InMemoryCronRegistry, JobCommand};
//!
//! let cron = CronService::new(Arc::new(InMemoryCronRegistry::new()));
//! let user = UserId::random();
//! let job = cron
//!     .register_cron_job(user, "nightly-summary", "summarize", "30 2 * * *",
//!               JobCommand::run_operation(serde_json::json!({"length": "short"}))?)
//!     .await?;
//! assert!(cron.check_cron_job_exists(user, "nightly-summary").await?);
//! assert_eq!(job.schedule.as_str(), "30 2 * * *");
//! assert!(!cron.unregister_cron_job(user, "no-such-job").await?);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod allow_list;
mod command;
mod error;
mod memory;
mod model;
mod name;
#[cfg(feature = "postgres")]
mod postgres;
mod registry;
mod runner;
mod schedule;
mod service;
#[cfg(feature = "testing")]
pub mod testing;

pub use allow_list::AllowList;
pub use command::{
    CommandContext, CommandError, FunctionName, JobCommand, JsonValue, MAX_FUNCTION_ARGS,
    MAX_VALUE_BYTES, SqlText, SqlValue, quote_literal,
};
pub use error::{Error, Result};
pub use memory::InMemoryCronRegistry;
pub use model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, RequestKind, RunStatus,
    SchedulerKind,
};
pub use name::JobName;
#[cfg(feature = "postgres")]
pub use postgres::{PgCronRegistry, PgCronRegistryOptions, SqlExecutor};
#[cfg(feature = "mock")]
pub use registry::MockCronRegistry;
pub use registry::{CronRegistry, CronRegistryExt, DEFAULT_REQUEST_LEASE, MAX_HISTORY};
pub use runner::{
    Claim, CronRunner, DEFAULT_CATCH_UP_WINDOW, DEFAULT_RECOVERY_GRACE, DEFAULT_RUN_TIMEOUT,
    JobExecutor, MissedRunPolicy, RunStore, RunnableJob, RunnerHandle, TickReport,
};
pub use schedule::{CronSchedule, PgCronVersion, ScheduleError};
pub use service::{CronService, CronServiceBuilder};
