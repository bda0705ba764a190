//! Named, per-user scheduled jobs: run by pg_cron inside PostgreSQL when it
//! is installed, by an in-process tokio runner otherwise.
//!
//! - Values are parsed, never trusted: [`JobName`] (≤ 63 bytes, pg_cron's
//!   limit), [`CronSchedule`] (pg_cron's own syntax, checked against the
//!   detected [`PgCronVersion`]) and [`JobCommand`] (a typed command
//!   rendered to SQL with quoted literals; no caller string ever becomes SQL).
//! - [`CronRegistry`] is the storage and scheduling contract. Backends:
//!   [`PgJobRegistry`] (feature `postgres`, default: registry table in the
//!   application database, jobs in pg_cron, which may live in another
//!   database, or fired by [`CronRunner`] when pg_cron is absent) and
//!   [`InMemoryJobRegistry`] (embedded default and test double). Both pass
//!   the conformance suite ([`testing`], feature `testing`).
//! - [`CronService`] parses raw input for applications.
//!
//! Job names are unique **per user**: two users may both have a `nightly`
//! job, and no call can read, pause or remove another user's job.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), opsdeck_cron_registry::Error> {
//! use std::sync::Arc;
//! use opsdeck_core::UserId;
//! use opsdeck_cron_registry::{CronService, InMemoryJobRegistry, JobCommand};
//!
//! let cron = CronService::new(Arc::new(InMemoryJobRegistry::new()));
//! let user = UserId::random();
//! let job = cron
//!     .register(user, "nightly-summary", "summarize", "30 2 * * *",
//!               JobCommand::run_operation(serde_json::json!({"length": "short"}))?)
//!     .await?;
//! assert!(cron.exists(user, "nightly-summary").await?);
//! assert_eq!(job.schedule.as_str(), "30 2 * * *");
//! assert!(!cron.unregister(user, "no-such-job").await?);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod command;
mod error;
mod memory;
mod model;
mod name;
#[cfg(feature = "postgres")]
mod pg_cron;
#[cfg(feature = "postgres")]
mod postgres;
mod runner;
mod schedule;
mod service;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

pub use command::{
    CommandContext, CommandError, FunctionName, JobCommand, JsonValue, MAX_FUNCTION_ARGS,
    MAX_VALUE_BYTES, SqlText, SqlValue, quote_literal,
};
pub use error::{Error, Result};
pub use memory::InMemoryJobRegistry;
pub use model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, RequestKind, RunStatus,
    SchedulerKind,
};
pub use name::JobName;
#[cfg(feature = "postgres")]
pub use postgres::{PgJobRegistry, PgRegistryOptions, SqlExecutor};
pub use runner::{CronRunner, JobExecutor, RunStore, RunnerHandle, TickReport};
pub use schedule::{CronSchedule, PgCronVersion, ScheduleError};
pub use service::CronService;

/// Most runs one [`CronRegistry::history`] call returns.
pub const MAX_HISTORY: usize = 1000;

/// Storage and scheduling of jobs. Every user-facing method is scoped by
/// user: no call reads or changes another user's job.
///
/// # Contract (checked by [`testing`] for every backend)
/// - `register` is an idempotent upsert by (user, name): registering the
///   same job twice leaves one job; registering again with other fields
///   replaces them (and keeps `id` and `created_at`). A schedule the
///   backend's [`CronRegistry::syntax`] does not have is refused with
///   [`Error::Schedule`] and nothing is written.
/// - `unregister` returns `Ok(false)` for a missing job, never an error.
/// - `exists`/`get`/`history` of a missing job are `false`/`None`/empty.
/// - `list_for_user` and `list_for_operation` are ordered by name.
/// - `set_active` of a missing job is `Ok(None)`.
/// - `history` returns at most `limit` (capped at [`MAX_HISTORY`]) runs,
///   newest first.
/// - Backends that talk to pg_cron keep it consistent with the registry:
///   a failed call leaves no pg_cron job without a registry row, and
///   `reconcile` repairs drift made outside the registry.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CronRegistry: Send + Sync + std::fmt::Debug {
    /// Who fires jobs registered here.
    fn scheduler(&self) -> SchedulerKind;

    /// The pg_cron version whose schedule syntax this backend accepts (the
    /// detected one for pg_cron; a configured one for the runner).
    fn syntax(&self) -> PgCronVersion;

    /// Creates or replaces the user's job of that name.
    async fn register(&self, job: NewJob) -> Result<CronJob>;

    /// Removes the user's job; `Ok(false)` if there was none.
    async fn unregister(&self, user: UserId, name: &JobName) -> Result<bool>;

    /// Whether the user has a job of that name.
    async fn exists(&self, user: UserId, name: &JobName) -> Result<bool>;

    /// The user's job of that name.
    async fn get(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>>;

    /// All of the user's jobs, by name.
    async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>>;

    /// The user's jobs for one operation, by name.
    async fn list_for_operation(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Vec<CronJob>>;

    /// Pauses (`false`) or resumes (`true`) the user's job; `Ok(None)` if
    /// there is none.
    async fn set_active(
        &self,
        user: UserId,
        name: &JobName,
        active: bool,
    ) -> Result<Option<CronJob>>;

    /// The job's most recent runs, newest first.
    async fn history(&self, user: UserId, name: &JobName, limit: usize) -> Result<Vec<JobRun>>;

    /// Deletes run history that ended (or, if unfinished, started) before
    /// `older_than`; returns how many runs were deleted.
    async fn prune_history(&self, scope: HistoryScope, older_than: OffsetDateTime) -> Result<u64>;

    /// Repairs drift between the registry and the scheduler (a no-op
    /// without pg_cron). An administrative call: it spans all users.
    async fn reconcile(&self) -> Result<ReconcileReport>;

    /// Takes (removes and returns) up to `limit` queued requests of fired
    /// `RunOperation`/`RefreshRecommendations` jobs, oldest first. For the
    /// application's workers: it spans all users. Concurrent callers never
    /// get the same request.
    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>>;
}

/// Conveniences over any [`CronRegistry`].
#[async_trait]
pub trait CronRegistryExt: CronRegistry {
    /// Pauses the job; `Ok(false)` if the user has none of that name.
    async fn pause(&self, user: UserId, name: &JobName) -> Result<bool> {
        Ok(self.set_active(user, name, false).await?.is_some())
    }

    /// Resumes the job; `Ok(false)` if the user has none of that name.
    async fn resume(&self, user: UserId, name: &JobName) -> Result<bool> {
        Ok(self.set_active(user, name, true).await?.is_some())
    }

    /// The job's next `n` run times after now (UTC); empty while paused.
    async fn next_runs(
        &self,
        user: UserId,
        name: &JobName,
        n: usize,
    ) -> Result<Vec<OffsetDateTime>> {
        match self.get(user, name).await? {
            Some(job) => Ok(job.next_runs(n)),
            None => Err(Error::NotFound {
                name: name.to_string(),
            }),
        }
    }
}

impl<T: CronRegistry + ?Sized> CronRegistryExt for T {}
