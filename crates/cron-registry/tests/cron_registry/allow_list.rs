//! The function allow-list as `CronService` applies it: every public write
//! path of the service refuses a job calling a function off the list, and
//! nothing is written — in memory, on PostgreSQL and in pg_cron.

use std::sync::Arc;

use opsdeck_core::UserId;
use opsdeck_cron_registry::{
    AllowList, CommandError, CronRegistry, CronService, Error, InMemoryCronRegistry, JobCommand,
    PgCronRegistry, SqlValue,
};
use sqlx::PgPool;

use crate::support::{pg_cron_jobs_with_prefix, with_pg_cron};

const ALLOWED: &str = "public.record_note";

fn call(function: &str) -> JobCommand {
    JobCommand::call_function(function.parse().unwrap(), vec![SqlValue::JobUser]).unwrap()
}

fn is_refusal(result: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::Validation(v)) if v.field == "command")
}

/// Drives every public write path of `service` with forbidden functions
/// (unqualified, another schema, a system function) and checks that each
/// is refused and writes nothing; an allowed job is then created, and
/// survives every refused replacement unchanged.
async fn every_write_path_refuses(service: &CronService) {
    let user = UserId::random();
    let forbidden = [
        "record_note",
        "opsdeck.unregister_cron_job",
        "pg_catalog.pg_read_file",
    ];
    for function in forbidden {
        let created = service
            .register_cron_job(user, "sneaky", "summarize", "@daily", call(function))
            .await;
        assert!(is_refusal(&created), "create with {function}: {created:?}");
    }
    assert!(service.list_for_user(user).await.unwrap().is_empty());
    assert!(!service.check_cron_job_exists(user, "sneaky").await.unwrap());

    let kept = service
        .register_cron_job(user, "kept", "summarize", "@daily", call(ALLOWED))
        .await
        .unwrap();
    for function in forbidden {
        let replaced = service
            .register_cron_job(user, "kept", "translate", "@hourly", call(function))
            .await;
        assert!(
            is_refusal(&replaced),
            "replace with {function}: {replaced:?}"
        );
    }
    assert_eq!(service.get(user, "kept").await.unwrap(), Some(kept.clone()));
    // The other write paths take no command, so they cannot bring one in.
    assert!(service.pause(user, "kept").await.unwrap());
    assert!(service.resume(user, "kept").await.unwrap());
    let after = service.get(user, "kept").await.unwrap().unwrap();
    assert_eq!((after.command, after.active), (kept.command.clone(), true));
    assert_eq!(service.list_for_user(user).await.unwrap().len(), 1);
    assert!(service.unregister_cron_job(user, "kept").await.unwrap());
}

fn service_over(registry: Arc<dyn CronRegistry>) -> CronService {
    CronService::builder(registry)
        .allow_function(ALLOWED)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_service_refuses_disallowed_functions_on_every_write_path_in_memory() {
    every_write_path_refuses(&service_over(Arc::new(InMemoryCronRegistry::new()))).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_service_refuses_disallowed_functions_on_every_write_path_on_postgres(pool: PgPool) {
    every_write_path_refuses(&service_over(Arc::new(PgCronRegistry::with_runner(
        pool.clone(),
    ))))
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM opsdeck.cron_job_registry")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no refused job reached the registry table");
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_service_refuses_disallowed_functions_on_every_write_path_on_pg_cron(pool: PgPool) {
    with_pg_cron(
        "the_service_refuses_disallowed_functions_on_pg_cron",
        pool,
        |registry, cron| async move {
            let prefix = registry.job_prefix().unwrap().to_string();
            let service = service_over(Arc::new(registry));
            let user = UserId::random();
            let refused = service
                .register_cron_job(user, "sneaky", "summarize", "@daily", call("f"))
                .await;
            assert!(is_refusal(&refused), "{refused:?}");
            assert_eq!(pg_cron_jobs_with_prefix(&cron, &prefix).await, 0);
            every_write_path_refuses(&service).await;
            assert_eq!(pg_cron_jobs_with_prefix(&cron, &prefix).await, 0);
        },
    )
    .await;
}

/// A service without an allow-list refuses every function; `CronService::new`
/// is that default.
#[tokio::test]
async fn without_an_allow_list_every_function_is_refused() {
    let service = CronService::new(Arc::new(InMemoryCronRegistry::new()));
    assert_eq!(service.allowed_functions().count(), 0);
    let user = UserId::random();
    let refused = service
        .register_cron_job(user, "job", "summarize", "@daily", call(ALLOWED))
        .await;
    assert!(is_refusal(&refused), "{refused:?}");
    // Commands that call no function need no list.
    service
        .register_cron_job(
            user,
            "job",
            "summarize",
            "@daily",
            JobCommand::RefreshRecommendations,
        )
        .await
        .unwrap();
}

/// Allowed names are parsed when the list is built: a bad one is refused
/// there, naming the function rule.
#[test]
fn allow_lists_refuse_bad_function_names() {
    let built = CronService::builder(Arc::new(InMemoryCronRegistry::new()))
        .allow_functions([ALLOWED, "F(); DROP TABLE t"])
        .build();
    assert!(
        matches!(built, Err(Error::Command(CommandError::FunctionName(_)))),
        "{built:?}"
    );
    let wrapped = AllowList::new(InMemoryCronRegistry::new()).allow_function("a.b.c");
    assert!(matches!(
        wrapped,
        Err(Error::Command(CommandError::FunctionName(_)))
    ));
    let wrapped = AllowList::new(InMemoryCronRegistry::new())
        .allow_functions(["b.f", "a.f", "b.f"])
        .unwrap();
    let names: Vec<&str> = wrapped.allowed_functions().map(|f| f.as_str()).collect();
    assert_eq!(names, ["a.f", "b.f"]);
}
