//! Schedules in pg_cron's own syntax, validated in Rust before anything is
//! written, plus next-run previews (which pg_cron itself does not offer).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use time::OffsetDateTime;

/// A pg_cron release, as far as schedule syntax goes (`major.minor`).
///
/// Parsed from `pg_extension.extversion`, which Debian reports as e.g.
/// `1.4-1` for the 1.4.2 library: only the leading `major.minor` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgCronVersion {
    major: u16,
    minor: u16,
}

impl PgCronVersion {
    /// pg_cron 1.4 (Debian bookworm): 5-field cron and `@` aliases only.
    pub const V1_4: Self = Self::new(1, 4);
    /// pg_cron 1.5 added `N seconds` interval schedules.
    pub const V1_5: Self = Self::new(1, 5);
    /// pg_cron 1.6 added `$` (last day of the month).
    pub const V1_6: Self = Self::new(1, 6);

    /// A version from its parts.
    pub const fn new(major: u16, minor: u16) -> Self {
        PgCronVersion { major, minor }
    }

    /// Parses `major.minor` from the start of an extension version string
    /// (`1.4`, `1.4-1`, `1.6.4`); `None` if it does not start that way.
    pub fn parse(extversion: &str) -> Option<Self> {
        let mut parts = extversion.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(PgCronVersion { major, minor })
    }

    /// Whether `N seconds` schedules are understood.
    pub fn supports_seconds(self) -> bool {
        self >= Self::V1_5
    }

    /// Whether `$` (last day of the month) is understood.
    pub fn supports_last_day(self) -> bool {
        self >= Self::V1_6
    }
}

impl fmt::Display for PgCronVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a schedule was refused. Nothing is written when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The schedule was empty or blank.
    #[error("schedule must not be empty")]
    Empty,
    /// The schedule was longer than [`CronSchedule::MAX_LEN`] bytes.
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
        input: String,
        /// How many whitespace-separated fields it had.
        found: usize,
    },
    /// One field is not valid pg_cron syntax.
    #[error("{field} field {value:?} of schedule {input:?} is invalid: {reason}")]
    InvalidField {
        /// Which field (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`).
        field: &'static str,
        /// The field's text (cut to 80 characters).
        value: String,
        /// The whole input (cut to 80 characters).
        input: String,
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
        alias: String,
    },
    /// An interval outside 1–59 seconds.
    #[error("interval {input:?} must be between 1 and 59 seconds")]
    IntervalOutOfRange {
        /// The input (cut to 80 characters).
        input: String,
    },
    /// The schedule is valid syntax but can never fire (e.g. `0 0 30 2 *`),
    /// which pg_cron would accept silently.
    #[error("schedule {input:?} never fires: no month in it has the days it names")]
    NeverFires {
        /// The input (cut to 80 characters).
        input: String,
    },
    /// The form needs a newer pg_cron than the one detected.
    #[error(
        "{form} schedules such as {input:?} need pg_cron {needed} or later; found pg_cron {found}"
    )]
    NeedsVersion {
        /// The form, e.g. `"N seconds" interval`.
        form: &'static str,
        /// The input (cut to 80 characters).
        input: String,
        /// The first version that understands the form.
        needed: PgCronVersion,
        /// The version the schedule was checked against.
        found: PgCronVersion,
    },
}

fn snippet(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

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
#[derive(Clone)]
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
        preview: Arc<Cron>,
    },
    Interval {
        seconds: u8,
    },
}

/// The expanded fields of a cron schedule: one bit per allowed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Vixie cron (and so pg_cron) combine day-of-month and day-of-week
    /// with AND when either field starts with `*`, and with OR otherwise.
    days_and_weekdays: bool,
    /// `$`: the last day of the month (pg_cron 1.6+).
    last_day: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names, the first one meaning `min`.
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl CronSchedule {
    /// The longest accepted schedule, in bytes.
    pub const MAX_LEN: usize = 120;

    /// The most previews [`CronSchedule::next_runs_after`] computes at once.
    pub const MAX_PREVIEW: usize = 1000;

    /// Parses any form pg_cron knows (in its newest syntax). Use
    /// [`CronSchedule::parse_for`] to also check a detected version.
    pub fn parse(input: &str) -> Result<Self, ScheduleError> {
        if input.len() > Self::MAX_LEN {
            return Err(ScheduleError::TooLong {
                len: input.len(),
                max: Self::MAX_LEN,
            });
        }
        let parts: Vec<&str> = input.split([' ', '\t']).filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let text = parts.join(" ");
        if let Some(alias) = parts[0].strip_prefix('@') {
            return Self::parse_alias(alias, &parts, text);
        }
        if let Some(seconds) = parse_interval(&text)? {
            return Ok(CronSchedule {
                text: text.into(),
                kind: Kind::Interval { seconds },
            });
        }
        if parts.len() != 5 {
            return Err(ScheduleError::FieldCount {
                input: snippet(input),
                found: parts.len(),
            });
        }
        let field = |spec: &FieldSpec, value: &str| {
            parse_field(spec, value).map_err(|reason| ScheduleError::InvalidField {
                field: spec.name,
                value: snippet(value),
                input: snippet(input),
                reason,
            })
        };
        let last_day = parts[2] == "$";
        let mut weekdays = field(&WEEKDAY, parts[4])?;
        // 0 and 7 both mean Sunday.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let fields = Fields {
            minutes: field(&MINUTE, parts[0])?,
            hours: field(&HOUR, parts[1])?,
            days: if last_day { 0 } else { field(&DAY, parts[2])? },
            months: field(&MONTH, parts[3])?,
            weekdays,
            days_and_weekdays: parts[2].starts_with('*') || parts[4].starts_with('*'),
            last_day,
        };
        if !fields.can_fire() {
            return Err(ScheduleError::NeverFires {
                input: snippet(input),
            });
        }
        Self::from_fields(text, fields)
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
            input: snippet(&self.text),
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
            Kind::Interval { seconds } => {
                let step = i64::from(*seconds);
                let first = after.unix_timestamp().div_euclid(step) * step + step;
                (0..n as i64)
                    .filter_map(|k| OffsetDateTime::from_unix_timestamp(first + k * step).ok())
                    .collect()
            }
            Kind::Cron { preview, .. } => {
                let mut out = Vec::with_capacity(n);
                let Some(mut cursor) = to_chrono(after) else {
                    return out;
                };
                while out.len() < n {
                    // A valid schedule always has a next run (can_fire); the
                    // error arm only ends previews past croner's year range.
                    match preview.find_next_occurrence(&cursor, false) {
                        Ok(next) => {
                            let Some(t) = from_chrono(next) else { break };
                            out.push(t);
                            cursor = next;
                        }
                        Err(_) => break,
                    }
                }
                out
            }
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

    fn parse_alias(alias: &str, parts: &[&str], text: String) -> Result<Self, ScheduleError> {
        // pg_cron compares aliases case-sensitively; extra text is refused
        // here even though pg_cron would ignore it.
        let expanded = match alias {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                return Err(ScheduleError::UnknownAlias {
                    alias: snippet(parts[0]),
                });
            }
        };
        if parts.len() != 1 {
            return Err(ScheduleError::FieldCount {
                input: snippet(&text),
                found: parts.len(),
            });
        }
        let mut parsed = Self::parse(expanded)?;
        parsed.text = text.into();
        Ok(parsed)
    }

    fn from_fields(text: String, fields: Fields) -> Result<Self, ScheduleError> {
        let preview = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .dom_and_dow(fields.days_and_weekdays)
            .build()
            .parse(&fields.croner_pattern())
            // Unreachable for fields this module built; mapped, not unwrapped,
            // so a croner regression is an error instead of a panic.
            .map_err(|_| ScheduleError::InvalidField {
                field: "schedule",
                value: snippet(&text),
                input: snippet(&text),
                reason: "not understood by the preview engine",
            })?;
        Ok(CronSchedule {
            text: text.into(),
            kind: Kind::Cron {
                fields,
                preview: Arc::new(preview),
            },
        })
    }
}

/// `N second` / `N seconds` (case-insensitive, blanks optional), as pg_cron
/// 1.5+ reads it. `Ok(None)` when the input is not of that shape at all.
fn parse_interval(text: &str) -> Result<Option<u8>, ScheduleError> {
    let lower = text.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    if digits_end == 0 {
        return Ok(None);
    }
    let unit = lower[digits_end..].trim_start();
    if unit != "second" && unit != "seconds" {
        return Ok(None);
    }
    match lower[..digits_end].parse::<u32>() {
        Ok(n @ 1..=59) => Ok(Some(n as u8)),
        _ => Err(ScheduleError::IntervalOutOfRange {
            input: snippet(text),
        }),
    }
}

/// One field as a bit set (bit `v` set when value `v` is allowed).
fn parse_field(spec: &FieldSpec, text: &str) -> Result<u64, &'static str> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("empty list item");
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = parse_digits(step).ok_or("step must be a positive number")?;
                if step == 0 {
                    return Err("step must be a positive number");
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(spec, a)?, value(spec, b)?);
            if a > b {
                return Err("range start is after its end");
            }
            (a, b)
        } else {
            if step.is_some() {
                // pg_cron refuses `5/10`: a step needs `*` or a range.
                return Err("a step needs `*` or a range before it, e.g. `*/5` or `0-30/5`");
            }
            let v = value(spec, range)?;
            (v, v)
        };
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(spec: &FieldSpec, text: &str) -> Result<u32, &'static str> {
    if let Some(i) = spec
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(spec.min + i as u32);
    }
    let v = parse_digits(text).ok_or(if spec.names.is_empty() {
        "expected a number, `*`, a range or a list"
    } else {
        "expected a number, a three-letter name, `*`, a range or a list"
    })?;
    if v < spec.min || v > spec.max {
        return Err("value out of range for this field");
    }
    Ok(v)
}

fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

const DAYS_IN_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Fields {
    /// Whether some day of some month can match. With OR semantics the
    /// weekday always can; with AND semantics the named days must exist in
    /// one of the named months (Feb 29 counts: it fires in leap years).
    fn can_fire(&self) -> bool {
        if self.last_day || !self.days_and_weekdays {
            return true;
        }
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=DAYS_IN_MONTH[(m - 1) as usize]).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn matches(&self, t: OffsetDateTime) -> bool {
        let bit = |set: u64, v: u8| set & (1u64 << v) != 0;
        let day_ok = if self.last_day {
            t.day() == time::util::days_in_month(t.month(), t.year())
        } else {
            bit(self.days, t.day())
        };
        let weekday_ok = bit(self.weekdays, t.weekday().number_days_from_sunday());
        bit(self.minutes, t.minute())
            && bit(self.hours, t.hour())
            && bit(self.months, u8::from(t.month()))
            && if self.days_and_weekdays {
                day_ok && weekday_ok
            } else {
                day_ok || weekday_ok
            }
    }

    /// Explicit lists for every field (never `*`), so croner applies exactly
    /// the AND/OR rule chosen by `days_and_weekdays`.
    fn croner_pattern(&self) -> String {
        let list = |set: u64, min: u32, max: u32| {
            (min..=max)
                .filter(|v| set & (1 << v) != 0)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let days = if self.last_day {
            "L".to_string()
        } else {
            list(self.days, 1, 31)
        };
        format!(
            "{} {} {} {} {}",
            list(self.minutes, 0, 59),
            list(self.hours, 0, 23),
            days,
            list(self.months, 1, 12),
            list(self.weekdays, 0, 6)
        )
    }
}

fn to_chrono(t: OffsetDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
}

fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

impl FromStr for CronSchedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for CronSchedule {
    type Error = ScheduleError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronSchedule {}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", &*self.text)
    }
}

impl serde::Serialize for CronSchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for CronSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn runs(schedule: &str, after: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        CronSchedule::parse(schedule)
            .unwrap()
            .next_runs_after(after, n)
    }

    #[test]
    fn accepts_valid_five_field_forms() {
        for ok in [
            "* * * * *",
            "0 * * * *",
            "*/5 * * * *",
            "0-30/10 8-18 * * mon-fri",
            "5,10,15 1,2 1,15 jan,JUL * ",
            "  0\t0  1 1 *",
            "59 23 31 12 7",
            "0 0 * * sun",
            "0 12 1-7 * 1",
            "0 0 29 2 *",
            "*/100 * * * *",
        ] {
            assert!(CronSchedule::parse(ok).is_ok(), "{ok:?} should parse");
            assert!(
                CronSchedule::parse_for(ok, PgCronVersion::V1_4).is_ok(),
                "{ok:?} is 1.4 syntax"
            );
        }
        assert_eq!(
            CronSchedule::parse("  0\t0  1 1 *").unwrap().as_str(),
            "0 0 1 1 *"
        );
    }

    #[test]
    fn refuses_invalid_five_field_forms() {
        let field = |s: &str| match CronSchedule::parse(s) {
            Err(ScheduleError::InvalidField { field, .. }) => field,
            other => panic!("{s:?}: expected an invalid field, got {other:?}"),
        };
        assert_eq!(field("60 * * * *"), "minute");
        assert_eq!(field("* 24 * * *"), "hour");
        assert_eq!(field("* * 0 * *"), "day-of-month");
        assert_eq!(field("* * 32 * *"), "day-of-month");
        assert_eq!(field("* * * 13 *"), "month");
        assert_eq!(field("* * * * 8"), "day-of-week");
        assert_eq!(field("5/10 * * * *"), "minute");
        assert_eq!(field("*/0 * * * *"), "minute");
        assert_eq!(field("10-5 * * * *"), "minute");
        assert_eq!(field("1,,2 * * * *"), "minute");
        assert_eq!(field("a * * * *"), "minute");
        assert_eq!(field("* * * foo *"), "month");
        assert_eq!(field("* * * * monday"), "day-of-week");
        assert_eq!(field("-1 * * * *"), "minute");
        assert_eq!(field("* * $ * *x"), "day-of-week");
        for (bad, found) in [("* * * *", 4), ("* * * * * *", 6), ("0 0 * * * cmd", 6)] {
            assert_eq!(
                CronSchedule::parse(bad),
                Err(ScheduleError::FieldCount {
                    input: bad.into(),
                    found
                })
            );
        }
        assert_eq!(CronSchedule::parse("   "), Err(ScheduleError::Empty));
        assert!(matches!(
            CronSchedule::parse(&"* ".repeat(100)),
            Err(ScheduleError::TooLong { .. })
        ));
        assert!(matches!(
            CronSchedule::parse("0 0 30 2 *"),
            Err(ScheduleError::NeverFires { .. })
        ));
        assert!(matches!(
            CronSchedule::parse("0 0 31 4,6,9,11 *"),
            Err(ScheduleError::NeverFires { .. })
        ));
    }

    #[test]
    fn aliases_are_pg_crons() {
        for (alias, same_as) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
        ] {
            let at = datetime!(2025-03-14 15:09:26 UTC);
            let parsed = CronSchedule::parse_for(alias, PgCronVersion::V1_4).unwrap();
            assert_eq!(parsed.as_str(), alias, "pg_cron gets the alias itself");
            assert_eq!(
                parsed.next_runs_after(at, 3),
                runs(same_as, at, 3),
                "{alias}"
            );
        }
        for bad in ["@reboot", "@Daily", "@every", "@", "@daily now"] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seconds_need_pg_cron_1_5() {
        for ok in [
            "10 seconds",
            "1 second",
            "59 SECONDS",
            "30seconds",
            " 5  seconds ",
        ] {
            let parsed = CronSchedule::parse(ok).unwrap();
            assert_eq!(parsed.required_version(), PgCronVersion::V1_5, "{ok:?}");
            assert!(CronSchedule::parse_for(ok, PgCronVersion::V1_5).is_ok());
            match CronSchedule::parse_for(ok, PgCronVersion::V1_4) {
                Err(ScheduleError::NeedsVersion { needed, found, .. }) => {
                    assert_eq!((needed, found), (PgCronVersion::V1_5, PgCronVersion::V1_4));
                }
                other => panic!("{ok:?}: {other:?}"),
            }
        }
        let err = CronSchedule::parse_for("10 seconds", PgCronVersion::V1_4).unwrap_err();
        assert!(
            err.to_string().contains("need pg_cron 1.5 or later"),
            "{err}"
        );
        for bad in ["0 seconds", "60 seconds", "100 seconds"] {
            assert!(
                matches!(
                    CronSchedule::parse(bad),
                    Err(ScheduleError::IntervalOutOfRange { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(CronSchedule::parse("10 minutes").is_err());
        assert!(CronSchedule::parse("seconds").is_err());
    }

    #[test]
    fn last_day_needs_pg_cron_1_6() {
        let parsed = CronSchedule::parse("0 23 $ * *").unwrap();
        assert_eq!(parsed.required_version(), PgCronVersion::V1_6);
        assert!(CronSchedule::parse_for("0 23 $ * *", PgCronVersion::V1_6).is_ok());
        for older in [PgCronVersion::V1_4, PgCronVersion::V1_5] {
            match CronSchedule::parse_for("0 23 $ * *", older) {
                Err(ScheduleError::NeedsVersion { needed, .. }) => {
                    assert_eq!(needed, PgCronVersion::V1_6)
                }
                other => panic!("{other:?}"),
            }
        }
        // Hand-computed: the last days of Feb (leap year), Mar and Apr 2024.
        assert_eq!(
            parsed.next_runs_after(datetime!(2024-02-10 00:00 UTC), 3),
            [
                datetime!(2024-02-29 23:00 UTC),
                datetime!(2024-03-31 23:00 UTC),
                datetime!(2024-04-30 23:00 UTC),
            ]
        );
        assert!(
            CronSchedule::parse("0 0 1,$ * *").is_err(),
            "$ stands alone"
        );
    }

    #[test]
    fn versions_parse_from_extversion() {
        assert_eq!(PgCronVersion::parse("1.4-1"), Some(PgCronVersion::V1_4));
        assert_eq!(PgCronVersion::parse("1.4"), Some(PgCronVersion::V1_4));
        assert_eq!(PgCronVersion::parse("1.6.4"), Some(PgCronVersion::V1_6));
        assert_eq!(PgCronVersion::parse("2"), Some(PgCronVersion::new(2, 0)));
        assert_eq!(PgCronVersion::parse("dev"), None);
        assert!(PgCronVersion::V1_4 < PgCronVersion::V1_5);
        assert_eq!(PgCronVersion::V1_6.to_string(), "1.6");
    }

    #[test]
    fn next_runs_match_hand_computed_times() {
        // Every 15 minutes from 10:07 → 10:15, 10:30, 10:45, 11:00.
        assert_eq!(
            runs("*/15 * * * *", datetime!(2025-01-01 10:07:30 UTC), 4),
            [
                datetime!(2025-01-01 10:15 UTC),
                datetime!(2025-01-01 10:30 UTC),
                datetime!(2025-01-01 10:45 UTC),
                datetime!(2025-01-01 11:00 UTC),
            ]
        );
        // "Strictly after": a start exactly on a run skips it.
        assert_eq!(
            runs("0 * * * *", datetime!(2025-01-01 10:00 UTC), 1),
            [datetime!(2025-01-01 11:00 UTC)]
        );
        // Weekdays at 09:30: 2025-01-03 is a Friday, so Fri, Mon, Tue.
        assert_eq!(
            runs("30 9 * * mon-fri", datetime!(2025-01-03 08:00 UTC), 3),
            [
                datetime!(2025-01-03 09:30 UTC),
                datetime!(2025-01-06 09:30 UTC),
                datetime!(2025-01-07 09:30 UTC),
            ]
        );
        // Both day fields restricted → OR: the 13th or any Friday.
        // Jan 2025: Fri 3, Fri 10, Mon 13, Fri 17.
        assert_eq!(
            runs("0 0 13 * 5", datetime!(2025-01-01 00:00 UTC), 4),
            [
                datetime!(2025-01-03 00:00 UTC),
                datetime!(2025-01-10 00:00 UTC),
                datetime!(2025-01-13 00:00 UTC),
                datetime!(2025-01-17 00:00 UTC),
            ]
        );
        // Day-of-month starts with `*` → AND (Vixie/pg_cron rule): odd days
        // that are Mondays. Jan 2025 Mondays: 6, 13, 20, 27 → 13 and 27.
        assert_eq!(
            runs("0 0 */2 * mon", datetime!(2025-01-01 00:00 UTC), 2),
            [
                datetime!(2025-01-13 00:00 UTC),
                datetime!(2025-01-27 00:00 UTC),
            ]
        );
        // Sunday as 7, month names, Feb 29 only in leap years.
        assert_eq!(
            runs("0 6 * * 7", datetime!(2025-01-01 00:00 UTC), 1),
            [datetime!(2025-01-05 06:00 UTC)]
        );
        assert_eq!(
            runs("0 0 29 feb *", datetime!(2025-03-01 00:00 UTC), 1),
            [datetime!(2028-02-29 00:00 UTC)]
        );
        assert_eq!(
            runs("@weekly", datetime!(2025-01-01 00:00 UTC), 1),
            [datetime!(2025-01-05 00:00 UTC)]
        );
        // Intervals: multiples of N seconds after the start.
        assert_eq!(
            runs("20 seconds", datetime!(2025-01-01 00:00:05 UTC), 3),
            [
                datetime!(2025-01-01 00:00:20 UTC),
                datetime!(2025-01-01 00:00:40 UTC),
                datetime!(2025-01-01 00:01:00 UTC),
            ]
        );
        assert_eq!(
            CronSchedule::parse("* * * * *")
                .unwrap()
                .next_runs_after(datetime!(2025-01-01 00:00 UTC), 5000)
                .len(),
            CronSchedule::MAX_PREVIEW
        );
    }

    #[test]
    fn slots_and_firing() {
        let every5 = CronSchedule::parse("*/5 * * * *").unwrap();
        assert!(every5.fires_at(datetime!(2025-01-01 10:05:42 UTC)));
        assert!(!every5.fires_at(datetime!(2025-01-01 10:06:00 UTC)));
        assert_eq!(
            every5.slot_of(datetime!(2025-01-01 10:05:42 UTC)),
            datetime!(2025-01-01 10:05 UTC)
        );
        let secs = CronSchedule::parse("15 seconds").unwrap();
        assert!(secs.fires_at(datetime!(2025-01-01 10:05:45 UTC)));
        assert!(!secs.fires_at(datetime!(2025-01-01 10:05:46 UTC)));
        assert_eq!(
            secs.slot_of(datetime!(2025-01-01 10:05:59 UTC)),
            datetime!(2025-01-01 10:05:45 UTC)
        );
    }

    #[test]
    fn serde_round_trips_and_refuses_invalid() {
        let s: CronSchedule = serde_json::from_str("\"*/5 * * * *\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*/5 * * * *\"");
        assert!(serde_json::from_str::<CronSchedule>("\"61 * * * *\"").is_err());
    }

    fn field_strategy(min: u32, max: u32, names: &'static [&'static str]) -> BoxedStrategy<String> {
        let value = (min..=max).prop_map(|v| v.to_string());
        let item = prop_oneof![
            value.clone(),
            Just("*".to_string()),
            (1u32..20).prop_map(|s| format!("*/{s}")),
            (min..=max, min..=max, proptest::option::of(1u32..10)).prop_map(|(a, b, s)| {
                let (a, b) = (a.min(b), a.max(b));
                match s {
                    Some(s) => format!("{a}-{b}/{s}"),
                    None => format!("{a}-{b}"),
                }
            }),
        ];
        let item = if names.is_empty() {
            item.boxed()
        } else {
            prop_oneof![
                item,
                proptest::sample::select(names).prop_map(str::to_string)
            ]
            .boxed()
        };
        proptest::collection::vec(item, 1..4)
            .prop_map(|items| items.join(","))
            .boxed()
    }

    fn schedule_strategy() -> impl Strategy<Value = String> {
        (
            field_strategy(0, 59, &[]),
            field_strategy(0, 23, &[]),
            field_strategy(1, 31, &[]),
            field_strategy(1, 12, MONTH.names),
            field_strategy(0, 7, WEEKDAY.names),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,60}") {
            let _ = CronSchedule::parse(&s);
            let _ = CronSchedule::parse_for(&s, PgCronVersion::V1_4);
        }

        #[test]
        fn parser_never_panics_on_cron_alphabet(s in "[0-9*/,$@a-zA-Z -]{0,40}") {
            if let Ok(parsed) = CronSchedule::parse(&s) {
                let _ = parsed.next_runs_after(OffsetDateTime::UNIX_EPOCH, 2);
            }
        }

        /// Our own Vixie-rule matcher and croner (which computes previews)
        /// agree on every minute, so previews follow pg_cron's rules.
        #[test]
        fn previews_agree_with_the_pg_cron_rules(
            schedule in schedule_strategy(),
            minute in 0i64..(60 * 24 * 366 * 4),
        ) {
            let Ok(parsed) = CronSchedule::parse(&schedule) else { return Ok(()); };
            let t = datetime!(2024-01-01 00:00 UTC) + time::Duration::minutes(minute);
            let Kind::Cron { preview, .. } = &parsed.kind else { unreachable!() };
            let chrono_t = to_chrono(t).unwrap();
            prop_assert_eq!(parsed.fires_at(t), preview.is_time_matching(&chrono_t).unwrap(), "{} at {}", schedule, t);
            // And the next preview is a firing minute, strictly later.
            if let Some(next) = parsed.next_runs_after(t, 1).first() {
                prop_assert!(*next > t && parsed.fires_at(*next));
            }
        }
    }
}
