//! [`SqlExecutor`]: what the in-process runner does when a job fires.

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
