//! The conformance suite every [`CronRegistry`] backend must pass.
//!
//! Each check uses fresh random users and removes the jobs it registered,
//! so checks can share a database (and a pg_cron) and run in any order.
//! Schedules are chosen not to fire during a test run. Backends call
//! [`run_all`] (or single checks) from their integration tests; see
//! `tests/cron_registry/`.
//!
//! The checks panic with a message on failure, like assertions in a test.

use opsdeck_core::{OperationId, UserId};
use serde_json::json;

use crate::{
    CronRegistry, CronRegistryExt, CronSchedule, Error, JobCommand, JobName, NewJob, PgCronVersion,
    ScheduleError,
};

fn name(s: &str) -> JobName {
    JobName::parse(s).expect("valid job name in test")
}

fn op(s: &str) -> OperationId {
    OperationId::parse(s).expect("valid operation id in test")
}

fn schedule(s: &str) -> CronSchedule {
    CronSchedule::parse(s).expect("valid schedule in test")
}

/// A job of `user` on a schedule that fires once a year (Jan 1, 00:00 UTC).
pub fn yearly_job(user: UserId, job: &str, operation: &str) -> NewJob {
    NewJob::new(
        user,
        name(job),
        op(operation),
        schedule("0 0 1 1 *"),
        JobCommand::run_operation(json!({"job": job})).expect("object arguments"),
    )
}

async fn cleanup(repo: &dyn CronRegistry, user: UserId) {
    for job in repo.list_for_user(user).await.expect("list for cleanup") {
        repo.unregister(user, &job.name)
            .await
            .expect("unregister for cleanup");
    }
}

/// Runs every check of the suite against `repo`.
pub async fn run_all(repo: &dyn CronRegistry) {
    register_twice_is_one_job(repo).await;
    register_again_replaces_the_definition(repo).await;
    unregister_of_a_missing_job_is_false(repo).await;
    users_cannot_see_or_touch_each_others_jobs(repo).await;
    lists_filter_by_operation_and_sort_by_name(repo).await;
    pause_and_resume(repo).await;
    schedules_beyond_the_backend_version_are_refused(repo).await;
    next_runs_follow_the_schedule(repo).await;
}

/// Registering the same job twice leaves one job, unchanged.
pub async fn register_twice_is_one_job(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let first = repo
        .register(yearly_job(user, "nightly", "summarize"))
        .await
        .unwrap();
    let second = repo
        .register(yearly_job(user, "nightly", "summarize"))
        .await
        .unwrap();
    assert_eq!(second, first, "an identical register changes nothing");
    assert_eq!(first.scheduler, repo.scheduler());
    assert_eq!(first.user_id, user);
    assert!(first.active);
    assert_eq!(repo.list_for_user(user).await.unwrap(), vec![first.clone()]);
    assert_eq!(repo.get(user, &name("nightly")).await.unwrap(), Some(first));
    cleanup(repo, user).await;
}

/// A second register with other fields replaces them in place.
pub async fn register_again_replaces_the_definition(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let first = repo
        .register(yearly_job(user, "report", "summarize"))
        .await
        .unwrap();
    let mut changed = yearly_job(user, "report", "translate");
    changed.schedule = schedule("0 0 1 7 *");
    changed.command = JobCommand::PruneHistory { keep_days: 30 };
    let second = repo.register(changed.clone().active(false)).await.unwrap();
    assert_eq!(second.id, first.id, "same job, same id");
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at >= first.updated_at);
    assert_eq!(second.operation_id, op("translate"));
    assert_eq!(second.schedule, changed.schedule);
    assert_eq!(second.command, changed.command);
    assert!(!second.active);
    assert_eq!(repo.list_for_user(user).await.unwrap().len(), 1);
    cleanup(repo, user).await;
}

/// `unregister` and `exists` never fail on a missing job.
pub async fn unregister_of_a_missing_job_is_false(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let job = name("never-registered");
    assert!(!repo.unregister(user, &job).await.unwrap());
    assert!(!repo.exists(user, &job).await.unwrap());
    assert_eq!(repo.get(user, &job).await.unwrap(), None);
    assert!(repo.history(user, &job, 10).await.unwrap().is_empty());
    assert_eq!(repo.set_active(user, &job, false).await.unwrap(), None);

    repo.register(yearly_job(user, "never-registered", "summarize"))
        .await
        .unwrap();
    assert!(repo.exists(user, &job).await.unwrap());
    assert!(repo.unregister(user, &job).await.unwrap());
    assert!(
        !repo.unregister(user, &job).await.unwrap(),
        "second time: gone"
    );
    assert!(!repo.exists(user, &job).await.unwrap());
}

/// One user's calls never read or change another user's jobs, even when
/// both use the same job name.
pub async fn users_cannot_see_or_touch_each_others_jobs(repo: &dyn CronRegistry) {
    let (alice, bob) = (UserId::random(), UserId::random());
    let alice_shared = repo
        .register(yearly_job(alice, "shared", "summarize"))
        .await
        .unwrap();
    let alice_private = repo
        .register(yearly_job(alice, "private", "summarize"))
        .await
        .unwrap();
    let mut bobs = yearly_job(bob, "shared", "translate");
    bobs.schedule = schedule("0 0 1 7 *");
    let bob_shared = repo.register(bobs).await.unwrap();
    assert_ne!(bob_shared.id, alice_shared.id, "same name, separate jobs");

    let private = name("private");
    assert_eq!(repo.get(bob, &private).await.unwrap(), None);
    assert!(!repo.exists(bob, &private).await.unwrap());
    assert!(!repo.unregister(bob, &private).await.unwrap());
    assert_eq!(repo.set_active(bob, &private, false).await.unwrap(), None);
    assert!(repo.history(bob, &private, 10).await.unwrap().is_empty());
    assert!(matches!(
        repo.next_runs(bob, &private, 1).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(repo.list_for_user(bob).await.unwrap(), vec![bob_shared]);
    assert!(
        repo.list_for_operation(bob, &op("summarize"))
            .await
            .unwrap()
            .is_empty()
    );

    // Bob removing "his" shared job leaves Alice's untouched.
    assert!(repo.unregister(bob, &name("shared")).await.unwrap());
    assert_eq!(
        repo.list_for_user(alice).await.unwrap(),
        vec![alice_private.clone(), alice_shared.clone()]
    );
    assert!(repo.get(alice, &private).await.unwrap().unwrap().active);
    cleanup(repo, alice).await;
    cleanup(repo, bob).await;
}

/// `list_for_operation` filters, and both lists sort by name.
pub async fn lists_filter_by_operation_and_sort_by_name(repo: &dyn CronRegistry) {
    let user = UserId::random();
    for (job, operation) in [
        ("c-job", "summarize"),
        ("a-job", "summarize"),
        ("b-job", "translate"),
    ] {
        repo.register(yearly_job(user, job, operation))
            .await
            .unwrap();
    }
    let names = |jobs: Vec<crate::CronJob>| {
        jobs.into_iter()
            .map(|j| j.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(repo.list_for_user(user).await.unwrap()),
        ["a-job", "b-job", "c-job"]
    );
    assert_eq!(
        names(
            repo.list_for_operation(user, &op("summarize"))
                .await
                .unwrap()
        ),
        ["a-job", "c-job"]
    );
    assert!(
        repo.list_for_operation(user, &op("classify"))
            .await
            .unwrap()
            .is_empty()
    );
    cleanup(repo, user).await;
}

/// Pause and resume flip `active` and are seen by `get`.
pub async fn pause_and_resume(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let job = name("pausable");
    repo.register(yearly_job(user, "pausable", "summarize"))
        .await
        .unwrap();
    assert!(repo.pause(user, &job).await.unwrap());
    let paused = repo.get(user, &job).await.unwrap().unwrap();
    assert!(!paused.active);
    assert!(
        paused.next_runs(3).is_empty(),
        "a paused job has no next run"
    );
    assert!(
        repo.pause(user, &job).await.unwrap(),
        "pausing twice is fine"
    );
    assert!(repo.resume(user, &job).await.unwrap());
    assert!(repo.get(user, &job).await.unwrap().unwrap().active);
    assert!(!repo.pause(user, &name("missing")).await.unwrap());
    cleanup(repo, user).await;
}

/// Forms the backend's pg_cron version lacks are refused, writing nothing.
pub async fn schedules_beyond_the_backend_version_are_refused(repo: &dyn CronRegistry) {
    let user = UserId::random();
    for (form, needed) in [
        ("10 seconds", PgCronVersion::V1_5),
        ("0 22 $ * *", PgCronVersion::V1_6),
    ] {
        let mut job = yearly_job(user, "versioned", "summarize");
        job.schedule = schedule(form);
        let result = repo.register(job).await;
        if repo.syntax() >= needed {
            assert!(result.is_ok(), "{form:?} is valid for {}", repo.syntax());
        } else {
            match result {
                Err(Error::Schedule(ScheduleError::NeedsVersion { needed: n, .. })) => {
                    assert_eq!(n, needed)
                }
                other => panic!(
                    "{form:?} on {}: expected NeedsVersion, got {other:?}",
                    repo.syntax()
                ),
            }
            assert!(!repo.exists(user, &name("versioned")).await.unwrap());
        }
    }
    cleanup(repo, user).await;
}

/// `next_runs` of a job follows its schedule.
pub async fn next_runs_follow_the_schedule(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let job = repo
        .register(yearly_job(user, "preview", "summarize"))
        .await
        .unwrap();
    let runs = repo.next_runs(user, &job.name, 2).await.unwrap();
    assert_eq!(runs.len(), 2);
    let year = time::OffsetDateTime::now_utc().year();
    for run in &runs {
        assert_eq!(
            (run.month(), run.day(), run.hour(), run.minute()),
            (time::Month::January, 1, 0, 0)
        );
        assert!(run.year() > year);
    }
    assert_eq!(runs[1].year(), runs[0].year() + 1);
    cleanup(repo, user).await;
}
