//! The queue of requests fired jobs leave for the application
//! (`opsdeck.cron_job_requests`): leased when taken, deleted when the
//! consumer completes them, delivered again when a lease runs out.

use std::time::Duration;

use sqlx::PgPool;

use super::db::map_db_error;
use super::rows::RequestRow;
use crate::error::Result;
use crate::model::CronRequest;

/// Most requests one call takes.
const MAX_TAKE: usize = 10_000;

/// Leases and returns up to `limit` requests that no one holds (never
/// leased, released, or whose lease ran out), oldest first, for `lease`.
/// Rows other callers are leasing right now are skipped, and a row leased
/// meanwhile fails the re-check of its lease, so no two callers hold one
/// request.
pub(super) async fn take(pool: &PgPool, limit: usize, lease: Duration) -> Result<Vec<CronRequest>> {
    let mut rows: Vec<RequestRow> = sqlx::query_as(
        "UPDATE opsdeck.cron_job_requests r
         SET leased_until = now() + $2 * interval '1 millisecond',
             attempts = r.attempts + 1
         FROM (SELECT user_id, request_id FROM opsdeck.cron_job_requests
               WHERE leased_until IS NULL OR leased_until <= now()
               ORDER BY request_id
               LIMIT $1
               FOR UPDATE SKIP LOCKED) AS free
         WHERE r.user_id = free.user_id AND r.request_id = free.request_id
         RETURNING r.request_id, r.user_id, r.job_name, r.kind, r.operation_id, r.arguments,
                   r.requested_at, r.attempts",
    )
    .bind(limit.min(MAX_TAKE) as i64)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(map_db_error)?;
    rows.sort_by_key(|r| r.request_id);
    tracing::Span::current().record("rows", rows.len());
    // One corrupt row (written around the constraints) must not cost the
    // whole batch: it is logged and left leased (it comes back after the
    // lease, for an operator to see), not handed out.
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let id = row.request_id;
            row.into_domain()
                .inspect_err(|error| {
                    tracing::error!(request_id = id, %error, "skipping a corrupt cron request");
                })
                .ok()
        })
        .collect())
}

/// Deletes the request if this delivery (its `attempt`) is the latest.
pub(super) async fn complete(pool: &PgPool, request: &CronRequest) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM opsdeck.cron_job_requests
         WHERE user_id = $1 AND request_id = $2 AND attempts = $3",
    )
    .bind(request.user_id)
    .bind(request.request_id)
    .bind(attempt(request))
    .execute(pool)
    .await
    .map_err(map_db_error)?;
    Ok(done.rows_affected() == 1)
}

/// Ends the lease of this delivery, so the next take delivers the request.
pub(super) async fn release(pool: &PgPool, request: &CronRequest) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE opsdeck.cron_job_requests SET leased_until = NULL
         WHERE user_id = $1 AND request_id = $2 AND attempts = $3 AND leased_until IS NOT NULL",
    )
    .bind(request.user_id)
    .bind(request.request_id)
    .bind(attempt(request))
    .execute(pool)
    .await
    .map_err(map_db_error)?;
    Ok(done.rows_affected() == 1)
}

/// The stored form of the delivery count (an `integer`); a count beyond it
/// matches no row.
fn attempt(request: &CronRequest) -> i64 {
    i64::from(request.attempt)
}
