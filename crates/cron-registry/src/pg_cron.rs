//! Talking to pg_cron in its own database (`cron.database_name`), which may
//! differ from the application database that holds the registry.

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::{CronJob, Error, JobRun, PgCronVersion, Result, RunStatus};

/// A pg_cron transaction, opened next to an application transaction.
pub(crate) type CronTx = Transaction<'static, Postgres>;

/// A connection to pg_cron plus what names this registry's jobs there.
#[derive(Debug)]
pub(crate) struct PgCronLink {
    pool: PgPool,
    version: PgCronVersion,
    /// The application database, where jobs run (`schedule_in_database`).
    database: String,
    /// Prefix of every pg_cron job name this registry owns.
    prefix: String,
}

/// A row of `cron.job` owned by this registry.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PgCronJob {
    pub(crate) jobid: i64,
    pub(crate) jobname: String,
    pub(crate) schedule: String,
    pub(crate) command: String,
    pub(crate) database: String,
    pub(crate) active: bool,
}

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::PgCron { action, source }
}

/// Longest accepted job prefix: with up to 20 digits of a registry id the
/// pg_cron name stays within PostgreSQL's 63-byte `name`, which pg_cron 1.4
/// would otherwise cut (and two cut names could collide).
pub(crate) const MAX_PREFIX_LEN: usize = 43;

/// The pg_cron version in the database `pool` is connected to, or `None`
/// if pg_cron is not installed there.
pub(crate) async fn detect(pool: &PgPool) -> Result<Option<PgCronVersion>> {
    let row: Option<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT e.extversion, current_setting('cron.database_name', true), current_database()
         FROM pg_extension e WHERE e.extname = 'pg_cron'",
    )
    .fetch_optional(pool)
    .await
    .map_err(failed("detect pg_cron"))?;
    let Some((extversion, cron_database, current)) = row else {
        return Ok(None);
    };
    // The extension can only be created in cron.database_name; if the
    // setting has since moved, its launcher no longer reads these jobs.
    if let Some(cron_database) = cron_database.filter(|d| d != &current) {
        return Err(Error::PgCronUnavailable(format!(
            "the cron pool is connected to database {current:?} but cron.database_name is {cron_database:?}"
        )));
    }
    PgCronVersion::parse(&extversion).map(Some).ok_or_else(|| {
        Error::PgCronUnavailable(format!("unrecognised pg_cron version {extversion:?}"))
    })
}

/// The default job prefix for application database `database`: readable
/// when the name is short, a stable hash of it otherwise (sqlx test
/// databases have 63-byte names). Distinct databases get distinct
/// prefixes, so parallel test databases never share a pg_cron job name.
pub(crate) fn default_prefix(database: &str) -> String {
    let readable = database.len() <= 30
        && database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if readable {
        format!("opsdeck:{database}:")
    } else {
        format!("opsdeck:{:016x}:", fnv1a64(database.as_bytes()))
    }
}

/// FNV-1a: stable across releases and platforms, unlike std's hasher.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks a configured prefix: 1–43 bytes of `[A-Za-z0-9_.:-]`.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "job prefix {prefix:?} must be 1-{MAX_PREFIX_LEN} bytes of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )))
    }
}

impl PgCronLink {
    pub(crate) fn new(
        pool: PgPool,
        version: PgCronVersion,
        database: String,
        prefix: String,
    ) -> Self {
        PgCronLink {
            pool,
            version,
            database,
            prefix,
        }
    }

    pub(crate) fn version(&self) -> PgCronVersion {
        self.version
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// The pg_cron name of registry row `id`.
    pub(crate) fn job_name(&self, id: i64) -> String {
        format!("{}{id}", self.prefix)
    }

    pub(crate) async fn begin(&self) -> Result<CronTx> {
        self.pool
            .begin()
            .await
            .map_err(failed("open a pg_cron transaction"))
    }

    /// Creates or updates (pg_cron upserts by name, keeping the id) the
    /// job's pg_cron job with the job's active flag; returns its `jobid`.
    pub(crate) async fn schedule(&self, tx: &mut CronTx, job: &CronJob) -> Result<i64> {
        let jobid: i64 =
            sqlx::query_scalar("SELECT cron.schedule_in_database($1, $2, $3, $4, NULL::text, $5)")
                .bind(self.job_name(job.id))
                .bind(job.schedule.as_str())
                .bind(job.to_sql())
                .bind(&self.database)
                .bind(job.active)
                .fetch_one(&mut **tx)
                .await
                .map_err(failed("schedule the job"))?;
        // An upsert of an existing name leaves `active` as it was.
        self.alter_active(tx, jobid, job.active).await?;
        Ok(jobid)
    }

    /// Sets the job's active flag with `cron.alter_job`; `false` if pg_cron
    /// has no such job (`alter_job` itself would raise).
    pub(crate) async fn alter_active(
        &self,
        tx: &mut CronTx,
        jobid: i64,
        active: bool,
    ) -> Result<bool> {
        let found: Option<bool> =
            sqlx::query_scalar("SELECT active FROM cron.job WHERE jobid = $1 FOR UPDATE")
                .bind(jobid)
                .fetch_optional(&mut **tx)
                .await
                .map_err(failed("read the job"))?;
        match found {
            None => Ok(false),
            Some(current) if current == active => Ok(true),
            Some(_) => {
                sqlx::query("SELECT cron.alter_job($1, active := $2)")
                    .bind(jobid)
                    .bind(active)
                    .execute(&mut **tx)
                    .await
                    .map_err(failed("pause or resume the job"))?;
                Ok(true)
            }
        }
    }

    /// Unschedules the job by id and by name (either may have drifted);
    /// a missing job is not an error (`cron.unschedule` would raise).
    pub(crate) async fn unschedule(
        &self,
        tx: &mut CronTx,
        jobid: Option<i64>,
        registry_id: Option<i64>,
    ) -> Result<u64> {
        let name = registry_id.map(|id| self.job_name(id));
        let done = sqlx::query(
            "SELECT cron.unschedule(jobid) FROM cron.job
             WHERE jobid = $1 OR (jobname IS NOT NULL AND jobname = $2)",
        )
        .bind(jobid)
        .bind(name)
        .execute(&mut **tx)
        .await
        .map_err(failed("unschedule the job"))?;
        Ok(done.rows_affected())
    }

    /// Every pg_cron job whose name has this registry's prefix.
    pub(crate) async fn owned_jobs(&self) -> Result<Vec<PgCronJob>> {
        sqlx::query_as(
            "SELECT jobid, jobname::text AS jobname, schedule, command, database, active
             FROM cron.job
             WHERE left(jobname, length($1)) = $1
             ORDER BY jobid",
        )
        .bind(&self.prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(failed("list pg_cron jobs"))
    }

    /// The job's runs from `cron.job_run_details`, newest first.
    pub(crate) async fn runs(&self, jobid: i64, limit: usize) -> Result<Vec<JobRun>> {
        let rows: Vec<RunRow> = sqlx::query_as(
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
        .map_err(failed("read run history"))?;
        Ok(rows.into_iter().map(RunRow::into_domain).collect())
    }

    /// Deletes runs older than `older_than`: of job `jobid`, or (`None`) of
    /// every job with this prefix plus runs in the application database of
    /// jobs pg_cron no longer has (a dropped job's history).
    pub(crate) async fn prune(
        &self,
        jobid: Option<i64>,
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
                sqlx::query(
                    "DELETE FROM cron.job_run_details d
                 WHERE coalesce(d.end_time, d.start_time) < $3
                   AND (d.jobid IN (SELECT jobid FROM cron.job WHERE left(jobname, length($1)) = $1)
                        OR (d.database = $2
                            AND NOT EXISTS (SELECT 1 FROM cron.job j WHERE j.jobid = d.jobid)))",
                )
                .bind(&self.prefix)
                .bind(&self.database)
                .bind(older_than)
                .execute(&self.pool)
                .await
            }
        };
        Ok(done.map_err(failed("prune run history"))?.rows_affected())
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    runid: i64,
    status: Option<String>,
    return_message: Option<String>,
    start_time: Option<OffsetDateTime>,
    end_time: Option<OffsetDateTime>,
}

impl RunRow {
    fn into_domain(self) -> JobRun {
        JobRun {
            run_id: self.runid,
            status: RunStatus::from_stored(self.status.as_deref().unwrap_or("")),
            scheduled_for: None,
            started_at: self.start_time,
            ended_at: self.end_time,
            message: self.return_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_fit_and_differ() {
        assert_eq!(default_prefix("app"), "opsdeck:app:");
        let a = default_prefix("_sqlx_test_fEz8UEpxQE5pDcQc5twuSa7_Lozh7vlEIQRBsr12vwQKyQg_Nr3V");
        let b = default_prefix("_sqlx_test_fEz8UEpxQE5pDcQc5twuSa7_Lozh7vlEIQRBsr12vwQKyQg_Nr3W");
        assert_ne!(a, b);
        for p in [&a, &b, &default_prefix(&"x".repeat(30))] {
            assert!(p.len() <= MAX_PREFIX_LEN, "{p}");
            check_prefix(p).unwrap();
            assert!(format!("{p}{}", i64::MAX).len() <= 63);
        }
        assert!(check_prefix("").is_err());
        assert!(check_prefix("bad prefix").is_err());
        assert!(check_prefix(&"x".repeat(44)).is_err());
    }
}
