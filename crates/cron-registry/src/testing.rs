//! The conformance suite every [`CronRegistry`] backend must pass.
//!
//! Each check uses fresh random users and removes the jobs it registered,
//! so checks can share a database (and a pg_cron) and run in any order.
//! Schedules are chosen not to fire during a test run. Backends and policy
//! stacks call [`run_all`] (or single checks) from their integration tests;
//! a stack with a function allow-list must allow [`SUITE_FUNCTIONS`] and
//! also passes [`functions_off_the_list_are_refused`]. Backends the
//! in-process runner fires also pass [`run_runner_checks`] (leased
//! requests, run timeouts, one run of a job at a time, recovery of dead
//! runners' runs, missed slots), with time explicit wherever it can be.
//! See `tests/cron_registry/`.
//!
//! The checks panic with a message on failure, like assertions in a test.

use std::sync::Arc;
use std::time::Duration;

use opsdeck_core::{OperationId, UserId};
use serde_json::json;
use time::OffsetDateTime;

use crate::command::{JobCommand, SqlValue};
use crate::error::Error;
use crate::model::{CronJob, CronRequest, NewJob, RequestKind, RunStatus};
use crate::name::JobName;
use crate::registry::{CronRegistry, CronRegistryExt};
use crate::runner::{CronRunner, JobExecutor, MissedRunPolicy, RunStore, TickReport};
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

// ---------------------------------------------------------------------------
// Hand-off and runner checks: what a backend's requests and run store must
// guarantee to the application's workers and to any number of runners.
// ---------------------------------------------------------------------------

/// The request lease a backend under [`run_runner_checks`] (and
/// [`requests_are_leased`]) must be configured with, e.g.
/// `InMemoryCronRegistry::new().with_request_lease(SUITE_REQUEST_LEASE)`.
pub const SUITE_REQUEST_LEASE: Duration = Duration::from_secs(2);

/// Longest any check waits for a condition (a lease running out, a run
/// being recovered) before failing.
const PATIENCE: Duration = Duration::from_secs(20);

/// A short run timeout for the checks whose runs hang.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

/// Runs every hand-off and runner check: `registry` is the stack under
/// test (a backend or a policy over it), `store` and `executor` the
/// backend's own (what [`CronRunner`] is built from). The backend must
/// fire jobs with the runner (scheduler `runner`) and lease requests for
/// [`SUITE_REQUEST_LEASE`].
pub async fn run_runner_checks(
    registry: &dyn CronRegistry,
    store: Arc<dyn RunStore>,
    executor: Arc<dyn JobExecutor>,
) {
    requests_are_leased(registry, executor.as_ref()).await;
    a_run_past_its_timeout_fails(registry, &store, &executor).await;
    at_most_one_run_of_a_job_at_a_time(registry, &store, &executor).await;
    runs_of_dead_runners_are_recovered(registry, &store, &executor).await;
    missed_slots_run_once_on_recovery(registry, &store, &executor).await;
    missed_slots_are_recorded_when_skipped(registry, &store, &executor).await;
}

fn job_of(user: UserId, job: &str, schedule_text: &str, command: JobCommand) -> NewJob {
    NewJob::new(
        user,
        name(job),
        op("summarize"),
        schedule(schedule_text),
        command,
    )
}

/// A command that neither queues requests nor calls a function: it prunes
/// nothing recent (the checks' runs are minutes old).
fn harmless() -> JobCommand {
    JobCommand::PruneHistory { keep_days: 365 }
}

/// The first slot of `job` after it was registered: ticks at and after it
/// see no missed slot.
fn first_slot(job: &CronJob) -> OffsetDateTime {
    job.schedule.next_runs_after(job.updated_at, 1)[0]
}

fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

/// The user's requests, taken and completed (a check's leftovers).
async fn drain_requests(registry: &dyn CronRegistry, user: UserId) {
    for request in registry.take_requests(10_000).await.unwrap() {
        if request.user_id == user {
            registry.complete_request(&request).await.unwrap();
        } else {
            registry.release_request(&request).await.unwrap();
        }
    }
}

/// Takes requests until one of `user`'s is delivered, or `PATIENCE` ends.
async fn take_for(registry: &dyn CronRegistry, user: UserId) -> Option<CronRequest> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let taken = registry.take_requests(100).await.unwrap();
        let (mine, others): (Vec<_>, Vec<_>) = taken.into_iter().partition(|r| r.user_id == user);
        for other in others {
            registry.release_request(&other).await.unwrap();
        }
        if let Some(first) = mine.into_iter().next() {
            return Some(first);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests are leased, not removed, by `take_requests`: a consumer that
/// crashes (never completes) loses nothing — the request comes back once
/// its lease runs out, as the next attempt; only the current delivery can
/// complete or release it; a completed request never comes back; a
/// released one comes back at once. `fire` executes a job's command the
/// way its scheduler would (it queues the request).
pub async fn requests_are_leased(registry: &dyn CronRegistry, fire: &dyn JobExecutor) {
    let user = UserId::random();
    let job = registry
        .register_cron_job(job_of(
            user,
            "leased",
            "0 0 1 1 *",
            JobCommand::run_operation(json!({"n": 1})).expect("object arguments"),
        ))
        .await
        .unwrap();
    fire.execute(&job, Duration::from_secs(30)).await.unwrap();

    let taken_at = tokio::time::Instant::now();
    let first = take_for(registry, user)
        .await
        .expect("the queued request is delivered");
    assert_eq!(first.attempt, 1);
    assert_eq!(
        (first.job_name.clone(), first.kind),
        (job.name.clone(), RequestKind::RunOperation)
    );
    let again = registry.take_requests(100).await.unwrap();
    if taken_at.elapsed() < SUITE_REQUEST_LEASE {
        assert!(
            again.iter().all(|r| r.request_id != first.request_id),
            "a leased request is not handed to a second taker: {again:?}"
        );
    }
    for other in again.iter().filter(|r| r.request_id != first.request_id) {
        registry.release_request(other).await.unwrap();
    }

    // The consumer "crashes": nothing completes `first`. Once the lease
    // runs out, the request is delivered again.
    let redelivered = take_for(registry, user)
        .await
        .expect("a request whose consumer crashed is delivered again after its lease");
    assert_eq!(redelivered.request_id, first.request_id);
    assert_eq!(redelivered.attempt, 2);
    assert_eq!(redelivered.arguments, first.arguments);
    assert!(
        !registry.complete_request(&first).await.unwrap(),
        "the expired delivery no longer holds the lease"
    );
    assert!(!registry.release_request(&first).await.unwrap());
    assert!(registry.complete_request(&redelivered).await.unwrap());
    assert!(
        !registry.complete_request(&redelivered).await.unwrap(),
        "completed once"
    );

    // Released: delivered again at once, as the next attempt.
    fire.execute(&job, Duration::from_secs(30)).await.unwrap();
    let taken = take_for(registry, user).await.expect("the second request");
    assert_ne!(
        taken.request_id, first.request_id,
        "a completed request never comes back"
    );
    assert!(registry.release_request(&taken).await.unwrap());
    let back = take_for(registry, user)
        .await
        .expect("a released request comes back");
    assert_eq!(
        (back.request_id, back.attempt),
        (taken.request_id, taken.attempt + 1)
    );
    assert!(registry.complete_request(&back).await.unwrap());
    drain_requests(registry, user).await;
    cleanup(registry, user).await;
}

/// An executor that passes jobs to `inner`, except that a job whose name
/// starts with `hang` never finishes, and the first run of a job whose name
/// starts with `gate` waits until [`Scripted::open`] (later runs pass).
#[derive(Debug)]
struct Scripted {
    inner: Arc<dyn JobExecutor>,
    gate: tokio::sync::Semaphore,
    gate_used: std::sync::atomic::AtomicBool,
    started: tokio::sync::Notify,
}

impl Scripted {
    fn new(inner: Arc<dyn JobExecutor>) -> Arc<Self> {
        Arc::new(Scripted {
            inner,
            gate: tokio::sync::Semaphore::new(0),
            gate_used: std::sync::atomic::AtomicBool::new(false),
            started: tokio::sync::Notify::new(),
        })
    }

    fn open(&self) {
        self.gate.add_permits(1);
    }
}

#[async_trait::async_trait]
impl JobExecutor for Scripted {
    async fn execute(&self, job: &CronJob, timeout: Duration) -> Result<String, String> {
        self.started.notify_one();
        if job.name.as_str().starts_with("hang") {
            std::future::pending::<()>().await;
        }
        if job.name.as_str().starts_with("gate")
            && !self
                .gate_used
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
        }
        self.inner.execute(job, timeout).await
    }
}

/// Ticks `runner` at `now`, failing the check if the tick does not end
/// within `PATIENCE` (a run that never ends must not stall the runner).
async fn bounded_tick(runner: &CronRunner, now: OffsetDateTime) -> TickReport {
    tokio::time::timeout(PATIENCE, runner.tick(now))
        .await
        .expect("a tick ends even when a run hangs (the run timeout)")
        .expect("tick")
}

/// A run that outlives the runner's run timeout is recorded failed (and
/// the tick returns), and the job's next slot runs as usual.
pub async fn a_run_past_its_timeout_fails(
    registry: &dyn CronRegistry,
    store: &Arc<dyn RunStore>,
    executor: &Arc<dyn JobExecutor>,
) {
    let user = UserId::random();
    let job = registry
        .register_cron_job(job_of(user, "hang-forever", "* * * * *", harmless()))
        .await
        .unwrap();
    let slot = first_slot(&job);
    let runner = CronRunner::new(Arc::clone(store), Scripted::new(Arc::clone(executor)))
        .run_timeout(SHORT_TIMEOUT);
    let report = bounded_tick(&runner, slot).await;
    assert_eq!(
        (report.fired, report.failed, report.timed_out),
        (1, 1, 1),
        "{report:?}"
    );
    let runs = registry.history(user, &job.name, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(runs[0].ended_at.is_some());
    let message = runs[0].message.clone().unwrap_or_default();
    assert!(message.contains("timed out"), "{message}");

    // Not left `running`: the next slot is claimed and runs (and times out).
    let report = bounded_tick(&runner, slot + minutes(1)).await;
    assert_eq!((report.fired, report.skipped), (1, 0), "{report:?}");
    cleanup(registry, user).await;
}

/// While a job's run is in progress, no runner starts another run of it:
/// the slot that comes due meanwhile is recorded as skipped (naming the
/// run in progress), and the slot after the run ends runs as usual.
pub async fn at_most_one_run_of_a_job_at_a_time(
    registry: &dyn CronRegistry,
    store: &Arc<dyn RunStore>,
    executor: &Arc<dyn JobExecutor>,
) {
    let user = UserId::random();
    let job = registry
        .register_cron_job(job_of(user, "gate-slow", "* * * * *", harmless()))
        .await
        .unwrap();
    let slot = first_slot(&job);
    let scripted = Scripted::new(Arc::clone(executor));
    let a = Arc::new(CronRunner::new(Arc::clone(store), scripted.clone()).with_instance("a"));
    let b = CronRunner::new(Arc::clone(store), scripted.clone()).with_instance("b");

    let started = scripted.started.notified();
    let slow = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.tick(slot).await }
    });
    tokio::time::timeout(PATIENCE, started)
        .await
        .expect("runner a started its run");

    // b's tick of the next slot, while a's run is still in progress.
    let report = bounded_tick(&b, slot + minutes(1)).await;
    assert_eq!(
        (report.fired, report.skipped),
        (0, 1),
        "the overlapping slot is skipped: {report:?}"
    );
    let runs = registry.history(user, &job.name, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Skipped);
    assert_eq!(runs[0].scheduled_for, Some(slot + minutes(1)));
    assert!(
        runs[0]
            .message
            .clone()
            .unwrap_or_default()
            .contains("still running"),
        "{runs:?}"
    );
    assert_eq!(runs[1].status, RunStatus::Running);

    scripted.open();
    let report = tokio::time::timeout(PATIENCE, slow)
        .await
        .expect("a's run ends")
        .unwrap()
        .unwrap();
    assert_eq!((report.fired, report.failed), (1, 0), "{report:?}");
    let report = bounded_tick(&b, slot + minutes(2)).await;
    assert_eq!(
        (report.fired, report.skipped),
        (1, 0),
        "after the run ended: {report:?}"
    );
    let statuses: Vec<RunStatus> = registry
        .history(user, &job.name, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [
            RunStatus::Succeeded,
            RunStatus::Skipped,
            RunStatus::Succeeded
        ]
    );
    cleanup(registry, user).await;
}

/// A run left `running` by a runner that died is recovered as failed once
/// it is past its deadline (by any runner's tick), and the job runs again.
pub async fn runs_of_dead_runners_are_recovered(
    registry: &dyn CronRegistry,
    store: &Arc<dyn RunStore>,
    executor: &Arc<dyn JobExecutor>,
) {
    let user = UserId::random();
    let job = registry
        .register_cron_job(job_of(user, "hang-then-die", "* * * * *", harmless()))
        .await
        .unwrap();
    let slot = first_slot(&job);
    let scripted = Scripted::new(Arc::clone(executor));
    let doomed = Arc::new(
        CronRunner::new(Arc::clone(store), scripted.clone())
            .with_instance("doomed")
            .run_timeout(SHORT_TIMEOUT),
    );
    let started = scripted.started.notified();
    let crashed = tokio::spawn({
        let doomed = Arc::clone(&doomed);
        async move { doomed.tick(slot).await }
    });
    tokio::time::timeout(PATIENCE, started)
        .await
        .expect("the doomed runner started its run");
    // The runner's process dies mid-run: nothing records the run's end.
    crashed.abort();
    let _ = crashed.await;
    let runs = registry.history(user, &job.name, 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Running, "{runs:?}");

    // Another runner's tick recovers it once its deadline has passed.
    let survivor = CronRunner::new(Arc::clone(store), Arc::clone(executor))
        .with_instance("survivor")
        .recovery_grace(Duration::ZERO);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut recovered = 0;
    let mut tick = slot + minutes(1);
    while recovered == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead runner's run was never recovered: {:?}",
            registry.history(user, &job.name, 10).await.unwrap()
        );
        let report = bounded_tick(&survivor, tick).await;
        recovered = report.recovered;
        tick += minutes(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = registry.history(user, &job.name, 20).await.unwrap();
    let first = runs
        .iter()
        .find(|r| r.scheduled_for == Some(slot))
        .expect("the dead run");
    assert_eq!(first.status, RunStatus::Failed, "{runs:?}");
    assert!(first.ended_at.is_some());
    assert!(
        first
            .message
            .clone()
            .unwrap_or_default()
            .contains("abandoned"),
        "{first:?}"
    );
    assert_eq!(
        runs[0].status,
        RunStatus::Succeeded,
        "the tick that recovered the run also ran the job: {runs:?}"
    );
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Running),
        "{runs:?}"
    );
    cleanup(registry, user).await;
}

/// Under the default policy a runner coming back after every runner was
/// down runs a job once for its most recent missed slot (however many
/// runners come back); when the job is due in the current slot anyway, the
/// missed slot is recorded as missed and only the current one runs.
pub async fn missed_slots_run_once_on_recovery(
    registry: &dyn CronRegistry,
    store: &Arc<dyn RunStore>,
    executor: &Arc<dyn JobExecutor>,
) {
    let user = UserId::random();
    let job = registry
        .register_cron_job(job_of(user, "hourly", "0 * * * *", harmless()))
        .await
        .unwrap();
    let first = first_slot(&job);
    let a = CronRunner::new(Arc::clone(store), Arc::clone(executor)).with_instance("a");
    let b = CronRunner::new(Arc::clone(store), Arc::clone(executor)).with_instance("b");
    let report = bounded_tick(&a, first).await;
    assert_eq!(
        (report.fired, report.caught_up, report.missed),
        (1, 0, 0),
        "{report:?}"
    );

    // Every runner is down for three slots; two come back at once, between
    // slots.
    let back = first + minutes(3 * 60 + 30);
    let (ra, rb) = tokio::join!(bounded_tick(&a, back), bounded_tick(&b, back));
    assert_eq!(
        ra.caught_up + rb.caught_up,
        1,
        "one catch-up run: {ra:?} {rb:?}"
    );
    assert_eq!(ra.fired + rb.fired, 1, "{ra:?} {rb:?}");
    let runs = registry.history(user, &job.name, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[0].scheduled_for,
        Some(first + minutes(3 * 60)),
        "the most recent missed slot"
    );
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    let message = runs[0].message.clone().unwrap_or_default();
    assert!(message.contains("3 missed"), "{message}");
    // Handled once: later ticks between slots do nothing more.
    let report = bounded_tick(&a, back + minutes(1)).await;
    assert_eq!(
        (report.fired, report.caught_up, report.missed),
        (0, 0, 0),
        "{report:?}"
    );

    // Down again; back exactly at a due slot: the current run is the
    // catch-up, the missed slot is recorded.
    let due = first + minutes(5 * 60);
    let report = bounded_tick(&b, due).await;
    assert_eq!(
        (report.fired, report.caught_up, report.missed),
        (1, 0, 1),
        "{report:?}"
    );
    let runs = registry.history(user, &job.name, 10).await.unwrap();
    let slots: Vec<_> = runs.iter().map(|r| (r.scheduled_for, r.status)).collect();
    assert_eq!(
        slots,
        [
            (Some(due), RunStatus::Succeeded),
            (Some(first + minutes(4 * 60)), RunStatus::Missed),
            (Some(first + minutes(3 * 60)), RunStatus::Succeeded),
            (Some(first), RunStatus::Succeeded),
        ]
    );
    cleanup(registry, user).await;
}

/// Under [`MissedRunPolicy::Skip`] missed slots are not run; the most
/// recent one is recorded as missed, with how many were missed.
pub async fn missed_slots_are_recorded_when_skipped(
    registry: &dyn CronRegistry,
    store: &Arc<dyn RunStore>,
    executor: &Arc<dyn JobExecutor>,
) {
    let user = UserId::random();
    let job = registry
        .register_cron_job(job_of(user, "skipping", "*/10 * * * *", harmless()))
        .await
        .unwrap();
    let first = first_slot(&job);
    let runner =
        CronRunner::new(Arc::clone(store), Arc::clone(executor)).missed_runs(MissedRunPolicy::Skip);
    assert_eq!(bounded_tick(&runner, first).await.fired, 1);
    let report = bounded_tick(&runner, first + minutes(35)).await;
    assert_eq!((report.fired, report.missed), (0, 1), "{report:?}");
    let runs = registry.history(user, &job.name, 10).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        (runs[0].scheduled_for, runs[0].status),
        (Some(first + minutes(30)), RunStatus::Missed)
    );
    assert!(
        runs[0]
            .message
            .clone()
            .unwrap_or_default()
            .contains("3 missed"),
        "{runs:?}"
    );
    assert!(runs[0].ended_at.is_some());
    assert_eq!(
        bounded_tick(&runner, first + minutes(36)).await.missed,
        0,
        "recorded once"
    );
    cleanup(registry, user).await;
}
