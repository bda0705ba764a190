//! The in-process runner: due jobs fire once per slot however many runners
//! tick, with explicit time so no test waits for a wall-clock minute.

use std::sync::Arc;
use std::time::Duration;

use opsdeck_core::UserId;
use opsdeck_cron_registry::{
    CronRegistry, CronRegistryExt, CronRunner, CronSchedule, FunctionName, HistoryScope,
    InMemoryCronRegistry, JobCommand, NewJob, PgCronRegistry, PgCronVersion, RequestKind,
    RunStatus, SqlExecutor, SqlValue,
};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;
use time::macros::datetime;

fn job(user: UserId, name: &str, schedule: &str, command: JobCommand) -> NewJob {
    NewJob::new(
        user,
        name.parse().unwrap(),
        "summarize".parse().unwrap(),
        CronSchedule::parse(schedule).unwrap(),
        command,
    )
}

fn run_operation() -> JobCommand {
    JobCommand::run_operation(json!({"length": "short"})).unwrap()
}

/// A runner for tests about claims, which tick years after the jobs were
/// registered: with catching up on (the default), every such tick would
/// also handle the slots "missed" since registration (tested in the
/// conformance suite's runner checks).
fn claims_only(runner: CronRunner) -> CronRunner {
    runner.catch_up_window(Duration::ZERO)
}

/// A second, independent pool on the same database: two runners in two
/// "processes" share nothing but PostgreSQL.
async fn second_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_runners_over_one_database_fire_a_due_job_once(pool: PgPool) {
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    let every5 = registry
        .register_cron_job(job(user, "every-5", "*/5 * * * *", run_operation()))
        .await
        .unwrap();
    let a = claims_only(registry.runner()).with_instance("a");
    let b = claims_only(PgCronRegistry::with_runner(second_pool(&pool).await).runner())
        .with_instance("b");

    // 10:05:07 is inside the due minute 10:05; both tick at once.
    let now = datetime!(2030-01-01 10:05:07 UTC);
    let (ra, rb) = tokio::join!(a.tick(now), b.tick(now));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.fired + rb.fired, 1, "{ra:?} {rb:?}");
    assert_eq!(ra.claimed_elsewhere + rb.claimed_elsewhere, 1);
    assert_eq!(ra.failed + rb.failed + ra.errors + rb.errors, 0);

    // Later ticks within the same minute fire nothing more.
    for offset in [1, 20, 52] {
        let later = now + time::Duration::seconds(offset);
        let (ra, rb) = tokio::join!(a.tick(later), b.tick(later));
        assert_eq!(ra.unwrap().fired + rb.unwrap().fired, 0);
    }
    // A minute the schedule skips fires nothing; the next due one fires once.
    let (ra, rb) = tokio::join!(
        a.tick(datetime!(2030-01-01 10:06:00 UTC)),
        b.tick(datetime!(2030-01-01 10:06:00 UTC))
    );
    assert_eq!(ra.unwrap().due + rb.unwrap().due, 0);
    let (ra, rb) = tokio::join!(
        a.tick(datetime!(2030-01-01 10:10:30 UTC)),
        b.tick(datetime!(2030-01-01 10:10:30 UTC))
    );
    assert_eq!(ra.unwrap().fired + rb.unwrap().fired, 1);

    let history = registry.history(user, &every5.name, 10).await.unwrap();
    let slots: Vec<_> = history.iter().map(|r| r.scheduled_for.unwrap()).collect();
    assert_eq!(
        slots,
        [
            datetime!(2030-01-01 10:10 UTC),
            datetime!(2030-01-01 10:05 UTC)
        ],
        "one run per due slot, newest first"
    );
    assert!(
        history
            .iter()
            .all(|r| r.status == RunStatus::Succeeded && r.ended_at.is_some())
    );
    assert_eq!(history[0].message.as_deref(), Some("1 row"));

    // Each run executed the job's SQL once: one queued request per run.
    let requests = registry.take_requests(100).await.unwrap();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.kind == RequestKind::RunOperation
        && r.user_id == user
        && r.arguments == json!({"length": "short"})));
    assert!(
        registry.take_requests(100).await.unwrap().is_empty(),
        "taken once"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn many_concurrent_runners_still_fire_once(pool: PgPool) {
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    registry
        .register_cron_job(job(user, "hourly", "@hourly", run_operation()))
        .await
        .unwrap();
    let other = second_pool(&pool).await;
    let runners: Vec<Arc<CronRunner>> = (0..8)
        .map(|i| {
            let pool = if i % 2 == 0 {
                pool.clone()
            } else {
                other.clone()
            };
            Arc::new(PgCronRegistry::with_runner(pool).runner())
        })
        .collect();
    let now = datetime!(2030-06-01 13:00:59 UTC);
    let mut tasks = Vec::new();
    for runner in &runners {
        let runner = Arc::clone(runner);
        tasks.push(tokio::spawn(async move { runner.tick(now).await.unwrap() }));
    }
    let mut fired = 0;
    for task in tasks {
        fired += task.await.unwrap().fired;
    }
    assert_eq!(fired, 1);
    assert_eq!(registry.take_requests(100).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn runner_records_failures_and_skips_paused_jobs(pool: PgPool) {
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    let broken = registry
        .register_cron_job(job(
            user,
            "broken",
            "* * * * *",
            JobCommand::call_function(
                FunctionName::parse("opsdeck.no_such_function").unwrap(),
                vec![SqlValue::JobUser],
            )
            .unwrap(),
        ))
        .await
        .unwrap();
    let paused = registry
        .register_cron_job(job(user, "paused", "* * * * *", run_operation()).active(false))
        .await
        .unwrap();
    let runner = claims_only(registry.runner());
    let report = runner.tick(datetime!(2030-01-01 00:00 UTC)).await.unwrap();
    assert_eq!((report.fired, report.failed), (1, 1));

    let history = registry.history(user, &broken.name, 5).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, RunStatus::Failed);
    let message = history[0].message.as_deref().unwrap();
    assert!(message.contains("does not exist"), "{message}");
    assert!(
        registry
            .history(user, &paused.name, 5)
            .await
            .unwrap()
            .is_empty()
    );

    // Resumed, the job fires at the next minute.
    assert!(registry.resume(user, &paused.name).await.unwrap());
    let report = runner.tick(datetime!(2030-01-01 00:01 UTC)).await.unwrap();
    assert_eq!(report.fired, 2);
    assert_eq!(
        registry.history(user, &paused.name, 5).await.unwrap().len(),
        1
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn runner_history_retention(pool: PgPool) {
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    let job = registry
        .register_cron_job(job(user, "minutely", "* * * * *", run_operation()))
        .await
        .unwrap();
    let runner = claims_only(registry.runner());
    for minute in 0..3 {
        runner
            .tick(datetime!(2030-01-01 00:00 UTC) + time::Duration::minutes(minute))
            .await
            .unwrap();
    }
    assert_eq!(
        registry.history(user, &job.name, 10).await.unwrap().len(),
        3
    );
    // Runs are stamped with the real time they ran: back-date two of them.
    sqlx::query(
        "UPDATE opsdeck.cron_job_runs SET started_at = now() - interval '40 days',
                ended_at = now() - interval '40 days'
         WHERE scheduled_for < '2030-01-01 00:02:00+00'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let cutoff = OffsetDateTime::now_utc() - time::Duration::days(30);
    let other_user = UserId::random();
    assert_eq!(
        registry
            .prune_history(HistoryScope::Job(other_user, job.name.clone()), cutoff)
            .await
            .unwrap(),
        0,
        "another user's scope prunes nothing"
    );
    assert_eq!(
        registry
            .prune_history(HistoryScope::Job(user, job.name.clone()), cutoff)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        registry.history(user, &job.name, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        registry
            .prune_history(
                HistoryScope::All,
                OffsetDateTime::now_utc() + time::Duration::minutes(1)
            )
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn in_memory_runners_fire_a_due_job_once() {
    let registry = Arc::new(InMemoryCronRegistry::new());
    let user = UserId::random();
    let nightly = registry
        .register_cron_job(job(user, "nightly", "30 2 * * *", run_operation()))
        .await
        .unwrap();
    let prune = registry
        .register_cron_job(job(
            user,
            "prune",
            "30 2 * * *",
            JobCommand::PruneHistory { keep_days: 7 },
        ))
        .await
        .unwrap();
    let a = CronRunner::new(registry.clone(), registry.clone());
    let b = CronRunner::new(registry.clone(), registry.clone());
    let now = datetime!(2030-01-01 02:30:15 UTC);
    let (ra, rb) = tokio::join!(a.tick(now), b.tick(now));
    assert_eq!(
        ra.unwrap().fired + rb.unwrap().fired,
        2,
        "two jobs, once each"
    );
    assert_eq!(
        a.tick(datetime!(2030-01-01 02:31 UTC)).await.unwrap().fired,
        0
    );

    let runs = registry.history(user, &nightly.name, 5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].scheduled_for, Some(datetime!(2030-01-01 02:30 UTC)));
    assert_eq!(
        registry.history(user, &prune.name, 5).await.unwrap()[0].status,
        RunStatus::Succeeded
    );
    let requests = registry.take_requests(10).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].job_name, nightly.name);
}

/// `spawn` drives the runner with the wall clock; an interval schedule
/// keeps the wait short.
#[tokio::test]
async fn spawned_runner_ticks_with_the_wall_clock() {
    let registry = Arc::new(InMemoryCronRegistry::with_syntax(PgCronVersion::V1_5));
    let user = UserId::random();
    let job = registry
        .register_cron_job(job(user, "fast", "1 second", run_operation()))
        .await
        .unwrap();
    let handle =
        CronRunner::new(registry.clone(), registry.clone()).spawn(Duration::from_millis(200));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while registry.history(user, &job.name, 10).await.unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner did not fire twice in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown().await;
    let runs = registry.history(user, &job.name, 100).await.unwrap();
    let mut slots: Vec<_> = runs.iter().map(|r| r.scheduled_for.unwrap()).collect();
    slots.dedup();
    assert_eq!(slots.len(), runs.len(), "one run per second slot");
}

/// The Postgres executor runs exactly the job's SQL.
#[sqlx::test(migrations = "../../migrations")]
async fn sql_executor_runs_the_rendered_command(pool: PgPool) {
    use opsdeck_cron_registry::JobExecutor;
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    let job = registry
        .register_cron_job(job(
            user,
            "refresh",
            "@daily",
            JobCommand::RefreshRecommendations,
        ))
        .await
        .unwrap();
    assert_eq!(
        SqlExecutor::new(pool)
            .execute(&job, Duration::from_secs(30))
            .await,
        Ok("1 row".to_string())
    );
    let requests = registry.take_requests(1).await.unwrap();
    assert_eq!(requests[0].kind, RequestKind::RefreshRecommendations);
    assert_eq!(requests[0].operation_id.as_str(), "summarize");
}

/// A job that hangs does not stall the spawned runner: other jobs keep
/// firing every slot meanwhile, the hanging job's overlapping slots are
/// recorded as skipped, and its run is recorded failed at the timeout.
#[tokio::test]
async fn a_slow_job_does_not_stall_the_spawned_runner() {
    use opsdeck_cron_registry::{JobExecutor, RunStatus};

    /// The registry's own executor, except that `slow` never finishes.
    #[derive(Debug)]
    struct SlowOne(Arc<InMemoryCronRegistry>);

    #[async_trait::async_trait]
    impl JobExecutor for SlowOne {
        async fn execute(
            &self,
            job: &opsdeck_cron_registry::CronJob,
            timeout: Duration,
        ) -> Result<String, String> {
            if job.name.as_str() == "slow" {
                std::future::pending::<()>().await;
            }
            self.0.execute(job, timeout).await
        }
    }

    let registry = Arc::new(InMemoryCronRegistry::with_syntax(PgCronVersion::V1_5));
    let user = UserId::random();
    let fast = registry
        .register_cron_job(job(user, "fast", "1 second", run_operation()))
        .await
        .unwrap();
    let slow = registry
        .register_cron_job(job(user, "slow", "1 second", run_operation()))
        .await
        .unwrap();
    let handle = CronRunner::new(registry.clone(), Arc::new(SlowOne(registry.clone())))
        .run_timeout(Duration::from_secs(3))
        .spawn(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let done = |runs: &[opsdeck_cron_registry::JobRun]| {
        runs.iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .count()
    };
    while done(&registry.history(user, &fast.name, 100).await.unwrap()) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fast job did not run three times while the slow one hung"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow_runs = registry.history(user, &slow.name, 100).await.unwrap();
    assert_eq!(
        slow_runs
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count(),
        1,
        "one run of the slow job at a time: {slow_runs:?}"
    );
    assert!(
        slow_runs.iter().any(|r| r.status == RunStatus::Skipped),
        "its overlapping slots are recorded as skipped: {slow_runs:?}"
    );
    // Shutdown waits for the slow run's timeout, which records it failed.
    tokio::time::timeout(Duration::from_secs(20), handle.shutdown())
        .await
        .expect("shutdown ends within the run timeout");
    let slow_runs = registry.history(user, &slow.name, 100).await.unwrap();
    assert!(
        slow_runs.iter().all(|r| r.status != RunStatus::Running),
        "{slow_runs:?}"
    );
    assert!(
        slow_runs.iter().any(|r| r.status == RunStatus::Failed
            && r.message
                .as_deref()
                .is_some_and(|m| m.contains("timed out"))),
        "{slow_runs:?}"
    );
}

/// A run the runner times out also stops in PostgreSQL (the SQL executor's
/// statement timeout), so it cannot overlap the job's next run there.
#[sqlx::test(migrations = "../../migrations")]
async fn a_timed_out_sql_run_stops_in_the_database(pool: PgPool) {
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    let sleeper = registry
        .register_cron_job(job(
            user,
            "sleeper",
            "* * * * *",
            JobCommand::call_function(
                FunctionName::parse("pg_catalog.pg_sleep").unwrap(),
                vec![SqlValue::Int(30)],
            )
            .unwrap(),
        ))
        .await
        .unwrap();
    let runner = registry.runner().run_timeout(Duration::from_millis(500));
    let slot = sleeper.schedule.next_runs_after(sleeper.updated_at, 1)[0];
    let started = std::time::Instant::now();
    let report = runner.tick(slot).await.unwrap();
    assert_eq!((report.fired, report.failed), (1, 1), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let runs = registry.history(user, &sleeper.name, 5).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    let message = runs[0].message.clone().unwrap();
    assert!(
        message.contains("timed out") || message.contains("statement timeout"),
        "{message}"
    );
    // No backend of this database is still sleeping (bounded wait: the
    // cancellation reaches the server asynchronously).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sleeping: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active'
               AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if sleeping == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timed-out statement still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A corrupt row (written around the checks, as before they existed) is
/// left out of the runner's jobs: it does not stop the others from firing.
#[sqlx::test(migrations = "../../migrations")]
async fn a_corrupt_row_does_not_stall_the_runner(pool: PgPool) {
    let registry = PgCronRegistry::with_runner(pool.clone());
    let user = UserId::random();
    let good = registry
        .register_cron_job(job(user, "good", "* * * * *", run_operation()))
        .await
        .unwrap();
    // This test database only: the row a client wrote before 0005.
    sqlx::raw_sql(
        "ALTER TABLE opsdeck.cron_job_registry DROP CONSTRAINT cron_job_registry_schedule_check",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO opsdeck.cron_job_registry (user_id, job_name, operation_id, schedule, command_kind)
         VALUES ($1, 'banana', 'summarize', 'banana', 'refresh_recommendations')",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let slot = good.schedule.next_runs_after(good.updated_at, 1)[0];
    let report = registry.runner().tick(slot).await.unwrap();
    assert_eq!(
        (report.fired, report.failed, report.errors),
        (1, 0, 0),
        "{report:?}"
    );
    assert!(matches!(
        registry.list_for_user(user).await,
        Err(opsdeck_cron_registry::Error::Corrupt(_))
    ));
}
