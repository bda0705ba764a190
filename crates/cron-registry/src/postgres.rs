use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use sqlx::types::Uuid;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::pg_cron::{self, CronTx, PgCronLink};
use crate::runner::{JobExecutor, RunStore};
use crate::{
    CronJob, CronRegistry, CronRequest, CronRunner, CronSchedule, Error, HistoryScope, JobCommand,
    JobName, JobRun, MAX_HISTORY, NewJob, PgCronVersion, ReconcileReport, RequestKind, Result,
    RunStatus, SchedulerKind,
};

type AppTx = Transaction<'static, Postgres>;

/// How [`PgJobRegistry::connect`] sets up scheduling.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgRegistryOptions {
    /// A pool on pg_cron's database (`cron.database_name`, often
    /// `postgres`); may be the application pool itself when the two are the
    /// same database (each write then holds two of its connections at once,
    /// so it needs at least two). `None`: no pg_cron, jobs fire through
    /// [`CronRunner`].
    pub cron_pool: Option<PgPool>,
    /// Fail instead of falling back to the runner when pg_cron is absent.
    pub require_pg_cron: bool,
    /// Prefix of this registry's pg_cron job names (1–43 bytes of
    /// `[A-Za-z0-9_.:-]`). Default: `opsdeck:{database}:`, or a hash of the
    /// database name when that is long. Registries sharing one pg_cron must
    /// have distinct prefixes: `reconcile` removes unknown jobs with its own.
    pub job_prefix: Option<String>,
    /// The schedule syntax accepted in runner mode (default pg_cron 1.4, so
    /// schedules stay valid if pg_cron 1.4 is installed later).
    pub runner_syntax: PgCronVersion,
}

impl Default for PgRegistryOptions {
    fn default() -> Self {
        PgRegistryOptions {
            cron_pool: None,
            require_pg_cron: false,
            job_prefix: None,
            runner_syntax: PgCronVersion::V1_4,
        }
    }
}

impl PgRegistryOptions {
    /// Default options: no pg_cron pool, runner mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses pg_cron through `pool` (connected to `cron.database_name`).
    pub fn cron_pool(mut self, pool: PgPool) -> Self {
        self.cron_pool = Some(pool);
        self
    }

    /// Fails if pg_cron is not usable instead of falling back to the runner.
    pub fn require_pg_cron(mut self, required: bool) -> Self {
        self.require_pg_cron = required;
        self
    }

    /// Sets the pg_cron job name prefix.
    pub fn job_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.job_prefix = Some(prefix.into());
        self
    }

    /// Sets the schedule syntax accepted in runner mode.
    pub fn runner_syntax(mut self, version: PgCronVersion) -> Self {
        self.runner_syntax = version;
        self
    }
}

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
/// repairs. pg_cron job names are `{prefix}{registry id}` (≤ 63 bytes).
///
/// Every user-facing statement filters on `user_id`, the leading column of
/// the primary key.
#[derive(Debug, Clone)]
pub struct PgJobRegistry {
    pool: PgPool,
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    PgCron(Arc<PgCronLink>),
    Runner { syntax: PgCronVersion },
}

fn db(error: sqlx::Error) -> Error {
    if let Some(e) = error.as_database_error()
        && e.is_check_violation()
    {
        return Error::Validation {
            field: "cron job",
            reason: format!(
                "refused by the database ({})",
                e.constraint().unwrap_or("check constraint")
            ),
        };
    }
    Error::Database(error)
}

const COLUMNS: &str = "id, user_id, job_name, operation_id, schedule, command_kind, command_args, \
                       active, scheduler, pg_cron_job_id, created_at, updated_at";

impl PgJobRegistry {
    /// A registry on `pool` (the schema must be migrated), scheduling with
    /// pg_cron when `options.cron_pool` reaches pg_cron 1.4+, else with
    /// [`CronRunner`] (or an error if `require_pg_cron`).
    #[tracing::instrument(name = "cron.pg.connect", skip_all, fields(pg_cron))]
    pub async fn connect(pool: PgPool, options: PgRegistryOptions) -> Result<Self> {
        if let Some(prefix) = &options.job_prefix {
            pg_cron::check_prefix(prefix)?;
        }
        let runner = Mode::Runner {
            syntax: options.runner_syntax,
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
            return Ok(PgJobRegistry { pool, mode: runner });
        };
        let version = match pg_cron::detect(&cron_pool).await {
            Ok(Some(v)) if v >= PgCronVersion::V1_4 => v,
            Ok(Some(v)) => {
                unavailable(format!(
                    "pg_cron {v} has no cron.schedule_in_database (1.4+)"
                ))?;
                return Ok(PgJobRegistry { pool, mode: runner });
            }
            Ok(None) => {
                unavailable("the pg_cron extension is not installed in the cron database".into())?;
                return Ok(PgJobRegistry { pool, mode: runner });
            }
            Err(Error::PgCronUnavailable(reason)) => {
                unavailable(reason)?;
                return Ok(PgJobRegistry { pool, mode: runner });
            }
            Err(other) => return Err(other),
        };
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&pool)
            .await
            .map_err(db)?;
        let prefix = options
            .job_prefix
            .unwrap_or_else(|| pg_cron::default_prefix(&database));
        tracing::Span::current().record("pg_cron", tracing::field::display(version));
        Ok(PgJobRegistry {
            pool,
            mode: Mode::PgCron(Arc::new(PgCronLink::new(
                cron_pool, version, database, prefix,
            ))),
        })
    }

    /// A registry on `pool` whose jobs fire through [`CronRunner`] (see
    /// [`PgJobRegistry::runner`]); no pg_cron is contacted.
    pub fn with_runner(pool: PgPool) -> Self {
        PgJobRegistry {
            pool,
            mode: Mode::Runner {
                syntax: PgCronVersion::V1_4,
            },
        }
    }

    /// The application pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The detected pg_cron version, if jobs run on pg_cron.
    pub fn pg_cron_version(&self) -> Option<PgCronVersion> {
        match &self.mode {
            Mode::PgCron(link) => Some(link.version()),
            Mode::Runner { .. } => None,
        }
    }

    /// The prefix of this registry's pg_cron job names, if on pg_cron.
    pub fn job_prefix(&self) -> Option<&str> {
        match &self.mode {
            Mode::PgCron(link) => Some(link.prefix()),
            Mode::Runner { .. } => None,
        }
    }

    /// The name pg_cron knows `job` by, if on pg_cron.
    pub fn pg_cron_job_name(&self, job: &CronJob) -> Option<String> {
        match &self.mode {
            Mode::PgCron(link) => Some(link.job_name(job.id)),
            Mode::Runner { .. } => None,
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

    async fn fetch_job(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>> {
        sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM opsdeck.cron_job_registry WHERE user_id = $1 AND job_name = $2"
        )))
        .bind(user.as_uuid())
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(JobRow::into_domain)
        .transpose()
    }

    /// The user's jobs, optionally of one operation, by name. Two static
    /// statements rather than an `OR`, so each uses its index (primary key,
    /// or user + operation).
    async fn fetch_jobs(
        &self,
        user: UserId,
        operation: Option<&OperationId>,
    ) -> Result<Vec<CronJob>> {
        let query = match operation {
            None => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM opsdeck.cron_job_registry
                 WHERE user_id = $1 ORDER BY job_name"
            )))
            .bind(user.as_uuid()),
            Some(operation) => sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM opsdeck.cron_job_registry
                 WHERE user_id = $1 AND operation_id = $2 ORDER BY job_name"
            )))
            .bind(user.as_uuid())
            .bind(operation.as_str()),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        tracing::Span::current().record("rows", rows.len());
        rows.into_iter().map(JobRow::into_domain).collect()
    }

    /// Schedules `job` in pg_cron (inside `cron`) and records the job id in
    /// the registry (inside `app`); the caller commits `app`, then `cron`.
    async fn attach(
        link: &PgCronLink,
        app: &mut AppTx,
        cron: &mut CronTx,
        job: CronJob,
    ) -> Result<CronJob> {
        let jobid = link.schedule(cron, &job).await?;
        if job.pg_cron_job_id == Some(jobid) && job.scheduler == SchedulerKind::PgCron {
            return Ok(job);
        }
        sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE opsdeck.cron_job_registry
             SET scheduler = 'pg_cron', pg_cron_job_id = $2
             WHERE id = $1
             RETURNING {COLUMNS}"
        )))
        .bind(job.id)
        .bind(jobid)
        .fetch_one(&mut **app)
        .await
        .map_err(db)?
        .into_domain()
    }

    /// Commits the registry first, then pg_cron (see the type's docs).
    async fn commit(app: AppTx, cron: Option<CronTx>) -> Result<()> {
        app.commit().await.map_err(db)?;
        if let Some(cron) = cron {
            cron.commit().await.map_err(|source| Error::PgCron {
                action: "commit (run reconcile to repair the registry)",
                source,
            })?;
        }
        Ok(())
    }

    async fn runner_runs(&self, job: &CronJob, limit: usize) -> Result<Vec<JobRun>> {
        let rows: Vec<RunnerRunRow> = sqlx::query_as(
            "SELECT run_id, status, message, scheduled_for, started_at, ended_at
             FROM opsdeck.cron_job_runs
             WHERE user_id = $1 AND job_id = $2
             ORDER BY scheduled_for DESC
             LIMIT $3",
        )
        .bind(job.user_id.as_uuid())
        .bind(job.id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(RunnerRunRow::into_domain).collect())
    }

    /// Re-creates one drifted row's pg_cron job, under the row's lock so a
    /// concurrent unregister cannot be undone.
    async fn repair(&self, link: &PgCronLink, id: i64) -> Result<Option<CronJob>> {
        let mut app = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM opsdeck.cron_job_registry WHERE id = $1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(&mut *app)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut cron = link.begin().await?;
        let job = Self::attach(link, &mut app, &mut cron, row.into_domain()?).await?;
        Self::commit(app, Some(cron)).await?;
        Ok(Some(job))
    }
}

#[async_trait]
impl CronRegistry for PgJobRegistry {
    fn scheduler(&self) -> SchedulerKind {
        match self.mode {
            Mode::PgCron(_) => SchedulerKind::PgCron,
            Mode::Runner { .. } => SchedulerKind::Runner,
        }
    }

    fn syntax(&self) -> PgCronVersion {
        match &self.mode {
            Mode::PgCron(link) => link.version(),
            Mode::Runner { syntax } => *syntax,
        }
    }

    #[tracing::instrument(
        name = "cron.pg.register",
        skip(self, job),
        fields(user = %job.user_id, job = %job.name, operation = %job.operation_id, schedule = %job.schedule)
    )]
    async fn register(&self, job: NewJob) -> Result<CronJob> {
        job.schedule.check_version(self.syntax())?;
        let mut app = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM opsdeck.register_cron_job($1, $2, $3, $4, $5, $6::jsonb, $7, $8)"
        )))
        .bind(job.user_id.as_uuid())
        .bind(job.name.as_str())
        .bind(job.operation_id.as_str())
        .bind(job.schedule.as_str())
        .bind(job.command.kind())
        .bind(job.command.arguments_json().to_string())
        .bind(job.active)
        .bind(self.scheduler().as_str())
        .fetch_one(&mut *app)
        .await
        .map_err(db)?
        .into_domain()?;
        match &self.mode {
            Mode::Runner { .. } => {
                Self::commit(app, None).await?;
                Ok(row)
            }
            Mode::PgCron(link) => {
                let mut cron = link.begin().await?;
                let job = Self::attach(link, &mut app, &mut cron, row).await?;
                Self::commit(app, Some(cron)).await?;
                Ok(job)
            }
        }
    }

    #[tracing::instrument(name = "cron.pg.unregister", skip(self), fields(%user, job = %name))]
    async fn unregister(&self, user: UserId, name: &JobName) -> Result<bool> {
        let mut app = self.pool.begin().await.map_err(db)?;
        let found: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, pg_cron_job_id FROM opsdeck.cron_job_registry
             WHERE user_id = $1 AND job_name = $2
             FOR UPDATE",
        )
        .bind(user.as_uuid())
        .bind(name.as_str())
        .fetch_optional(&mut *app)
        .await
        .map_err(db)?;
        let Some((id, jobid)) = found else {
            return Ok(false);
        };
        let cron = match &self.mode {
            Mode::PgCron(link) => {
                let mut cron = link.begin().await?;
                link.unschedule(&mut cron, jobid, Some(id)).await?;
                Some(cron)
            }
            // A row a pg_cron deployment left behind: its pg_cron job is
            // removed by that deployment's next reconcile.
            Mode::Runner { .. } => None,
        };
        let deleted: bool = sqlx::query_scalar("SELECT opsdeck.unregister_cron_job($1, $2)")
            .bind(user.as_uuid())
            .bind(name.as_str())
            .fetch_one(&mut *app)
            .await
            .map_err(db)?;
        Self::commit(app, cron).await?;
        Ok(deleted)
    }

    #[tracing::instrument(name = "cron.pg.exists", skip(self), fields(%user, job = %name))]
    async fn exists(&self, user: UserId, name: &JobName) -> Result<bool> {
        sqlx::query_scalar("SELECT opsdeck.check_cron_job_exists($1, $2)")
            .bind(user.as_uuid())
            .bind(name.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    #[tracing::instrument(name = "cron.pg.get", skip(self), fields(%user, job = %name))]
    async fn get(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>> {
        self.fetch_job(user, name).await
    }

    #[tracing::instrument(name = "cron.pg.list_for_user", skip(self), fields(%user, rows))]
    async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>> {
        self.fetch_jobs(user, None).await
    }

    #[tracing::instrument(name = "cron.pg.list_for_operation", skip(self), fields(%user, %operation, rows))]
    async fn list_for_operation(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Vec<CronJob>> {
        self.fetch_jobs(user, Some(operation)).await
    }

    #[tracing::instrument(name = "cron.pg.set_active", skip(self), fields(%user, job = %name, active))]
    async fn set_active(
        &self,
        user: UserId,
        name: &JobName,
        active: bool,
    ) -> Result<Option<CronJob>> {
        let mut app = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE opsdeck.cron_job_registry
             SET active = $3,
                 updated_at = CASE WHEN active IS DISTINCT FROM $3 THEN now() ELSE updated_at END
             WHERE user_id = $1 AND job_name = $2
             RETURNING {COLUMNS}"
        )))
        .bind(user.as_uuid())
        .bind(name.as_str())
        .bind(active)
        .fetch_optional(&mut *app)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let job = row.into_domain()?;
        match &self.mode {
            Mode::PgCron(link) => {
                let mut cron = link.begin().await?;
                let altered = match job.pg_cron_job_id {
                    Some(jobid) if job.scheduler == SchedulerKind::PgCron => {
                        link.alter_active(&mut cron, jobid, active).await?
                    }
                    _ => false,
                };
                // A job pg_cron lost (or one the runner used to fire) is
                // scheduled afresh, with the new flag.
                let job = if altered {
                    job
                } else {
                    Self::attach(link, &mut app, &mut cron, job).await?
                };
                Self::commit(app, Some(cron)).await?;
                Ok(Some(job))
            }
            Mode::Runner { .. } => {
                Self::commit(app, None).await?;
                Ok(Some(job))
            }
        }
    }

    #[tracing::instrument(name = "cron.pg.history", skip(self), fields(%user, job = %name, rows))]
    async fn history(&self, user: UserId, name: &JobName, limit: usize) -> Result<Vec<JobRun>> {
        let limit = limit.min(MAX_HISTORY);
        let Some(job) = self.fetch_job(user, name).await? else {
            return Ok(Vec::new());
        };
        let runs = match (&self.mode, job.scheduler, job.pg_cron_job_id) {
            (Mode::PgCron(link), SchedulerKind::PgCron, Some(jobid)) => {
                link.runs(jobid, limit).await?
            }
            (_, SchedulerKind::Runner, _) => self.runner_runs(&job, limit).await?,
            // A pg_cron job seen without pg_cron: its history is out of reach.
            _ => Vec::new(),
        };
        tracing::Span::current().record("rows", runs.len());
        Ok(runs)
    }

    #[tracing::instrument(name = "cron.pg.prune_history", skip(self), fields(?scope, %older_than, rows))]
    async fn prune_history(&self, scope: HistoryScope, older_than: OffsetDateTime) -> Result<u64> {
        let (job, mut deleted) = match &scope {
            HistoryScope::All => {
                let done = sqlx::query(
                    "DELETE FROM opsdeck.cron_job_runs
                     WHERE coalesce(ended_at, started_at) < $1",
                )
                .bind(older_than)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                (None, done.rows_affected())
            }
            HistoryScope::Job(user, name) => {
                let Some(job) = self.fetch_job(*user, name).await? else {
                    return Ok(0);
                };
                let done = sqlx::query(
                    "DELETE FROM opsdeck.cron_job_runs
                     WHERE user_id = $1 AND job_id = $2 AND coalesce(ended_at, started_at) < $3",
                )
                .bind(user.as_uuid())
                .bind(job.id)
                .bind(older_than)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                (Some(job), done.rows_affected())
            }
        };
        if let Mode::PgCron(link) = &self.mode {
            deleted += match &job {
                None => link.prune(None, older_than).await?,
                Some(CronJob {
                    pg_cron_job_id: Some(jobid),
                    ..
                }) => link.prune(Some(*jobid), older_than).await?,
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
        let Mode::PgCron(link) = &self.mode else {
            return Ok(ReconcileReport::default());
        };
        let mut report = ReconcileReport::default();
        // pg_cron first, registry second: pg_cron is committed after the
        // registry, so every pg_cron job seen here already has its row
        // visible below, and a fresh job is never taken for an orphan.
        let owned = link.owned_jobs().await?;
        let rows = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM opsdeck.cron_job_registry ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let by_id: HashMap<i64, &pg_cron::PgCronJob> = owned.iter().map(|j| (j.jobid, j)).collect();
        let mut known: HashSet<i64> = HashSet::new();
        for row in rows {
            let job = match row.into_domain() {
                Ok(job) => job,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            let in_sync = job.scheduler == SchedulerKind::PgCron
                && job
                    .pg_cron_job_id
                    .and_then(|id| by_id.get(&id))
                    .is_some_and(|p| {
                        p.jobname == link.job_name(job.id)
                            && p.schedule == job.schedule.as_str()
                            && p.command == job.to_sql()
                            && p.database == link.database()
                            && p.active == job.active
                    });
            if in_sync {
                known.extend(job.pg_cron_job_id);
                continue;
            }
            match self.repair(link, job.id).await {
                Ok(Some(repaired)) => {
                    known.extend(repaired.pg_cron_job_id);
                    report.rescheduled.push((repaired.user_id, repaired.name));
                }
                Ok(None) => {}
                Err(e) => {
                    known.extend(job.pg_cron_job_id);
                    report
                        .errors
                        .push(format!("job {} of user {}: {e}", job.name, job.user_id));
                }
            }
        }
        for orphan in owned.iter().filter(|j| !known.contains(&j.jobid)) {
            let outcome = async {
                let mut cron = link.begin().await?;
                link.unschedule(&mut cron, Some(orphan.jobid), None).await?;
                cron.commit().await.map_err(|source| Error::PgCron {
                    action: "commit the unschedule",
                    source,
                })
            };
            match outcome.await {
                Ok(()) => report.unscheduled.push(orphan.jobid),
                Err(e) => report.errors.push(format!(
                    "pg_cron job {} ({}): {e}",
                    orphan.jobid, orphan.jobname
                )),
            }
        }
        let span = tracing::Span::current();
        span.record("rescheduled", report.rescheduled.len());
        span.record("unscheduled", report.unscheduled.len());
        span.record("errors", report.errors.len());
        Ok(report)
    }

    #[tracing::instrument(name = "cron.pg.take_requests", skip(self), fields(rows))]
    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        let mut rows: Vec<RequestRow> = sqlx::query_as(
            "DELETE FROM opsdeck.cron_job_requests
             WHERE request_id IN (
                 SELECT request_id FROM opsdeck.cron_job_requests
                 ORDER BY request_id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING request_id, user_id, job_name, kind, operation_id, arguments, requested_at",
        )
        .bind(limit.min(10_000) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.sort_by_key(|r| r.request_id);
        tracing::Span::current().record("rows", rows.len());
        // The rows are already deleted: one corrupt row (written around the
        // constraints) must not cost the whole batch, so it is logged and
        // skipped rather than failing the call.
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let id = row.request_id;
                row.into_domain()
                    .inspect_err(|error| {
                        tracing::error!(request_id = id, %error, "dropping a corrupt cron request");
                    })
                    .ok()
            })
            .collect())
    }
}

#[async_trait]
impl RunStore for PgJobRegistry {
    async fn runnable_jobs(&self) -> Result<Vec<CronJob>> {
        sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM opsdeck.cron_job_registry
             WHERE active AND scheduler = 'runner'
             ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(JobRow::into_domain)
        .collect()
    }

    /// The claim is the insert of the run's primary key (user, job, slot):
    /// exactly one runner's `INSERT … ON CONFLICT DO NOTHING` returns a row.
    #[tracing::instrument(name = "cron.pg.claim_run", skip(self, job), fields(job = job.id, %slot, runner))]
    async fn claim_run(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
    ) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "INSERT INTO opsdeck.cron_job_runs (user_id, job_id, scheduled_for, runner)
             SELECT user_id, id, $3, $4 FROM opsdeck.cron_job_registry
             WHERE user_id = $1 AND id = $2 AND active AND scheduler = 'runner'
             ON CONFLICT DO NOTHING
             RETURNING run_id",
        )
        .bind(job.user_id.as_uuid())
        .bind(job.id)
        .bind(slot)
        .bind(runner)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn finish_run(
        &self,
        job: &CronJob,
        run_id: i64,
        status: RunStatus,
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE opsdeck.cron_job_runs
             SET status = $3, message = $4, ended_at = now()
             WHERE user_id = $1 AND run_id = $2",
        )
        .bind(job.user_id.as_uuid())
        .bind(run_id)
        .bind(status.as_str())
        .bind(message)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// Executes a job's rendered SQL ([`CronJob::to_sql`]) on a pool: exactly
/// what pg_cron would run, for [`CronRunner`].
#[derive(Debug, Clone)]
pub struct SqlExecutor {
    pool: PgPool,
}

impl SqlExecutor {
    /// An executor on `pool` (the application database).
    pub fn new(pool: PgPool) -> Self {
        SqlExecutor { pool }
    }
}

#[async_trait]
impl JobExecutor for SqlExecutor {
    #[tracing::instrument(name = "cron.sql.execute", skip(self, job), fields(job = job.id, user = %job.user_id))]
    async fn execute(&self, job: &CronJob) -> std::result::Result<String, String> {
        // The SQL is built only from typed values with quoted literals
        // (JobCommand::to_sql), never from caller text.
        match sqlx::raw_sql(sqlx::AssertSqlSafe(job.to_sql()))
            .execute(&self.pool)
            .await
        {
            Ok(done) => Ok(match done.rows_affected() {
                1 => "1 row".to_string(),
                n => format!("{n} rows"),
            }),
            Err(error) => Err(match error.as_database_error() {
                Some(e) => e.message().to_string(),
                None => error.to_string(),
            }),
        }
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    user_id: Uuid,
    job_name: String,
    operation_id: String,
    schedule: String,
    command_kind: String,
    command_args: serde_json::Value,
    active: bool,
    scheduler: String,
    pg_cron_job_id: Option<i64>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl JobRow {
    fn into_domain(self) -> Result<CronJob> {
        let corrupt = |what: String| {
            Error::Corrupt(format!("job {} of user {}: {what}", self.id, self.user_id))
        };
        Ok(CronJob {
            id: self.id,
            user_id: UserId::from(self.user_id),
            name: JobName::parse(&self.job_name).map_err(|e| corrupt(e.to_string()))?,
            operation_id: OperationId::parse(&self.operation_id)
                .map_err(|e| corrupt(e.to_string()))?,
            schedule: CronSchedule::parse(&self.schedule).map_err(|e| corrupt(e.to_string()))?,
            command: JobCommand::from_stored(&self.command_kind, self.command_args.clone())
                .map_err(|e| corrupt(e.to_string()))?,
            active: self.active,
            scheduler: SchedulerKind::parse(&self.scheduler)
                .ok_or_else(|| corrupt(format!("unknown scheduler {:?}", self.scheduler)))?,
            pg_cron_job_id: self.pg_cron_job_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RunnerRunRow {
    run_id: i64,
    status: String,
    message: Option<String>,
    scheduled_for: OffsetDateTime,
    started_at: OffsetDateTime,
    ended_at: Option<OffsetDateTime>,
}

impl RunnerRunRow {
    fn into_domain(self) -> JobRun {
        JobRun {
            run_id: self.run_id,
            status: RunStatus::from_stored(&self.status),
            scheduled_for: Some(self.scheduled_for),
            started_at: Some(self.started_at),
            ended_at: self.ended_at,
            message: self.message,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RequestRow {
    request_id: i64,
    user_id: Uuid,
    job_name: String,
    kind: String,
    operation_id: String,
    arguments: serde_json::Value,
    requested_at: OffsetDateTime,
}

impl RequestRow {
    fn into_domain(self) -> Result<CronRequest> {
        let corrupt = |what: String| Error::Corrupt(format!("request {}: {what}", self.request_id));
        Ok(CronRequest {
            request_id: self.request_id,
            user_id: UserId::from(self.user_id),
            job_name: JobName::parse(&self.job_name).map_err(|e| corrupt(e.to_string()))?,
            kind: RequestKind::parse(&self.kind)
                .ok_or_else(|| corrupt(format!("unknown kind {:?}", self.kind)))?,
            operation_id: OperationId::parse(&self.operation_id)
                .map_err(|e| corrupt(e.to_string()))?,
            arguments: self.arguments,
            requested_at: self.requested_at,
        })
    }
}
