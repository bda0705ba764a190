//! [`Error`]: everything that can go wrong in the cron registry.

use crate::command::CommandError;
use crate::schedule::ScheduleError;

/// Everything that can go wrong in the cron registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input value was refused (`field` names it: `job name`,
    /// `operation id`, `command`, …); nothing was written.
    #[error(transparent)]
    Validation(#[from] opsdeck_core::Validation),
    /// The schedule was refused (syntax, or a form the detected pg_cron
    /// version does not have); nothing was written.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The command was refused; nothing was written.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The user has no job of that name (for calls that need one).
    #[error("no cron job named {name:?} for this user")]
    NotFound {
        /// The job name.
        name: String,
    },
    /// pg_cron was required but is not usable: not installed, not in the
    /// database the cron pool is connected to, or a version too old to have
    /// `cron.schedule_in_database` (1.4+).
    #[error("pg_cron is not available: {0}")]
    PgCronUnavailable(String),
    /// The configuration is unusable (e.g. an invalid job prefix).
    #[error("invalid cron registry configuration: {0}")]
    Config(String),
    /// A stored row broke an invariant the types enforce.
    #[error("stored cron job is invalid: {0}")]
    Corrupt(String),
    /// The application database failed.
    #[cfg(feature = "postgres")]
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// The pg_cron database failed during `action` (the registry was left
    /// unchanged, or `reconcile` repairs it).
    #[cfg(feature = "postgres")]
    #[error("pg_cron error while trying to {action}")]
    PgCron {
        /// What was being done, e.g. `schedule the job`.
        action: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
