//! Next-run previews (which pg_cron itself does not offer): croner
//! evaluates a cron schedule this crate has already parsed, rewritten as
//! explicit lists so croner applies exactly pg_cron's day rule.

use std::sync::Arc;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use opsdeck_core::Snippet;
use time::OffsetDateTime;

use super::error::ScheduleError;
use super::grammar::Fields;

/// A cron schedule in croner's form, for previews. Cheap to clone.
#[derive(Clone)]
pub(super) struct Preview(Arc<Cron>);

impl Preview {
    /// Builds the preview of `fields` (`text` names the schedule in the
    /// unreachable error).
    pub(super) fn new(fields: &Fields, text: &str) -> Result<Self, ScheduleError> {
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .dom_and_dow(fields.days_and_weekdays)
            .build()
            .parse(&croner_pattern(fields))
            .map(|cron| Preview(Arc::new(cron)))
            // Unreachable for fields the grammar built; mapped, not
            // unwrapped, so a croner regression is an error, not a panic.
            .map_err(|_| ScheduleError::InvalidField {
                field: "schedule",
                value: Snippet::new(text),
                input: Snippet::new(text),
                reason: "not understood by the preview engine",
            })
    }

    /// Up to `n` run times strictly after `after`, each at second 0.
    pub(super) fn runs_after(&self, after: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
        let mut out = Vec::with_capacity(n);
        let Some(mut cursor) = to_chrono(after) else {
            return out;
        };
        while out.len() < n {
            // A valid schedule always has a next run (the grammar checks
            // that it can fire); the error arm only ends previews past
            // croner's year range.
            match self.0.find_next_occurrence(&cursor, false) {
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

    /// Whether croner says the schedule fires at `t` (tests compare this
    /// with the grammar's own rule).
    #[cfg(test)]
    pub(super) fn matches(&self, t: OffsetDateTime) -> bool {
        let t = to_chrono(t).expect("a time croner can represent");
        self.0
            .is_time_matching(&t)
            .expect("croner evaluates a parsed schedule")
    }
}

/// `N seconds` previews: the unix times divisible by `N`, which is when the
/// in-process runner fires them.
pub(super) fn interval_runs_after(
    seconds: u8,
    after: OffsetDateTime,
    n: usize,
) -> Vec<OffsetDateTime> {
    let step = i64::from(seconds);
    let first = after.unix_timestamp().div_euclid(step) * step + step;
    (0..n as i64)
        .filter_map(|k| OffsetDateTime::from_unix_timestamp(first + k * step).ok())
        .collect()
}

/// Explicit lists for every field (never `*`), so croner applies exactly
/// the AND/OR rule chosen by `days_and_weekdays`.
fn croner_pattern(fields: &Fields) -> String {
    let list = |set: u64, min: u32, max: u32| {
        (min..=max)
            .filter(|v| set & (1 << v) != 0)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let days = if fields.last_day {
        "L".to_string()
    } else {
        list(fields.days, 1, 31)
    };
    format!(
        "{} {} {} {} {}",
        list(fields.minutes, 0, 59),
        list(fields.hours, 0, 23),
        days,
        list(fields.months, 1, 12),
        list(fields.weekdays, 0, 6)
    )
}

fn to_chrono(t: OffsetDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
}

fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}
