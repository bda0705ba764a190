//! Optimization recommendations: three rules over the daily rollups, and
//! the recommendation lifecycle (active → dismissed | applied | expired).

use std::collections::BTreeMap;

use opsdeck_core::{ModelRef, OperationId, UserId};
use serde::{Deserialize, Serialize};
use time::{Date, Duration as Days, OffsetDateTime};

use crate::error::{Error, Result};
use crate::ids::{RecommendationId, RecommendationStatus};
use crate::money::Money;
use crate::report::{Aggregate, DailyRollup, DateRange, Totals, group_by};

/// How a user closes an active recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Decline it.
    Dismiss,
    /// Act on it.
    Apply,
}

impl Resolution {
    /// The status it leads to.
    pub fn status(&self) -> RecommendationStatus {
        match self {
            Resolution::Dismiss => RecommendationStatus::Dismissed,
            Resolution::Apply => RecommendationStatus::Applied,
        }
    }
}

/// The knobs of the three rules. Percentages are integers so every
/// decision is exact integer arithmetic on the rollups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecommendationThresholds {
    /// Days of data the cheaper-model and failing-model rules look at,
    /// ending with the analysis day (default 28).
    pub lookback_days: u32,
    /// Executions a model needs in that window before any rule judges it
    /// (default 100).
    pub min_samples: i64,
    /// A cheaper model must cost at least this much less per success
    /// (default 10%).
    pub min_savings_percent: u32,
    /// Cost per execution must have grown by more than this, week over
    /// week, for "cost rising faster than usage" (default 20%).
    pub cost_growth_margin_percent: u32,
    /// Executions each of the two weeks needs for that rule (default 50).
    pub min_weekly_executions: i64,
    /// Failure rate at or above which a model is reported (default 10%).
    pub failure_rate_percent: u32,
    /// Days after a dismissal or an application during which the same
    /// recommendation is not raised again (default 30).
    pub cooldown_days: u32,
}

impl Default for RecommendationThresholds {
    fn default() -> Self {
        RecommendationThresholds {
            lookback_days: 28,
            min_samples: 100,
            min_savings_percent: 10,
            cost_growth_margin_percent: 20,
            min_weekly_executions: 50,
            failure_rate_percent: 10,
            cooldown_days: 30,
        }
    }
}

impl RecommendationThresholds {
    /// Sets the look-back window.
    pub fn lookback_days(mut self, days: u32) -> Self {
        self.lookback_days = days;
        self
    }

    /// Sets the minimum samples per model.
    pub fn min_samples(mut self, samples: i64) -> Self {
        self.min_samples = samples;
        self
    }

    /// Sets the minimum savings of a cheaper model.
    pub fn min_savings_percent(mut self, percent: u32) -> Self {
        self.min_savings_percent = percent;
        self
    }

    /// Sets the week-over-week cost-per-execution growth margin.
    pub fn cost_growth_margin_percent(mut self, percent: u32) -> Self {
        self.cost_growth_margin_percent = percent;
        self
    }

    /// Sets the minimum executions per week for the cost-growth rule.
    pub fn min_weekly_executions(mut self, executions: i64) -> Self {
        self.min_weekly_executions = executions;
        self
    }

    /// Sets the failure-rate threshold.
    pub fn failure_rate_percent(mut self, percent: u32) -> Self {
        self.failure_rate_percent = percent;
        self
    }

    /// Sets the cooldown after dismissal or application.
    pub fn cooldown_days(mut self, days: u32) -> Self {
        self.cooldown_days = days;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: &str| Err(Error::invalid("thresholds", reason.to_string()));
        if !(1..=366).contains(&self.lookback_days) {
            return bad("lookback_days must be 1..=366");
        }
        if self.min_samples < 1 || self.min_weekly_executions < 1 {
            return bad("sample minimums must be at least 1");
        }
        if self.min_savings_percent > 100 || self.failure_rate_percent > 100 {
            return bad("min_savings_percent and failure_rate_percent must be 0..=100");
        }
        if self.cost_growth_margin_percent > 10_000 || self.cooldown_days > 3660 {
            return bad("cost_growth_margin_percent must be <= 10000 and cooldown_days <= 3660");
        }
        Ok(())
    }

    /// The days of rollups [`evaluate`] needs for an analysis on `as_of`:
    /// the look-back window, and at least the two weeks the cost rule
    /// compares.
    pub fn analysis_range(&self, as_of: Date) -> Result<DateRange> {
        DateRange::days_ending(as_of, self.lookback_days.max(14))
    }
}

/// A model's numbers over the look-back window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEvidence {
    /// Executions.
    pub executions: i64,
    /// Successes.
    pub successes: i64,
    /// Total cost.
    pub cost: Money,
}

impl ModelEvidence {
    fn of(totals: &Totals) -> Self {
        ModelEvidence {
            executions: totals.executions,
            successes: totals.successes,
            cost: totals.cost,
        }
    }

    /// Cost per success (rounded to the micro-dollar).
    pub fn cost_per_success(&self) -> Option<Money> {
        self.cost.div_round(self.successes)
    }
}

/// One week's numbers of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekEvidence {
    /// First day of the 7-day window.
    pub start: Date,
    /// Executions.
    pub executions: i64,
    /// Total cost.
    pub cost: Money,
}

impl WeekEvidence {
    fn of(start: Date, totals: &Totals) -> Self {
        WeekEvidence {
            start,
            executions: totals.executions,
            cost: totals.cost,
        }
    }
}

/// What a rule found, with the evidence (stored as the recommendation's
/// `details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Another model ran the same operation at least as reliably for less
    /// per success, both with enough samples.
    CheaperModel {
        /// The operation.
        operation: OperationId,
        /// The model used most on it.
        current_model: ModelRef,
        /// The cheaper model.
        suggested_model: ModelRef,
        /// The current model's numbers.
        current: ModelEvidence,
        /// The suggested model's numbers.
        suggested: ModelEvidence,
        /// What the current model's successes of the window would have
        /// cost less on the suggested one.
        estimated_savings: Money,
    },
    /// An operation's cost grew faster than its executions, week over week.
    CostRising {
        /// The operation.
        operation: OperationId,
        /// The week before.
        previous_week: WeekEvidence,
        /// The last seven days.
        this_week: WeekEvidence,
    },
    /// A model fails an operation too often.
    FailingModel {
        /// The operation.
        operation: OperationId,
        /// The model.
        model: ModelRef,
        /// Executions in the window.
        executions: i64,
        /// Failures in the window.
        failures: i64,
    },
}

impl Finding {
    /// The stored kind: `cheaper_model`, `cost_rising` or `failing_model`.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::CheaperModel { .. } => "cheaper_model",
            Finding::CostRising { .. } => "cost_rising",
            Finding::FailingModel { .. } => "failing_model",
        }
    }

    /// The operation it is about.
    pub fn operation(&self) -> &OperationId {
        match self {
            Finding::CheaperModel { operation, .. }
            | Finding::CostRising { operation, .. }
            | Finding::FailingModel { operation, .. } => operation,
        }
    }

    /// The model it is about, for per-model findings.
    pub fn model(&self) -> Option<&ModelRef> {
        match self {
            Finding::FailingModel { model, .. } => Some(model),
            Finding::CheaperModel { .. } | Finding::CostRising { .. } => None,
        }
    }

    /// What it is about, as stored: at most one active recommendation per
    /// (user, kind, subject). A cheaper-model finding is about its operation
    /// (the suggested model may change between runs; the recommendation is
    /// then updated, not duplicated).
    pub fn subject(&self) -> String {
        match self.model() {
            // Operation ids and model references contain no spaces.
            Some(model) => format!("{} {}", self.operation(), model),
            None => self.operation().to_string(),
        }
    }
}

/// What applying a recommendation means, when it maps to a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecommendedAction {
    /// Make `model` the preferred model of `operation`.
    SwitchModel {
        /// The operation.
        operation: OperationId,
        /// The model to prefer.
        model: ModelRef,
    },
}

/// A stored recommendation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// Its id.
    pub id: RecommendationId,
    /// The owner.
    pub user_id: UserId,
    /// What was found (refreshed by each generation while active).
    pub finding: Finding,
    /// Where it is in its life.
    pub status: RecommendationStatus,
    /// When it was first raised.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When it was dismissed, applied or expired.
    pub status_changed_at: Option<OffsetDateTime>,
}

impl Recommendation {
    /// The change applying it stands for, if any: a cheaper-model finding
    /// means "prefer the suggested model for this operation". The other
    /// findings call for investigation, not a setting.
    pub fn action(&self) -> Option<RecommendedAction> {
        match &self.finding {
            Finding::CheaperModel {
                operation,
                suggested_model,
                ..
            } => Some(RecommendedAction::SwitchModel {
                operation: operation.clone(),
                model: suggested_model.clone(),
            }),
            Finding::CostRising { .. } | Finding::FailingModel { .. } => None,
        }
    }
}

/// Runs the three rules over `rollups` (a user's rollups covering
/// [`RecommendationThresholds::analysis_range`]), as of the UTC day
/// `as_of`. Pure: the same rollups give the same findings, ordered by kind
/// and subject.
///
/// - **cheaper model**: per operation, the model with the most executions
///   in the window is "current"; among the other models with at least
///   `min_samples` executions, those with a success rate at least equal and
///   a cost per success at least `min_savings_percent` lower qualify; the
///   cheapest per success is suggested. Needs the current model to have
///   `min_samples` executions and a success.
/// - **cost rising**: per operation, the last 7 days vs the 7 before, each
///   with `min_weekly_executions`: cost went up, and cost per execution went
///   up by more than `cost_growth_margin_percent`.
/// - **failing model**: per (operation, model) with `min_samples`
///   executions in the window, failures ≥ `failure_rate_percent` of them.
pub fn evaluate(
    rollups: &[DailyRollup],
    as_of: Date,
    thresholds: &RecommendationThresholds,
) -> Result<Vec<Finding>> {
    thresholds.validate()?;
    let window = DateRange::days_ending(as_of, thresholds.lookback_days)?;
    let in_window = || rollups.iter().filter(|r| window.contains(r.day));
    let per_model = group_by(in_window(), |r| (r.operation_id.clone(), r.model.clone()));

    let mut findings = cheaper_models(&per_model, thresholds);
    findings.extend(failing_models(&per_model, thresholds));
    findings.extend(rising_costs(rollups, as_of, thresholds)?);
    findings.sort_by_cached_key(|f| (f.kind(), f.subject()));
    Ok(findings)
}

type PerModel = BTreeMap<(OperationId, ModelRef), Aggregate>;

fn cheaper_models(per_model: &PerModel, t: &RecommendationThresholds) -> Vec<Finding> {
    let mut by_operation: BTreeMap<&OperationId, Vec<(&ModelRef, &Totals)>> = BTreeMap::new();
    for ((operation, model), aggregate) in per_model {
        if aggregate.totals.executions >= t.min_samples {
            by_operation
                .entry(operation)
                .or_default()
                .push((model, &aggregate.totals));
        }
    }
    let mut findings = Vec::new();
    for (operation, models) in by_operation {
        // Most executions; ties go to the first model by name (stable).
        let Some(&(current_model, current)) = models
            .iter()
            .min_by_key(|(model, totals)| (std::cmp::Reverse(totals.executions), *model))
        else {
            continue;
        };
        if current.successes == 0 {
            continue; // the failing-model rule covers it
        }
        let keep = i128::from(100 - t.min_savings_percent.min(100));
        let best = models
            .iter()
            .filter(|(model, c)| {
                *model != current_model
                    && c.successes > 0
                    // success rate >= current's:  c.s/c.n >= cur.s/cur.n
                    && mul(c.successes, current.executions) >= mul(current.successes, c.executions)
                    // cheaper per success:  c.cost/c.s < cur.cost/cur.s
                    && mul(c.cost.micros(), current.successes) < mul(current.cost.micros(), c.successes)
                    // by the margin:  c.cost/c.s <= cur.cost/cur.s * keep/100
                    && mul(c.cost.micros(), current.successes) * 100
                        <= mul(current.cost.micros(), c.successes) * keep
            })
            .min_by(|(am, a), (bm, b)| {
                // Lowest cost per success, then highest success rate, then name.
                mul(a.cost.micros(), b.successes)
                    .cmp(&mul(b.cost.micros(), a.successes))
                    .then(mul(b.successes, a.executions).cmp(&mul(a.successes, b.executions)))
                    .then(am.cmp(bm))
            });
        if let Some(&(suggested_model, suggested)) = best {
            let on_suggested = i128::from(suggested.cost.micros()) * i128::from(current.successes)
                / i128::from(suggested.successes);
            let savings = i128::from(current.cost.micros()) - on_suggested;
            findings.push(Finding::CheaperModel {
                operation: operation.clone(),
                current_model: current_model.clone(),
                suggested_model: suggested_model.clone(),
                current: ModelEvidence::of(current),
                suggested: ModelEvidence::of(suggested),
                estimated_savings: Money::from_micros(i64::try_from(savings).unwrap_or(i64::MAX)),
            });
        }
    }
    findings
}

fn failing_models(per_model: &PerModel, t: &RecommendationThresholds) -> Vec<Finding> {
    per_model
        .iter()
        .filter(|(_, a)| {
            let totals = &a.totals;
            totals.executions >= t.min_samples
                && mul(totals.failures, 100)
                    >= mul(totals.executions, i64::from(t.failure_rate_percent))
        })
        .map(|((operation, model), a)| Finding::FailingModel {
            operation: operation.clone(),
            model: model.clone(),
            executions: a.totals.executions,
            failures: a.totals.failures,
        })
        .collect()
}

fn rising_costs(
    rollups: &[DailyRollup],
    as_of: Date,
    t: &RecommendationThresholds,
) -> Result<Vec<Finding>> {
    let this_week = DateRange::days_ending(as_of, 7)?;
    let previous_week = DateRange::days_ending(as_of - Days::days(7), 7)?;
    let weekly = group_by(
        rollups
            .iter()
            .filter(|r| previous_week.contains(r.day) || this_week.contains(r.day)),
        |r| (r.operation_id.clone(), this_week.contains(r.day)),
    );
    let mut findings = Vec::new();
    for ((operation, is_this_week), now) in &weekly {
        let Some(before) = (*is_this_week)
            .then(|| weekly.get(&(operation.clone(), false)))
            .flatten()
        else {
            continue;
        };
        let (now, before) = (&now.totals, &before.totals);
        let enough = now.executions >= t.min_weekly_executions
            && before.executions >= t.min_weekly_executions;
        let margin = i128::from(100 + t.cost_growth_margin_percent);
        // cost per execution grew by more than the margin:
        //   now.cost/now.n > before.cost/before.n * margin/100
        let faster = mul(now.cost.micros(), before.executions) * 100
            > mul(before.cost.micros(), now.executions) * margin;
        if enough && before.cost > Money::ZERO && now.cost > before.cost && faster {
            findings.push(Finding::CostRising {
                operation: operation.clone(),
                previous_week: WeekEvidence::of(previous_week.start(), before),
                this_week: WeekEvidence::of(this_week.start(), now),
            });
        }
    }
    Ok(findings)
}

/// Orders findings by (kind, subject), keeping the last of repeated ones:
/// the order rows are locked in and the order results are returned in.
pub(crate) fn dedupe_findings(findings: Vec<Finding>) -> Vec<Finding> {
    let mut by_key = BTreeMap::new();
    for finding in findings {
        by_key.insert((finding.kind(), finding.subject()), finding);
    }
    by_key.into_values().collect()
}

/// Exact product for cross-multiplied comparisons of ratios.
fn mul(a: i64, b: i64) -> i128 {
    i128::from(a) * i128::from(b)
}
