//! The conformance suite on every backend.

use std::sync::Arc;

use opsdeck_cron_registry::testing::{self, SUITE_FUNCTIONS, SUITE_REQUEST_LEASE};
use opsdeck_cron_registry::{
    AllowList, CronRegistry, Error, InMemoryCronRegistry, PgCronRegistry, PgCronRegistryOptions,
    PgCronVersion, SchedulerKind, SqlExecutor,
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

/// The hand-off and runner checks: leased requests, run timeouts, one run
/// of a job at a time, recovery of dead runners' runs, missed slots — on
/// each backend and behind the allow-list.
#[tokio::test]
async fn runner_checks_in_memory() {
    let backend = Arc::new(InMemoryCronRegistry::new().with_request_lease(SUITE_REQUEST_LEASE));
    testing::run_runner_checks(&backend, backend.clone(), backend.clone()).await;
}

#[tokio::test]
async fn runner_checks_in_memory_allow_list() {
    let backend = Arc::new(InMemoryCronRegistry::new().with_request_lease(SUITE_REQUEST_LEASE));
    let stack = AllowList::new(backend.clone())
        .allow_functions(SUITE_FUNCTIONS)
        .unwrap();
    testing::run_runner_checks(&stack, backend.clone(), backend).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn runner_checks_pg(pool: PgPool) {
    let backend = PgCronRegistry::with_runner(pool.clone()).with_request_lease(SUITE_REQUEST_LEASE);
    testing::run_runner_checks(
        &backend,
        Arc::new(backend.clone()),
        Arc::new(SqlExecutor::new(pool)),
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn runner_checks_pg_allow_list(pool: PgPool) {
    let backend = PgCronRegistry::with_runner(pool.clone()).with_request_lease(SUITE_REQUEST_LEASE);
    let stack = AllowList::new(backend.clone())
        .allow_functions(SUITE_FUNCTIONS)
        .unwrap();
    testing::run_runner_checks(&stack, Arc::new(backend), Arc::new(SqlExecutor::new(pool))).await;
}

/// With pg_cron the requests its jobs queue are leased the same way (the
/// job's SQL is executed here as pg_cron would execute it).
#[sqlx::test(migrations = "../../migrations")]
async fn requests_are_leased_with_pg_cron(pool: PgPool) {
    let app = pool.clone();
    with_pg_cron(
        "requests_are_leased_with_pg_cron",
        pool,
        |registry, _cron| async move {
            let registry = registry.with_request_lease(SUITE_REQUEST_LEASE);
            assert_eq!(registry.scheduler(), SchedulerKind::PgCron);
            testing::requests_are_leased(&registry, &SqlExecutor::new(app)).await;
        },
    )
    .await;
}
