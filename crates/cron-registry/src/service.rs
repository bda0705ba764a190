use std::sync::Arc;

use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::{
    CronJob, CronRegistry, CronRegistryExt, CronRequest, CronSchedule, FunctionName, HistoryScope,
    JobCommand, JobName, JobRun, NewJob, ReconcileReport,
};

/// What applications call: parses raw input (job names, operation ids and
/// schedules, the latter in the syntax of the backend's pg_cron version)
/// before anything reaches the registry, and traces every call.
///
/// No cache: job reads are rare and must reflect pause/resume at once.
/// Cloning is cheap.
///
/// `JobCommand::CallFunction` runs a SQL function with the scheduler's
/// privileges (pg_cron's role, often a superuser), so the service only
/// registers functions the application allowed with
/// [`CronService::allow_function`]; anything else is
/// [`Error::Validation`] and nothing is written.
#[derive(Debug, Clone)]
pub struct CronService {
    registry: Arc<dyn CronRegistry>,
    allowed_functions: Arc<std::collections::BTreeSet<String>>,
}

fn name(raw: &str) -> Result<JobName> {
    JobName::parse(raw).map_err(|e| Error::parse("job name", e))
}

fn operation(raw: &str) -> Result<OperationId> {
    OperationId::parse(raw).map_err(|e| Error::parse("operation id", e))
}

impl CronService {
    /// A service over `registry`.
    pub fn new(registry: Arc<dyn CronRegistry>) -> Self {
        CronService {
            registry,
            allowed_functions: Arc::default(),
        }
    }

    /// Lets jobs call `function` (`schema.name` as written in
    /// [`FunctionName`]). Allow only functions that are safe for any user to
    /// run with any arguments: they run with the scheduler's privileges.
    pub fn allow_function(mut self, function: &FunctionName) -> Self {
        Arc::make_mut(&mut self.allowed_functions).insert(function.to_string());
        self
    }

    fn check_command(&self, command: &JobCommand) -> Result<()> {
        match command {
            JobCommand::CallFunction { function, .. }
                if !self.allowed_functions.contains(&function.to_string()) =>
            {
                Err(Error::Validation {
                    field: "command",
                    reason: format!(
                        "function {function} is not allowed; allow it with CronService::allow_function"
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The registry behind the service.
    pub fn registry(&self) -> &Arc<dyn CronRegistry> {
        &self.registry
    }

    /// Parses `schedule` for this backend's pg_cron version.
    pub fn parse_schedule(&self, schedule: &str) -> Result<CronSchedule> {
        Ok(CronSchedule::parse_for(schedule, self.registry.syntax())?)
    }

    /// Creates or replaces the user's job `job_name` (active). Every input
    /// is validated first; on any error nothing is written.
    #[tracing::instrument(name = "cron.service.register", skip(self, command), fields(%user, job = job_name, operation = operation_id))]
    pub async fn register(
        &self,
        user: UserId,
        job_name: &str,
        operation_id: &str,
        schedule: &str,
        command: JobCommand,
    ) -> Result<CronJob> {
        self.check_command(&command)?;
        let job = NewJob::new(
            user,
            name(job_name)?,
            operation(operation_id)?,
            self.parse_schedule(schedule)?,
            command,
        );
        self.registry.register(job).await
    }

    /// Registers an already-parsed job (its schedule is still checked
    /// against the backend's version).
    #[tracing::instrument(name = "cron.service.register_job", skip(self, job), fields(user = %job.user_id, job = %job.name))]
    pub async fn register_job(&self, job: NewJob) -> Result<CronJob> {
        self.check_command(&job.command)?;
        self.registry.register(job).await
    }

    /// Removes the user's job; `Ok(false)` if there was none.
    #[tracing::instrument(name = "cron.service.unregister", skip(self), fields(%user))]
    pub async fn unregister(&self, user: UserId, job_name: &str) -> Result<bool> {
        self.registry.unregister(user, &name(job_name)?).await
    }

    /// Whether the user has a job of that name.
    #[tracing::instrument(name = "cron.service.exists", skip(self), fields(%user))]
    pub async fn exists(&self, user: UserId, job_name: &str) -> Result<bool> {
        self.registry.exists(user, &name(job_name)?).await
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

    /// The job's next `n` run times (UTC); [`Error::NotFound`] if the user
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

    /// Takes up to `limit` requests queued by fired jobs (for workers).
    #[tracing::instrument(name = "cron.service.take_requests", skip(self))]
    pub async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        self.registry.take_requests(limit).await
    }
}

#[cfg(all(test, feature = "mock"))]
mod tests {
    use super::*;
    use crate::{MockCronRegistry, PgCronVersion, ScheduleError};

    #[tokio::test]
    async fn bad_input_never_reaches_the_registry() {
        let mut registry = MockCronRegistry::new();
        registry.expect_syntax().return_const(PgCronVersion::V1_4);
        registry.expect_register().never();
        registry.expect_unregister().never();
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
                .register(user, job, op, schedule, command.clone())
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
            service.unregister(user, "x'; drop").await,
            Err(Error::Validation {
                field: "job name",
                ..
            })
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
