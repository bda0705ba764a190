//! The in-process runner's side of PostgreSQL: which jobs it fires and its
//! run history `opsdeck.cron_job_runs`, whose primary key
//! `(user_id, job_id, scheduled_for)` is also the claim of a slot: every
//! record of a slot (a run, a skipped or a missed slot) is one insert of
//! that key, so exactly one runner makes it.

use std::time::Duration;

use opsdeck_core::UserId;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::db::{Tx, map_db_error};
use super::rows::{RunnableRow, RunnerRunRow, job_columns};
use crate::error::Result;
use crate::model::{CronJob, JobRun, RunStatus};
use crate::runner::{Claim, RunnableJob};

/// Active jobs the runner fires (scheduler `runner`), by id, with the
/// latest slot settled for each. A row that breaks the types' rules
/// (written around the checks, e.g. before they existed) is logged and
/// left out, so it cannot stop every other job from firing.
pub(super) async fn runnable_jobs(pool: &PgPool) -> Result<Vec<RunnableJob>> {
    let rows = sqlx::query_as::<_, RunnableRow>(concat!(
        "SELECT ",
        job_columns!(),
        ", last_slot FROM opsdeck.cron_job_registry
         WHERE active AND scheduler = 'runner'
         ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(map_db_error)?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            row.into_domain()
                .inspect_err(|error| tracing::error!(%error, "not firing a corrupt cron job"))
                .ok()
        })
        .collect())
}

/// Milliseconds of `d` for `$n * interval '1 millisecond'`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Claims `slot` of `job` in one transaction:
/// 1. lock the registry row (`FOR NO KEY UPDATE`), so claims of one job
///    are serialized across runners and each sees the runs committed
///    before it (a single statement's snapshot would not);
/// 2. if another run of the job is `running`, record the slot `skipped`;
///    else insert the run, `running`, with its deadline;
/// 3. either insert is the slot's claim: `ON CONFLICT DO NOTHING` means
///    another runner recorded it first.
pub(super) async fn claim(
    pool: &PgPool,
    job: &CronJob,
    slot: OffsetDateTime,
    runner: &str,
    timeout: Duration,
) -> Result<Claim> {
    let mut tx = pool.begin().await.map_err(map_db_error)?;
    if !lock_runner_job(&mut tx, job).await? {
        return Ok(Claim::Gone);
    }
    let running: Option<i64> = sqlx::query_scalar(
        "SELECT run_id FROM opsdeck.cron_job_runs
         WHERE user_id = $1 AND job_id = $2 AND status = 'running' AND scheduled_for <> $3
         ORDER BY scheduled_for
         LIMIT 1",
    )
    .bind(job.user_id)
    .bind(job.id)
    .bind(slot)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_db_error)?;
    let claim = match running {
        Some(running) => {
            let message = format!(
                "skipped: run {running} of this job was still running when this slot came due"
            );
            insert_record(&mut tx, job, slot, runner, RunStatus::Skipped, &message)
                .await?
                .map_or(Claim::Taken, |_| Claim::Overlap { running })
        }
        None => sqlx::query_scalar::<_, i64>(
            "INSERT INTO opsdeck.cron_job_runs
                 (user_id, job_id, scheduled_for, runner, status, deadline)
             VALUES ($1, $2, $3, $4, 'running', now() + $5 * interval '1 millisecond')
             ON CONFLICT DO NOTHING
             RETURNING run_id",
        )
        .bind(job.user_id)
        .bind(job.id)
        .bind(slot)
        .bind(runner)
        .bind(millis(timeout))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_db_error)?
        .map_or(Claim::Taken, Claim::Run),
    };
    if claim != Claim::Taken {
        advance_last_slot(&mut tx, job, slot).await?;
    }
    tx.commit().await.map_err(map_db_error)?;
    Ok(claim)
}

/// Inserts a finished record (`skipped` or `missed`) of `slot`; its run id,
/// or `None` if the slot already has a record.
async fn insert_record(
    tx: &mut Tx,
    job: &CronJob,
    slot: OffsetDateTime,
    runner: &str,
    status: RunStatus,
    message: &str,
) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO opsdeck.cron_job_runs
             (user_id, job_id, scheduled_for, runner, status, message, ended_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())
         ON CONFLICT DO NOTHING
         RETURNING run_id",
    )
    .bind(job.user_id)
    .bind(job.id)
    .bind(slot)
    .bind(runner)
    .bind(status.as_str())
    .bind(message)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_db_error)
}

/// Moves the job's `last_slot` forward to `slot` (never back).
async fn advance_last_slot(tx: &mut Tx, job: &CronJob, slot: OffsetDateTime) -> Result<()> {
    sqlx::query(
        "UPDATE opsdeck.cron_job_registry SET last_slot = greatest(last_slot, $3)
         WHERE user_id = $1 AND id = $2",
    )
    .bind(job.user_id)
    .bind(job.id)
    .bind(slot)
    .execute(&mut **tx)
    .await
    .map_err(map_db_error)?;
    Ok(())
}

/// Records `slot` as missed (if the job is still the runner's and the slot
/// has no record yet).
pub(super) async fn record_missed(
    pool: &PgPool,
    job: &CronJob,
    slot: OffsetDateTime,
    runner: &str,
    message: &str,
) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(map_db_error)?;
    if !lock_runner_job(&mut tx, job).await? {
        return Ok(false);
    }
    let recorded = insert_record(&mut tx, job, slot, runner, RunStatus::Missed, message)
        .await?
        .is_some();
    if recorded {
        advance_last_slot(&mut tx, job, slot).await?;
    }
    tx.commit().await.map_err(map_db_error)?;
    Ok(recorded)
}

/// Records how a claimed run ended, unless it is no longer `running` (a
/// recovery marked it failed meanwhile: that record stands).
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
         WHERE user_id = $1 AND run_id = $2 AND status = 'running'",
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

/// Marks failed the runs still `running` more than `grace` after their
/// deadline (administrative: every user's). Deadlines and this check use
/// the database's clock, so runners' clocks do not matter.
pub(super) async fn recover(pool: &PgPool, grace: Duration) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE opsdeck.cron_job_runs
         SET status = 'failed', ended_at = now(),
             message = format('abandoned: runner %s did not finish this run by its deadline %s '
                              '(presumed dead); recovered as failed', runner, deadline)
         WHERE status = 'running' AND deadline < now() - $1 * interval '1 millisecond'",
    )
    .bind(millis(grace))
    .execute(pool)
    .await
    .map_err(map_db_error)?;
    let recovered = done.rows_affected();
    if recovered > 0 {
        tracing::warn!(recovered, "recovered cron runs abandoned by a dead runner");
    }
    Ok(recovered)
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

/// Locks the job's registry row for the rest of `tx` (serializing claims and
/// finishes of one job across runners); `false` if the job is gone, paused
/// or no longer runner-scheduled.
async fn lock_runner_job(tx: &mut Tx, job: &CronJob) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM opsdeck.cron_job_registry
         WHERE user_id = $1 AND id = $2 AND active AND scheduler = 'runner'
         FOR NO KEY UPDATE",
    )
    .bind(job.user_id)
    .bind(job.id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_db_error)?;
    Ok(found.is_some())
}
