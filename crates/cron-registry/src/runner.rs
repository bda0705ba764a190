//! The in-process runner: fires due jobs when pg_cron is not installed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::Result;
use crate::model::{CronJob, RunStatus};

/// How long a run may take before the runner stops waiting for it and
/// records it failed, unless configured ([`CronRunner::run_timeout`]): 10
/// minutes.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How long after its deadline a run still marked `running` is taken for
/// abandoned by a dead runner and recovered as failed, unless configured
/// ([`CronRunner::recovery_grace`]): 30 seconds.
pub const DEFAULT_RECOVERY_GRACE: Duration = Duration::from_secs(30);

/// How far back a runner looks for slots missed while no runner was up,
/// unless configured ([`CronRunner::catch_up_window`]): 24 hours.
pub const DEFAULT_CATCH_UP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// An active job the runner fires, with the slot of its latest recorded
/// run (of any status), from which missed slots are found.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnableJob {
    /// The job.
    pub job: CronJob,
    /// The slot of its latest run in history, if it has one.
    pub last_slot: Option<OffsetDateTime>,
}

/// What [`RunStore::claim_run`] decided for one (job, slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// This call created the run (status `running`, with a deadline); the
    /// caller executes it and records the end with [`RunStore::finish_run`].
    Run(i64),
    /// The slot already has a run or record (another runner's claim).
    Taken,
    /// Another run of the job (`running`, the id) has not finished, so this
    /// call recorded the slot as [`RunStatus::Skipped`] instead.
    Overlap {
        /// The run still in progress.
        running: i64,
    },
    /// The job is gone, paused, or no longer fired by the runner.
    Gone,
}

/// What a runner does about slots that passed while no runner was up.
///
/// A slot counts as missed when it came due after the later of the job's
/// latest recorded run, its last change or resume (`updated_at`), and the
/// start of the catch-up window ([`CronRunner::catch_up_window`]), before
/// the slot the runner is in, and no run of it was recorded. Only cron
/// forms are caught up: an `N seconds` job's next slot is under a minute
/// away anyway. Whatever the policy, the most recent missed slot gets one
/// history entry, so a recovery is visible and handled once however many
/// runners start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissedRunPolicy {
    /// Run the job once on recovery for its most recent missed slot
    /// (recorded with that slot, its message naming how many slots were
    /// missed), unless the job is due in the current slot anyway: then the
    /// current run is the catch-up and the missed slot is recorded as
    /// [`RunStatus::Missed`]. Earlier missed slots are not run.
    #[default]
    RunOnce,
    /// Run nothing for missed slots; record the most recent one as
    /// [`RunStatus::Missed`] (its message names how many were missed).
    Skip,
}

/// Where a [`CronRunner`] finds jobs and records runs. Implemented by
/// `PgCronRegistry` (runner mode) and [`crate::InMemoryCronRegistry`].
///
/// Every decision that must hold across runners is the store's, made
/// atomically: one record per (job, slot), and at most one `running` run
/// per job.
#[async_trait]
pub trait RunStore: Send + Sync + std::fmt::Debug {
    /// Active jobs this runner is responsible for (scheduler `runner`),
    /// with the slot of their latest run.
    async fn runnable_jobs(&self) -> Result<Vec<RunnableJob>>;

    /// Claims the run of `job` for `slot`, to end within `timeout`. At most
    /// one record per (job, slot) is ever created, and at most one run per
    /// job is `running` at a time: if one is (and has not been recovered),
    /// the slot is recorded as skipped ([`Claim::Overlap`]).
    async fn claim_run(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        timeout: Duration,
    ) -> Result<Claim>;

    /// Records `slot` of `job` as [`RunStatus::Missed`] with `message`;
    /// `false` if the slot already has a record (or the job is gone).
    async fn record_missed(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        message: &str,
    ) -> Result<bool>;

    /// Records how a claimed run ended. A run no longer `running` (one
    /// recovered meanwhile) keeps its recorded end.
    async fn finish_run(
        &self,
        job: &CronJob,
        run_id: i64,
        status: RunStatus,
        message: &str,
    ) -> Result<()>;

    /// Marks failed every run still `running` more than `grace` after its
    /// deadline (its runner died or lost the store), with a message saying
    /// so; returns how many. Spans all users (administrative).
    async fn recover_runs(&self, grace: Duration) -> Result<u64>;
}

/// What firing a job does. `SqlExecutor` (feature `postgres`) executes the
/// job's rendered SQL in the application database, exactly what pg_cron
/// would run; [`crate::InMemoryCronRegistry`] carries commands out in memory.
#[async_trait]
pub trait JobExecutor: Send + Sync + std::fmt::Debug {
    /// Runs the job once: `Ok(message)` on success, `Err(message)` on
    /// failure (both end up in the run history). Should give up within
    /// `timeout` (e.g. a statement timeout): the runner stops waiting then,
    /// records the run failed, and lets the job's next slot run.
    async fn execute(
        &self,
        job: &CronJob,
        timeout: Duration,
    ) -> std::result::Result<String, String>;
}

/// What one [`CronRunner::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TickReport {
    /// Jobs whose slot was due at this tick and not yet seen by this runner.
    pub due: usize,
    /// Runs this runner claimed and executed (catch-up runs included).
    pub fired: usize,
    /// Of those, how many failed (timed-out ones included).
    pub failed: usize,
    /// Of the failed, how many ran past the run timeout.
    pub timed_out: usize,
    /// Due jobs another runner had already claimed.
    pub claimed_elsewhere: usize,
    /// Due slots recorded as skipped because the job's previous run was
    /// still running (the overlap policy).
    pub skipped: usize,
    /// Catch-up runs fired for a missed slot ([`MissedRunPolicy::RunOnce`]).
    pub caught_up: usize,
    /// Missed slots recorded as [`RunStatus::Missed`].
    pub missed: usize,
    /// Runs of dead runners recovered as failed at this tick.
    pub recovered: u64,
    /// Store errors (logged; the slot is retried at the next tick).
    pub errors: usize,
}

/// Fires due jobs of a [`RunStore`] through a [`JobExecutor`].
///
/// Time is explicit: [`CronRunner::tick`] takes `now`, so tests drive the
/// runner without waiting for wall-clock minutes; [`CronRunner::spawn`]
/// ticks with the real clock. A job is due at `now` when its schedule fires
/// in `now`'s slot (its minute, or its `N`-second step). Several runners
/// over one store never record one slot twice: the store's claim decides.
///
/// # Policies
/// - **Timeouts**: a run gets [`CronRunner::run_timeout`]
///   ([`DEFAULT_RUN_TIMEOUT`], 10 minutes); the executor is told (the SQL
///   executor sets it as the statement timeout) and past it the runner
///   abandons the run and records it failed (`timed out after …`).
/// - **Overlaps**: at most one run of a job is `running` at a time, across
///   all runners: a slot that comes due while the previous run is still
///   running is not run but recorded as [`RunStatus::Skipped`] (naming the
///   run in progress). Slots are skipped, never queued, as pg_cron does.
/// - **Dead runners**: each tick first recovers runs still `running`
///   [`CronRunner::recovery_grace`] ([`DEFAULT_RECOVERY_GRACE`], 30 s)
///   after their deadline, marking them failed (`abandoned: …`); such a run
///   blocks its job's next slots only until then.
/// - **Missed slots** (no runner was up): see [`MissedRunPolicy`]; by
///   default the job runs once on recovery for its most recent missed slot,
///   looking back at most [`CronRunner::catch_up_window`] (24 hours).
///
/// A tick never waits for one job before claiming the others' slots: runs
/// execute concurrently. [`CronRunner::tick`] returns when this tick's runs
/// have ended (each within its timeout); the loop of [`CronRunner::spawn`]
/// does not wait for them, so a slow job never delays other jobs' slots.
#[derive(Debug)]
pub struct CronRunner {
    store: Arc<dyn RunStore>,
    executor: Arc<dyn JobExecutor>,
    instance: String,
    run_timeout: Duration,
    recovery_grace: Duration,
    missed_runs: MissedRunPolicy,
    catch_up_window: Duration,
    /// (job id, slot) pairs this runner has settled, so ticking every second
    /// does not re-claim a minute-long slot sixty times.
    seen: Mutex<HashSet<(i64, i64)>>,
}

/// Keep settled slots this long (seconds) before forgetting them.
const SEEN_WINDOW: i64 = 180;

/// A run this runner claimed and is to execute.
struct PlannedRun {
    job: CronJob,
    run_id: i64,
    /// For a catch-up run: what it catches up, appended to its message.
    note: Option<String>,
}

/// How one run ended.
struct RunOutcome {
    status: RunStatus,
    timed_out: bool,
    recorded: bool,
}

/// Slots of one job that came due while no runner was up.
struct Missed {
    count: usize,
    earliest: OffsetDateTime,
    latest: OffsetDateTime,
}

impl Missed {
    fn describe(&self) -> String {
        let slots = if self.count == 1 { "slot" } else { "slots" };
        if self.count == 1 {
            format!("{} missed {slots} ({})", self.count, self.latest)
        } else {
            format!(
                "{} missed {slots} ({} to {})",
                self.count, self.earliest, self.latest
            )
        }
    }
}

impl CronRunner {
    /// A runner with a random instance name and the default policies.
    pub fn new(store: Arc<dyn RunStore>, executor: Arc<dyn JobExecutor>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        CronRunner {
            store,
            executor,
            instance: format!("runner-{}", &id[..12]),
            run_timeout: DEFAULT_RUN_TIMEOUT,
            recovery_grace: DEFAULT_RECOVERY_GRACE,
            missed_runs: MissedRunPolicy::default(),
            catch_up_window: DEFAULT_CATCH_UP_WINDOW,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// How long a run may take ([`DEFAULT_RUN_TIMEOUT`] unless set): the
    /// executor is told, and past it the runner stops waiting and records
    /// the run failed (`timed out after …`). At least one millisecond.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long past its deadline a run left `running` is presumed
    /// abandoned by a dead runner and recovered as failed
    /// ([`DEFAULT_RECOVERY_GRACE`] unless set).
    pub fn recovery_grace(mut self, grace: Duration) -> Self {
        self.recovery_grace = grace;
        self
    }

    /// What to do about slots missed while no runner was up
    /// ([`MissedRunPolicy::RunOnce`] unless set).
    pub fn missed_runs(mut self, policy: MissedRunPolicy) -> Self {
        self.missed_runs = policy;
        self
    }

    /// How far back missed slots are looked for
    /// ([`DEFAULT_CATCH_UP_WINDOW`] unless set); zero turns catching up off.
    pub fn catch_up_window(mut self, window: Duration) -> Self {
        self.catch_up_window = window;
        self
    }

    /// Names this runner instance (recorded with each run it claims).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// This runner's instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Recovers dead runners' runs, handles missed slots, fires every job
    /// due at `now` that no runner has recorded yet, and waits for this
    /// tick's runs to end (each within the run timeout). Errs only if the
    /// jobs cannot be listed.
    #[tracing::instrument(name = "cron.runner.tick", skip(self), fields(runner = %self.instance, due, fired))]
    pub async fn tick(&self, now: OffsetDateTime) -> Result<TickReport> {
        let (mut report, planned) = self.plan(now).await?;
        let mut running = JoinSet::new();
        for run in planned {
            running.spawn(self.run(run));
        }
        while let Some(outcome) = running.join_next().await {
            report.absorb(outcome);
        }
        let span = tracing::Span::current();
        span.record("due", report.due);
        span.record("fired", report.fired);
        Ok(report)
    }

    /// Everything of a tick but the runs themselves: recovery, missed
    /// slots, claims. Returns the claimed runs to execute.
    async fn plan(&self, now: OffsetDateTime) -> Result<(TickReport, Vec<PlannedRun>)> {
        let mut report = TickReport::default();
        match self.store.recover_runs(self.recovery_grace).await {
            Ok(recovered) => report.recovered = recovered,
            Err(error) => {
                tracing::warn!(%error, "could not recover abandoned cron runs");
                report.errors += 1;
            }
        }
        let jobs = self.store.runnable_jobs().await?;
        let mut planned = Vec::new();
        for RunnableJob { job, last_slot } in jobs {
            let slot = job.schedule.slot_of(now);
            let due = job.schedule.fires_at(slot) && !self.was_seen(job.id, slot);
            if let Some(missed) = self.missed(&job, last_slot, slot)
                && !self.was_seen(job.id, missed.latest)
            {
                self.handle_missed(&job, missed, due, now, &mut report, &mut planned)
                    .await;
            }
            if !due {
                continue;
            }
            report.due += 1;
            if let Some(run_id) = self.claim(&job, slot, now, &mut report).await {
                planned.push(PlannedRun {
                    job,
                    run_id,
                    note: None,
                });
            }
        }
        Ok((report, planned))
    }

    /// Claims `slot` of `job`; the run id if this runner is to run it.
    async fn claim(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        now: OffsetDateTime,
        report: &mut TickReport,
    ) -> Option<i64> {
        match self
            .store
            .claim_run(job, slot, &self.instance, self.run_timeout)
            .await
        {
            Ok(claim) => {
                self.mark_seen(job.id, slot, now);
                match claim {
                    Claim::Run(run_id) => return Some(run_id),
                    Claim::Overlap { running } => {
                        tracing::info!(job = job.id, %slot, running, "cron slot skipped: the previous run is still running");
                        report.skipped += 1;
                    }
                    Claim::Taken => report.claimed_elsewhere += 1,
                    Claim::Gone => {}
                }
            }
            Err(error) => {
                tracing::warn!(job = job.id, %error, "could not claim a cron run");
                report.errors += 1;
            }
        }
        None
    }

    /// The slots of `job` that came due after the later of `last_slot`,
    /// its last change and the catch-up window's start, and before `slot`;
    /// `None` if there are none (the usual case: one preview computed).
    /// Interval (`N seconds`) schedules are not caught up.
    fn missed(
        &self,
        job: &CronJob,
        last_slot: Option<OffsetDateTime>,
        slot: OffsetDateTime,
    ) -> Option<Missed> {
        if job.schedule.interval_seconds().is_some() || self.catch_up_window.is_zero() {
            return None;
        }
        let window = time::Duration::try_from(self.catch_up_window).unwrap_or(time::Duration::MAX);
        let mut from = slot.saturating_sub(window).max(job.updated_at);
        if let Some(last) = last_slot {
            from = from.max(last);
        }
        // The usual case, every tick: the next slot after `from` is the
        // current one (or later), so nothing was missed. One preview.
        if job
            .schedule
            .next_runs_after(from, 1)
            .first()
            .is_none_or(|&next| next >= slot)
        {
            return None;
        }
        let mut missed: Option<Missed> = None;
        // Bounded: the window holds at most a day of minutes by default, and
        // every batch moves `from` forward.
        loop {
            let batch = job.schedule.next_runs_after(from, 256);
            let mut ended = batch.len() < 256;
            for &t in &batch {
                if t >= slot {
                    ended = true;
                    break;
                }
                match &mut missed {
                    Some(m) => {
                        m.count += 1;
                        m.latest = t;
                    }
                    None => {
                        missed = Some(Missed {
                            count: 1,
                            earliest: t,
                            latest: t,
                        })
                    }
                }
            }
            match batch.last() {
                Some(&last) if !ended => from = last,
                _ => return missed,
            }
        }
    }

    /// Applies the missed-run policy to `job`'s missed slots; `due`: the
    /// job is due in the current slot too.
    async fn handle_missed(
        &self,
        job: &CronJob,
        missed: Missed,
        due: bool,
        now: OffsetDateTime,
        report: &mut TickReport,
        planned: &mut Vec<PlannedRun>,
    ) {
        let described = missed.describe();
        if self.missed_runs == MissedRunPolicy::RunOnce && !due {
            if let Some(run_id) = self.claim(job, missed.latest, now, report).await {
                tracing::info!(
                    job = job.id,
                    missed = missed.count,
                    "cron catch-up run for missed slots"
                );
                report.caught_up += 1;
                planned.push(PlannedRun {
                    job: job.clone(),
                    run_id,
                    note: Some(format!("catch-up run after {described}: no runner was up")),
                });
            }
            return;
        }
        let message = if due {
            format!("{described}: no runner was up; the current slot's run catches up")
        } else {
            format!("{described}: no runner was up; not run (policy: skip)")
        };
        match self
            .store
            .record_missed(job, missed.latest, &self.instance, &message)
            .await
        {
            Ok(recorded) => {
                self.mark_seen(job.id, missed.latest, now);
                if recorded {
                    tracing::info!(job = job.id, missed = missed.count, "cron slots missed");
                    report.missed += 1;
                }
            }
            Err(error) => {
                tracing::warn!(job = job.id, %error, "could not record missed cron slots");
                report.errors += 1;
            }
        }
    }

    /// Executes a claimed run within the run timeout and records its end.
    /// The executor runs in its own task: a timeout aborts it, and a panic
    /// is recorded as a failure instead of leaving the run `running`.
    fn run(&self, planned: PlannedRun) -> impl Future<Output = RunOutcome> + Send + 'static {
        let (store, executor) = (Arc::clone(&self.store), Arc::clone(&self.executor));
        let timeout = self.run_timeout;
        async move {
            let PlannedRun { job, run_id, note } = planned;
            let task = {
                let job = job.clone();
                tokio::spawn(async move { executor.execute(&job, timeout).await })
            };
            let abort = task.abort_handle();
            let (status, mut message, timed_out) = match tokio::time::timeout(timeout, task).await {
                Ok(Ok(Ok(message))) => (RunStatus::Succeeded, message, false),
                Ok(Ok(Err(message))) => (RunStatus::Failed, message, false),
                Ok(Err(join)) => (
                    RunStatus::Failed,
                    format!("the executor failed: {join}"),
                    false,
                ),
                Err(_) => {
                    abort.abort();
                    (
                        RunStatus::Failed,
                        format!("timed out after {timeout:?}"),
                        true,
                    )
                }
            };
            if let Some(note) = note {
                message = format!("{message}; {note}");
            }
            let recorded = store.finish_run(&job, run_id, status, &message).await;
            if let Err(error) = &recorded {
                tracing::warn!(job = job.id, run_id, %error, "could not record a cron run");
            }
            RunOutcome {
                status,
                timed_out,
                recorded: recorded.is_ok(),
            }
        }
    }

    /// Ticks with the wall clock every `interval` (one second suits both
    /// minute and `N seconds` schedules) until the handle is shut down.
    /// Runs execute in the background: a tick never waits for the runs of
    /// an earlier one (the overlap policy keeps a job from running twice).
    pub fn spawn(self, interval: Duration) -> RunnerHandle {
        let runner = Arc::new(self);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut running = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        while running.try_join_next().is_some() {}
                        match runner.plan(OffsetDateTime::now_utc()).await {
                            Ok((_, planned)) => {
                                for run in planned {
                                    running.spawn(runner.run(run));
                                }
                            }
                            Err(error) => tracing::warn!(%error, "cron runner tick failed"),
                        }
                    }
                }
            }
            // Runs in flight end within their timeout; let them record it.
            while running.join_next().await.is_some() {}
        });
        RunnerHandle { stop, task }
    }

    fn was_seen(&self, job: i64, slot: OffsetDateTime) -> bool {
        self.seen_set().contains(&(job, slot.unix_timestamp()))
    }

    fn mark_seen(&self, job: i64, slot: OffsetDateTime, now: OffsetDateTime) {
        let mut seen = self.seen_set();
        let horizon = now.unix_timestamp() - SEEN_WINDOW;
        seen.retain(|&(_, s)| s >= horizon);
        seen.insert((job, slot.unix_timestamp()));
    }

    fn seen_set(&self) -> std::sync::MutexGuard<'_, HashSet<(i64, i64)>> {
        // The set is only a cache of settled claims; a poisoned one is still usable.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TickReport {
    fn absorb(&mut self, outcome: std::result::Result<RunOutcome, tokio::task::JoinError>) {
        self.fired += 1;
        match outcome {
            Ok(outcome) => {
                if outcome.status == RunStatus::Failed {
                    self.failed += 1;
                }
                if outcome.timed_out {
                    self.timed_out += 1;
                }
                if !outcome.recorded {
                    self.errors += 1;
                }
            }
            // The recording task itself panicked: the run stays `running`
            // until recovered.
            Err(_) => {
                self.failed += 1;
                self.errors += 1;
            }
        }
    }
}

/// Stops a runner started with [`CronRunner::spawn`].
#[derive(Debug)]
pub struct RunnerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunnerHandle {
    /// Stops ticking and waits for the runs in flight to end (each within
    /// the run timeout) and be recorded.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
