//! The conformance suite on every backend.

use opsdeck_cron_registry::testing::{self, SUITE_FUNCTIONS};
use opsdeck_cron_registry::{
    AllowList, CronRegistry, Error, InMemoryCronRegistry, PgCronRegistry, PgCronRegistryOptions,
    PgCronVersion, SchedulerKind,
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
    testing::run_all(&PgCronRegistry::with_runner(pool)).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_runner_mode_with_newer_syntax_passes_the_suite(pool: PgPool) {
    let registry = PgCronRegistry::connect(
        pool,
        PgCronRegistryOptions::new().runner_syntax(PgCronVersion::V1_6),
    )
    .await
    .unwrap();
    assert_eq!(registry.scheduler(), SchedulerKind::Runner);
    testing::run_all(&registry).await;
}

#[tokio::test]
async fn in_memory_passes_the_suite() {
    testing::run_all(&InMemoryCronRegistry::new()).await;
    testing::run_all(&InMemoryCronRegistry::with_syntax(PgCronVersion::V1_6)).await;
}

/// Without pg_cron the registry falls back to the runner, unless told to
/// require pg_cron. The test database has no pg_cron extension, so using
/// it as the "cron pool" shows both paths on any machine.
#[sqlx::test(migrations = "../../migrations")]
async fn missing_pg_cron_falls_back_or_fails_as_configured(pool: PgPool) {
    let fallback = PgCronRegistry::connect(
        pool.clone(),
        PgCronRegistryOptions::new().cron_pool(pool.clone()),
    )
    .await
    .unwrap();
    assert_eq!(fallback.scheduler(), SchedulerKind::Runner);
    assert_eq!(fallback.pg_cron_version(), None);

    let required = PgCronRegistry::connect(
        pool.clone(),
        PgCronRegistryOptions::new()
            .cron_pool(pool.clone())
            .require_pg_cron(true),
    )
    .await;
    assert!(
        matches!(required, Err(Error::PgCronUnavailable(_))),
        "{required:?}"
    );

    let bad_prefix =
        PgCronRegistry::connect(pool, PgCronRegistryOptions::new().job_prefix("no spaces")).await;
    assert!(matches!(bad_prefix, Err(Error::Config(_))));
}

/// The policy stack over each backend: the same suite, plus the refusals
/// that are the wrapper's own.
async fn run_on_allow_list<R: CronRegistry>(backend: R) {
    let stack = AllowList::new(backend)
        .allow_functions(SUITE_FUNCTIONS)
        .unwrap();
    testing::run_all(&stack).await;
    testing::functions_off_the_list_are_refused(&stack).await;
}

#[tokio::test]
async fn conformance_in_memory_allow_list() {
    run_on_allow_list(InMemoryCronRegistry::new()).await;
    run_on_allow_list(InMemoryCronRegistry::with_syntax(PgCronVersion::V1_6)).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn conformance_pg_allow_list(pool: PgPool) {
    run_on_allow_list(PgCronRegistry::with_runner(pool)).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn conformance_pg_cron_allow_list(pool: PgPool) {
    with_pg_cron(
        "conformance_pg_cron_allow_list",
        pool,
        |registry, cron| async move {
            assert_eq!(registry.scheduler(), SchedulerKind::PgCron);
            let prefix = registry.job_prefix().unwrap().to_string();
            run_on_allow_list(registry).await;
            assert_eq!(
                pg_cron_jobs_with_prefix(&cron, &prefix).await,
                0,
                "refused jobs never reached pg_cron; the others were unscheduled"
            );
        },
    )
    .await;
}
