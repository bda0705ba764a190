//! [`ScheduleError`]: why a schedule was refused.

use opsdeck_core::Snippet;

use super::version::PgCronVersion;

/// Why a schedule was refused. Nothing is written when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The schedule was empty or blank.
    #[error("schedule must not be empty")]
    Empty,
    /// The schedule was longer than [`crate::CronSchedule::MAX_LEN`] bytes.
    #[error("schedule is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The schedule did not have exactly five fields.
    #[error(
        "schedule {input:?} has {found} fields; expected 5 (minute hour day-of-month month day-of-week), an @alias or \"N seconds\""
    )]
    FieldCount {
        /// The input (cut to 80 characters).
        input: Snippet,
        /// How many whitespace-separated fields it had.
        found: usize,
    },
    /// One field is not valid pg_cron syntax.
    #[error("{field} field {value:?} of schedule {input:?} is invalid: {reason}")]
    InvalidField {
        /// Which field (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`).
        field: &'static str,
        /// The field's text (cut to 80 characters).
        value: Snippet,
        /// The whole input (cut to 80 characters).
        input: Snippet,
        /// What is wrong.
        reason: &'static str,
    },
    /// An `@` alias pg_cron does not have (or one without a periodic
    /// meaning, such as `@reboot`).
    #[error(
        "unknown schedule alias {alias:?}; pg_cron knows @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly"
    )]
    UnknownAlias {
        /// The alias as given (cut to 80 characters).
        alias: Snippet,
    },
    /// An interval outside 1–59 seconds.
    #[error("interval {input:?} must be between 1 and 59 seconds")]
    IntervalOutOfRange {
        /// The input (cut to 80 characters).
        input: Snippet,
    },
    /// The schedule is valid syntax but can never fire (e.g. `0 0 30 2 *`),
    /// which pg_cron would accept silently.
    #[error("schedule {input:?} never fires: no month in it has the days it names")]
    NeverFires {
        /// The input (cut to 80 characters).
        input: Snippet,
    },
    /// The form needs a newer pg_cron than the one detected.
    #[error(
        "{form} schedules such as {input:?} need pg_cron {needed} or later; found pg_cron {found}"
    )]
    NeedsVersion {
        /// The form, e.g. `"N seconds" interval`.
        form: &'static str,
        /// The input (cut to 80 characters).
        input: Snippet,
        /// The first version that understands the form.
        needed: PgCronVersion,
        /// The version the schedule was checked against.
        found: PgCronVersion,
    },
}
