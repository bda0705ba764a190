//! Rows as PostgreSQL returns them, and their checked conversion to the
//! domain types. Text ids are read as text and parsed here, so one corrupt
//! row is an [`Error::Corrupt`] naming it (which `reconcile` and
//! `take_requests` can skip) rather than a failed statement.

use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

use crate::command::JobCommand;
use crate::error::{Error, Result};
use crate::model::{CronJob, CronRequest, JobRun, RequestKind, RunStatus, SchedulerKind};
use crate::name::JobName;
use crate::runner::RunnableJob;
use crate::schedule::CronSchedule;

/// The columns of `opsdeck.cron_job_registry` a [`JobRow`] reads.
macro_rules! job_columns {
    () => {
        "id, user_id, job_name, operation_id, schedule, command_kind, command_args, \
         active, scheduler, pg_cron_job_id, created_at, updated_at"
    };
}
pub(super) use job_columns;

/// A row of `opsdeck.cron_job_registry`.
#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: i64,
    user_id: UserId,
    job_name: String,
    operation_id: String,
    schedule: String,
    command_kind: String,
    command_args: serde_json::Value,
    active: bool,
    scheduler: String,
    pg_cron_job_id: Option<i64>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl JobRow {
    pub(super) fn into_domain(self) -> Result<CronJob> {
        let corrupt = |what: String| {
            Error::Corrupt(format!("job {} of user {}: {what}", self.id, self.user_id))
        };
        Ok(CronJob {
            id: self.id,
            user_id: self.user_id,
            name: JobName::parse(&self.job_name).map_err(|e| corrupt(e.to_string()))?,
            operation_id: OperationId::parse(&self.operation_id)
                .map_err(|e| corrupt(e.to_string()))?,
            schedule: CronSchedule::parse(&self.schedule).map_err(|e| corrupt(e.to_string()))?,
            command: JobCommand::from_stored(&self.command_kind, self.command_args.clone())
                .map_err(|e| corrupt(e.to_string()))?,
            active: self.active,
            scheduler: SchedulerKind::parse(&self.scheduler)
                .ok_or_else(|| corrupt(format!("unknown scheduler {:?}", self.scheduler)))?,
            pg_cron_job_id: self.pg_cron_job_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A registry row the runner fires, with the latest slot it settled.
#[derive(sqlx::FromRow)]
pub(super) struct RunnableRow {
    #[sqlx(flatten)]
    job: JobRow,
    last_slot: Option<OffsetDateTime>,
}

impl RunnableRow {
    pub(super) fn into_domain(self) -> Result<RunnableJob> {
        Ok(RunnableJob {
            job: self.job.into_domain()?,
            last_slot: self.last_slot,
        })
    }
}

/// A row of the runner's `opsdeck.cron_job_runs`.
#[derive(sqlx::FromRow)]
pub(super) struct RunnerRunRow {
    run_id: i64,
    status: String,
    message: Option<String>,
    scheduled_for: OffsetDateTime,
    started_at: OffsetDateTime,
    ended_at: Option<OffsetDateTime>,
}

impl RunnerRunRow {
    pub(super) fn into_domain(self) -> JobRun {
        JobRun {
            run_id: self.run_id,
            status: RunStatus::from_stored(&self.status),
            scheduled_for: Some(self.scheduled_for),
            started_at: Some(self.started_at),
            ended_at: self.ended_at,
            message: self.message,
        }
    }
}

/// A row of pg_cron's `cron.job_run_details`.
#[derive(sqlx::FromRow)]
pub(super) struct PgCronRunRow {
    runid: i64,
    status: Option<String>,
    return_message: Option<String>,
    start_time: Option<OffsetDateTime>,
    end_time: Option<OffsetDateTime>,
}

impl PgCronRunRow {
    pub(super) fn into_domain(self) -> JobRun {
        JobRun {
            run_id: self.runid,
            status: RunStatus::from_stored(self.status.as_deref().unwrap_or("")),
            scheduled_for: None,
            started_at: self.start_time,
            ended_at: self.end_time,
            message: self.return_message,
        }
    }
}

/// A row of `opsdeck.cron_job_requests`.
#[derive(sqlx::FromRow)]
pub(super) struct RequestRow {
    pub(super) request_id: i64,
    user_id: UserId,
    job_name: String,
    kind: String,
    operation_id: String,
    arguments: serde_json::Value,
    requested_at: OffsetDateTime,
    attempts: i32,
}

impl RequestRow {
    pub(super) fn into_domain(self) -> Result<CronRequest> {
        let corrupt = |what: String| Error::Corrupt(format!("request {}: {what}", self.request_id));
        Ok(CronRequest {
            request_id: self.request_id,
            attempt: u32::try_from(self.attempts)
                .map_err(|_| corrupt(format!("negative attempts {}", self.attempts)))?,
            user_id: self.user_id,
            job_name: JobName::parse(&self.job_name).map_err(|e| corrupt(e.to_string()))?,
            kind: RequestKind::parse(&self.kind)
                .ok_or_else(|| corrupt(format!("unknown kind {:?}", self.kind)))?,
            operation_id: OperationId::parse(&self.operation_id)
                .map_err(|e| corrupt(e.to_string()))?,
            arguments: self.arguments,
            requested_at: self.requested_at,
        })
    }
}
