//! [`AllowList`]: the policy that jobs only call SQL functions the
//! application allowed.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId, Validation};
use time::OffsetDateTime;

use crate::command::{FunctionName, JobCommand};
use crate::error::Result;
use crate::model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, SchedulerKind,
};
use crate::name::JobName;
use crate::registry::CronRegistry;
use crate::schedule::PgCronVersion;

/// A [`CronRegistry`] over any backend `R` that refuses jobs calling SQL
/// functions not on its list.
///
/// [`JobCommand::CallFunction`] runs a SQL function with the scheduler's
/// privileges (pg_cron's role, often a superuser), so only functions the
/// application allowed may be registered. The rule:
/// - only `CallFunction` commands are checked; `RunOperation`,
///   `RefreshRecommendations` and `PruneHistory` always pass;
/// - an empty list (the default) refuses every `CallFunction`;
/// - names compare as written: allowing `public.record_note` does not
///   allow `record_note` (resolved through a `search_path`), nor the
///   reverse; names follow [`FunctionName`]'s rule.
///
/// A refused [`CronRegistry::register_cron_job`] (create or replace) is
/// [`crate::Error::Validation`] with field `command`, and nothing is
/// written: an existing job of that name keeps its old definition. Every
/// other method is the backend's own; none of them can change a job's
/// command. Cloning is cheap when `R` is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), opsdeck_cron_registry::Error> {
/// use opsdeck_core::UserId;
/// use opsdeck_cron_registry::{
///     AllowList, CronRegistry, CronSchedule, Error, InMemoryCronRegistry, JobCommand, NewJob,
/// };
///
/// let registry = AllowList::new(InMemoryCronRegistry::new())
///     .allow_functions(["public.refresh_stats"])?;
/// let job = |function: &str| -> Result<NewJob, Error> {
///     Ok(NewJob::new(
///         UserId::random(),
///         "stats".parse().expect("a valid job name"),
///         "summarize".parse().expect("a valid operation id"),
///         CronSchedule::parse("@daily")?,
///         JobCommand::call_function(function.parse()?, vec![])?,
///     ))
/// };
/// registry.register_cron_job(job("public.refresh_stats")?).await?;
/// let refused = registry.register_cron_job(job("pg_catalog.pg_read_file")?).await;
/// assert!(matches!(refused, Err(Error::Validation(v)) if v.field == "command"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AllowList<R> {
    inner: R,
    allowed: Arc<BTreeSet<FunctionName>>,
}

impl<R: CronRegistry> AllowList<R> {
    /// `inner` behind an empty list: every `CallFunction` is refused.
    pub fn new(inner: R) -> Self {
        AllowList {
            inner,
            allowed: Arc::default(),
        }
    }

    /// Also allows `function` (`name` or `schema.name`, parsed here; a bad
    /// name is [`crate::Error::Command`]). Allow only functions that are
    /// safe for any user to run with any arguments: they run with the
    /// scheduler's privileges.
    pub fn allow_function(self, function: impl AsRef<str>) -> Result<Self> {
        self.allow_functions([function])
    }

    /// Also allows every function of `functions`; see
    /// [`AllowList::allow_function`]. On a bad name nothing is added.
    pub fn allow_functions<I>(mut self, functions: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let parsed = functions
            .into_iter()
            .map(|f| FunctionName::parse(f.as_ref()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Arc::make_mut(&mut self.allowed).extend(parsed);
        Ok(self)
    }

    /// The allowed functions, in name order.
    pub fn allowed_functions(&self) -> impl Iterator<Item = &FunctionName> {
        self.allowed.iter()
    }

    /// Whether a job may run `command`: `Ok(())`, or the refusal
    /// [`AllowList::register_cron_job`](CronRegistry::register_cron_job)
    /// returns.
    pub fn check(&self, command: &JobCommand) -> Result<()> {
        match command {
            JobCommand::CallFunction { function, .. } if !self.allowed.contains(function) => {
                Err(Validation::new(
                    "command",
                    format!(
                        "function {function} is not allowed; allow it with AllowList::allow_function \
                         or CronService::builder(..).allow_function"
                    ),
                )
                .into())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<R: CronRegistry> CronRegistry for AllowList<R> {
    fn scheduler(&self) -> SchedulerKind {
        self.inner.scheduler()
    }

    fn syntax(&self) -> PgCronVersion {
        self.inner.syntax()
    }

    async fn register_cron_job(&self, job: NewJob) -> Result<CronJob> {
        self.check(&job.command)?;
        self.inner.register_cron_job(job).await
    }

    async fn unregister_cron_job(&self, user: UserId, name: &JobName) -> Result<bool> {
        self.inner.unregister_cron_job(user, name).await
    }

    async fn check_cron_job_exists(&self, user: UserId, name: &JobName) -> Result<bool> {
        self.inner.check_cron_job_exists(user, name).await
    }

    async fn get(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>> {
        self.inner.get(user, name).await
    }

    async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>> {
        self.inner.list_for_user(user).await
    }

    async fn list_for_operation(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Vec<CronJob>> {
        self.inner.list_for_operation(user, operation).await
    }

    async fn set_active(
        &self,
        user: UserId,
        name: &JobName,
        active: bool,
    ) -> Result<Option<CronJob>> {
        self.inner.set_active(user, name, active).await
    }

    async fn history(&self, user: UserId, name: &JobName, limit: usize) -> Result<Vec<JobRun>> {
        self.inner.history(user, name, limit).await
    }

    async fn prune_history(&self, scope: HistoryScope, older_than: OffsetDateTime) -> Result<u64> {
        self.inner.prune_history(scope, older_than).await
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        self.inner.reconcile().await
    }

    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        self.inner.take_requests(limit).await
    }

    async fn complete_request(&self, request: &CronRequest) -> Result<bool> {
        self.inner.complete_request(request).await
    }

    async fn release_request(&self, request: &CronRequest) -> Result<bool> {
        self.inner.release_request(request).await
    }
}
