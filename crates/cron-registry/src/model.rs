//! The registry's data: jobs, runs, repairs and queued requests.

use opsdeck_core::{OperationId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::command::{CommandContext, JobCommand};
use crate::name::JobName;
use crate::schedule::CronSchedule;

/// Who fires a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SchedulerKind {
    /// pg_cron, inside PostgreSQL.
    PgCron,
    /// The in-process runner ([`crate::CronRunner`]).
    Runner,
}

impl SchedulerKind {
    /// The stored form (`scheduler` column).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::PgCron => "pg_cron",
            SchedulerKind::Runner => "runner",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pg_cron" => Some(SchedulerKind::PgCron),
            "runner" => Some(SchedulerKind::Runner),
            _ => None,
        }
    }
}

/// A job to register (create, or replace the user's job of that name).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The owner.
    pub user_id: UserId,
    /// The name, unique per user.
    pub name: JobName,
    /// The operation the job belongs to.
    pub operation_id: OperationId,
    /// When it runs.
    pub schedule: CronSchedule,
    /// What it does.
    pub command: JobCommand,
    /// Whether it fires (a paused job keeps its registration).
    pub active: bool,
}

impl NewJob {
    /// An active job.
    pub fn new(
        user_id: UserId,
        name: JobName,
        operation_id: OperationId,
        schedule: CronSchedule,
        command: JobCommand,
    ) -> Self {
        NewJob {
            user_id,
            name,
            operation_id,
            schedule,
            command,
            active: true,
        }
    }

    /// Sets whether the job fires.
    pub fn active(mut self, active: bool) -> Self {
        self.active = active;
        self
    }
}

/// A registered job.
#[derive(Debug, Clone, PartialEq)]
pub struct CronJob {
    /// The registry's id (stable for the life of the registration).
    pub id: i64,
    /// The owner.
    pub user_id: UserId,
    /// The name, unique per user.
    pub name: JobName,
    /// The operation the job belongs to.
    pub operation_id: OperationId,
    /// When it runs.
    pub schedule: CronSchedule,
    /// What it does.
    pub command: JobCommand,
    /// Whether it fires.
    pub active: bool,
    /// Who fires it.
    pub scheduler: SchedulerKind,
    /// pg_cron's `jobid`, for jobs pg_cron fires.
    pub pg_cron_job_id: Option<i64>,
    /// When it was first registered.
    pub created_at: OffsetDateTime,
    /// When its definition last changed.
    pub updated_at: OffsetDateTime,
}

impl CronJob {
    /// The SQL the job executes when it fires.
    pub fn to_sql(&self) -> String {
        self.command.to_sql(&CommandContext {
            user: self.user_id,
            operation: &self.operation_id,
            job: &self.name,
        })
    }

    /// The next `n` run times after now (UTC); see
    /// [`CronSchedule::next_runs_after`]. Empty for a paused job.
    pub fn next_runs(&self, n: usize) -> Vec<OffsetDateTime> {
        if self.active {
            self.schedule.next_runs(n)
        } else {
            Vec::new()
        }
    }
}

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Started and not finished (pg_cron's `starting`, `connecting`,
    /// `sending` and `running`).
    Running,
    /// Finished without error.
    Succeeded,
    /// Finished with an error (see the run's message), timed out, or left
    /// `running` by a runner that died (recovered as failed).
    Failed,
    /// Not run: the job's previous run was still running when this slot
    /// came due (the runner's overlap policy; see [`crate::CronRunner`]).
    Skipped,
    /// Not run: no runner was up when this slot came due (recorded on
    /// recovery under [`crate::MissedRunPolicy::Skip`], or when the current
    /// slot already runs; see [`crate::CronRunner`]).
    Missed,
}

impl RunStatus {
    /// The runner's stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::Missed => "missed",
        }
    }

    /// Maps a status of pg_cron's `cron.job_run_details` or of the runner's
    /// table. Unknown values count as failed rather than hiding a run.
    pub fn from_stored(s: &str) -> Self {
        match s {
            "starting" | "connecting" | "sending" | "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "skipped" => RunStatus::Skipped,
            "missed" => RunStatus::Missed,
            _ => RunStatus::Failed,
        }
    }
}

/// One run of a job, from pg_cron's `cron.job_run_details` or the runner's
/// `opsdeck.cron_job_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// The run's id (pg_cron's `runid`, or the runner's `run_id`).
    pub run_id: i64,
    /// Its status.
    pub status: RunStatus,
    /// The slot it ran for (runner only; pg_cron does not record it).
    pub scheduled_for: Option<OffsetDateTime>,
    /// When it started, if it did.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended, if it has.
    pub ended_at: Option<OffsetDateTime>,
    /// pg_cron's `return_message` (e.g. `1 row`, or the error), or the
    /// runner's equivalent.
    pub message: Option<String>,
}

/// Whose history [`crate::CronRegistry::prune_history`] prunes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryScope {
    /// Every job of this registry — and only this registry's: with
    /// pg_cron, runs of the jobs the registry records or names
    /// (`{prefix}{id}`); other applications' jobs in the same database
    /// keep their history. (An unregistered job's pg_cron history is
    /// deleted with it.)
    All,
    /// One job of one user.
    Job(UserId, JobName),
}

/// What [`crate::CronRegistry::reconcile`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Registry rows that were (re)scheduled because their pg_cron job was
    /// missing or differed (schedule, command, database or active flag).
    pub rescheduled: Vec<(UserId, JobName)>,
    /// pg_cron job ids named as this registry names its jobs
    /// (`{prefix}{id}`) with no registry row, now unscheduled.
    pub unscheduled: Vec<i64>,
    /// Repairs that failed (they are retried by the next reconcile).
    pub errors: Vec<String>,
}

impl ReconcileReport {
    /// Whether nothing needed repair and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.rescheduled.is_empty() && self.unscheduled.is_empty() && self.errors.is_empty()
    }
}

/// What a fired `RunOperation` / `RefreshRecommendations` job asks the
/// application to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestKind {
    /// Run the operation for the user with the arguments.
    RunOperation,
    /// Refresh the user's recommendations.
    RefreshRecommendations,
}

impl RequestKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::RunOperation => "run_operation",
            RequestKind::RefreshRecommendations => "refresh_recommendations",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "run_operation" => Some(RequestKind::RunOperation),
            "refresh_recommendations" => Some(RequestKind::RefreshRecommendations),
            _ => None,
        }
    }
}

/// A request queued by a fired job (`opsdeck.cron_job_requests`), as one
/// delivery of [`crate::CronRegistry::take_requests`] leased it.
#[derive(Debug, Clone, PartialEq)]
pub struct CronRequest {
    /// The request's id (increasing in queue order).
    pub request_id: i64,
    /// Which delivery this is: 1 the first time the request is taken, one
    /// more each time it is taken again after a lease expired or was
    /// released. Identifies the lease that
    /// [`crate::CronRegistry::complete_request`] and
    /// [`crate::CronRegistry::release_request`] act on; a consumer may also
    /// give up on a request that keeps failing.
    pub attempt: u32,
    /// The job's owner.
    pub user_id: UserId,
    /// The job that queued it.
    pub job_name: JobName,
    /// What to do.
    pub kind: RequestKind,
    /// The job's operation.
    pub operation_id: OperationId,
    /// The job's arguments (a JSON object).
    pub arguments: serde_json::Value,
    /// When the job fired.
    pub requested_at: OffsetDateTime,
}
