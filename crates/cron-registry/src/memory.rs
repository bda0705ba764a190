//! [`InMemoryCronRegistry`]: jobs in process memory, fired by the runner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

use crate::command::JobCommand;
use crate::error::Result;
use crate::model::{
    CronJob, CronRequest, HistoryScope, JobRun, NewJob, ReconcileReport, RequestKind, RunStatus,
    SchedulerKind,
};
use crate::name::JobName;
use crate::registry::{CronRegistry, DEFAULT_REQUEST_LEASE, MAX_HISTORY};
use crate::runner::{Claim, JobExecutor, RunStore, RunnableJob};
use crate::schedule::PgCronVersion;

/// Jobs kept in process memory, fired by a [`crate::CronRunner`]: the
/// embedded default when no database is configured, and a test double that
/// behaves like `PgCronRegistry` in runner mode (both pass [`crate::testing`]).
///
/// It is its own [`RunStore`] and [`JobExecutor`]: `RunOperation` and
/// `RefreshRecommendations` queue requests (leased by
/// [`CronRegistry::take_requests`] like PostgreSQL's), `PruneHistory`
/// prunes the user's runs, and `CallFunction` fails (there is no SQL in
/// memory). Leases and run deadlines follow the wall clock.
///
/// One mutex guards everything, so each call is atomic; calls never await
/// while holding it.
#[derive(Debug)]
pub struct InMemoryCronRegistry {
    syntax: PgCronVersion,
    request_lease: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    jobs: BTreeMap<(UserId, JobName), CronJob>,
    next_run: i64,
    runs: Vec<Run>,
    /// (job id, slot) pairs with a record: like the runs table's primary
    /// key, the claim of a slot (kept when retention drops the run).
    claimed: HashSet<(i64, i64)>,
    /// The latest slot settled per job (the registry's `last_slot`).
    last_slots: HashMap<i64, OffsetDateTime>,
    next_request: i64,
    requests: BTreeMap<i64, Queued>,
}

#[derive(Debug, Clone)]
struct Run {
    job_id: i64,
    user_id: UserId,
    run: JobRun,
    runner: String,
    deadline: OffsetDateTime,
}

/// A queued request and its lease (`None`: not leased).
#[derive(Debug, Clone)]
struct Queued {
    request: CronRequest,
    leased_until: Option<OffsetDateTime>,
}

/// `t + d`, saturating (a lease or timeout of "forever" never overflows).
fn after(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

impl State {
    /// Whether `job` is still registered, active, and this exact job.
    fn still_runnable(&self, job: &CronJob) -> bool {
        self.jobs
            .get(&(job.user_id, job.name.clone()))
            .is_some_and(|j| j.id == job.id && j.active && j.scheduler == SchedulerKind::Runner)
    }

    /// Records `slot` of `job` (the claim); the new run's id, or `None` if
    /// the slot already has a record.
    fn record(
        &mut self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        status: RunStatus,
        message: Option<String>,
        deadline: OffsetDateTime,
    ) -> Option<i64> {
        if !self.claimed.insert((job.id, slot.unix_timestamp())) {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        self.next_run += 1;
        let run_id = self.next_run;
        self.runs.push(Run {
            job_id: job.id,
            user_id: job.user_id,
            run: JobRun {
                run_id,
                status,
                scheduled_for: Some(slot),
                started_at: Some(now),
                ended_at: (status != RunStatus::Running).then_some(now),
                message,
            },
            runner: runner.to_string(),
            deadline,
        });
        let last = self.last_slots.entry(job.id).or_insert(slot);
        *last = (*last).max(slot);
        Some(run_id)
    }
}

impl Default for InMemoryCronRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryCronRegistry {
    /// An empty registry accepting pg_cron 1.4 syntax, so schedules stay
    /// valid when the application later moves to pg_cron on Debian bookworm.
    pub fn new() -> Self {
        Self::with_syntax(PgCronVersion::V1_4)
    }

    /// An empty registry accepting the schedule syntax of pg_cron `syntax`
    /// (the runner itself understands every form).
    pub fn with_syntax(syntax: PgCronVersion) -> Self {
        InMemoryCronRegistry {
            syntax,
            request_lease: DEFAULT_REQUEST_LEASE,
            state: Mutex::new(State::default()),
        }
    }

    /// Sets how long a taken request stays leased to its consumer
    /// ([`DEFAULT_REQUEST_LEASE`] unless set); see
    /// [`CronRegistry::take_requests`].
    pub fn with_request_lease(mut self, lease: Duration) -> Self {
        self.request_lease = lease;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every write below is computed first and applied without a
        // panicking path, so a poisoned lock holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CronRegistry for InMemoryCronRegistry {
    fn scheduler(&self) -> SchedulerKind {
        SchedulerKind::Runner
    }

    fn syntax(&self) -> PgCronVersion {
        self.syntax
    }

    async fn register_cron_job(&self, job: NewJob) -> Result<CronJob> {
        job.schedule.check_version(self.syntax)?;
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let key = (job.user_id, job.name.clone());
        if let Some(existing) = state.jobs.get_mut(&key) {
            let changed = existing.operation_id != job.operation_id
                || existing.schedule != job.schedule
                || existing.command != job.command
                || existing.active != job.active;
            existing.operation_id = job.operation_id;
            existing.schedule = job.schedule;
            existing.command = job.command;
            existing.active = job.active;
            if changed {
                existing.updated_at = now;
            }
            return Ok(existing.clone());
        }
        state.next_id += 1;
        let created = CronJob {
            id: state.next_id,
            user_id: job.user_id,
            name: job.name,
            operation_id: job.operation_id,
            schedule: job.schedule,
            command: job.command,
            active: job.active,
            scheduler: SchedulerKind::Runner,
            pg_cron_job_id: None,
            created_at: now,
            updated_at: now,
        };
        state.jobs.insert(key, created.clone());
        Ok(created)
    }

    async fn unregister_cron_job(&self, user: UserId, name: &JobName) -> Result<bool> {
        let mut state = self.state();
        let Some(job) = state.jobs.remove(&(user, name.clone())) else {
            return Ok(false);
        };
        // Like the ON DELETE CASCADE of opsdeck.cron_job_runs.
        state.runs.retain(|r| r.job_id != job.id);
        state.last_slots.remove(&job.id);
        Ok(true)
    }

    async fn check_cron_job_exists(&self, user: UserId, name: &JobName) -> Result<bool> {
        Ok(self.state().jobs.contains_key(&(user, name.clone())))
    }

    async fn get(&self, user: UserId, name: &JobName) -> Result<Option<CronJob>> {
        Ok(self.state().jobs.get(&(user, name.clone())).cloned())
    }

    async fn list_for_user(&self, user: UserId) -> Result<Vec<CronJob>> {
        Ok(self
            .state()
            .jobs
            .values()
            .filter(|j| j.user_id == user)
            .cloned()
            .collect())
    }

    async fn list_for_operation(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Vec<CronJob>> {
        Ok(self
            .state()
            .jobs
            .values()
            .filter(|j| j.user_id == user && &j.operation_id == operation)
            .cloned()
            .collect())
    }

    async fn set_active(
        &self,
        user: UserId,
        name: &JobName,
        active: bool,
    ) -> Result<Option<CronJob>> {
        let mut state = self.state();
        Ok(state.jobs.get_mut(&(user, name.clone())).map(|job| {
            if job.active != active {
                job.active = active;
                job.updated_at = OffsetDateTime::now_utc();
            }
            job.clone()
        }))
    }

    async fn history(&self, user: UserId, name: &JobName, limit: usize) -> Result<Vec<JobRun>> {
        let state = self.state();
        let Some(job) = state.jobs.get(&(user, name.clone())) else {
            return Ok(Vec::new());
        };
        let mut runs: Vec<JobRun> = state
            .runs
            .iter()
            .filter(|r| r.job_id == job.id)
            .map(|r| r.run.clone())
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse((r.scheduled_for, r.run_id)));
        runs.truncate(limit.min(MAX_HISTORY));
        Ok(runs)
    }

    async fn prune_history(&self, scope: HistoryScope, older_than: OffsetDateTime) -> Result<u64> {
        let mut state = self.state();
        let job_id = match &scope {
            HistoryScope::All => None,
            HistoryScope::Job(user, name) => match state.jobs.get(&(*user, name.clone())) {
                Some(job) => Some(job.id),
                None => return Ok(0),
            },
        };
        let before = state.runs.len();
        state.runs.retain(|r| {
            let in_scope = job_id.is_none_or(|id| r.job_id == id);
            !(in_scope && run_age(&r.run).is_some_and(|t| t < older_than))
        });
        Ok((before - state.runs.len()) as u64)
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        // Nothing outside this map can drift from it.
        Ok(ReconcileReport::default())
    }

    async fn take_requests(&self, limit: usize) -> Result<Vec<CronRequest>> {
        let now = OffsetDateTime::now_utc();
        let until = after(now, self.request_lease);
        let mut state = self.state();
        Ok(state
            .requests
            .values_mut()
            .filter(|q| q.leased_until.is_none_or(|t| t <= now))
            .take(limit)
            .map(|q| {
                q.request.attempt = q.request.attempt.saturating_add(1);
                q.leased_until = Some(until);
                q.request.clone()
            })
            .collect())
    }

    async fn complete_request(&self, request: &CronRequest) -> Result<bool> {
        let mut state = self.state();
        let holds = state
            .requests
            .get(&request.request_id)
            .is_some_and(|q| q.request.attempt == request.attempt);
        if holds {
            state.requests.remove(&request.request_id);
        }
        Ok(holds)
    }

    async fn release_request(&self, request: &CronRequest) -> Result<bool> {
        let mut state = self.state();
        Ok(match state.requests.get_mut(&request.request_id) {
            Some(q) if q.request.attempt == request.attempt && q.leased_until.is_some() => {
                q.leased_until = None;
                true
            }
            _ => false,
        })
    }
}

/// The time retention compares: when a run ended, or started if it has not.
fn run_age(run: &JobRun) -> Option<OffsetDateTime> {
    run.ended_at.or(run.started_at)
}

#[async_trait]
impl RunStore for InMemoryCronRegistry {
    async fn runnable_jobs(&self) -> Result<Vec<RunnableJob>> {
        let state = self.state();
        Ok(state
            .jobs
            .values()
            .filter(|j| j.active && j.scheduler == SchedulerKind::Runner)
            .map(|job| RunnableJob {
                job: job.clone(),
                last_slot: state.last_slots.get(&job.id).copied(),
            })
            .collect())
    }

    async fn claim_run(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        timeout: Duration,
    ) -> Result<Claim> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        if !state.still_runnable(job) {
            return Ok(Claim::Gone);
        }
        let running = state
            .runs
            .iter()
            .filter(|r| r.job_id == job.id && r.run.status == RunStatus::Running)
            .find(|r| r.run.scheduled_for != Some(slot))
            .map(|r| r.run.run_id);
        Ok(match running {
            Some(running) => {
                let message = format!(
                    "skipped: run {running} of this job was still running when this slot came due"
                );
                state
                    .record(job, slot, runner, RunStatus::Skipped, Some(message), now)
                    .map_or(Claim::Taken, |_| Claim::Overlap { running })
            }
            None => state
                .record(
                    job,
                    slot,
                    runner,
                    RunStatus::Running,
                    None,
                    after(now, timeout),
                )
                .map_or(Claim::Taken, Claim::Run),
        })
    }

    async fn record_missed(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        runner: &str,
        message: &str,
    ) -> Result<bool> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        if !state.still_runnable(job) {
            return Ok(false);
        }
        Ok(state
            .record(
                job,
                slot,
                runner,
                RunStatus::Missed,
                Some(message.to_string()),
                now,
            )
            .is_some())
    }

    async fn finish_run(
        &self,
        _job: &CronJob,
        run_id: i64,
        status: RunStatus,
        message: &str,
    ) -> Result<()> {
        let mut state = self.state();
        if let Some(run) = state
            .runs
            .iter_mut()
            .find(|r| r.run.run_id == run_id && r.run.status == RunStatus::Running)
        {
            run.run.status = status;
            run.run.message = Some(message.to_string());
            run.run.ended_at = Some(OffsetDateTime::now_utc());
        }
        Ok(())
    }

    async fn recover_runs(&self, grace: Duration) -> Result<u64> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let mut recovered = 0;
        for run in state
            .runs
            .iter_mut()
            .filter(|r| r.run.status == RunStatus::Running && after(r.deadline, grace) < now)
        {
            run.run.status = RunStatus::Failed;
            run.run.ended_at = Some(now);
            run.run.message = Some(format!(
                "abandoned: runner {} did not finish this run by its deadline {} \
                 (presumed dead); recovered as failed",
                run.runner, run.deadline
            ));
            recovered += 1;
        }
        Ok(recovered)
    }
}

#[async_trait]
impl JobExecutor for InMemoryCronRegistry {
    async fn execute(
        &self,
        job: &CronJob,
        _timeout: Duration,
    ) -> std::result::Result<String, String> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let (kind, arguments) = match &job.command {
            JobCommand::RunOperation { arguments } => {
                (RequestKind::RunOperation, arguments.as_value().clone())
            }
            JobCommand::RefreshRecommendations => (
                RequestKind::RefreshRecommendations,
                serde_json::Value::Object(serde_json::Map::new()),
            ),
            JobCommand::PruneHistory { keep_days } => {
                let cutoff = now - time::Duration::days(i64::from(*keep_days));
                let user = job.user_id;
                let before = state.runs.len();
                state.runs.retain(|r| {
                    !(r.user_id == user && run_age(&r.run).is_some_and(|t| t < cutoff))
                });
                return Ok(format!("{} runs pruned", before - state.runs.len()));
            }
            JobCommand::CallFunction { function, .. } => {
                return Err(format!(
                    "cannot call SQL function {function}: the in-memory registry has no database"
                ));
            }
        };
        state.next_request += 1;
        let request = CronRequest {
            request_id: state.next_request,
            attempt: 0,
            user_id: job.user_id,
            job_name: job.name.clone(),
            kind,
            operation_id: job.operation_id.clone(),
            arguments,
            requested_at: now,
        };
        state.requests.insert(
            request.request_id,
            Queued {
                request,
                leased_until: None,
            },
        );
        Ok("1 row".to_string())
    }
}
