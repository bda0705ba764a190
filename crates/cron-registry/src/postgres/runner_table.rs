//! The in-process runner's side of PostgreSQL: which jobs it fires and its
//! run history `opsdeck.cron_job_runs`, whose primary key
//! `(user_id, job_id, scheduled_for)` is also the claim of a run.

use opsdeck_core::UserId;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::db::map_db_error;
use super::rows::{JobRow, RunnerRunRow, job_columns};
use crate::error::Result;
use crate::model::{CronJob, JobRun, RunStatus};

/// Active jobs the runner fires (scheduler `runner`), by id.
pub(super) async fn runnable_jobs(pool: &PgPool) -> Result<Vec<CronJob>> {
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM opsdeck.cron_job_registry
         WHERE active AND scheduler = 'runner'
         ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(map_db_error)?
    .into_iter()
    .map(JobRow::into_domain)
    .collect()
}

/// The claim is the insert of the run's primary key (user, job, slot):
/// exactly one runner's `INSERT … ON CONFLICT DO NOTHING` returns a row.
pub(super) async fn claim(
    pool: &PgPool,
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
    .bind(job.user_id)
    .bind(job.id)
    .bind(slot)
    .bind(runner)
    .fetch_optional(pool)
    .await
    .map_err(map_db_error)
}

/// Records how a claimed run ended.
pub(super) async fn finish(
    pool: &PgPool,
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
    .bind(job.user_id)
    .bind(run_id)
    .bind(status.as_str())
    .bind(message)
    .execute(pool)
    .await
    .map_err(map_db_error)?;
    Ok(())
}

/// The job's runs, newest slot first.
pub(super) async fn runs(pool: &PgPool, job: &CronJob, limit: usize) -> Result<Vec<JobRun>> {
    let rows: Vec<RunnerRunRow> = sqlx::query_as(
        "SELECT run_id, status, message, scheduled_for, started_at, ended_at
         FROM opsdeck.cron_job_runs
         WHERE user_id = $1 AND job_id = $2
         ORDER BY scheduled_for DESC
         LIMIT $3",
    )
    .bind(job.user_id)
    .bind(job.id)
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(map_db_error)?;
    Ok(rows.into_iter().map(RunnerRunRow::into_domain).collect())
}

/// Deletes runs that ended (or, unfinished, started) before `older_than`:
/// of one user's job, or (`None`) of every job.
pub(super) async fn prune(
    pool: &PgPool,
    job: Option<(UserId, i64)>,
    older_than: OffsetDateTime,
) -> Result<u64> {
    let done = match job {
        None => {
            sqlx::query(
                "DELETE FROM opsdeck.cron_job_runs
                 WHERE coalesce(ended_at, started_at) < $1",
            )
            .bind(older_than)
            .execute(pool)
            .await
        }
        Some((user, job_id)) => {
            sqlx::query(
                "DELETE FROM opsdeck.cron_job_runs
                 WHERE user_id = $1 AND job_id = $2 AND coalesce(ended_at, started_at) < $3",
            )
            .bind(user)
            .bind(job_id)
            .bind(older_than)
            .execute(pool)
            .await
        }
    };
    Ok(done.map_err(map_db_error)?.rows_affected())
}
