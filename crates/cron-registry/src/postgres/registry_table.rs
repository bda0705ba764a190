//! Statements on the registry table `opsdeck.cron_job_registry`, the same
//! whichever scheduler fires the jobs. Every user-facing statement filters
//! on `user_id`, the leading column of the primary key.

use opsdeck_core::{OperationId, UserId};
use sqlx::PgPool;

use super::db::{Tx, map_db_error};
use super::rows::{JobRow, job_columns};
use crate::error::Result;
use crate::model::{CronJob, NewJob, SchedulerKind};
use crate::name::JobName;

/// The user's job of that name.
pub(super) async fn fetch_job(
    pool: &PgPool,
    user: UserId,
    name: &JobName,
) -> Result<Option<CronJob>> {
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM opsdeck.cron_job_registry WHERE user_id = $1 AND job_name = $2"
    ))
    .bind(user)
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(map_db_error)?
    .map(JobRow::into_domain)
    .transpose()
}

/// The user's jobs, optionally of one operation, by name. Two static
/// statements rather than an `OR`, so each uses its index (primary key,
/// or user + operation).
pub(super) async fn fetch_jobs(
    pool: &PgPool,
    user: UserId,
    operation: Option<&OperationId>,
) -> Result<Vec<CronJob>> {
    let query = match operation {
        None => sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM opsdeck.cron_job_registry WHERE user_id = $1 ORDER BY job_name"
        ))
        .bind(user),
        Some(operation) => sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM opsdeck.cron_job_registry
             WHERE user_id = $1 AND operation_id = $2 ORDER BY job_name"
        ))
        .bind(user)
        .bind(operation),
    };
    let rows = query.fetch_all(pool).await.map_err(map_db_error)?;
    tracing::Span::current().record("rows", rows.len());
    rows.into_iter().map(JobRow::into_domain).collect()
}

/// Every row, by id, undecoded (so one corrupt row does not hide the
/// others from `reconcile`).
pub(super) async fn all_rows(pool: &PgPool) -> Result<Vec<JobRow>> {
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM opsdeck.cron_job_registry ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .map_err(map_db_error)
}

/// The pg_cron job ids the registry records (administrative: every
/// user's), i.e. the pg_cron jobs this registry created.
pub(super) async fn pg_cron_job_ids(pool: &PgPool) -> Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT pg_cron_job_id FROM opsdeck.cron_job_registry
         WHERE pg_cron_job_id IS NOT NULL ORDER BY pg_cron_job_id",
    )
    .fetch_all(pool)
    .await
    .map_err(map_db_error)
}

/// Creates or replaces the job (`opsdeck.register_cron_job`, an upsert by
/// user and name), to be fired by `scheduler`.
pub(super) async fn upsert(tx: &mut Tx, job: &NewJob, scheduler: SchedulerKind) -> Result<CronJob> {
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM opsdeck.register_cron_job($1, $2, $3, $4, $5, $6::jsonb, $7, $8)"
    ))
    .bind(job.user_id)
    .bind(&job.name)
    .bind(&job.operation_id)
    .bind(&job.schedule)
    .bind(job.command.kind())
    .bind(job.command.arguments_json().to_string())
    .bind(job.active)
    .bind(scheduler.as_str())
    .fetch_one(&mut **tx)
    .await
    .map_err(map_db_error)?
    .into_domain()
}

/// Locks the user's job of that name for the transaction; its registry id
/// and pg_cron job id.
pub(super) async fn lock(
    tx: &mut Tx,
    user: UserId,
    name: &JobName,
) -> Result<Option<(i64, Option<i64>)>> {
    sqlx::query_as(
        "SELECT id, pg_cron_job_id FROM opsdeck.cron_job_registry
         WHERE user_id = $1 AND job_name = $2
         FOR UPDATE",
    )
    .bind(user)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_db_error)
}

/// Locks row `id` for the transaction (administrative: any user's).
pub(super) async fn lock_by_id(tx: &mut Tx, id: i64) -> Result<Option<CronJob>> {
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM opsdeck.cron_job_registry WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_db_error)?
    .map(JobRow::into_domain)
    .transpose()
}

/// Deletes the user's job (`opsdeck.unregister_cron_job`); whether it was
/// there.
pub(super) async fn delete(tx: &mut Tx, user: UserId, name: &JobName) -> Result<bool> {
    sqlx::query_scalar("SELECT opsdeck.unregister_cron_job($1, $2)")
        .bind(user)
        .bind(name)
        .fetch_one(&mut **tx)
        .await
        .map_err(map_db_error)
}

/// Whether the user has a job of that name (`opsdeck.check_cron_job_exists`).
pub(super) async fn exists(pool: &PgPool, user: UserId, name: &JobName) -> Result<bool> {
    sqlx::query_scalar("SELECT opsdeck.check_cron_job_exists($1, $2)")
        .bind(user)
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(map_db_error)
}

/// Sets the job's active flag (`updated_at` moves only on a change).
pub(super) async fn set_active(
    tx: &mut Tx,
    user: UserId,
    name: &JobName,
    active: bool,
) -> Result<Option<CronJob>> {
    sqlx::query_as::<_, JobRow>(concat!(
        "UPDATE opsdeck.cron_job_registry
         SET active = $3,
             updated_at = CASE WHEN active IS DISTINCT FROM $3 THEN now() ELSE updated_at END
         WHERE user_id = $1 AND job_name = $2
         RETURNING ",
        job_columns!()
    ))
    .bind(user)
    .bind(name)
    .bind(active)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_db_error)?
    .map(JobRow::into_domain)
    .transpose()
}

/// Records that pg_cron fires row `id` as its job `jobid`.
pub(super) async fn record_pg_cron_job(tx: &mut Tx, id: i64, jobid: i64) -> Result<CronJob> {
    sqlx::query_as::<_, JobRow>(concat!(
        "UPDATE opsdeck.cron_job_registry
         SET scheduler = 'pg_cron', pg_cron_job_id = $2
         WHERE id = $1
         RETURNING ",
        job_columns!()
    ))
    .bind(id)
    .bind(jobid)
    .fetch_one(&mut **tx)
    .await
    .map_err(map_db_error)?
    .into_domain()
}
