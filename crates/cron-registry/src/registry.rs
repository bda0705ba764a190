//! [`CronRegistry`]: the storage and scheduling contract every backend and
//! policy wrapper implements, and its conveniences ([`CronRegistryExt`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, SchedulerKind,
};
use crate::name::JobName;
use crate::schedule::PgCronVersion;

/// Most runs one [`CronRegistry::history`] call returns.
pub const MAX_HISTORY: usize = 1000;

/// How long a request [`CronRegistry::take_requests`] handed out stays
/// leased to its consumer unless the backend is configured otherwise
/// (`PgCronRegistryOptions::request_lease`,
/// [`crate::InMemoryCronRegistry::with_request_lease`]): 5 minutes. A
/// consumer that neither completes nor releases a request within its lease
/// is presumed dead and the request is delivered again.
pub const DEFAULT_REQUEST_LEASE: Duration = Duration::from_secs(5 * 60);

/// Storage and scheduling of jobs. Every user-facing method is scoped by
/// user: no call reads or changes another user's job.
///
/// Methods take parsed values; [`crate::CronService`] offers the same
/// operations, by the same names, over raw input.
///
/// # Contract (checked by `testing` for every backend and wrapper)
/// - `register_cron_job` is an idempotent upsert by (user, name):
///   registering the same job twice leaves one job; registering again with
///   other fields replaces them (and keeps `id` and `created_at`). A
///   schedule the backend's [`CronRegistry::syntax`] does not have is
///   refused with [`Error::Schedule`] and nothing is written.
/// - `unregister_cron_job` returns `Ok(false)` for a missing job, never an
///   error.
/// - `check_cron_job_exists`/`get`/`history` of a missing job are
///   `false`/`None`/empty.
/// - `list_for_user` and `list_for_operation` are ordered by name.
/// - `set_active` of a missing job is `Ok(None)`.
/// - `history` returns at most `limit` (capped at [`MAX_HISTORY`]) runs,
///   newest first.
/// - Backends that talk to pg_cron keep it consistent with the registry:
///   a failed call leaves no pg_cron job without a registry row, and
///   `reconcile` repairs drift made outside the registry.
/// - A policy wrapper (e.g. [`crate::AllowList`]) refuses with a typed
///   error before anything is written, and otherwise behaves as the
///   backend under it.
/// - Requests are delivered at least once: `take_requests` leases them,
///   `complete_request` removes one for good, `release_request` (or the
///   lease running out) makes it deliverable again, with `attempt` one
///   higher. Concurrent takers never hold the same lease.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CronRegistry: Send + Sync + std::fmt::Debug {
    /// Who fires jobs registered here.
    fn scheduler(&self) -> SchedulerKind;

    /// The pg_cron version whose schedule syntax this backend accepts (the
    /// detected one for pg_cron; a configured one for the runner).
    fn syntax(&self) -> PgCronVersion;

    /// Creates or replaces the user's job of that name.
    async fn register_cron_job(&self, job: NewJob) -> Result<CronJob>;

    /// Removes the user's job; `Ok(false)` if there was none.
    async fn unregister_cron_job(&self, user: UserId, name: &JobName) -> Result<bool>;

    /// Whether the user has a job of that name.
    async fn check_cron_job_exists(&self, user: UserId, name: &JobName) -> Result<bool>;

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

    /// Leases up to `limit` queued requests of fired
    /// `RunOperation`/`RefreshRecommendations` jobs, oldest first: each is
    /// handed to this caller only, until its lease (the backend's request
    /// lease, [`DEFAULT_REQUEST_LEASE`] unless configured) runs out. The
    /// caller carries each request out and then calls
    /// [`CronRegistry::complete_request`]; a request neither completed nor
    /// released in time (its consumer crashed) is delivered again by a
    /// later call, with [`CronRequest::attempt`] one higher. So delivery is
    /// at least once: side effects should be keyed on `request_id`.
    ///
    /// For the application's workers: it spans all users. Concurrent
    /// callers never get the same request while its lease holds.
    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>>;

    /// Removes a request its consumer has carried out, ending its lease.
    /// `Ok(false)` if this delivery no longer holds the lease (it expired
    /// and the request was delivered again, or it was already completed or
    /// released); the request is then left to its current holder.
    async fn complete_request(&self, request: &CronRequest) -> Result<bool>;

    /// Gives a leased request back without carrying it out, so the next
    /// [`CronRegistry::take_requests`] delivers it again (e.g. a consumer
    /// shutting down, or one that cannot handle it now). `Ok(false)` if this
    /// delivery no longer holds the lease.
    async fn release_request(&self, request: &CronRequest) -> Result<bool>;
}

/// A shared registry is a registry, so wrappers such as
/// [`crate::AllowList`] can hold an `Arc<dyn CronRegistry>`.
#[async_trait]
impl<T: CronRegistry + ?Sized> CronRegistry for Arc<T> {
    fn scheduler(&self) -> SchedulerKind {
        (**self).scheduler()
    }

    fn syntax(&self) -> PgCronVersion {
        (**self).syntax()
    }

    async fn register_cron_job(&self, job: NewJob) -> Result<CronJob> {
        (**self).register_cron_job(job).await
    }

    async fn unregister_cron_job(&self, user: UserId, name: &JobName) -> Result<bool> {
        (**self).unregister_cron_job(user, name).await
    }

    async fn check_cron_job_exists(&self, user: UserId, name: &JobName) -> Result<bool> {
        (**self).check_cron_job_exists(user, name).await
    }

    async fn get(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>> {
        (**self).get(user, name).await
    }

    async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>> {
        (**self).list_for_user(user).await
    }

    async fn list_for_operation(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Vec<CronJob>> {
        (**self).list_for_operation(user, operation).await
    }

    async fn set_active(
        &self,
        user: UserId,
        name: &JobName,
        active: bool,
    ) -> Result<Option<CronJob>> {
        (**self).set_active(user, name, active).await
    }

    async fn history(&self, user: UserId, name: &JobName, limit: usize) -> Result<Vec<JobRun>> {
        (**self).history(user, name, limit).await
    }

    async fn prune_history(&self, scope: HistoryScope, older_than: OffsetDateTime) -> Result<u64> {
        (**self).prune_history(scope, older_than).await
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        (**self).reconcile().await
    }

    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        (**self).take_requests(limit).await
    }

    async fn complete_request(&self, request: &CronRequest) -> Result<bool> {
        (**self).complete_request(request).await
    }

    async fn release_request(&self, request: &CronRequest) -> Result<bool> {
        (**self).release_request(request).await
    }
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
