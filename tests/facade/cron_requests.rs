//! The cron → analytics flow: a `RefreshRecommendations` job, fired by
//! pg_cron or by the in-process runner, queues a request that
//! `OpsDeck::process_cron_requests` turns into fresh recommendations.

use opsdeck::analytics::RecommendationStatus;
use opsdeck::{JobCommand, OpsDeck, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::flows::cheaper_model_history;

/// Registers a refresh job for a user whose history warrants a cheaper-model
/// recommendation; `fire` runs the job the way its scheduler does.
async fn refresh_job_generates_recommendations<F, Fut>(deck: &OpsDeck, fire: F)
where
    F: FnOnce(OpsDeck, UserId) -> Fut,
    Fut: Future<Output = ()>,
{
    let user = UserId::random();
    deck.analytics()
        .record_many(cheaper_model_history(user))
        .await
        .unwrap();
    deck.cron()
        .register_cron_job(
            user,
            "refresh-recommendations",
            "summarize",
            "* * * * *",
            JobCommand::RefreshRecommendations,
        )
        .await
        .unwrap();
    let active = |deck: OpsDeck| async move {
        deck.analytics()
            .recommendations(user, Some(RecommendationStatus::Active))
            .await
            .unwrap()
    };
    assert!(
        active(deck.clone()).await.is_empty(),
        "nothing generated yet"
    );

    fire(deck.clone(), user).await;
    let report = deck.process_cron_requests(100).await.unwrap();
    assert_eq!(report.taken, 1, "{report:?}");
    assert_eq!(report.recommendations_refreshed, 1, "{report:?}");
    assert!(report.failed.is_empty() && report.run_operation.is_empty());
    assert!(
        !active(deck.clone()).await.is_empty(),
        "the job's request generated the user's recommendations"
    );
    let again = deck.process_cron_requests(100).await.unwrap();
    assert_eq!(again.taken, 0, "a completed request is consumed once");
}

async fn fire_with_the_runner(deck: OpsDeck, _user: UserId) {
    let runner = deck
        .cron_runner()
        .expect("no pg_cron: the runner fires jobs");
    let report = runner.tick(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(report.fired, 1, "{report:?}");
}

#[tokio::test]
async fn in_memory_runner_jobs_refresh_recommendations() {
    let deck = OpsDeck::in_memory();
    refresh_job_generates_recommendations(&deck, fire_with_the_runner).await;
}

#[sqlx::test(migrations = false)]
async fn postgres_runner_jobs_refresh_recommendations(pool: PgPool) {
    opsdeck::MIGRATOR.run(&pool).await.unwrap();
    let deck = OpsDeck::from_pool(pool).await.unwrap();
    refresh_job_generates_recommendations(&deck, fire_with_the_runner).await;
}

/// With pg_cron, the job is a row in `cron.job` whose command runs in the
/// application database. Waiting for pg_cron's next minute would make the
/// test slow, so it runs that very command, as pg_cron's worker does.
#[sqlx::test(migrations = false)]
async fn pg_cron_jobs_refresh_recommendations(pool: PgPool) {
    opsdeck::MIGRATOR.run(&pool).await.unwrap();
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL for PostgreSQL tests");
    let cron = sqlx::PgPool::connect(&url).await.unwrap();
    let has_pg_cron: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')")
            .fetch_one(&cron)
            .await
            .unwrap();
    if !has_pg_cron {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true requires pg_cron in the DATABASE_URL database"
        );
        eprintln!("skipping: pg_cron is not installed in the DATABASE_URL database");
        return;
    }
    let deck = OpsDeck::builder()
        .pool(pool.clone())
        .cron_database_url(url)
        .require_pg_cron(true)
        .build()
        .await
        .unwrap();
    assert!(deck.cron_runner().is_none(), "pg_cron fires the jobs");
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    let app = pool.clone();
    let cron_for_fire = cron.clone();
    let database_for_fire = database.clone();
    // Run in a task so the pg_cron job is removed even when an assertion fails.
    let outcome = tokio::spawn(async move {
        refresh_job_generates_recommendations(&deck, move |_deck, _user| async move {
            let command: String =
                sqlx::query_scalar("SELECT command FROM cron.job WHERE database = $1 AND active")
                    .bind(&database_for_fire)
                    .fetch_one(&cron_for_fire)
                    .await
                    .expect("exactly one pg_cron job in this database");
            sqlx::raw_sql(sqlx::AssertSqlSafe(command))
                .execute(&app)
                .await
                .unwrap();
        })
        .await;
    })
    .await;
    sqlx::query("SELECT cron.unschedule(jobid) FROM cron.job WHERE database = $1")
        .bind(&database)
        .execute(&cron)
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
