//! No user-supplied string becomes SQL: quote-laden ids are refused by
//! their types, and quote-laden values reach PostgreSQL as literals, with
//! `standard_conforming_strings` on or off.

use opsdeck_core::{OperationId, UserId};
use opsdeck_cron_registry::{
    CronJob, CronRegistry, CronSchedule, CronService, Error, FunctionName, JobCommand, JobName,
    NewJob, PgCronRegistry, SqlValue,
};
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;

use crate::support::EVIL;

const BACKSLASH_EVIL: &str = r"x\'); DROP TABLE opsdeck.cron_job_registry; --";

async fn opsdeck_tables(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'opsdeck'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs the job's SQL on one connection, first with the server default and
/// then with `standard_conforming_strings = off` (where a plain `'\'`
/// would be an escape).
async fn run_both_ways(pool: &PgPool, job: &CronJob) {
    let mut conn = pool.acquire().await.unwrap();
    let sql = job.to_sql();
    for statement in [
        sql.as_str(),
        "SET standard_conforming_strings = off",
        sql.as_str(),
        "RESET standard_conforming_strings",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn quote_laden_input_cannot_inject(pool: PgPool) {
    let before = opsdeck_tables(&pool).await;
    let registry = Arc::new(PgCronRegistry::with_runner(pool.clone()));
    let service = CronService::new(registry.clone());
    let user = UserId::random();

    // Ids: refused by their types, before any SQL.
    assert!(OperationId::parse(EVIL).is_err());
    assert!(JobName::parse(EVIL).is_err());
    assert!(FunctionName::parse("f(); DROP TABLE t; --").is_err());
    for (name, op) in [(EVIL, "summarize"), ("ok", EVIL)] {
        let err = service
            .register_cron_job(
                user,
                name,
                op,
                "* * * * *",
                JobCommand::RefreshRecommendations,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{err}");
    }
    assert!(registry.list_for_user(user).await.unwrap().is_empty());

    // Values: literals, whatever they contain.
    let arguments = json!({"note": EVIL, "backslash": BACKSLASH_EVIL, EVIL: "key"});
    let queued = registry
        .register_cron_job(NewJob::new(
            user,
            "queued".parse().unwrap(),
            "summarize".parse().unwrap(),
            CronSchedule::parse("@daily").unwrap(),
            JobCommand::run_operation(arguments.clone()).unwrap(),
        ))
        .await
        .unwrap();
    run_both_ways(&pool, &queued).await;
    let requests = registry.take_requests(10).await.unwrap();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.arguments == arguments),
        "{requests:?}"
    );

    sqlx::raw_sql(
        "CREATE TABLE public.notes (user_id uuid, note text, extra text);
         CREATE FUNCTION public.record_note(p_user uuid, p_note text, p_extra text) RETURNS void
         LANGUAGE sql AS $$ INSERT INTO public.notes VALUES (p_user, p_note, p_extra) $$;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let called = registry
        .register_cron_job(NewJob::new(
            user,
            "called".parse().unwrap(),
            "summarize".parse().unwrap(),
            CronSchedule::parse("@daily").unwrap(),
            JobCommand::call_function(
                "public.record_note".parse().unwrap(),
                vec![
                    SqlValue::JobUser,
                    SqlValue::text(EVIL).unwrap(),
                    SqlValue::text(BACKSLASH_EVIL).unwrap(),
                ],
            )
            .unwrap(),
        ))
        .await
        .unwrap();
    run_both_ways(&pool, &called).await;
    let notes: Vec<(UserId, String, String)> =
        sqlx::query_as("SELECT user_id, note, extra FROM public.notes")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(notes.len(), 2);
    for (who, note, extra) in notes {
        assert_eq!(who, user);
        assert_eq!(note, EVIL);
        assert_eq!(extra, BACKSLASH_EVIL);
    }

    // Stored and read back intact, and nothing was dropped.
    assert_eq!(
        registry.get(user, &called.name).await.unwrap(),
        Some(called)
    );
    assert_eq!(opsdeck_tables(&pool).await, before);
}

/// `CallFunction` runs with the scheduler's privileges, so the service only
/// registers functions the application allowed; anything else writes nothing.
#[tokio::test]
async fn the_service_only_calls_allowed_functions() {
    use opsdeck_cron_registry::{CronService, Error, InMemoryCronRegistry};
    use std::sync::Arc;

    let user = UserId::random();
    let call = |function: &str| {
        JobCommand::call_function(function.parse().unwrap(), vec![SqlValue::JobUser]).unwrap()
    };
    let service = CronService::builder(Arc::new(InMemoryCronRegistry::new()))
        .allow_function("public.record_note")
        .build()
        .unwrap();
    for forbidden in [
        "opsdeck.unregister_cron_job",
        "pg_catalog.pg_read_file",
        "record_note",
    ] {
        let error = service
            .register_cron_job(user, "sneaky", "summarize", "@daily", call(forbidden))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Validation(ref v) if v.field == "command"),
            "{error:?}"
        );
    }
    assert!(
        service.list_for_user(user).await.unwrap().is_empty(),
        "nothing written"
    );
    service
        .register_cron_job(
            user,
            "allowed",
            "summarize",
            "@daily",
            call("public.record_note"),
        )
        .await
        .unwrap();
    assert_eq!(service.list_for_user(user).await.unwrap().len(), 1);
}
