//! The registry on a real pg_cron: what pg_cron ends up holding, that a
//! job really runs, consistency when one side fails, reconcile, retention.

use std::time::{Duration, Instant};

use opsdeck_core::UserId;
use opsdeck_cron_registry::testing::yearly_job;
use opsdeck_cron_registry::{
    CronRegistry, CronRegistryExt, CronSchedule, Error, HistoryScope, JobCommand, JobName,
    PgCronVersion, RunStatus, SchedulerKind,
};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::support::{database_name, on_job, pg_cron_job, pg_cron_jobs_with_prefix, with_pg_cron};

fn name(s: &str) -> JobName {
    s.parse().unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn detects_pg_cron_and_names_jobs_within_63_bytes(pool: PgPool) {
    with_pg_cron(
        "detects_pg_cron",
        pool.clone(),
        |registry, cron| async move {
            let extversion: String =
                sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
                    .fetch_one(&cron)
                    .await
                    .unwrap();
            assert_eq!(
                registry.pg_cron_version(),
                PgCronVersion::parse(&extversion),
                "version read from {extversion:?}"
            );
            assert_eq!(registry.syntax(), registry.pg_cron_version().unwrap());

            let user = UserId::random();
            let long = "n".repeat(63);
            let job = registry
                .register_cron_job(yearly_job(user, &long, "summarize"))
                .await
                .unwrap();
            let pg_name = registry.pg_cron_job_name(&job).unwrap();
            assert!(pg_name.len() <= 63, "{pg_name}");
            let (stored_name, ..) = pg_cron_job(&cron, job.pg_cron_job_id.unwrap())
                .await
                .unwrap();
            assert_eq!(stored_name, pg_name, "pg_cron did not cut the name");
            assert!(registry.unregister_cron_job(user, &job.name).await.unwrap());
        },
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn register_twice_is_one_pg_cron_job(pool: PgPool) {
    let database = database_name(&pool).await;
    with_pg_cron(
        "register_twice_is_one_pg_cron_job",
        pool,
        |registry, cron| async move {
            let user = UserId::random();
            let first = registry
                .register_cron_job(yearly_job(user, "nightly", "summarize"))
                .await
                .unwrap();
            let second = registry
                .register_cron_job(yearly_job(user, "nightly", "summarize"))
                .await
                .unwrap();
            assert_eq!(first, second);
            assert_eq!(first.scheduler, SchedulerKind::PgCron);
            let prefix = registry.job_prefix().unwrap();
            assert_eq!(pg_cron_jobs_with_prefix(&cron, prefix).await, 1);

            let jobid = first.pg_cron_job_id.expect("pg_cron job id recorded");
            let (_, schedule, command, db, active) = pg_cron_job(&cron, jobid).await.unwrap();
            assert_eq!(schedule, "0 0 1 1 *");
            assert_eq!(command, first.to_sql());
            assert_eq!(db, database, "runs in the application database");
            assert!(active);

            // A changed definition updates the same pg_cron job.
            let mut changed = yearly_job(user, "nightly", "summarize");
            changed.schedule = CronSchedule::parse("@monthly").unwrap();
            let third = registry.register_cron_job(changed).await.unwrap();
            assert_eq!(third.pg_cron_job_id, Some(jobid));
            assert_eq!(pg_cron_job(&cron, jobid).await.unwrap().1, "@monthly");
            assert_eq!(pg_cron_jobs_with_prefix(&cron, prefix).await, 1);

            assert!(
                registry
                    .unregister_cron_job(user, &name("nightly"))
                    .await
                    .unwrap()
            );
            assert_eq!(
                pg_cron_job(&cron, jobid).await,
                None,
                "unregister unschedules"
            );
        },
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn unregister_of_a_missing_job_is_ok_false(pool: PgPool) {
    with_pg_cron(
        "unregister_of_a_missing_job_is_ok_false",
        pool,
        |registry, cron| async move {
            let user = UserId::random();
            assert!(
                !registry
                    .unregister_cron_job(user, &name("ghost"))
                    .await
                    .unwrap()
            );

            // Also when the registry row exists but pg_cron lost the job.
            let job = registry
                .register_cron_job(yearly_job(user, "ghost", "summarize"))
                .await
                .unwrap();
            on_job(
                &cron,
                "SELECT cron.unschedule($1)",
                job.pg_cron_job_id.unwrap(),
            )
            .await;
            assert!(
                registry
                    .unregister_cron_job(user, &name("ghost"))
                    .await
                    .unwrap()
            );
            assert!(
                !registry
                    .unregister_cron_job(user, &name("ghost"))
                    .await
                    .unwrap()
            );
        },
    )
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn pause_and_resume_are_reflected_in_cron_job_active(pool: PgPool) {
    with_pg_cron("pause_and_resume", pool, |registry, cron| async move {
        let user = UserId::random();
        let job = registry
            .register_cron_job(yearly_job(user, "pausable", "summarize"))
            .await
            .unwrap();
        let jobid = job.pg_cron_job_id.unwrap();
        let active = |cron: PgPool| async move { pg_cron_job(&cron, jobid).await.unwrap().4 };

        assert!(registry.pause(user, &job.name).await.unwrap());
        assert!(!active(cron.clone()).await, "paused in cron.job");
        assert!(!registry.get(user, &job.name).await.unwrap().unwrap().active);
        assert!(registry.resume(user, &job.name).await.unwrap());
        assert!(active(cron.clone()).await, "resumed in cron.job");

        // Registering paused, then re-registering active, carries the flag
        // to pg_cron too (its upsert by name would keep the old flag).
        registry
            .register_cron_job(yearly_job(user, "pausable", "summarize").active(false))
            .await
            .unwrap();
        assert!(!active(cron.clone()).await);
        registry
            .register_cron_job(yearly_job(user, "pausable", "summarize"))
            .await
            .unwrap();
        assert!(active(cron.clone()).await);
        assert!(registry.unregister_cron_job(user, &job.name).await.unwrap());
    })
    .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn users_cannot_see_or_remove_each_others_pg_cron_jobs(pool: PgPool) {
    with_pg_cron(
        "users_cannot_see_or_remove",
        pool,
        |registry, cron| async move {
            let (alice, bob) = (UserId::random(), UserId::random());
            let job = registry
                .register_cron_job(yearly_job(alice, "alice-only", "summarize"))
                .await
                .unwrap();
            let jobid = job.pg_cron_job_id.unwrap();

            assert_eq!(registry.get(bob, &job.name).await.unwrap(), None);
            assert!(registry.list_for_user(bob).await.unwrap().is_empty());
            assert!(!registry.unregister_cron_job(bob, &job.name).await.unwrap());
            assert!(!registry.pause(bob, &job.name).await.unwrap());
            assert!(
                registry
                    .history(bob, &job.name, 5)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                registry
                    .prune_history(
                        HistoryScope::Job(bob, job.name.clone()),
                        OffsetDateTime::now_utc()
                    )
                    .await
                    .unwrap(),
                0
            );

            let (.., active) = pg_cron_job(&cron, jobid).await.expect("still scheduled");
            assert!(active, "bob's pause did not reach pg_cron");
            assert!(
                registry
                    .check_cron_job_exists(alice, &job.name)
                    .await
                    .unwrap()
            );
            assert!(
                registry
                    .unregister_cron_job(alice, &job.name)
                    .await
                    .unwrap()
            );
        },
    )
    .await;
}

/// The one slow test: a `* * * * *` job really runs in the application
/// database (queues a request) and its run shows up in the history API.
#[sqlx::test(migrations = "../../migrations")]
async fn a_minutely_job_runs_and_appears_in_history(pool: PgPool) {
    let app = pool.clone();
    with_pg_cron("a_minutely_job_runs", pool, |registry, _cron| async move {
        let user = UserId::random();
        let job = registry
            .register_cron_job(opsdeck_cron_registry::NewJob::new(
                user,
                name("every-minute"),
                "summarize".parse().unwrap(),
                CronSchedule::parse("* * * * *").unwrap(),
                JobCommand::run_operation(json!({"note": crate::support::EVIL})).unwrap(),
            ))
            .await
            .unwrap();

        let started = Instant::now();
        let run = loop {
            let runs = registry.history(user, &job.name, 10).await.unwrap();
            if let Some(run) = runs.iter().find(|r| r.status != RunStatus::Running) {
                break run.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(150),
                "no finished run after {:?}; history: {runs:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        eprintln!("first pg_cron run finished after {:?}", started.elapsed());
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert!(run.started_at.is_some() && run.ended_at.is_some());
        // Background workers report the command tag, libpq connections the
        // row count.
        assert!(
            matches!(run.message.as_deref(), Some("SELECT 1" | "1 row")),
            "{run:?}"
        );

        // pg_cron ran the typed command in the application database.
        let requests = registry.take_requests(10).await.unwrap();
        assert!(!requests.is_empty());
        assert_eq!(requests[0].user_id, user);
        assert_eq!(requests[0].job_name, job.name);
        assert_eq!(requests[0].arguments, json!({"note": crate::support::EVIL}));
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'opsdeck' AND tablename = 'cron_job_registry'",
        )
        .fetch_one(&app)
        .await
        .unwrap();
        assert_eq!(tables, 1, "the quote-laden argument stayed a literal");

        assert!(registry.unregister_cron_job(user, &job.name).await.unwrap());
    })
    .await;
}

/// A failing registry write rolls the pg_cron side back: no orphan job.
/// A failing unregister keeps both the row and the pg_cron job.
#[sqlx::test(migrations = "../../migrations")]
async fn a_failed_call_leaves_registry_and_pg_cron_consistent(pool: PgPool) {
    let app = pool.clone();
    with_pg_cron(
        "a_failed_call_leaves_consistent",
        pool,
        |registry, cron| async move {
            let prefix = registry.job_prefix().unwrap().to_string();
            let user = UserId::random();
            // Fail the registry's update that records pg_cron's job id, i.e.
            // after pg_cron has scheduled the job inside its transaction.
            sqlx::raw_sql(
                "CREATE FUNCTION fail_cron_writes() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'registry write refused by test'; END $$;
             CREATE TRIGGER refuse_updates BEFORE UPDATE ON opsdeck.cron_job_registry
               FOR EACH ROW EXECUTE FUNCTION fail_cron_writes();",
            )
            .execute(&app)
            .await
            .unwrap();
            let failed = registry
                .register_cron_job(yearly_job(user, "doomed", "summarize"))
                .await;
            assert!(matches!(failed, Err(Error::Database(_))), "{failed:?}");
            assert!(
                !registry
                    .check_cron_job_exists(user, &name("doomed"))
                    .await
                    .unwrap()
            );
            assert_eq!(
                pg_cron_jobs_with_prefix(&cron, &prefix).await,
                0,
                "no orphan in pg_cron"
            );

            sqlx::raw_sql("DROP TRIGGER refuse_updates ON opsdeck.cron_job_registry")
                .execute(&app)
                .await
                .unwrap();
            let job = registry
                .register_cron_job(yearly_job(user, "kept", "summarize"))
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TRIGGER refuse_deletes BEFORE DELETE ON opsdeck.cron_job_registry
               FOR EACH ROW EXECUTE FUNCTION fail_cron_writes();",
            )
            .execute(&app)
            .await
            .unwrap();
            assert!(registry.unregister_cron_job(user, &job.name).await.is_err());
            assert!(
                registry
                    .check_cron_job_exists(user, &job.name)
                    .await
                    .unwrap()
            );
            assert!(
                pg_cron_job(&cron, job.pg_cron_job_id.unwrap())
                    .await
                    .is_some(),
                "the unschedule was rolled back with the registry delete"
            );
            sqlx::raw_sql("DROP TRIGGER refuse_deletes ON opsdeck.cron_job_registry")
                .execute(&app)
                .await
                .unwrap();
            assert!(registry.unregister_cron_job(user, &job.name).await.unwrap());
            assert!(registry.reconcile().await.unwrap().is_clean());
        },
    )
    .await;
}

/// Drift made by hand on both sides is repaired by `reconcile`, and a
/// second reconcile finds nothing left to do.
#[sqlx::test(migrations = "../../migrations")]
async fn reconcile_repairs_drift(pool: PgPool) {
    let app = pool.clone();
    let database = database_name(&pool).await;
    with_pg_cron("reconcile_repairs_drift", pool, |registry, cron| async move {
        let prefix = registry.job_prefix().unwrap().to_string();
        let user = UserId::random();
        let lost = registry.register_cron_job(yearly_job(user, "lost", "summarize")).await.unwrap();
        let flipped = registry.register_cron_job(yearly_job(user, "flipped", "summarize")).await.unwrap();
        let edited = registry.register_cron_job(yearly_job(user, "edited", "summarize")).await.unwrap();
        let fine = registry.register_cron_job(yearly_job(user, "fine", "summarize")).await.unwrap();

        // pg_cron side: a job lost, one paused and one edited behind the
        // registry's back, and an orphan carrying the registry's prefix.
        on_job(&cron, "SELECT cron.unschedule($1)", lost.pg_cron_job_id.unwrap()).await;
        on_job(&cron, "SELECT cron.alter_job($1, active := false)", flipped.pg_cron_job_id.unwrap()).await;
        on_job(&cron, "SELECT cron.alter_job($1, command := 'SELECT 1')", edited.pg_cron_job_id.unwrap()).await;
        let orphan: i64 = sqlx::query_scalar("SELECT cron.schedule_in_database($1, '0 0 1 1 *', 'SELECT 1', $2)")
            .bind(format!("{prefix}999999"))
            .bind(&database)
            .fetch_one(&cron)
            .await
            .unwrap();
        // Registry side: a row written by another client for the runner.
        sqlx::query(
            "SELECT opsdeck.register_cron_job($1, 'from-sql', 'summarize', '@daily', 'refresh_recommendations')",
        )
        .bind(user)
        .execute(&app)
        .await
        .unwrap();

        let report = registry.reconcile().await.unwrap();
        let mut rescheduled: Vec<String> = report.rescheduled.iter().map(|(_, n)| n.to_string()).collect();
        rescheduled.sort();
        assert_eq!(rescheduled, ["edited", "flipped", "from-sql", "lost"], "{report:?}");
        assert_eq!(report.unscheduled, vec![orphan]);
        assert!(report.errors.is_empty(), "{report:?}");

        assert_eq!(pg_cron_job(&cron, orphan).await, None);
        for job in registry.list_for_user(user).await.unwrap() {
            let jobid = job.pg_cron_job_id.expect("every row points at pg_cron");
            let (pg_name, schedule, command, db, active) = pg_cron_job(&cron, jobid).await.unwrap();
            assert_eq!(job.scheduler, SchedulerKind::PgCron);
            assert_eq!(Some(pg_name), registry.pg_cron_job_name(&job));
            assert_eq!(schedule, job.schedule.as_str());
            assert_eq!(command, job.to_sql());
            assert_eq!(db, database);
            assert_eq!(active, job.active);
        }
        assert_eq!(
            registry.get(user, &fine.name).await.unwrap().unwrap().pg_cron_job_id,
            fine.pg_cron_job_id,
            "jobs in sync are left alone"
        );
        assert_eq!(pg_cron_jobs_with_prefix(&cron, &prefix).await, 5);
        assert!(registry.reconcile().await.unwrap().is_clean());

        for job in registry.list_for_user(user).await.unwrap() {
            assert!(registry.unregister_cron_job(user, &job.name).await.unwrap());
        }
    })
    .await;
}

/// History retention deletes old pg_cron runs of one job or of all of the
/// registry's jobs, and keeps recent ones.
#[sqlx::test(migrations = "../../migrations")]
async fn history_retention_prunes_pg_cron_runs(pool: PgPool) {
    let database = database_name(&pool).await;
    with_pg_cron("history_retention", pool, |registry, cron| async move {
        let user = UserId::random();
        let a = registry.register_cron_job(yearly_job(user, "a", "summarize")).await.unwrap();
        let b = registry.register_cron_job(yearly_job(user, "b", "summarize")).await.unwrap();
        for job in [&a, &b] {
            for age_days in [40, 10, 0] {
                sqlx::query(
                    "INSERT INTO cron.job_run_details
                        (jobid, database, username, command, status, return_message, start_time, end_time)
                     VALUES ($1, $2, current_user, 'SELECT 1', 'succeeded', '1 row',
                             now() - make_interval(days => $3), now() - make_interval(days => $3))",
                )
                .bind(job.pg_cron_job_id.unwrap())
                .bind(&database)
                .bind(age_days)
                .execute(&cron)
                .await
                .unwrap();
            }
        }
        let history = registry.history(user, &a.name, 10).await.unwrap();
        assert_eq!(history.len(), 3);
        assert!(history.windows(2).all(|w| w[0].run_id > w[1].run_id), "newest first");
        assert_eq!(registry.history(user, &a.name, 2).await.unwrap().len(), 2);

        let now = OffsetDateTime::now_utc();
        let pruned = registry
            .prune_history(HistoryScope::Job(user, a.name.clone()), now - time::Duration::days(30))
            .await
            .unwrap();
        assert_eq!(pruned, 1);
        assert_eq!(registry.history(user, &a.name, 10).await.unwrap().len(), 2);
        assert_eq!(registry.history(user, &b.name, 10).await.unwrap().len(), 3);

        let pruned = registry
            .prune_history(HistoryScope::All, now - time::Duration::days(5))
            .await
            .unwrap();
        assert_eq!(pruned, 3, "a: 10 days; b: 40 and 10 days");
        assert_eq!(registry.history(user, &a.name, 10).await.unwrap().len(), 1);
        assert_eq!(registry.history(user, &b.name, 10).await.unwrap().len(), 1);
        for job in [a, b] {
            assert!(registry.unregister_cron_job(user, &job.name).await.unwrap());
        }
    })
    .await;
}

/// Pruning touches only runs of this registry's jobs: another application's
/// jobs in the same database — live, dropped (history left behind), or named
/// with this registry's prefix but not as `{prefix}{id}` — keep their runs,
/// and an unregistered job's runs go with it.
#[sqlx::test(migrations = "../../migrations")]
async fn prune_history_keeps_other_applications_runs(pool: PgPool) {
    let database = database_name(&pool).await;
    with_pg_cron("prune_keeps_foreign_runs", pool, |registry, cron| async move {
        let prefix = registry.job_prefix().unwrap().to_string();
        let user = UserId::random();
        let ours = registry.register_cron_job(yearly_job(user, "ours", "summarize")).await.unwrap();
        let gone = registry.register_cron_job(yearly_job(user, "gone", "summarize")).await.unwrap();
        let schedule = |name: String| {
            let (cron, database) = (cron.clone(), database.clone());
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT cron.schedule_in_database($1, '0 0 1 1 *', 'SELECT 1', $2)",
                )
                .bind(name)
                .bind(database)
                .fetch_one(&cron)
                .await
                .unwrap()
            }
        };
        let live = schedule("someone-else:nightly".to_string()).await;
        let dropped = schedule("someone-else:dropped".to_string()).await;
        let lookalike = schedule(format!("{prefix}manual")).await;
        let old_run = |jobid: i64| {
            let (cron, database) = (cron.clone(), database.clone());
            async move {
                sqlx::query(
                    "INSERT INTO cron.job_run_details
                        (jobid, database, username, command, status, return_message, start_time, end_time)
                     VALUES ($1, $2, current_user, 'SELECT 1', 'succeeded', '1 row',
                             now() - interval '40 days', now() - interval '40 days')",
                )
                .bind(jobid)
                .bind(database)
                .execute(&cron)
                .await
                .unwrap();
            }
        };
        for jobid in [live, dropped, lookalike, ours.pg_cron_job_id.unwrap(), gone.pg_cron_job_id.unwrap()] {
            old_run(jobid).await;
        }
        // The other application drops its job; pg_cron keeps its history.
        on_job(&cron, "SELECT cron.unschedule($1)", dropped).await;
        // Ours: the unregistered job's history goes with it.
        assert!(registry.unregister_cron_job(user, &gone.name).await.unwrap());

        let pruned = registry
            .prune_history(HistoryScope::All, OffsetDateTime::now_utc() - time::Duration::days(5))
            .await
            .unwrap();
        let runs_of = |jobid: i64| {
            let cron = cron.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cron.job_run_details WHERE jobid = $1")
                    .bind(jobid)
                    .fetch_one(&cron)
                    .await
                    .unwrap()
            }
        };
        for (what, jobid) in [("live", live), ("dropped", dropped), ("lookalike", lookalike)] {
            assert_eq!(runs_of(jobid).await, 1, "another application's {what} job lost its run");
        }
        assert_eq!(runs_of(ours.pg_cron_job_id.unwrap()).await, 0, "our old run is pruned");
        assert_eq!(runs_of(gone.pg_cron_job_id.unwrap()).await, 0, "unregister took the history");
        assert!(pruned <= 2, "pruned {pruned}: only our runs");

        // reconcile leaves the look-alike alone too: it is not `{prefix}{id}`.
        let report = registry.reconcile().await.unwrap();
        assert!(!report.unscheduled.contains(&lookalike), "{report:?}");
        assert!(pg_cron_job(&cron, lookalike).await.is_some());
        assert!(registry.unregister_cron_job(user, &ours.name).await.unwrap());
        // The other application's jobs are removed here on success (and by
        // `with_pg_cron` on failure), so none counts as left behind.
        for jobid in [live, lookalike] {
            on_job(&cron, "SELECT cron.unschedule($1)", jobid).await;
        }
    })
    .await;
}
