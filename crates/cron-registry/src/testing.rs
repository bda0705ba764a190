//! The conformance suite every [`CronRegistry`] backend must pass.
//!
//! Each check uses fresh random users and removes the jobs it registered,
//! so checks can share a database (and a pg_cron) and run in any order.
//! Schedules are chosen not to fire during a test run. Backends and policy
//! stacks call [`run_all`] (or single checks) from their integration tests;
//! a stack with a function allow-list must allow [`SUITE_FUNCTIONS`] and
//! also passes [`functions_off_the_list_are_refused`]. See
//! `tests/cron_registry/`.
//!
//! The checks panic with a message on failure, like assertions in a test.

use opsdeck_core::{OperationId, UserId};
use serde_json::json;

use crate::command::{JobCommand, SqlValue};
use crate::error::Error;
use crate::model::{CronJob, NewJob};
use crate::name::JobName;
use crate::registry::{CronRegistry, CronRegistryExt};
use crate::schedule::{CronSchedule, PgCronVersion, ScheduleError};

/// The SQL functions the suite's jobs call (never fired: the suite's
/// schedules do not come due). A policy stack under test must allow them,
/// e.g. `AllowList::new(backend).allow_functions(SUITE_FUNCTIONS)`.
pub const SUITE_FUNCTIONS: &[&str] = &["opsdeck.conformance_probe"];

/// A function no allow-list in a test allows.
const FORBIDDEN_FUNCTION: &str = "pg_catalog.pg_read_file";

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

/// A job of `user` like [`yearly_job`] whose command calls `function`.
fn yearly_call(user: UserId, job: &str, function: &str) -> NewJob {
    let mut new = yearly_job(user, job, "summarize");
    new.command = JobCommand::call_function(
        function.parse().expect("valid function name in test"),
        vec![
            SqlValue::JobUser,
            SqlValue::text("it's; DROP TABLE t; --").expect("text without NUL"),
        ],
    )
    .expect("few arguments");
    new
}

async fn cleanup(repo: &dyn CronRegistry, user: UserId) {
    for job in repo.list_for_user(user).await.expect("list for cleanup") {
        repo.unregister_cron_job(user, &job.name)
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
    function_calls_are_stored_as_given(repo).await;
}

/// Registering the same job twice leaves one job, unchanged.
pub async fn register_twice_is_one_job(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let first = repo
        .register_cron_job(yearly_job(user, "nightly", "summarize"))
        .await
        .unwrap();
    let second = repo
        .register_cron_job(yearly_job(user, "nightly", "summarize"))
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
        .register_cron_job(yearly_job(user, "report", "summarize"))
        .await
        .unwrap();
    let mut changed = yearly_job(user, "report", "translate");
    changed.schedule = schedule("0 0 1 7 *");
    changed.command = JobCommand::PruneHistory { keep_days: 30 };
    let second = repo
        .register_cron_job(changed.clone().active(false))
        .await
        .unwrap();
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

/// `unregister_cron_job` and `check_cron_job_exists` never fail on a
/// missing job.
pub async fn unregister_of_a_missing_job_is_false(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let job = name("never-registered");
    assert!(!repo.unregister_cron_job(user, &job).await.unwrap());
    assert!(!repo.check_cron_job_exists(user, &job).await.unwrap());
    assert_eq!(repo.get(user, &job).await.unwrap(), None);
    assert!(repo.history(user, &job, 10).await.unwrap().is_empty());
    assert_eq!(repo.set_active(user, &job, false).await.unwrap(), None);

    repo.register_cron_job(yearly_job(user, "never-registered", "summarize"))
        .await
        .unwrap();
    assert!(repo.check_cron_job_exists(user, &job).await.unwrap());
    assert!(repo.unregister_cron_job(user, &job).await.unwrap());
    assert!(
        !repo.unregister_cron_job(user, &job).await.unwrap(),
        "second time: gone"
    );
    assert!(!repo.check_cron_job_exists(user, &job).await.unwrap());
}

/// One user's calls never read or change another user's jobs, even when
/// both use the same job name.
pub async fn users_cannot_see_or_touch_each_others_jobs(repo: &dyn CronRegistry) {
    let (alice, bob) = (UserId::random(), UserId::random());
    let alice_shared = repo
        .register_cron_job(yearly_job(alice, "shared", "summarize"))
        .await
        .unwrap();
    let alice_private = repo
        .register_cron_job(yearly_job(alice, "private", "summarize"))
        .await
        .unwrap();
    let mut bobs = yearly_job(bob, "shared", "translate");
    bobs.schedule = schedule("0 0 1 7 *");
    let bob_shared = repo.register_cron_job(bobs).await.unwrap();
    assert_ne!(bob_shared.id, alice_shared.id, "same name, separate jobs");

    let private = name("private");
    assert_eq!(repo.get(bob, &private).await.unwrap(), None);
    assert!(!repo.check_cron_job_exists(bob, &private).await.unwrap());
    assert!(!repo.unregister_cron_job(bob, &private).await.unwrap());
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
    assert!(
        repo.unregister_cron_job(bob, &name("shared"))
            .await
            .unwrap()
    );
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
        repo.register_cron_job(yearly_job(user, job, operation))
            .await
            .unwrap();
    }
    let names = |jobs: Vec<CronJob>| {
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
    repo.register_cron_job(yearly_job(user, "pausable", "summarize"))
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
        let result = repo.register_cron_job(job).await;
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
            assert!(
                !repo
                    .check_cron_job_exists(user, &name("versioned"))
                    .await
                    .unwrap()
            );
        }
    }
    cleanup(repo, user).await;
}

/// `next_runs` of a job follows its schedule.
pub async fn next_runs_follow_the_schedule(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let job = repo
        .register_cron_job(yearly_job(user, "preview", "summarize"))
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

/// A `CallFunction` job (of a function in [`SUITE_FUNCTIONS`]) is stored
/// and read back as given, quote-laden arguments included.
pub async fn function_calls_are_stored_as_given(repo: &dyn CronRegistry) {
    let user = UserId::random();
    let registered = repo
        .register_cron_job(yearly_call(user, "caller", SUITE_FUNCTIONS[0]))
        .await
        .unwrap();
    assert_eq!(
        registered.command,
        yearly_call(user, "caller", SUITE_FUNCTIONS[0]).command
    );
    assert_eq!(
        repo.get(user, &name("caller")).await.unwrap(),
        Some(registered)
    );
    cleanup(repo, user).await;
}

/// For policy stacks with a function allow-list (see `crate::AllowList`):
/// a job calling a function off the list is refused with
/// [`Error::Validation`] (field `command`) on every write path, and nothing
/// is written — neither a new job, nor a replacement of an existing one,
/// which keeps its definition (and stays runnable when paused and
/// resumed: those paths cannot change a command).
pub async fn functions_off_the_list_are_refused(repo: &dyn CronRegistry) {
    let refused = |result: Result<CronJob, Error>| match result {
        Err(Error::Validation(v)) if v.field == "command" => {}
        other => panic!("expected a refusal of the command, got {other:?}"),
    };
    let user = UserId::random();
    refused(
        repo.register_cron_job(yearly_call(user, "sneaky", FORBIDDEN_FUNCTION))
            .await,
    );
    assert!(
        !repo
            .check_cron_job_exists(user, &name("sneaky"))
            .await
            .unwrap()
    );
    assert!(repo.list_for_user(user).await.unwrap().is_empty());

    // Replacing an allowed job's command with a forbidden one.
    let kept = repo
        .register_cron_job(yearly_call(user, "kept", SUITE_FUNCTIONS[0]))
        .await
        .unwrap();
    refused(
        repo.register_cron_job(yearly_call(user, "kept", FORBIDDEN_FUNCTION))
            .await,
    );
    refused(
        repo.register_cron_job(yearly_call(user, "kept", FORBIDDEN_FUNCTION).active(false))
            .await,
    );
    assert_eq!(
        repo.get(user, &name("kept")).await.unwrap(),
        Some(kept.clone())
    );
    assert!(repo.pause(user, &name("kept")).await.unwrap());
    assert!(repo.resume(user, &name("kept")).await.unwrap());
    let resumed = repo.get(user, &name("kept")).await.unwrap().unwrap();
    assert_eq!(
        resumed.command, kept.command,
        "pause/resume keep the command"
    );
    assert_eq!(repo.list_for_user(user).await.unwrap().len(), 1);
    cleanup(repo, user).await;
}
