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

/// Where a [`CronRunner`] finds jobs and records runs. Implemented by
/// `PgCronRegistry` (runner mode) and [`crate::InMemoryCronRegistry`].
#[async_trait]
pub trait RunStore: Send + Sync + std::fmt::Debug {
    /// Active jobs this runner is responsible for (scheduler `runner`).
    async fn runnable_jobs(&self) -> Result<Vec<CronJob>>;

    /// Claims the run of `job` for `slot`: `Some(run_id)` if this call
    /// created the run, `None` if another runner already did (or the job is
    /// gone or paused). At most one claim per (job, slot) ever succeeds.
    async fn claim_run(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
    ) -> Result<Option<i64>>;

    /// Records how a claimed run ended.
    async fn finish_run(
        &self,
        job: &CronJob,
        run_id: i64,
        status: RunStatus,
        message: &str,
    ) -> Result<()>;
}

/// What firing a job does. `SqlExecutor` (feature `postgres`) executes the
/// job's rendered SQL in the application database, exactly what pg_cron
/// would run; [`crate::InMemoryCronRegistry`] carries commands out in memory.
#[async_trait]
pub trait JobExecutor: Send + Sync + std::fmt::Debug {
    /// Runs the job once: `Ok(message)` on success, `Err(message)` on
    /// failure (both end up in the run history).
    async fn execute(&self, job: &CronJob) -> std::result::Result<String, String>;
}

/// What one [`CronRunner::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Jobs whose slot was due at this tick and not yet seen by this runner.
    pub due: usize,
    /// Runs this runner claimed and executed.
    pub fired: usize,
    /// Of those, how many failed.
    pub failed: usize,
    /// Due jobs another runner had already claimed.
    pub claimed_elsewhere: usize,
    /// Store errors (logged; the slot is retried at the next tick).
    pub errors: usize,
}

/// Fires due jobs of a [`RunStore`] through a [`JobExecutor`].
///
/// Time is explicit: [`CronRunner::tick`] takes `now`, so tests drive the
/// runner without waiting for wall-clock minutes; [`CronRunner::spawn`]
/// ticks with the real clock. A job is due at `now` when its schedule fires
/// in `now`'s slot (its minute, or its `N`-second step): a runner that
/// ticks at least once per slot fires every run, and one that was down
/// skips the runs it missed, as pg_cron does. Several runners over one
/// store never run one slot twice: the store's claim decides.
#[derive(Debug)]
pub struct CronRunner {
    store: Arc<dyn RunStore>,
    executor: Arc<dyn JobExecutor>,
    instance: String,
    /// (job id, slot) pairs this runner has settled, so ticking every second
    /// does not re-claim a minute-long slot sixty times.
    seen: Mutex<HashSet<(i64, i64)>>,
}

/// Keep settled slots this long (seconds) before forgetting them.
const SEEN_WINDOW: i64 = 180;

impl CronRunner {
    /// A runner with a random instance name.
    pub fn new(store: Arc<dyn RunStore>, executor: Arc<dyn JobExecutor>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        CronRunner {
            store,
            executor,
            instance: format!("runner-{}", &id[..12]),
            seen: Mutex::new(HashSet::new()),
        }
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

    /// Fires every job due at `now` that no runner has claimed yet and waits
    /// for those runs to finish. Errs only if the jobs cannot be listed.
    #[tracing::instrument(name = "cron.runner.tick", skip(self), fields(runner = %self.instance, due, fired))]
    pub async fn tick(&self, now: OffsetDateTime) -> Result<TickReport> {
        let jobs = self.store.runnable_jobs().await?;
        let mut report = TickReport::default();
        let mut claims = Vec::new();
        for job in jobs {
            let slot = job.schedule.slot_of(now);
            if !job.schedule.fires_at(slot) || self.was_seen(job.id, slot) {
                continue;
            }
            report.due += 1;
            match self.store.claim_run(&job, slot, &self.instance).await {
                Ok(Some(run_id)) => {
                    self.mark_seen(job.id, slot, now);
                    claims.push((job, run_id));
                }
                Ok(None) => {
                    self.mark_seen(job.id, slot, now);
                    report.claimed_elsewhere += 1;
                }
                Err(error) => {
                    tracing::warn!(job = job.id, %error, "could not claim a cron run");
                    report.errors += 1;
                }
            }
        }
        // Claimed runs execute concurrently: one slow job must not delay
        // the others past their slot.
        let mut running = JoinSet::new();
        for (job, run_id) in claims {
            let (store, executor) = (Arc::clone(&self.store), Arc::clone(&self.executor));
            running.spawn(async move {
                let (status, message) = match executor.execute(&job).await {
                    Ok(message) => (RunStatus::Succeeded, message),
                    Err(message) => (RunStatus::Failed, message),
                };
                let recorded = store.finish_run(&job, run_id, status, &message).await;
                if let Err(error) = &recorded {
                    tracing::warn!(job = job.id, run_id, %error, "could not record a cron run");
                }
                (status, recorded.is_ok())
            });
        }
        while let Some(outcome) = running.join_next().await {
            report.fired += 1;
            match outcome {
                Ok((status, recorded)) => {
                    if status == RunStatus::Failed {
                        report.failed += 1;
                    }
                    if !recorded {
                        report.errors += 1;
                    }
                }
                // A panicking executor: the run stays `running` in history.
                Err(_) => {
                    report.failed += 1;
                    report.errors += 1;
                }
            }
        }
        let span = tracing::Span::current();
        span.record("due", report.due);
        span.record("fired", report.fired);
        Ok(report)
    }

    /// Ticks with the wall clock every `interval` (one second suits both
    /// minute and `N seconds` schedules) until the handle is shut down.
    pub fn spawn(self, interval: Duration) -> RunnerHandle {
        let runner = Arc::new(self);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        if let Err(error) = runner.tick(OffsetDateTime::now_utc()).await {
                            tracing::warn!(%error, "cron runner tick failed");
                        }
                    }
                }
            }
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

/// Stops a runner started with [`CronRunner::spawn`].
#[derive(Debug)]
pub struct RunnerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunnerHandle {
    /// Stops ticking and waits for the current tick to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
