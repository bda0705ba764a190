//! Scheduling with pg_cron, which lives in its own database
//! (`cron.database_name`), possibly not the application database that
//! holds the registry.
//!
//! Every write changes the registry (application database) and pg_cron in
//! two transactions opened side by side: the pg_cron change is made first
//! but committed **after** the registry's. So a failure before the
//! registry commits leaves neither changed; the only window (pg_cron's
//! commit failing after the registry's) leaves a registry row whose pg_cron
//! job is missing or stale, or (unregister) a pg_cron job without a row —
//! both of which [`PgCronScheduler::reconcile`] repairs.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use time::OffsetDateTime;

use super::db::{Tx, map_db_error, pg_cron_error};
use super::registry_table;
use super::rows::PgCronRunRow;
use crate::error::Result;
use crate::model::{CronJob, JobRun, ReconcileReport, SchedulerKind};
use crate::schedule::PgCronVersion;

/// The SQL condition that pg_cron job name column `$col` is one this
/// registry gives (`$1` bound to the prefix): the prefix, then the registry
/// id's digits. A job merely starting with the prefix is not ours.
macro_rules! owned_name {
    ($col:literal) => {
        concat!(
            "(left(",
            $col,
            ", length($1)) = $1 AND substr(",
            $col,
            ", length($1) + 1) ~ '^[0-9]+$')"
        )
    };
}

/// pg_cron as this registry uses it: a pool on its database and what names
/// this registry's jobs there.
#[derive(Debug)]
pub(super) struct PgCronScheduler {
    pool: PgPool,
    version: PgCronVersion,
    /// The application database, where jobs run (`schedule_in_database`).
    database: String,
    /// Prefix of every pg_cron job name this registry owns.
    prefix: String,
}

/// A row of `cron.job` owned by this registry.
#[derive(Debug, sqlx::FromRow)]
struct PgCronJob {
    jobid: i64,
    jobname: String,
    schedule: String,
    command: String,
    database: String,
    active: bool,
}

impl PgCronScheduler {
    pub(super) fn new(
        pool: PgPool,
        version: PgCronVersion,
        database: String,
        prefix: String,
    ) -> Self {
        PgCronScheduler {
            pool,
            version,
            database,
            prefix,
        }
    }

    pub(super) fn version(&self) -> PgCronVersion {
        self.version
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pg_cron name of registry row `id`.
    pub(super) fn job_name(&self, id: i64) -> String {
        format!("{}{id}", self.prefix)
    }

    pub(super) async fn begin(&self) -> Result<Tx> {
        self.pool
            .begin()
            .await
            .map_err(pg_cron_error("open a pg_cron transaction"))
    }

    /// Commits the registry first, then pg_cron (see the module's docs).
    pub(super) async fn commit(app: Tx, cron: Tx) -> Result<()> {
        app.commit().await.map_err(map_db_error)?;
        cron.commit().await.map_err(pg_cron_error(
            "commit (run reconcile to repair the registry)",
        ))
    }

    /// Schedules the registry row `job` (written in `app`), records the
    /// pg_cron job id, and commits both sides.
    pub(super) async fn attach_and_commit(&self, mut app: Tx, job: CronJob) -> Result<CronJob> {
        let mut cron = self.begin().await?;
        let job = self.attach(&mut app, &mut cron, job).await?;
        Self::commit(app, cron).await?;
        Ok(job)
    }

    /// Carries the active flag of `job` (just set in `app`) to pg_cron and
    /// commits both sides. A job pg_cron lost (or one the runner used to
    /// fire) is scheduled afresh, with the new flag.
    pub(super) async fn set_active_and_commit(
        &self,
        mut app: Tx,
        job: CronJob,
        active: bool,
    ) -> Result<CronJob> {
        let mut cron = self.begin().await?;
        let altered = match job.pg_cron_job_id {
            Some(jobid) if job.scheduler == SchedulerKind::PgCron => {
                self.alter_active(&mut cron, jobid, active).await?
            }
            _ => false,
        };
        let job = if altered {
            job
        } else {
            self.attach(&mut app, &mut cron, job).await?
        };
        Self::commit(app, cron).await?;
        Ok(job)
    }

    /// Schedules `job` in pg_cron (inside `cron`) and records the job id in
    /// the registry (inside `app`); the caller commits `app`, then `cron`.
    async fn attach(&self, app: &mut Tx, cron: &mut Tx, job: CronJob) -> Result<CronJob> {
        let jobid = self.schedule(cron, &job).await?;
        if job.pg_cron_job_id == Some(jobid) && job.scheduler == SchedulerKind::PgCron {
            return Ok(job);
        }
        registry_table::record_pg_cron_job(app, job.id, jobid).await
    }

    /// Creates or updates (pg_cron upserts by name, keeping the id) the
    /// job's pg_cron job with the job's active flag; returns its `jobid`.
    async fn schedule(&self, tx: &mut Tx, job: &CronJob) -> Result<i64> {
        let jobid: i64 =
            sqlx::query_scalar("SELECT cron.schedule_in_database($1, $2, $3, $4, NULL::text, $5)")
                .bind(self.job_name(job.id))
                .bind(&job.schedule)
                .bind(job.to_sql())
                .bind(&self.database)
                .bind(job.active)
                .fetch_one(&mut **tx)
                .await
                .map_err(pg_cron_error("schedule the job"))?;
        // An upsert of an existing name leaves `active` as it was.
        self.alter_active(tx, jobid, job.active).await?;
        Ok(jobid)
    }

    /// Sets the job's active flag with `cron.alter_job`; `false` if pg_cron
    /// has no such job (`alter_job` itself would raise).
    async fn alter_active(&self, tx: &mut Tx, jobid: i64, active: bool) -> Result<bool> {
        let found: Option<bool> =
            sqlx::query_scalar("SELECT active FROM cron.job WHERE jobid = $1 FOR UPDATE")
                .bind(jobid)
                .fetch_optional(&mut **tx)
                .await
                .map_err(pg_cron_error("read the job"))?;
        match found {
            None => Ok(false),
            Some(current) if current == active => Ok(true),
            Some(_) => {
                sqlx::query("SELECT cron.alter_job($1, active := $2)")
                    .bind(jobid)
                    .bind(active)
                    .execute(&mut **tx)
                    .await
                    .map_err(pg_cron_error("pause or resume the job"))?;
                Ok(true)
            }
        }
    }

    /// Unschedules the job by id and by the name of registry row
    /// `registry_id` (either may have drifted), and deletes its run history
    /// (pg_cron keeps it after `unschedule`; this registry's history of a
    /// job goes with the job, as the runner's table cascades). A missing
    /// job is not an error (`cron.unschedule` would raise).
    pub(super) async fn unschedule(
        &self,
        tx: &mut Tx,
        jobid: Option<i64>,
        registry_id: Option<i64>,
    ) -> Result<u64> {
        let name = registry_id.map(|id| self.job_name(id));
        sqlx::query(
            "DELETE FROM cron.job_run_details
             WHERE jobid = $1
                OR jobid IN (SELECT jobid FROM cron.job WHERE jobname IS NOT NULL AND jobname = $2)",
        )
        .bind(jobid)
        .bind(&name)
        .execute(&mut **tx)
        .await
        .map_err(pg_cron_error("delete the job's run history"))?;
        let done = sqlx::query(
            "SELECT cron.unschedule(jobid) FROM cron.job
             WHERE jobid = $1 OR (jobname IS NOT NULL AND jobname = $2)",
        )
        .bind(jobid)
        .bind(name)
        .execute(&mut **tx)
        .await
        .map_err(pg_cron_error("unschedule the job"))?;
        Ok(done.rows_affected())
    }

    /// Every pg_cron job named as this registry names its jobs.
    async fn owned_jobs(&self) -> Result<Vec<PgCronJob>> {
        sqlx::query_as(concat!(
            "SELECT jobid, jobname::text AS jobname, schedule, command, database, active
             FROM cron.job WHERE ",
            owned_name!("jobname"),
            " ORDER BY jobid"
        ))
        .bind(&self.prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_cron_error("list pg_cron jobs"))
    }

    /// The job's runs from `cron.job_run_details`, newest first.
    pub(super) async fn runs(&self, jobid: i64, limit: usize) -> Result<Vec<JobRun>> {
        let rows: Vec<PgCronRunRow> = sqlx::query_as(
            "SELECT runid, status, return_message, start_time, end_time
             FROM cron.job_run_details
             WHERE jobid = $1
             ORDER BY runid DESC
             LIMIT $2",
        )
        .bind(jobid)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_cron_error("read run history"))?;
        Ok(rows.into_iter().map(PgCronRunRow::into_domain).collect())
    }

    /// Deletes runs older than `older_than` of this registry's jobs only:
    /// of job `jobid`, or (`None`) of the jobs `registry_jobids` (the pg_cron
    /// ids the registry records) and of the jobs named as this registry
    /// names its jobs (`{prefix}{id}`, e.g. orphans awaiting reconcile).
    /// Other applications' jobs in the same database — live or dropped, or
    /// merely sharing the prefix — keep their history.
    pub(super) async fn prune(
        &self,
        jobid: Option<i64>,
        registry_jobids: &[i64],
        older_than: OffsetDateTime,
    ) -> Result<u64> {
        let done = match jobid {
            Some(jobid) => {
                sqlx::query(
                    "DELETE FROM cron.job_run_details
                     WHERE jobid = $1 AND coalesce(end_time, start_time) < $2",
                )
                .bind(jobid)
                .bind(older_than)
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "DELETE FROM cron.job_run_details d
                     WHERE coalesce(d.end_time, d.start_time) < $2
                       AND (d.jobid = ANY($3)
                            OR d.jobid IN (SELECT jobid FROM cron.job WHERE ",
                    owned_name!("jobname"),
                    "))"
                ))
                .bind(&self.prefix)
                .bind(older_than)
                .bind(registry_jobids)
                .execute(&self.pool)
                .await
            }
        };
        Ok(done
            .map_err(pg_cron_error("prune run history"))?
            .rows_affected())
    }

    /// Repairs drift between the registry on `app_pool` and pg_cron:
    /// registry rows whose pg_cron job is missing or differs are scheduled
    /// again; jobs named as this registry names its jobs (`{prefix}{id}`)
    /// that the registry does not know are unscheduled. Failed repairs are reported, not fatal.
    pub(super) async fn reconcile(&self, app_pool: &PgPool) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        // pg_cron first, registry second: pg_cron is committed after the
        // registry, so every pg_cron job seen here already has its row
        // visible below, and a fresh job is never taken for an orphan.
        let owned = self.owned_jobs().await?;
        let rows = registry_table::all_rows(app_pool).await?;
        let by_id: HashMap<i64, &PgCronJob> = owned.iter().map(|j| (j.jobid, j)).collect();
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
                        p.jobname == self.job_name(job.id)
                            && p.schedule == job.schedule.as_str()
                            && p.command == job.to_sql()
                            && p.database == self.database
                            && p.active == job.active
                    });
            if in_sync {
                known.extend(job.pg_cron_job_id);
                continue;
            }
            match self.repair(app_pool, job.id).await {
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
                let mut cron = self.begin().await?;
                self.unschedule(&mut cron, Some(orphan.jobid), None).await?;
                cron.commit()
                    .await
                    .map_err(pg_cron_error("commit the unschedule"))
            };
            match outcome.await {
                Ok(()) => report.unscheduled.push(orphan.jobid),
                Err(e) => report.errors.push(format!(
                    "pg_cron job {} ({}): {e}",
                    orphan.jobid, orphan.jobname
                )),
            }
        }
        Ok(report)
    }

    /// Re-creates one drifted row's pg_cron job, under the row's lock so a
    /// concurrent unregister cannot be undone.
    async fn repair(&self, app_pool: &PgPool, id: i64) -> Result<Option<CronJob>> {
        let mut app = app_pool.begin().await.map_err(map_db_error)?;
        let Some(job) = registry_table::lock_by_id(&mut app, id).await? else {
            return Ok(None);
        };
        self.attach_and_commit(app, job).await.map(Some)
    }
}
