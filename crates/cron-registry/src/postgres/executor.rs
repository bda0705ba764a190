//! [`SqlExecutor`]: what the in-process runner does when a job fires.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::model::CronJob;
use crate::runner::JobExecutor;

/// Executes a job's rendered SQL ([`CronJob::to_sql`]) on a pool: exactly
/// what pg_cron would run, for [`crate::CronRunner`].
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
    /// Runs the job's SQL in a transaction whose `statement_timeout` is
    /// `timeout`, so a job the runner gives up on also stops in the
    /// database (and cannot overlap the job's next run there).
    #[tracing::instrument(name = "cron.sql.execute", skip(self, job), fields(job = job.id, user = %job.user_id))]
    async fn execute(
        &self,
        job: &CronJob,
        timeout: Duration,
    ) -> std::result::Result<String, String> {
        let message = |error: sqlx::Error| match error.as_database_error() {
            Some(e) => e.message().to_string(),
            None => error.to_string(),
        };
        let mut tx = self.pool.begin().await.map_err(message)?;
        // PostgreSQL's limit is i32::MAX ms (~24 days); 0 would mean none.
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128);
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(millis.to_string())
            .execute(&mut *tx)
            .await
            .map_err(message)?;
        // The SQL is built only from typed values with quoted literals
        // (JobCommand::to_sql), never from caller text.
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(job.to_sql()))
            .execute(&mut *tx)
            .await
            .map_err(message)?;
        tx.commit().await.map_err(message)?;
        Ok(match done.rows_affected() {
            1 => "1 row".to_string(),
            n => format!("{n} rows"),
        })
    }
}
