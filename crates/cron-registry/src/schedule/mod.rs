//! Schedules in pg_cron's own syntax, validated in Rust before anything is
//! written, plus next-run previews (which pg_cron itself does not offer).
//!
//! - `grammar`: what pg_cron accepts and when a schedule fires;
//! - `version`: which pg_cron release has which form;
//! - `preview`: next-run times, computed by croner;
//! - `error`: why a schedule was refused.

mod error;
mod grammar;
mod preview;
mod version;

use opsdeck_core::Snippet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use error::ScheduleError;
pub use version::PgCronVersion;

use grammar::{Fields, Form};
use preview::Preview;

/// When a job runs, in pg_cron's syntax: five cron fields
/// (`minute hour day-of-month month day-of-week`, with `*`, `a-b`, `*/n`,
/// `a-b/n`, lists and `jan`–`dec` / `sun`–`sat` names), an alias
/// (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
/// `@hourly`), `N seconds` (pg_cron 1.5+, 1–59) or `$` as the whole
/// day-of-month field (last day of the month, pg_cron 1.6+). Times are UTC:
/// pg_cron before 1.6 has no timezone setting.
///
/// A value that exists has been parsed; [`CronSchedule::parse_for`] also
/// checks it against a pg_cron version. The parser is deliberately
/// stricter than pg_cron's (which ignores text after the fifth field and
/// accepts reversed ranges that never match): whatever it accepts, pg_cron
/// accepts with the same meaning.
///
/// ```
/// use opsdeck_cron_registry::{CronSchedule, PgCronVersion, ScheduleError};
///
/// let nightly: CronSchedule = "30 2 * * *".parse().unwrap();
/// let at = time::macros::datetime!(2025-01-01 12:00 UTC);
/// assert_eq!(nightly.next_runs_after(at, 1), [time::macros::datetime!(2025-01-02 02:30 UTC)]);
///
/// let err = CronSchedule::parse_for("10 seconds", PgCronVersion::V1_4).unwrap_err();
/// assert!(matches!(err, ScheduleError::NeedsVersion { needed, .. } if needed == PgCronVersion::V1_5));
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronSchedule {
    /// The schedule as pg_cron receives it: trimmed, blanks collapsed.
    text: Box<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron {
        fields: Fields,
        /// The same schedule in croner's syntax, for previews.
        preview: Preview,
    },
    Interval {
        seconds: u8,
    },
}

impl CronSchedule {
    /// The longest accepted schedule, in bytes.
    pub const MAX_LEN: usize = grammar::MAX_LEN;

    /// The most previews [`CronSchedule::next_runs_after`] computes at once.
    pub const MAX_PREVIEW: usize = 1000;

    /// Parses any form pg_cron knows (in its newest syntax). Use
    /// [`CronSchedule::parse_for`] to also check a detected version.
    pub fn parse(input: &str) -> Result<Self, ScheduleError> {
        let parsed = grammar::parse(input)?;
        let kind = match parsed.form {
            Form::Interval(seconds) => Kind::Interval { seconds },
            Form::Cron(fields) => Kind::Cron {
                preview: Preview::new(&fields, &parsed.text)?,
                fields,
            },
        };
        Ok(CronSchedule {
            text: parsed.text.into(),
            kind,
        })
    }

    /// Parses and checks that pg_cron `version` understands the form, so the
    /// schedule can be handed to `cron.schedule_in_database` as it is.
    pub fn parse_for(input: &str, version: PgCronVersion) -> Result<Self, ScheduleError> {
        let schedule = Self::parse(input)?;
        schedule.check_version(version)?;
        Ok(schedule)
    }

    /// Whether pg_cron `version` understands this schedule; if not, a
    /// [`ScheduleError::NeedsVersion`] naming the version needed.
    pub fn check_version(&self, version: PgCronVersion) -> Result<(), ScheduleError> {
        let needed = self.required_version();
        if version >= needed {
            return Ok(());
        }
        let form = match self.kind {
            Kind::Interval { .. } => "\"N seconds\" interval",
            Kind::Cron { .. } => "\"$\" (last day of the month)",
        };
        Err(ScheduleError::NeedsVersion {
            form,
            input: Snippet::new(&self.text),
            needed,
            found: version,
        })
    }

    /// The oldest pg_cron that understands this schedule.
    pub fn required_version(&self) -> PgCronVersion {
        match &self.kind {
            Kind::Interval { .. } => PgCronVersion::V1_5,
            Kind::Cron { fields, .. } if fields.last_day => PgCronVersion::V1_6,
            Kind::Cron { .. } => PgCronVersion::V1_4,
        }
    }

    /// The schedule as pg_cron receives it (trimmed, blanks collapsed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// For `N seconds` schedules, `N`.
    pub fn interval_seconds(&self) -> Option<u8> {
        match self.kind {
            Kind::Interval { seconds } => Some(seconds),
            Kind::Cron { .. } => None,
        }
    }

    /// The next `n` (at most [`Self::MAX_PREVIEW`]) run times strictly after
    /// now, in UTC. See [`Self::next_runs_after`].
    pub fn next_runs(&self, n: usize) -> Vec<OffsetDateTime> {
        self.next_runs_after(OffsetDateTime::now_utc(), n)
    }

    /// The next `n` (at most [`Self::MAX_PREVIEW`]) run times strictly after
    /// `after`, in UTC, each at second 0 of its minute.
    ///
    /// `N seconds` schedules preview as the unix times divisible by `N`,
    /// which is when the in-process runner fires them; pg_cron instead
    /// starts such a job `N` seconds after its previous start, so there the
    /// preview is an estimate of the cadence, not of the phase.
    pub fn next_runs_after(&self, after: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        let n = n.min(Self::MAX_PREVIEW);
        match &self.kind {
            Kind::Interval { seconds } => preview::interval_runs_after(*seconds, after, n),
            Kind::Cron { preview, .. } => preview.runs_after(after, n),
        }
    }

    /// Whether the schedule fires in the minute containing `t` (cron forms),
    /// or at the second `t` (interval forms, on unix times divisible by N).
    pub fn fires_at(&self, t: OffsetDateTime) -> bool {
        match &self.kind {
            Kind::Interval { seconds } => t.unix_timestamp().rem_euclid(i64::from(*seconds)) == 0,
            Kind::Cron { fields, .. } => fields.matches(t),
        }
    }

    /// The slot a run at `t` belongs to: the start of its minute for cron
    /// forms, the start of its `N`-second step for intervals. Runners claim
    /// one run per (job, slot).
    pub fn slot_of(&self, t: OffsetDateTime) -> OffsetDateTime {
        let step = match self.kind {
            Kind::Interval { seconds } => i64::from(seconds),
            Kind::Cron { .. } => 60,
        };
        let secs = t.unix_timestamp();
        OffsetDateTime::from_unix_timestamp(secs - secs.rem_euclid(step)).unwrap_or(t)
    }
}

opsdeck_core::text_id!(CronSchedule, ScheduleError);

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronSchedule {}

#[cfg(test)]
mod tests;
