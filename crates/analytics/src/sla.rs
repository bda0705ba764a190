//! SLA targets and reports.

use std::fmt;

use opsdeck_core::OperationId;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::error::{Error, Result};
use crate::histogram::LatencyHistogram;
use crate::limits::MAX_LATENCY_MS;
use crate::report::{DailyRollup, Totals, group_by};

const PPM: i128 = 1_000_000;

/// A success rate in parts per million (`999_000` = 99.9%), so targets
/// compare with integer arithmetic and no rounding surprise.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SuccessRate(u32);

impl SuccessRate {
    /// 100%.
    pub const MAX_PPM: u32 = 1_000_000;

    /// A rate in parts per million; refuses more than 1 000 000.
    pub fn from_ppm(ppm: u32) -> Result<Self> {
        if ppm > Self::MAX_PPM {
            return Err(Error::invalid(
                "min_success_rate",
                format!("{ppm} ppm is above 100%"),
            ));
        }
        Ok(SuccessRate(ppm))
    }

    /// A rate in percent (e.g. `99.5`), rounded to the nearest ppm.
    pub fn from_percent(percent: f64) -> Result<Self> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(Error::invalid(
                "min_success_rate",
                format!("{percent}% is not between 0 and 100"),
            ));
        }
        // In range by the check above, so the cast cannot truncate.
        Self::from_ppm((percent * 10_000.0).round() as u32)
    }

    /// The rate in parts per million.
    pub fn ppm(&self) -> u32 {
        self.0
    }

    /// The rate as a fraction in 0..=1 (for display).
    pub fn as_fraction(&self) -> f64 {
        f64::from(self.0) / f64::from(Self::MAX_PPM)
    }

    /// `successes / executions`, rounded down to the ppm; `None` without executions.
    pub fn of(successes: i64, executions: i64) -> Option<Self> {
        if executions <= 0 {
            return None;
        }
        let ppm = i128::from(successes.clamp(0, executions)) * PPM / i128::from(executions);
        u32::try_from(ppm).ok().map(SuccessRate)
    }

    /// Whether `successes` out of `executions` reach this rate (exact).
    /// No executions meets any target: nothing failed.
    pub fn is_met_by(&self, successes: i64, executions: i64) -> bool {
        executions <= 0
            || i128::from(successes) * PPM >= i128::from(self.0) * i128::from(executions)
    }
}

impl TryFrom<u32> for SuccessRate {
    type Error = Error;
    fn try_from(ppm: u32) -> Result<Self> {
        Self::from_ppm(ppm)
    }
}

impl From<SuccessRate> for u32 {
    fn from(rate: SuccessRate) -> u32 {
        rate.0
    }
}

/// `99.9%`, `100%`, `99.0001%`.
impl fmt::Display for SuccessRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 10_000, self.0 % 10_000);
        if fraction == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{fraction:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for SuccessRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SuccessRate({self})")
    }
}

/// What a user promises for one operation: a minimum success rate and a
/// maximum p95 latency, judged per day and over the whole period.
///
/// The p95 is the histogram estimate (see
/// [`LatencyHistogram::percentile`]): at most one bucket above the true
/// value, so a breach is never missed. Pick a latency target one below a
/// bucket bound (511, 1023, 2047, 4095 ms…) and the judgement is exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTarget", into = "RawTarget")]
pub struct SlaTarget {
    operation_id: OperationId,
    min_success_rate: SuccessRate,
    max_p95_latency_ms: u32,
}

impl SlaTarget {
    /// A target; the latency must be 1..=[`MAX_LATENCY_MS`].
    pub fn new(
        operation_id: OperationId,
        min_success_rate: SuccessRate,
        max_p95_latency_ms: u32,
    ) -> Result<Self> {
        if max_p95_latency_ms == 0 || i64::from(max_p95_latency_ms) > MAX_LATENCY_MS {
            return Err(Error::invalid(
                "max_p95_latency_ms",
                format!("{max_p95_latency_ms} is outside 1..={MAX_LATENCY_MS}"),
            ));
        }
        Ok(SlaTarget {
            operation_id,
            min_success_rate,
            max_p95_latency_ms,
        })
    }

    /// The operation.
    pub fn operation_id(&self) -> &OperationId {
        &self.operation_id
    }

    /// Minimum success rate.
    pub fn min_success_rate(&self) -> SuccessRate {
        self.min_success_rate
    }

    /// Maximum p95 latency in milliseconds.
    pub fn max_p95_latency_ms(&self) -> u32 {
        self.max_p95_latency_ms
    }

    /// The breaches of this target by `totals` and `histogram`.
    fn breaches(&self, totals: &Totals, histogram: &LatencyHistogram) -> Vec<Breach> {
        let mut breaches = Vec::new();
        if !self
            .min_success_rate
            .is_met_by(totals.successes, totals.executions)
        {
            breaches.push(Breach::SuccessRate {
                actual: SuccessRate::of(totals.successes, totals.executions)
                    .unwrap_or(self.min_success_rate),
                target: self.min_success_rate,
            });
        }
        if let Some(p95) = histogram.percentile(950)
            && p95 > self.max_p95_latency_ms
        {
            breaches.push(Breach::P95Latency {
                actual_ms: p95,
                target_ms: self.max_p95_latency_ms,
            });
        }
        breaches
    }
}

#[derive(Serialize, Deserialize)]
struct RawTarget {
    operation_id: OperationId,
    min_success_rate_ppm: u32,
    max_p95_latency_ms: u32,
}

impl TryFrom<RawTarget> for SlaTarget {
    type Error = Error;
    fn try_from(raw: RawTarget) -> Result<Self> {
        SlaTarget::new(
            raw.operation_id,
            SuccessRate::from_ppm(raw.min_success_rate_ppm)?,
            raw.max_p95_latency_ms,
        )
    }
}

impl From<SlaTarget> for RawTarget {
    fn from(target: SlaTarget) -> Self {
        RawTarget {
            operation_id: target.operation_id,
            min_success_rate_ppm: target.min_success_rate.ppm(),
            max_p95_latency_ms: target.max_p95_latency_ms,
        }
    }
}

/// One way a target was missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Breach {
    /// Too many failures.
    SuccessRate {
        /// Measured rate (rounded down to the ppm).
        actual: SuccessRate,
        /// The target.
        target: SuccessRate,
    },
    /// Too slow.
    P95Latency {
        /// Estimated p95.
        actual_ms: u32,
        /// The target.
        target_ms: u32,
    },
}

/// A day on which a target was missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyBreach {
    /// The UTC day.
    pub day: Date,
    /// What was missed.
    pub breach: Breach,
}

/// How many failures the success-rate target allows over the period, and
/// how many of them are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBudget {
    /// `⌊executions × (1 − target)⌋`.
    pub allowed_failures: i64,
    /// Failures so far.
    pub failures: i64,
}

impl ErrorBudget {
    fn of(target: SuccessRate, totals: &Totals) -> Self {
        let allowed = i128::from(totals.executions) * (PPM - i128::from(target.ppm())) / PPM;
        ErrorBudget {
            allowed_failures: i64::try_from(allowed).unwrap_or(i64::MAX),
            failures: totals.failures,
        }
    }

    /// Failures left before the target is missed; negative once it is.
    pub fn remaining(&self) -> i64 {
        self.allowed_failures.saturating_sub(self.failures)
    }

    /// `remaining / allowed` (1.0 = untouched, below 0 = overspent); `None`
    /// when the budget is zero.
    pub fn remaining_fraction(&self) -> Option<f64> {
        (self.allowed_failures > 0).then(|| self.remaining() as f64 / self.allowed_failures as f64)
    }
}

/// A target against what happened over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaStatus {
    /// The target.
    pub target: SlaTarget,
    /// Sums over the period.
    pub totals: Totals,
    /// Estimated p95 latency over the period.
    pub p95_latency_ms: Option<u32>,
    /// Breaches over the whole period (empty = target met).
    pub breaches: Vec<Breach>,
    /// Days that missed the target, in day order.
    pub daily_breaches: Vec<DailyBreach>,
    /// The success-rate error budget.
    pub error_budget: ErrorBudget,
}

impl SlaStatus {
    /// Whether the target was met over the period.
    pub fn is_met(&self) -> bool {
        self.breaches.is_empty()
    }

    /// The status of `target` given the rollups of the period (rollups of
    /// other operations are ignored).
    pub(crate) fn of(target: SlaTarget, rollups: &[DailyRollup]) -> Self {
        let relevant: Vec<&DailyRollup> = rollups
            .iter()
            .filter(|r| &r.operation_id == target.operation_id())
            .collect();
        let whole = group_by(relevant.iter().copied(), |_| ())
            .remove(&())
            .unwrap_or_default();
        let daily_breaches = group_by(relevant.iter().copied(), |r| r.day)
            .into_iter()
            .flat_map(|(day, day_total)| {
                target
                    .breaches(&day_total.totals, &day_total.histogram)
                    .into_iter()
                    .map(move |breach| DailyBreach { day, breach })
            })
            .collect();
        SlaStatus {
            breaches: target.breaches(&whole.totals, &whole.histogram),
            error_budget: ErrorBudget::of(target.min_success_rate, &whole.totals),
            p95_latency_ms: whole.histogram.percentile(950),
            totals: whole.totals,
            daily_breaches,
            target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rates_are_exact() {
        let target = SuccessRate::from_percent(99.9).unwrap();
        assert_eq!(target.ppm(), 999_000);
        assert_eq!(target.to_string(), "99.9%");
        assert!(target.is_met_by(999, 1000));
        assert!(!target.is_met_by(998, 1000));
        assert!(target.is_met_by(0, 0));
        assert_eq!(SuccessRate::of(2, 3).unwrap().ppm(), 666_666);
        assert!(SuccessRate::from_ppm(1_000_001).is_err());
        assert!(SuccessRate::from_percent(f64::NAN).is_err());
        assert_eq!(
            SuccessRate::from_ppm(1_000_000).unwrap().to_string(),
            "100%"
        );
    }

    #[test]
    fn error_budget_counts_allowed_failures() {
        let totals = Totals {
            executions: 10_000,
            successes: 9_990,
            failures: 10,
            ..Totals::default()
        };
        let budget = ErrorBudget::of(SuccessRate::from_ppm(999_500).unwrap(), &totals);
        assert_eq!((budget.allowed_failures, budget.remaining()), (5, -5));
        assert_eq!(budget.remaining_fraction(), Some(-1.0));
    }

    #[test]
    fn targets_refuse_zero_latency() {
        let op: OperationId = "op".parse().unwrap();
        let rate = SuccessRate::from_ppm(0).unwrap();
        assert!(SlaTarget::new(op.clone(), rate, 0).is_err());
        assert!(SlaTarget::new(op, rate, 1).is_ok());
    }
}
