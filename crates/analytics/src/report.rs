//! Query inputs and report outputs, and the folding of daily rollups into
//! reports that every backend shares.

use std::collections::BTreeMap;
use std::fmt;

use opsdeck_core::{ModelRef, OperationId};
use serde::{Deserialize, Serialize};
use time::{Date, Duration as Days, Month};

use crate::error::{Error, Result};
use crate::execution::Execution;
use crate::histogram::{LatencyHistogram, Percentiles};
use crate::money::Money;

/// A half-open range of UTC days `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRange", into = "RawRange")]
pub struct DateRange {
    start: Date,
    end: Date,
}

/// A range as serialized; deserializing checks it like [`DateRange::new`].
#[derive(Clone, Copy, Serialize, Deserialize)]
struct RawRange {
    start: Date,
    end: Date,
}

impl TryFrom<RawRange> for DateRange {
    type Error = Error;
    fn try_from(raw: RawRange) -> Result<Self> {
        DateRange::new(raw.start, raw.end)
    }
}

impl From<DateRange> for RawRange {
    fn from(range: DateRange) -> Self {
        RawRange {
            start: range.start,
            end: range.end,
        }
    }
}

impl DateRange {
    /// Longest accepted range (about ten years): bounds the work of a query
    /// and of gap-filling daily trend buckets.
    pub const MAX_DAYS: i64 = 3660;

    /// `[start, end)`; refuses `end < start` and ranges over [`Self::MAX_DAYS`].
    pub fn new(start: Date, end: Date) -> Result<Self> {
        if end < start {
            return Err(Error::invalid(
                "range",
                format!("end {end} is before start {start}"),
            ));
        }
        let days = (end - start).whole_days();
        if days > Self::MAX_DAYS {
            return Err(Error::invalid(
                "range",
                format!(
                    "{days} days is longer than the maximum of {}",
                    Self::MAX_DAYS
                ),
            ));
        }
        Ok(DateRange { start, end })
    }

    /// The `days` days ending with `last` (inclusive).
    pub fn days_ending(last: Date, days: u32) -> Result<Self> {
        let end = last
            .next_day()
            .ok_or_else(|| Error::invalid("range", "date out of range"))?;
        let start = end
            .checked_sub(Days::days(i64::from(days)))
            .ok_or_else(|| Error::invalid("range", "date out of range"))?;
        Self::new(start, end)
    }

    /// The first day.
    pub fn start(&self) -> Date {
        self.start
    }

    /// The day after the last one.
    pub fn end(&self) -> Date {
        self.end
    }

    /// Whether `day` is inside.
    pub fn contains(&self, day: Date) -> bool {
        self.start <= day && day < self.end
    }

    /// Number of days.
    pub fn days(&self) -> i64 {
        (self.end - self.start).whole_days()
    }
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// Width of a cost-trend bucket. Weeks start on Monday (ISO 8601), months
/// on the 1st; all in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One bucket per day.
    Day,
    /// One bucket per ISO week.
    Week,
    /// One bucket per calendar month.
    Month,
}

impl Granularity {
    /// The name PostgreSQL's `date_trunc` takes.
    pub fn as_str(&self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    /// The first day of the bucket holding `day`.
    pub fn bucket_start(&self, day: Date) -> Date {
        match self {
            Granularity::Day => day,
            Granularity::Week => {
                day - Days::days(i64::from(day.weekday().number_days_from_monday()))
            }
            Granularity::Month => day.replace_day(1).unwrap_or(day),
        }
    }

    /// The first day of the bucket after the one starting at `start`.
    fn next_bucket(&self, start: Date) -> Option<Date> {
        match self {
            Granularity::Day => start.next_day(),
            Granularity::Week => start.checked_add(Days::days(7)),
            Granularity::Month => {
                let (year, month) = match start.month() {
                    Month::December => (start.year().checked_add(1)?, Month::January),
                    month => (start.year(), month.next()),
                };
                Date::from_calendar_date(year, month, 1).ok()
            }
        }
    }
}

/// Which rollups a query covers: a day range, optionally one operation
/// and/or one model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupFilter {
    /// The days.
    pub range: DateRange,
    /// Only this operation, if set.
    pub operation: Option<OperationId>,
    /// Only this model, if set.
    pub model: Option<ModelRef>,
}

impl RollupFilter {
    /// Every operation and model over `range`.
    pub fn new(range: DateRange) -> Self {
        RollupFilter {
            range,
            operation: None,
            model: None,
        }
    }

    /// Only `operation`.
    pub fn operation(mut self, operation: OperationId) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Only `model`.
    pub fn model(mut self, model: ModelRef) -> Self {
        self.model = Some(model);
        self
    }

    /// Whether a rollup of (`operation`, `model`, `day`) is covered.
    pub fn matches(&self, operation: &OperationId, model: &ModelRef, day: Date) -> bool {
        self.range.contains(day)
            && self.operation.as_ref().is_none_or(|o| o == operation)
            && self.model.as_ref().is_none_or(|m| m == model)
    }

    /// A stable text form, used in cache keys.
    pub(crate) fn cache_key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.range,
            self.operation.as_ref().map_or("*", OperationId::as_str),
            self.model.as_ref().map_or("*", ModelRef::as_str)
        )
    }
}

/// Sums over a set of executions. Counts, tokens and latency are `i64`
/// like the `BIGINT` columns they come from; all are non-negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Executions.
    pub executions: i64,
    /// Successful executions.
    pub successes: i64,
    /// Failed executions.
    pub failures: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost.
    pub cost: Money,
    /// Sum of latencies in milliseconds (for the mean).
    pub latency_ms_sum: i64,
}

impl Totals {
    /// Adds `other` (saturating, like [`Money`]).
    pub fn add(&mut self, other: &Totals) {
        self.executions = self.executions.saturating_add(other.executions);
        self.successes = self.successes.saturating_add(other.successes);
        self.failures = self.failures.saturating_add(other.failures);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost += other.cost;
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
    }

    /// Successes / executions, or `None` without executions.
    pub fn success_rate(&self) -> Option<f64> {
        ratio(self.successes, self.executions)
    }

    /// Cost / successes, rounded to the micro-dollar; `None` without successes.
    pub fn cost_per_success(&self) -> Option<Money> {
        self.cost.div_round(self.successes)
    }

    /// Mean input tokens per execution.
    pub fn average_input_tokens(&self) -> Option<f64> {
        ratio(self.input_tokens, self.executions)
    }

    /// Mean output tokens per execution.
    pub fn average_output_tokens(&self) -> Option<f64> {
        ratio(self.output_tokens, self.executions)
    }

    /// Mean latency in milliseconds.
    pub fn average_latency_ms(&self) -> Option<f64> {
        ratio(self.latency_ms_sum, self.executions)
    }
}

fn ratio(numerator: i64, denominator: i64) -> Option<f64> {
    // Display only: the decisions (SLA, recommendations) use exact integers.
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// One rollup: everything recorded for (operation, model, UTC day) of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyRollup {
    /// The operation.
    pub operation_id: OperationId,
    /// The model.
    pub model: ModelRef,
    /// The UTC day.
    pub day: Date,
    /// Sums.
    pub totals: Totals,
    /// Latency histogram.
    pub histogram: LatencyHistogram,
}

impl DailyRollup {
    /// The rollup of a single execution.
    pub(crate) fn of_execution(execution: &Execution) -> Self {
        let mut histogram = LatencyHistogram::new();
        histogram.record(u32::try_from(execution.latency_ms).unwrap_or(u32::MAX));
        let success = i64::from(execution.is_success());
        DailyRollup {
            operation_id: execution.operation_id.clone(),
            model: execution.model.clone(),
            day: execution.day(),
            totals: Totals {
                executions: 1,
                successes: success,
                failures: 1 - success,
                input_tokens: execution.input_tokens,
                output_tokens: execution.output_tokens,
                cost: execution.cost,
                latency_ms_sum: execution.latency_ms,
            },
            histogram,
        }
    }

    /// Adds another rollup of the same key (a shard, or one execution).
    pub(crate) fn merge(&mut self, other: &DailyRollup) {
        self.totals.add(&other.totals);
        self.histogram.merge(&other.histogram);
    }
}

/// Totals and merged histogram of a group of rollups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Aggregate {
    pub(crate) totals: Totals,
    pub(crate) histogram: LatencyHistogram,
}

impl Aggregate {
    pub(crate) fn add(&mut self, rollup: &DailyRollup) {
        self.totals.add(&rollup.totals);
        self.histogram.merge(&rollup.histogram);
    }
}

/// Groups rollups by `key`, summing totals and merging histograms.
pub(crate) fn group_by<'a, K: Ord>(
    rollups: impl IntoIterator<Item = &'a DailyRollup>,
    key: impl Fn(&DailyRollup) -> K,
) -> BTreeMap<K, Aggregate> {
    let mut groups: BTreeMap<K, Aggregate> = BTreeMap::new();
    for rollup in rollups {
        groups.entry(key(rollup)).or_default().add(rollup);
    }
    groups
}

/// A cost-trend query: a filter and a bucket width.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrendQuery {
    /// Which rollups.
    pub filter: RollupFilter,
    /// Bucket width.
    pub granularity: Granularity,
}

impl TrendQuery {
    /// Every operation and model over `range`, in `granularity` buckets.
    pub fn new(range: DateRange, granularity: Granularity) -> Self {
        TrendQuery {
            filter: RollupFilter::new(range),
            granularity,
        }
    }

    /// Only `operation`.
    pub fn operation(mut self, operation: OperationId) -> Self {
        self.filter = self.filter.operation(operation);
        self
    }

    /// Only `model`.
    pub fn model(mut self, model: ModelRef) -> Self {
        self.filter = self.filter.model(model);
        self
    }
}

/// One bucket of a cost trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendPoint {
    /// First day of the bucket (it may start before the range: the first and
    /// last buckets can be partial).
    pub start: Date,
    /// Sums over the bucket's days inside the range.
    pub totals: Totals,
}

/// Turns per-bucket sums into the full series: one point per bucket from the
/// range's first to its last day, zero where nothing ran. Both backends end
/// their cost trends with this, so charts need no gap handling.
pub(crate) fn complete_trend(
    query: &TrendQuery,
    sums: impl IntoIterator<Item = (Date, Totals)>,
) -> Vec<TrendPoint> {
    let mut sums: BTreeMap<Date, Totals> = sums.into_iter().collect();
    let range = query.filter.range;
    let Some(last_day) = range.end().previous_day().filter(|d| *d >= range.start()) else {
        return Vec::new();
    };
    let granularity = query.granularity;
    let mut points = Vec::new();
    let mut start = granularity.bucket_start(range.start());
    while start <= last_day {
        points.push(TrendPoint {
            start,
            totals: sums.remove(&start).unwrap_or_default(),
        });
        match granularity.next_bucket(start) {
            Some(next) => start = next,
            None => break,
        }
    }
    points
}

/// The cost trend of some rollups, for backends that fold in Rust.
pub(crate) fn trend_of(rollups: &[DailyRollup], query: &TrendQuery) -> Vec<TrendPoint> {
    let groups = group_by(
        rollups
            .iter()
            .filter(|r| query.filter.matches(&r.operation_id, &r.model, r.day)),
        |r| query.granularity.bucket_start(r.day),
    );
    complete_trend(query, groups.into_iter().map(|(day, a)| (day, a.totals)))
}

/// Totals and latency percentiles over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodSummary {
    /// The period.
    pub range: DateRange,
    /// Sums.
    pub totals: Totals,
    /// p50/p95/p99 latency from the merged daily histograms.
    pub latency: Percentiles,
}

impl PeriodSummary {
    pub(crate) fn of(range: DateRange, rollups: &[DailyRollup]) -> Self {
        let all = group_by(rollups, |_| ()).remove(&()).unwrap_or_default();
        PeriodSummary {
            range,
            totals: all.totals,
            latency: all.histogram.percentiles(),
        }
    }
}

/// How one model did on one operation over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// The model.
    pub model: ModelRef,
    /// Sums; see [`Totals::success_rate`], [`Totals::cost_per_success`],
    /// [`Totals::average_input_tokens`].
    pub totals: Totals,
    /// p50/p95/p99 latency from the merged daily histograms.
    pub latency: Percentiles,
}

/// Per-model stats of `rollups`, ordered by model.
pub(crate) fn compare_models(rollups: &[DailyRollup]) -> Vec<ModelStats> {
    group_by(rollups, |r| r.model.clone())
        .into_iter()
        .map(|(model, a)| ModelStats {
            model,
            totals: a.totals,
            latency: a.histogram.percentiles(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn buckets_start_on_monday_and_the_first() {
        let wednesday = date!(2026 - 01 - 07);
        assert_eq!(
            Granularity::Week.bucket_start(wednesday),
            date!(2026 - 01 - 05)
        );
        assert_eq!(
            Granularity::Month.bucket_start(wednesday),
            date!(2026 - 01 - 01)
        );
        assert_eq!(Granularity::Day.bucket_start(wednesday), wednesday);
        assert_eq!(
            Granularity::Month.next_bucket(date!(2025 - 12 - 01)),
            Some(date!(2026 - 01 - 01))
        );
    }

    #[test]
    fn trends_have_one_point_per_bucket() {
        let range = DateRange::new(date!(2026 - 01 - 07), date!(2026 - 02 - 03)).unwrap();
        let weeks = complete_trend(&TrendQuery::new(range, Granularity::Week), []);
        let starts: Vec<_> = weeks.iter().map(|p| p.start).collect();
        assert_eq!(
            starts,
            [
                date!(2026 - 01 - 05),
                date!(2026 - 01 - 12),
                date!(2026 - 01 - 19),
                date!(2026 - 01 - 26),
                date!(2026 - 02 - 02)
            ]
        );
        let months = complete_trend(&TrendQuery::new(range, Granularity::Month), []);
        assert_eq!(months.len(), 2);
        let empty = DateRange::new(date!(2026 - 01 - 07), date!(2026 - 01 - 07)).unwrap();
        assert!(complete_trend(&TrendQuery::new(empty, Granularity::Day), []).is_empty());
    }

    #[test]
    fn ranges_are_bounded() {
        assert!(DateRange::new(date!(2026 - 01 - 02), date!(2026 - 01 - 01)).is_err());
        assert!(DateRange::new(date!(2000 - 01 - 01), date!(2026 - 01 - 01)).is_err());
        let week = DateRange::days_ending(date!(2026 - 01 - 07), 7).unwrap();
        assert_eq!(
            (week.start(), week.end()),
            (date!(2026 - 01 - 01), date!(2026 - 01 - 08))
        );
        assert!(week.contains(date!(2026 - 01 - 07)));
        assert!(!week.contains(date!(2026 - 01 - 08)));
    }
}
