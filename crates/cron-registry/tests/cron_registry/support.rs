//! Helpers shared by the test modules: the pg_cron pool, and a wrapper that
//! always removes a test's pg_cron jobs and run history, even on panic
//! (pg_cron's tables are shared by every test database and outlive them).

use std::future::Future;

use opsdeck_cron_registry::{PgCronRegistry, PgCronRegistryOptions};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The text every injection test tries to smuggle in.
pub(crate) const EVIL: &str = "x'); DROP TABLE opsdeck.cron_job_registry; --";

/// A pool on pg_cron's database, or `None` (after saying why) when pg_cron
/// is not installed there. Under `CI=true` a missing pg_cron fails the test.
pub(crate) async fn cron_pool_or_skip(test: &str) -> Option<PgPool> {
    let url = std::env::var("CRON_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("DATABASE_URL must be set for PostgreSQL tests");
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect(&url)
        .await
        .expect("connect to the pg_cron database");
    let version: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
            .fetch_optional(&pool)
            .await
            .expect("query pg_extension");
    if version.is_some() {
        return Some(pool);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: pg_cron is not installed in the cron database, and CI=true requires it");
    }
    eprintln!("skipping {test}: pg_cron is not installed in the cron database");
    None
}

/// The name of the database `pool` is connected to.
pub(crate) async fn database_name(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs `test` with a pg_cron registry on `pool` and the cron pool, then
/// unschedules every pg_cron job with the registry's prefix and deletes the
/// pg_cron history of this database, whether `test` passed or panicked.
pub(crate) async fn with_pg_cron<F, Fut>(name: &str, pool: PgPool, test: F)
where
    F: FnOnce(PgCronRegistry, PgPool) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(cron) = cron_pool_or_skip(name).await else {
        return;
    };
    let registry = PgCronRegistry::connect(
        pool.clone(),
        PgCronRegistryOptions::new()
            .cron_pool(cron.clone())
            .require_pg_cron(true),
    )
    .await
    .expect("pg_cron registry");
    let prefix = registry.job_prefix().expect("pg_cron mode").to_string();
    let database = database_name(&pool).await;
    let outcome = tokio::spawn(test(registry, cron.clone())).await;
    let leftover = remove_pg_cron_jobs(&cron, &prefix, &database).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
    assert_eq!(leftover, 0, "{name} left {leftover} pg_cron jobs behind");
}

/// Unschedules the prefix's jobs and deletes the database's pg_cron
/// history; returns how many jobs were still scheduled.
pub(crate) async fn remove_pg_cron_jobs(cron: &PgPool, prefix: &str, database: &str) -> usize {
    let jobs: Vec<i64> = sqlx::query_scalar(
        "SELECT jobid FROM cron.job WHERE left(jobname, length($1)) = $1 OR database = $2",
    )
    .bind(prefix)
    .bind(database)
    .fetch_all(cron)
    .await
    .expect("list leftover pg_cron jobs");
    for &jobid in &jobs {
        on_job(cron, "SELECT cron.unschedule($1)", jobid).await;
    }
    sqlx::query("DELETE FROM cron.job_run_details WHERE database = $1")
        .bind(database)
        .execute(cron)
        .await
        .expect("delete this database's pg_cron history");
    jobs.len()
}

/// pg_cron's row for `jobid`: (jobname, schedule, command, database, active).
pub(crate) async fn pg_cron_job(
    cron: &PgPool,
    jobid: i64,
) -> Option<(String, String, String, String, bool)> {
    sqlx::query_as(
        "SELECT jobname::text, schedule, command, database, active FROM cron.job WHERE jobid = $1",
    )
    .bind(jobid)
    .fetch_optional(cron)
    .await
    .unwrap()
}

/// How many pg_cron jobs carry `prefix`.
pub(crate) async fn pg_cron_jobs_with_prefix(cron: &PgPool, prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM cron.job WHERE left(jobname, length($1)) = $1")
        .bind(prefix)
        .fetch_one(cron)
        .await
        .unwrap()
}

/// Runs a pg_cron statement about job `$1` behind the registry's back.
pub(crate) async fn on_job(cron: &PgPool, sql: &'static str, jobid: i64) {
    sqlx::query(sql)
        .bind(jobid)
        .execute(cron)
        .await
        .unwrap_or_else(|e| panic!("{sql} for job {jobid}: {e}"));
}
