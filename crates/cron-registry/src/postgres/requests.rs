//! The queue of requests fired jobs leave for the application
//! (`opsdeck.cron_job_requests`).

use sqlx::PgPool;

use super::db::map_db_error;
use super::rows::RequestRow;
use crate::error::Result;
use crate::model::CronRequest;

/// Most requests one call takes.
const MAX_TAKE: usize = 10_000;

/// Deletes and returns up to `limit` requests, oldest first; rows other
/// callers hold are skipped, so no two callers get one request.
pub(super) async fn take(pool: &PgPool, limit: usize) -> Result<Vec<CronRequest>> {
    let mut rows: Vec<RequestRow> = sqlx::query_as(
        "DELETE FROM opsdeck.cron_job_requests
         WHERE request_id IN (
             SELECT request_id FROM opsdeck.cron_job_requests
             ORDER BY request_id
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING request_id, user_id, job_name, kind, operation_id, arguments, requested_at",
    )
    .bind(limit.min(MAX_TAKE) as i64)
    .fetch_all(pool)
    .await
    .map_err(map_db_error)?;
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
