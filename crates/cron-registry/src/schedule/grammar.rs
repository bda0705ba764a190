//! pg_cron's schedule grammar: five cron fields (Vixie rules), `@` aliases
//! and `N seconds` intervals, parsed into bit sets, and when those fire.
//!
//! Deliberately stricter than pg_cron's own parser (which ignores text
//! after the fifth field and accepts reversed ranges that never match):
//! whatever this accepts, pg_cron accepts with the same meaning.

use opsdeck_core::Snippet;
use time::OffsetDateTime;

use super::error::ScheduleError;

/// The longest accepted schedule, in bytes.
pub(super) const MAX_LEN: usize = 120;

/// A schedule that parsed: its text as pg_cron receives it (trimmed,
/// blanks collapsed) and what it means.
pub(super) struct Parsed {
    pub(super) text: String,
    pub(super) form: Form,
}

/// What a schedule means.
pub(super) enum Form {
    /// Five fields (or an alias, expanded).
    Cron(Fields),
    /// Every `N` seconds (pg_cron 1.5+).
    Interval(u8),
}

/// The expanded fields of a cron schedule: one bit per allowed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fields {
    pub(super) minutes: u64,
    pub(super) hours: u64,
    pub(super) days: u64,
    pub(super) months: u64,
    pub(super) weekdays: u64,
    /// Vixie cron (and so pg_cron) combine day-of-month and day-of-week
    /// with AND when either field starts with `*`, and with OR otherwise.
    pub(super) days_and_weekdays: bool,
    /// `$`: the last day of the month (pg_cron 1.6+).
    pub(super) last_day: bool,
}

pub(super) struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names, the first one meaning `min`.
    pub(super) names: &'static [&'static str],
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
pub(super) const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
pub(super) const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// Parses any form pg_cron knows, in its newest syntax.
pub(super) fn parse(input: &str) -> Result<Parsed, ScheduleError> {
    if input.len() > MAX_LEN {
        return Err(ScheduleError::TooLong {
            len: input.len(),
            max: MAX_LEN,
        });
    }
    let parts: Vec<&str> = input.split([' ', '\t']).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(ScheduleError::Empty);
    }
    let text = parts.join(" ");
    if let Some(alias) = parts[0].strip_prefix('@') {
        return parse_alias(alias, &parts, text);
    }
    if let Some(seconds) = parse_interval(&text)? {
        return Ok(Parsed {
            text,
            form: Form::Interval(seconds),
        });
    }
    if parts.len() != 5 {
        return Err(ScheduleError::FieldCount {
            input: Snippet::new(input),
            found: parts.len(),
        });
    }
    let field = |spec: &FieldSpec, value: &str| {
        parse_field(spec, value).map_err(|reason| ScheduleError::InvalidField {
            field: spec.name,
            value: Snippet::new(value),
            input: Snippet::new(input),
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
            input: Snippet::new(input),
        });
    }
    Ok(Parsed {
        text,
        form: Form::Cron(fields),
    })
}

fn parse_alias(alias: &str, parts: &[&str], text: String) -> Result<Parsed, ScheduleError> {
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
                alias: Snippet::new(parts[0]),
            });
        }
    };
    if parts.len() != 1 {
        return Err(ScheduleError::FieldCount {
            input: Snippet::new(&text),
            found: parts.len(),
        });
    }
    // pg_cron gets the alias itself; the fields are its meaning.
    Ok(Parsed {
        text,
        form: parse(expanded)?.form,
    })
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
            input: Snippet::new(text),
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

    /// Whether the schedule fires in the minute containing `t`.
    pub(super) fn matches(&self, t: OffsetDateTime) -> bool {
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
}
