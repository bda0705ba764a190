//! The conformance suite on every backend.

use opsdeck_cron_registry::testing;
use opsdeck_cron_registry::{
    CronRegistry, Error, InMemoryJobRegistry, PgCronVersion, PgJobRegistry, PgRegistryOptions,
    SchedulerKind,
};
use sqlx::PgPool;

use crate::support::{pg_cron_jobs_with_prefix, with_pg_cron};

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_with_pg_cron_passes_the_suite(pool: PgPool) {
    with_pg_cron(
        "postgres_with_pg_cron_passes_the_suite",
        pool,
        |registry, cron| async move {
            assert_eq!(registry.scheduler(), SchedulerKind::PgCron);
            assert!(registry.syntax() >= PgCronVersion::V1_4);
            testing::run_all(&registry).await;
            let prefix = registry.job_prefix().unwrap();
            assert_eq!(
                pg_cron_jobs_with_prefix(&cron, prefix).await,
                0,
                "every unregister also unscheduled its pg_cron job"
            );
        },
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_runner_mode_passes_the_suite(pool: PgPool) {
    testing::run_all(&PgJobRegistry::with_runner(pool)).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_runner_mode_with_newer_syntax_passes_the_suite(pool: PgPool) {
    let registry = PgJobRegistry::connect(
        pool,
        PgRegistryOptions::new().runner_syntax(PgCronVersion::V1_6),
    )
    .await
    .unwrap();
    assert_eq!(registry.scheduler(), SchedulerKind::Runner);
    testing::run_all(&registry).await;
}

#[tokio::test]
async fn in_memory_passes_the_suite() {
    testing::run_all(&InMemoryJobRegistry::new()).await;
    testing::run_all(&InMemoryJobRegistry::with_syntax(PgCronVersion::V1_6)).await;
}

/// Without pg_cron the registry falls back to the runner, unless told to
/// require pg_cron. The test database has no pg_cron extension, so using
/// it as the "cron pool" shows both paths on any machine.
#[sqlx::test(migrations = "../../migrations")]
async fn missing_pg_cron_falls_back_or_fails_as_configured(pool: PgPool) {
    let fallback = PgJobRegistry::connect(
        pool.clone(),
        PgRegistryOptions::new().cron_pool(pool.clone()),
    )
    .await
    .unwrap();
    assert_eq!(fallback.scheduler(), SchedulerKind::Runner);
    assert_eq!(fallback.pg_cron_version(), None);

    let required = PgJobRegistry::connect(
        pool.clone(),
        PgRegistryOptions::new()
            .cron_pool(pool.clone())
            .require_pg_cron(true),
    )
    .await;
    assert!(
        matches!(required, Err(Error::PgCronUnavailable(_))),
        "{required:?}"
    );

    let bad_prefix =
        PgJobRegistry::connect(pool, PgRegistryOptions::new().job_prefix("no spaces")).await;
    assert!(matches!(bad_prefix, Err(Error::Config(_))));
}
