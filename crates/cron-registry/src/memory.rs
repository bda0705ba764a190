//! [`InMemoryCronRegistry`]: jobs in process memory, fired by the runner.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

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
use crate::registry::{CronRegistry, MAX_HISTORY};
use crate::runner::{JobExecutor, RunStore};
use crate::schedule::PgCronVersion;

/// Jobs kept in process memory, fired by a [`crate::CronRunner`]: the
/// embedded default when no database is configured, and a test double that
/// behaves like `PgCronRegistry` in runner mode (both pass [`crate::testing`]).
///
/// It is its own [`RunStore`] and [`JobExecutor`]: `RunOperation` and
/// `RefreshRecommendations` queue requests (see
/// [`CronRegistry::take_requests`]), `PruneHistory` prunes the user's runs,
/// and `CallFunction` fails (there is no SQL in memory).
///
/// One mutex guards everything, so each call is atomic; calls never await
/// while holding it.
#[derive(Debug)]
pub struct InMemoryCronRegistry {
    syntax: PgCronVersion,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    jobs: BTreeMap<(UserId, JobName), CronJob>,
    next_run: i64,
    runs: Vec<Run>,
    claimed: HashSet<(i64, i64)>,
    next_request: i64,
    requests: VecDeque<CronRequest>,
}

#[derive(Debug, Clone)]
struct Run {
    job_id: i64,
    user_id: UserId,
    run: JobRun,
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
            state: Mutex::new(State::default()),
        }
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
        let mut state = self.state();
        let n = limit.min(state.requests.len());
        Ok(state.requests.drain(..n).collect())
    }
}

/// The time retention compares: when a run ended, or started if it has not.
fn run_age(run: &JobRun) -> Option<OffsetDateTime> {
    run.ended_at.or(run.started_at)
}

#[async_trait]
impl RunStore for InMemoryCronRegistry {
    async fn runnable_jobs(&self) -> Result<Vec<CronJob>> {
        Ok(self
            .state()
            .jobs
            .values()
            .filter(|j| j.active && j.scheduler == SchedulerKind::Runner)
            .cloned()
            .collect())
    }

    async fn claim_run(
        &self,
        job: &CronJob,
        slot: OffsetDateTime,
        _runner: &str,
    ) -> Result<Option<i64>> {
        let mut state = self.state();
        let still_active = state
            .jobs
            .get(&(job.user_id, job.name.clone()))
            .is_some_and(|j| j.id == job.id && j.active);
        if !still_active || !state.claimed.insert((job.id, slot.unix_timestamp())) {
            return Ok(None);
        }
        state.next_run += 1;
        let run_id = state.next_run;
        state.runs.push(Run {
            job_id: job.id,
            user_id: job.user_id,
            run: JobRun {
                run_id,
                status: RunStatus::Running,
                scheduled_for: Some(slot),
                started_at: Some(OffsetDateTime::now_utc()),
                ended_at: None,
                message: None,
            },
        });
        Ok(Some(run_id))
    }

    async fn finish_run(
        &self,
        _job: &CronJob,
        run_id: i64,
        status: RunStatus,
        message: &str,
    ) -> Result<()> {
        let mut state = self.state();
        if let Some(run) = state.runs.iter_mut().find(|r| r.run.run_id == run_id) {
            run.run.status = status;
            run.run.message = Some(message.to_string());
            run.run.ended_at = Some(OffsetDateTime::now_utc());
        }
        Ok(())
    }
}

#[async_trait]
impl JobExecutor for InMemoryCronRegistry {
    async fn execute(&self, job: &CronJob) -> std::result::Result<String, String> {
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
                    !(r.user_id == user && r.run.started_at.is_some_and(|t| t < cutoff))
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
            user_id: job.user_id,
            job_name: job.name.clone(),
            kind,
            operation_id: job.operation_id.clone(),
            arguments,
            requested_at: now,
        };
        state.requests.push_back(request);
        Ok("1 row".to_string())
    }
}
