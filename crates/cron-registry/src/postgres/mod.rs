//! [`PgCronRegistry`]: the registry in PostgreSQL, its jobs fired by
//! pg_cron or by the in-process runner.
//!
//! - `registry_table`: the registry table, whichever scheduler fires;
//! - `pg_cron`: scheduling with pg_cron, in its own database;
//! - `runner_table`: the in-process runner's jobs and run history;
//! - `requests`: the queue fired jobs leave for the application;
//! - `detect`: finding pg_cron and naming this registry's jobs there;
//! - `rows`, `db`: row decoding and error mapping they share;
//! - [`SqlExecutor`] and [`PgCronRegistryOptions`].

mod db;
mod detect;
mod executor;
mod options;
mod pg_cron;
mod registry_table;
mod requests;
mod rows;
mod runner_table;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;

pub use executor::SqlExecutor;
pub use options::PgCronRegistryOptions;

use crate::error::{Error, Result};
use crate::model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, RunStatus, SchedulerKind,
};
use crate::name::JobName;
use crate::registry::{CronRegistry, DEFAULT_REQUEST_LEASE, MAX_HISTORY};
use crate::runner::{Claim, CronRunner, RunStore, RunnableJob};
use crate::schedule::PgCronVersion;
use db::map_db_error;
use pg_cron::PgCronScheduler;

/// The registry in PostgreSQL (`opsdeck.cron_job_registry`, created by the
/// workspace migrations), fired by pg_cron or by [`CronRunner`].
///
/// With pg_cron, every write changes the registry (application database)
/// and pg_cron (its own database) in two transactions opened side by side:
/// the pg_cron change is made first but committed **after** the registry's.
/// So a failure before the registry commits leaves neither changed; the
/// only window (pg_cron's commit failing after the registry's) leaves a
/// registry row whose pg_cron job is missing or stale, or (unregister) a
/// pg_cron job without a row — both of which [`CronRegistry::reconcile`]
/// repairs. pg_cron job names are `{prefix}{registry id}` (≤ 63 bytes);
/// `reconcile` and `prune_history` touch only such jobs and the ones the
/// registry records, never another application's in the same database.
///
/// Requests are leased for [`PgCronRegistryOptions::request_lease`] (see
/// [`CronRegistry::take_requests`]); the runner's claims, overlap checks,
/// missed-slot records and recovery are single transactions on
/// `opsdeck.cron_job_runs` (see [`CronRunner`]).
///
/// Every user-facing statement filters on `user_id`, the leading column of
/// the primary key.
#[derive(Debug, Clone)]
pub struct PgCronRegistry {
    pool: PgPool,
    scheduler: Scheduler,
    /// How long a taken request stays leased.
    request_lease: Duration,
}

/// Who fires the jobs of this registry.
#[derive(Debug, Clone)]
enum Scheduler {
    PgCron(Arc<PgCronScheduler>),
    /// The in-process runner, accepting the schedule syntax of `syntax`.
    Runner {
        syntax: PgCronVersion,
    },
}

impl PgCronRegistry {
    /// A registry on `pool` (the schema must be migrated), scheduling with
    /// pg_cron when `options.cron_pool` reaches pg_cron 1.4+, else with
    /// [`CronRunner`] (or an error if `require_pg_cron`).
    #[tracing::instrument(name = "cron.pg.connect", skip_all, fields(pg_cron))]
    pub async fn connect(pool: PgPool, options: PgCronRegistryOptions) -> Result<Self> {
        if let Some(prefix) = &options.job_prefix {
            detect::check_prefix(prefix)?;
        }
        let runner = PgCronRegistry {
            pool: pool.clone(),
            scheduler: Scheduler::Runner {
                syntax: options.runner_syntax,
            },
            request_lease: options.request_lease,
        };
        let unavailable = |reason: String| {
            if options.require_pg_cron {
                Err(Error::PgCronUnavailable(reason))
            } else {
                tracing::warn!(%reason, "pg_cron unavailable; jobs fire through the in-process runner");
                Ok(())
            }
        };
        let Some(cron_pool) = options.cron_pool else {
            if options.require_pg_cron {
                return Err(Error::PgCronUnavailable(
                    "no cron database pool was configured".into(),
                ));
            }
            // Not configured is a choice, not a fault: no warning.
            tracing::info!("no cron database configured; jobs fire through the in-process runner");
            return Ok(runner);
        };
        let version = match detect::detect(&cron_pool).await {
            Ok(Some(v)) if v >= PgCronVersion::V1_4 => v,
            Ok(Some(v)) => {
                unavailable(format!(
                    "pg_cron {v} has no cron.schedule_in_database (1.4+)"
                ))?;
                return Ok(runner);
            }
            Ok(None) => {
                unavailable("the pg_cron extension is not installed in the cron database".into())?;
                return Ok(runner);
            }
            Err(Error::PgCronUnavailable(reason)) => {
                unavailable(reason)?;
                return Ok(runner);
            }
            Err(other) => return Err(other),
        };
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&pool)
            .await
            .map_err(map_db_error)?;
        let prefix = options
            .job_prefix
            .unwrap_or_else(|| detect::default_prefix(&database));
        tracing::Span::current().record("pg_cron", tracing::field::display(version));
        Ok(PgCronRegistry {
            pool,
            scheduler: Scheduler::PgCron(Arc::new(PgCronScheduler::new(
                cron_pool, version, database, prefix,
            ))),
            request_lease: options.request_lease,
        })
    }

    /// A registry on `pool` whose jobs fire through [`CronRunner`] (see
    /// [`PgCronRegistry::runner`]); no pg_cron is contacted.
    pub fn with_runner(pool: PgPool) -> Self {
        PgCronRegistry {
            pool,
            scheduler: Scheduler::Runner {
                syntax: PgCronVersion::V1_4,
            },
            request_lease: DEFAULT_REQUEST_LEASE,
        }
    }

    /// Sets how long a taken request stays leased to its consumer (see
    /// [`CronRegistry::take_requests`]; also
    /// [`PgCronRegistryOptions::request_lease`]).
    pub fn with_request_lease(mut self, lease: Duration) -> Self {
        self.request_lease = lease;
        self
    }

    /// The application pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The detected pg_cron version, if jobs run on pg_cron.
    pub fn pg_cron_version(&self) -> Option<PgCronVersion> {
        match &self.scheduler {
            Scheduler::PgCron(pg_cron) => Some(pg_cron.version()),
            Scheduler::Runner { .. } => None,
        }
    }

    /// The prefix of this registry's pg_cron job names, if on pg_cron.
    pub fn job_prefix(&self) -> Option<&str> {
        match &self.scheduler {
            Scheduler::PgCron(pg_cron) => Some(pg_cron.prefix()),
            Scheduler::Runner { .. } => None,
        }
    }

    /// The name pg_cron knows `job` by, if on pg_cron.
    pub fn pg_cron_job_name(&self, job: &CronJob) -> Option<String> {
        match &self.scheduler {
            Scheduler::PgCron(pg_cron) => Some(pg_cron.job_name(job.id)),
            Scheduler::Runner { .. } => None,
        }
    }

    /// A runner over this registry that executes each job's SQL on the
    /// application pool. Start it with [`CronRunner::spawn`] when
    /// [`CronRegistry::scheduler`] is [`SchedulerKind::Runner`].
    pub fn runner(&self) -> CronRunner {
        CronRunner::new(
            Arc::new(self.clone()),
            Arc::new(SqlExecutor::new(self.pool.clone())),
        )
    }
}

#[async_trait]
impl CronRegistry for PgCronRegistry {
    fn scheduler(&self) -> SchedulerKind {
        match self.scheduler {
            Scheduler::PgCron(_) => SchedulerKind::PgCron,
            Scheduler::Runner { .. } => SchedulerKind::Runner,
        }
    }

    fn syntax(&self) -> PgCronVersion {
        match &self.scheduler {
            Scheduler::PgCron(pg_cron) => pg_cron.version(),
            Scheduler::Runner { syntax } => *syntax,
        }
    }

    #[tracing::instrument(
        name = "cron.pg.register_cron_job",
        skip(self, job),
        fields(user = %job.user_id, job = %job.name, operation = %job.operation_id, schedule = %job.schedule)
    )]
    async fn register_cron_job(&self, job: NewJob) -> Result<CronJob> {
        job.schedule.check_version(self.syntax())?;
        let mut app = self.pool.begin().await.map_err(map_db_error)?;
        let row = registry_table::upsert(&mut app, &job, self.scheduler()).await?;
        match &self.scheduler {
            Scheduler::Runner { .. } => {
                app.commit().await.map_err(map_db_error)?;
                Ok(row)
            }
            Scheduler::PgCron(pg_cron) => pg_cron.attach_and_commit(app, row).await,
        }
    }

    #[tracing::instrument(name = "cron.pg.unregister_cron_job", skip(self), fields(%user, job = %name))]
    async fn unregister_cron_job(&self, user: UserId, name: &JobName) -> Result<bool> {
        let mut app = self.pool.begin().await.map_err(map_db_error)?;
        let Some((id, jobid)) = registry_table::lock(&mut app, user, name).await? else {
            return Ok(false);
        };
        match &self.scheduler {
            Scheduler::PgCron(pg_cron) => {
                let mut cron = pg_cron.begin().await?;
                pg_cron.unschedule(&mut cron, jobid, Some(id)).await?;
                let deleted = registry_table::delete(&mut app, user, name).await?;
                PgCronScheduler::commit(app, cron).await?;
                Ok(deleted)
            }
            // A row a pg_cron deployment left behind: its pg_cron job is
            // removed by that deployment's next reconcile.
            Scheduler::Runner { .. } => {
                let deleted = registry_table::delete(&mut app, user, name).await?;
                app.commit().await.map_err(map_db_error)?;
                Ok(deleted)
            }
        }
    }

    #[tracing::instrument(name = "cron.pg.check_cron_job_exists", skip(self), fields(%user, job = %name))]
    async fn check_cron_job_exists(&self, user: UserId, name: &JobName) -> Result<bool> {
        registry_table::exists(&self.pool, user, name).await
    }

    #[tracing::instrument(name = "cron.pg.get", skip(self), fields(%user, job = %name))]
    async fn get(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>> {
        registry_table::fetch_job(&self.pool, user, name).await
    }

    #[tracing::instrument(name = "cron.pg.list_for_user", skip(self), fields(%user, rows))]
    async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>> {
        registry_table::fetch_jobs(&self.pool, user, None).await
    }

    #[tracing::instrument(name = "cron.pg.list_for_operation", skip(self), fields(%user, %operation, rows))]
    async fn list_for_operation(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Vec<CronJob>> {
        registry_table::fetch_jobs(&self.pool, user, Some(operation)).await
    }

    #[tracing::instrument(name = "cron.pg.set_active", skip(self), fields(%user, job = %name, active))]
    async fn set_active(
        &self,
        user: UserId,
        name: &JobName,
        active: bool,
    ) -> Result<Option<CronJob>> {
        let mut app = self.pool.begin().await.map_err(map_db_error)?;
        let Some(job) = registry_table::set_active(&mut app, user, name, active).await? else {
            return Ok(None);
        };
        match &self.scheduler {
            Scheduler::PgCron(pg_cron) => pg_cron
                .set_active_and_commit(app, job, active)
                .await
                .map(Some),
            Scheduler::Runner { .. } => {
                app.commit().await.map_err(map_db_error)?;
                Ok(Some(job))
            }
        }
    }

    #[tracing::instrument(name = "cron.pg.history", skip(self), fields(%user, job = %name, rows))]
    async fn history(&self, user: UserId, name: &JobName, limit: usize) -> Result<Vec<JobRun>> {
        let limit = limit.min(MAX_HISTORY);
        let Some(job) = registry_table::fetch_job(&self.pool, user, name).await? else {
            return Ok(Vec::new());
        };
        let runs = match (&self.scheduler, job.scheduler, job.pg_cron_job_id) {
            (Scheduler::PgCron(pg_cron), SchedulerKind::PgCron, Some(jobid)) => {
                pg_cron.runs(jobid, limit).await?
            }
            (_, SchedulerKind::Runner, _) => runner_table::runs(&self.pool, &job, limit).await?,
            // A pg_cron job seen without pg_cron: its history is out of reach.
            _ => Vec::new(),
        };
        tracing::Span::current().record("rows", runs.len());
        Ok(runs)
    }

    #[tracing::instrument(name = "cron.pg.prune_history", skip(self), fields(?scope, %older_than, rows))]
    async fn prune_history(&self, scope: HistoryScope, older_than: OffsetDateTime) -> Result<u64> {
        // The runner's table is pruned in either mode: it keeps the runs of
        // jobs the runner fired before pg_cron took over.
        let (job, mut deleted) = match &scope {
            HistoryScope::All => (
                None,
                runner_table::prune(&self.pool, None, older_than).await?,
            ),
            HistoryScope::Job(user, name) => {
                let Some(job) = registry_table::fetch_job(&self.pool, *user, name).await? else {
                    return Ok(0);
                };
                let deleted =
                    runner_table::prune(&self.pool, Some((*user, job.id)), older_than).await?;
                (Some(job), deleted)
            }
        };
        if let Scheduler::PgCron(pg_cron) = &self.scheduler {
            deleted += match &job {
                None => {
                    let ours = registry_table::pg_cron_job_ids(&self.pool).await?;
                    pg_cron.prune(None, &ours, older_than).await?
                }
                Some(CronJob {
                    pg_cron_job_id: Some(jobid),
                    ..
                }) => pg_cron.prune(Some(*jobid), &[], older_than).await?,
                Some(_) => 0,
            };
        }
        tracing::Span::current().record("rows", deleted);
        Ok(deleted)
    }

    #[tracing::instrument(
        name = "cron.pg.reconcile",
        skip(self),
        fields(rescheduled, unscheduled, errors)
    )]
    async fn reconcile(&self) -> Result<ReconcileReport> {
        let Scheduler::PgCron(pg_cron) = &self.scheduler else {
            return Ok(ReconcileReport::default());
        };
        let report = pg_cron.reconcile(&self.pool).await?;
        let span = tracing::Span::current();
        span.record("rescheduled", report.rescheduled.len());
        span.record("unscheduled", report.unscheduled.len());
        span.record("errors", report.errors.len());
        Ok(report)
    }

    #[tracing::instrument(name = "cron.pg.take_requests", skip(self), fields(rows))]
    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        requests::take(&self.pool, limit, self.request_lease).await
    }

    #[tracing::instrument(name = "cron.pg.complete_request", skip(self, request), fields(request = request.request_id, attempt = request.attempt))]
    async fn complete_request(&self, request: &CronRequest) -> Result<bool> {
        requests::complete(&self.pool, request).await
    }

    #[tracing::instrument(name = "cron.pg.release_request", skip(self, request), fields(request = request.request_id, attempt = request.attempt))]
    async fn release_request(&self, request: &CronRequest) -> Result<bool> {
        requests::release(&self.pool, request).await
    }
}

/// The runner's view of the registry: see `runner_table`.
#[async_trait]
impl RunStore for PgCronRegistry {
    async fn runnable_jobs(&self) -> Result<Vec<RunnableJob>> {
        runner_table::runnable_jobs(&self.pool).await
    }

    #[tracing::instrument(name = "cron.pg.claim_run", skip(self, job), fields(job = job.id, %slot, runner))]
    async fn claim_run(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        timeout: Duration,
    ) -> Result<Claim> {
        runner_table::claim(&self.pool, job, slot, runner, timeout).await
    }

    #[tracing::instrument(name = "cron.pg.record_missed", skip(self, job, message), fields(job = job.id, %slot, runner))]
    async fn record_missed(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        message: &str,
    ) -> Result<bool> {
        runner_table::record_missed(&self.pool, job, slot, runner, message).await
    }

    #[tracing::instrument(name = "cron.pg.recover_runs", skip(self), fields(rows))]
    async fn recover_runs(&self, grace: Duration) -> Result<u64> {
        runner_table::recover(&self.pool, grace).await
    }

    async fn finish_run(
        &self,
        job: &CronJob,
        run_id: i64,
        status: RunStatus,
        message: &str,
    ) -> Result<()> {
        runner_table::finish(&self.pool, job, run_id, status, message).await
    }
}
