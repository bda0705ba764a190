//! [`CronService`]: what applications call, over raw input, with the
//! policy stack between it and the backend.

use std::sync::Arc;

use opsdeck_core::{OperationId, ParseError, UserId, Validation};
use time::OffsetDateTime;

use crate::allow_list::AllowList;
use crate::command::{FunctionName, JobCommand};
use crate::error::{Error, Result};
use crate::model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, SchedulerKind,
};
use crate::name::JobName;
use crate::registry::{CronRegistry, CronRegistryExt};
use crate::schedule::{CronSchedule, PgCronVersion};

/// What applications call: parses raw input (job names, operation ids and
/// schedules, the latter in the syntax of the backend's pg_cron version)
/// at the edge, passes it through its policies to the registry, and traces
/// every call. Each method has the name of the [`CronRegistry`] operation
/// it performs.
///
/// No cache: job reads are rare and must reflect pause/resume at once.
/// Cloning is cheap.
///
/// The service holds the registry behind an [`AllowList`] and hands out no
/// reference to either, so every write goes through the policy:
/// `JobCommand::CallFunction` runs a SQL function with the scheduler's
/// privileges (pg_cron's role, often a superuser), so only functions
/// allowed when the service was built may be registered (see
/// [`CronService::builder`]); anything else is [`crate::Error::Validation`]
/// (field `command`) and nothing is written.
#[derive(Debug, Clone)]
pub struct CronService {
    registry: AllowList<Arc<dyn CronRegistry>>,
}

/// Builds a [`CronService`]; see [`CronService::builder`].
#[derive(Debug)]
#[must_use]
pub struct CronServiceBuilder {
    registry: Arc<dyn CronRegistry>,
    functions: Vec<String>,
}

impl CronServiceBuilder {
    /// Lets jobs call `function` (`name` or `schema.name` as written in
    /// [`FunctionName`]; checked by [`CronServiceBuilder::build`]). Allow
    /// only functions that are safe for any user to run with any arguments:
    /// they run with the scheduler's privileges.
    pub fn allow_function(mut self, function: impl AsRef<str>) -> Self {
        self.functions.push(function.as_ref().to_owned());
        self
    }

    /// Lets jobs call every function of `functions`; see
    /// [`CronServiceBuilder::allow_function`].
    pub fn allow_functions<I>(mut self, functions: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.functions
            .extend(functions.into_iter().map(|f| f.as_ref().to_owned()));
        self
    }

    /// The service; [`crate::Error::Command`] if an allowed function's name
    /// is not a valid [`FunctionName`].
    pub fn build(self) -> Result<CronService> {
        Ok(CronService {
            registry: AllowList::new(self.registry).allow_functions(&self.functions)?,
        })
    }
}

fn name(raw: &str) -> Result<JobName> {
    JobName::parse(raw).map_err(|e| refused("job name", e))
}

fn operation(raw: &str) -> Result<OperationId> {
    OperationId::parse(raw).map_err(|e| refused("operation id", e))
}

fn refused(field: &'static str, error: ParseError) -> Error {
    Validation::from((field, error)).into()
}

impl CronService {
    /// A service over `registry` that allows no SQL function (every
    /// `CallFunction` job is refused); use [`CronService::builder`] to allow
    /// some.
    pub fn new(registry: Arc<dyn CronRegistry>) -> Self {
        CronService {
            registry: AllowList::new(registry),
        }
    }

    /// A builder over `registry`, for the policy options:
    ///
    /// ```
    /// # fn main() -> Result<(), opsdeck_cron_registry::Error> {
    /// use std::sync::Arc;
    /// use opsdeck_cron_registry::{CronService, InMemoryCronRegistry};
    ///
    /// let cron = CronService::builder(Arc::new(InMemoryCronRegistry::new()))
    ///     .allow_functions(["public.refresh_stats", "opsdeck.rollup"])
    ///     .build()?;
    /// assert_eq!(cron.allowed_functions().count(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(registry: Arc<dyn CronRegistry>) -> CronServiceBuilder {
        CronServiceBuilder {
            registry,
            functions: Vec::new(),
        }
    }

    /// The SQL functions jobs may call, in name order.
    pub fn allowed_functions(&self) -> impl Iterator<Item = &FunctionName> {
        self.registry.allowed_functions()
    }

    /// Who fires jobs registered here (pg_cron or the in-process runner).
    pub fn scheduler(&self) -> SchedulerKind {
        self.registry.scheduler()
    }

    /// The pg_cron version whose schedule syntax is accepted.
    pub fn syntax(&self) -> PgCronVersion {
        self.registry.syntax()
    }

    /// Parses `schedule` for this backend's pg_cron version.
    pub fn parse_schedule(&self, schedule: &str) -> Result<CronSchedule> {
        Ok(CronSchedule::parse_for(schedule, self.registry.syntax())?)
    }

    /// Creates or replaces the user's job `job_name` (active). Every input
    /// is checked first (names, schedule, the function allow-list); on any
    /// error nothing is written.
    #[tracing::instrument(name = "cron.service.register_cron_job", skip(self, command), fields(%user, job = job_name, operation = operation_id))]
    pub async fn register_cron_job(
        &self,
        user: UserId,
        job_name: &str,
        operation_id: &str,
        schedule: &str,
        command: JobCommand,
    ) -> Result<CronJob> {
        let job = NewJob::new(
            user,
            name(job_name)?,
            operation(operation_id)?,
            self.parse_schedule(schedule)?,
            command,
        );
        self.registry.register_cron_job(job).await
    }

    /// Removes the user's job; `Ok(false)` if there was none.
    #[tracing::instrument(name = "cron.service.unregister_cron_job", skip(self), fields(%user))]
    pub async fn unregister_cron_job(&self, user: UserId, job_name: &str) -> Result<bool> {
        self.registry
            .unregister_cron_job(user, &name(job_name)?)
            .await
    }

    /// Whether the user has a job of that name.
    #[tracing::instrument(name = "cron.service.check_cron_job_exists", skip(self), fields(%user))]
    pub async fn check_cron_job_exists(&self, user: UserId, job_name: &str) -> Result<bool> {
        self.registry
            .check_cron_job_exists(user, &name(job_name)?)
            .await
    }

    /// The user's job of that name.
    #[tracing::instrument(name = "cron.service.get", skip(self), fields(%user))]
    pub async fn get(&self, user: UserId, job_name: &str) -> Result<Option<CronJob>> {
        self.registry.get(user, &name(job_name)?).await
    }

    /// All of the user's jobs, by name.
    #[tracing::instrument(name = "cron.service.list_for_user", skip(self), fields(%user))]
    pub async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>> {
        self.registry.list_for_user(user).await
    }

    /// The user's jobs for one operation, by name.
    #[tracing::instrument(name = "cron.service.list_for_operation", skip(self), fields(%user))]
    pub async fn list_for_operation(
        &self,
        user: UserId,
        operation_id: &str,
    ) -> Result<Vec<CronJob>> {
        self.registry
            .list_for_operation(user, &operation(operation_id)?)
            .await
    }

    /// Pauses the job; `Ok(false)` if the user has none of that name.
    #[tracing::instrument(name = "cron.service.pause", skip(self), fields(%user))]
    pub async fn pause(&self, user: UserId, job_name: &str) -> Result<bool> {
        self.registry.pause(user, &name(job_name)?).await
    }

    /// Resumes the job; `Ok(false)` if the user has none of that name.
    #[tracing::instrument(name = "cron.service.resume", skip(self), fields(%user))]
    pub async fn resume(&self, user: UserId, job_name: &str) -> Result<bool> {
        self.registry.resume(user, &name(job_name)?).await
    }

    /// The job's most recent runs, newest first (at most `limit`).
    #[tracing::instrument(name = "cron.service.history", skip(self), fields(%user))]
    pub async fn history(&self, user: UserId, job_name: &str, limit: usize) -> Result<Vec<JobRun>> {
        self.registry.history(user, &name(job_name)?, limit).await
    }

    /// The job's next `n` run times (UTC); [`crate::Error::NotFound`] if the user
    /// has no such job, empty while it is paused.
    #[tracing::instrument(name = "cron.service.next_runs", skip(self), fields(%user))]
    pub async fn next_runs(
        &self,
        user: UserId,
        job_name: &str,
        n: usize,
    ) -> Result<Vec<OffsetDateTime>> {
        self.registry.next_runs(user, &name(job_name)?, n).await
    }

    /// Deletes the history of one of the user's jobs older than
    /// `older_than`; returns the runs deleted.
    #[tracing::instrument(name = "cron.service.prune_job_history", skip(self), fields(%user))]
    pub async fn prune_job_history(
        &self,
        user: UserId,
        job_name: &str,
        older_than: OffsetDateTime,
    ) -> Result<u64> {
        self.registry
            .prune_history(HistoryScope::Job(user, name(job_name)?), older_than)
            .await
    }

    /// Deletes all run history older than `older_than` (administrative);
    /// returns the runs deleted. pg_cron's history grows forever otherwise.
    #[tracing::instrument(name = "cron.service.prune_history", skip(self))]
    pub async fn prune_history(&self, older_than: OffsetDateTime) -> Result<u64> {
        self.registry
            .prune_history(HistoryScope::All, older_than)
            .await
    }

    /// Repairs drift between the registry and pg_cron (administrative).
    #[tracing::instrument(name = "cron.service.reconcile", skip(self))]
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        self.registry.reconcile().await
    }

    /// Leases up to `limit` requests queued by fired jobs (for workers);
    /// complete each with [`CronService::complete_request`] once carried
    /// out. See [`CronRegistry::take_requests`]: a request not completed
    /// within its lease is delivered again.
    #[tracing::instrument(name = "cron.service.take_requests", skip(self))]
    pub async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        self.registry.take_requests(limit).await
    }

    /// Removes a request this delivery carried out; `Ok(false)` if its
    /// lease was lost (see [`CronRegistry::complete_request`]).
    #[tracing::instrument(name = "cron.service.complete_request", skip(self, request), fields(request = request.request_id, attempt = request.attempt))]
    pub async fn complete_request(&self, request: &CronRequest) -> Result<bool> {
        self.registry.complete_request(request).await
    }

    /// Gives a leased request back for redelivery at the next take;
    /// `Ok(false)` if its lease was lost (see
    /// [`CronRegistry::release_request`]).
    #[tracing::instrument(name = "cron.service.release_request", skip(self, request), fields(request = request.request_id, attempt = request.attempt))]
    pub async fn release_request(&self, request: &CronRequest) -> Result<bool> {
        self.registry.release_request(request).await
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;

    use crate::registry::MockCronRegistry;
    use crate::schedule::ScheduleError;

    #[tokio::test]
    async fn bad_input_never_reaches_the_registry() {
        let mut registry = MockCronRegistry::new();
        registry.expect_syntax().return_const(PgCronVersion::V1_4);
        registry.expect_register_cron_job().never();
        registry.expect_unregister_cron_job().never();
        let service = CronService::new(Arc::new(registry));
        let user = UserId::random();
        let command = JobCommand::RefreshRecommendations;
        for (job, op, schedule) in [
            ("bad name!", "summarize", "* * * * *"),
            ("ok", "Bad Op", "* * * * *"),
            ("ok", "summarize", "61 * * * *"),
            ("ok", "summarize", "10 seconds"),
        ] {
            let err = service
                .register_cron_job(user, job, op, schedule, command.clone())
                .await
                .unwrap_err();
            if schedule == "10 seconds" {
                assert!(matches!(
                    err,
                    Error::Schedule(ScheduleError::NeedsVersion { .. })
                ));
            }
        }
        assert!(matches!(
            service.unregister_cron_job(user, "x'; drop").await,
            Err(Error::Validation(v)) if v.field == "job name"
        ));
    }

    #[tokio::test]
    async fn next_runs_of_a_missing_job_is_not_found() {
        let mut registry = MockCronRegistry::new();
        registry.expect_get().returning(|_, _| Ok(None));
        let service = CronService::new(Arc::new(registry));
        assert!(matches!(
            service.next_runs(UserId::random(), "nightly", 3).await,
            Err(Error::NotFound { .. })
        ));
    }
}
