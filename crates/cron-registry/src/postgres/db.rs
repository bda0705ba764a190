//! Plumbing every PostgreSQL module shares: the transaction type and the
//! mapping of database errors to [`Error`].

use sqlx::{Postgres, Transaction};

use crate::error::Error;

/// A transaction on the application database or on pg_cron's.
pub(super) type Tx = Transaction<'static, Postgres>;

/// The registry's `CHECK` constraints (migrations/0004_cron_registry.sql,
/// 0005_cron_hardening.sql) and the input each guards. They mirror the Rust
/// types, so a violation means a value the types refuse got through, e.g.
/// from another client. The SQL entry points raise their refusals under
/// the same names.
const CONSTRAINTS: &[(&str, &str)] = &[
    ("cron_job_registry_job_name_check", "job name"),
    ("cron_job_registry_operation_id_check", "operation id"),
    ("cron_job_registry_schedule_check", "schedule"),
    ("cron_job_registry_command_kind_check", "command"),
    ("cron_job_registry_command_check", "command"),
    ("cron_job_registry_command_args_check", "command"),
    ("cron_job_registry_scheduler_check", "scheduler"),
    ("cron_job_registry_pg_cron_job_id_check", "scheduler"),
    ("cron_job_runs_status_check", "run status"),
    ("cron_job_requests_kind_check", "request kind"),
    ("cron_job_requests_operation_id_check", "operation id"),
    ("cron_job_requests_job_name_check", "job name"),
    ("cron_job_requests_arguments_check", "arguments"),
];

/// An application-database error: a refusal by one of the registry's
/// constraints is [`Error::Validation`], anything else [`Error::Database`].
pub(super) fn map_db_error(error: sqlx::Error) -> Error {
    match opsdeck_core::db::constraint_violation(&error, CONSTRAINTS) {
        Some(refusal) => Error::Validation(refusal),
        None => Error::Database(error),
    }
}

/// A pg_cron-database error during `action`.
pub(super) fn pg_cron_error(action: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::PgCron { action, source }
}
