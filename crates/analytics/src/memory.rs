use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::{ModelRef, OperationId, UserId};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::execution::{Execution, RecordSummary, prepare_batch};
use crate::ids::{ExecutionId, RecommendationId, RecommendationStatus};
use crate::limits::{DEFAULT_FUTURE_TOLERANCE, MAX_LIST};
use crate::recommend::{Finding, Recommendation, Resolution, dedupe_findings};
use crate::report::{DailyRollup, DateRange, RollupFilter, TrendPoint, TrendQuery, trend_of};
use crate::repository::{
    AnalyticsRepository, RetentionReport, check_expiry_cutoff, retention_horizon,
};
use crate::sla::SlaTarget;

/// Analytics kept in process memory: the embedded default when no database
/// is configured, and a test double that behaves like
/// [`crate::PgAnalyticsRepository`] (both pass [`crate::testing`]).
///
/// One mutex guards everything, which makes each call atomic like a single
/// SQL statement; every write is validated before the lock is taken and no
/// call awaits while holding it.
#[derive(Debug)]
pub struct InMemoryAnalyticsRepository {
    state: Mutex<State>,
    future_tolerance: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The idempotency ledger: (user, id) → executed_at.
    ledger: HashMap<(UserId, ExecutionId), OffsetDateTime>,
    /// The log, in the PostgreSQL primary key's order.
    log: BTreeMap<(UserId, OffsetDateTime, ExecutionId), Execution>,
    rollups: BTreeMap<(UserId, OperationId, ModelRef, Date), DailyRollup>,
    sla_targets: BTreeMap<(UserId, OperationId), SlaTarget>,
    recommendations: HashMap<UserId, Vec<Recommendation>>,
    horizon: Option<OffsetDateTime>,
}

impl Default for InMemoryAnalyticsRepository {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryAnalyticsRepository {
    /// An empty repository accepting executions up to
    /// [`DEFAULT_FUTURE_TOLERANCE`] in the future.
    pub fn new() -> Self {
        InMemoryAnalyticsRepository {
            state: Mutex::new(State::default()),
            future_tolerance: DEFAULT_FUTURE_TOLERANCE,
        }
    }

    /// Sets how far in the future `executed_at` may be.
    pub fn with_future_tolerance(mut self, tolerance: Duration) -> Self {
        self.future_tolerance = tolerance;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Writes are computed before they are applied, and applying cannot
        // panic, so a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Refuses an execution older than the retention horizon: its id may
    /// have been forgotten, so it could be counted twice.
    fn check_horizon(&self, execution: &Execution) -> Result<()> {
        match self.horizon {
            Some(horizon) if execution.executed_at < horizon => Err(Error::invalid(
                "executed_at",
                format!(
                    "{} is before the retention horizon {horizon}",
                    execution.executed_at
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Records one validated execution; false if its id was known.
    fn record(&mut self, execution: Execution) -> bool {
        let id = (execution.user_id, execution.execution_id);
        if self.ledger.contains_key(&id) {
            return false;
        }
        self.ledger.insert(id, execution.executed_at);
        let delta = DailyRollup::of_execution(&execution);
        let key = (
            execution.user_id,
            delta.operation_id.clone(),
            delta.model.clone(),
            delta.day,
        );
        match self.rollups.get_mut(&key) {
            Some(rollup) => rollup.merge(&delta),
            None => {
                self.rollups.insert(key, delta);
            }
        }
        self.log.insert(
            (
                execution.user_id,
                execution.executed_at,
                execution.execution_id,
            ),
            execution,
        );
        true
    }

    fn rollups_of(&self, user: UserId, filter: &RollupFilter) -> Vec<DailyRollup> {
        self.rollups
            .iter()
            .filter(|((owner, operation, model, day), _)| {
                *owner == user && filter.matches(operation, model, *day)
            })
            .map(|(_, rollup)| rollup.clone())
            .collect()
    }
}

#[async_trait]
impl AnalyticsRepository for InMemoryAnalyticsRepository {
    #[tracing::instrument(name = "analytics.memory.record_operation_execution", skip_all)]
    async fn record_operation_execution(&self, execution: Execution) -> Result<bool> {
        execution.validate(OffsetDateTime::now_utc(), self.future_tolerance)?;
        let mut state = self.state();
        state.check_horizon(&execution)?;
        Ok(state.record(execution))
    }

    #[tracing::instrument(name = "analytics.memory.record_many", skip_all)]
    async fn record_many(&self, executions: Vec<Execution>) -> Result<RecordSummary> {
        let received = executions.len();
        let mut state = self.state();
        let executions = prepare_batch(
            executions,
            OffsetDateTime::now_utc(),
            self.future_tolerance,
            |e| state.check_horizon(e),
        )?;
        let recorded = executions
            .into_iter()
            .map(|execution| u64::from(state.record(execution)))
            .sum();
        Ok(RecordSummary::new(received, recorded))
    }

    #[tracing::instrument(name = "analytics.memory.executions", skip_all, fields(%user))]
    async fn executions(
        &self,
        user: UserId,
        range: DateRange,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        let bound = |day: Date| {
            (
                user,
                day.midnight().assume_utc(),
                ExecutionId::from(Uuid::nil()),
            )
        };
        Ok(self
            .state()
            .log
            .range(bound(range.start())..bound(range.end()))
            .take(limit.min(MAX_LIST))
            .map(|(_, execution)| execution.clone())
            .collect())
    }

    #[tracing::instrument(name = "analytics.memory.daily_rollups", skip_all, fields(%user))]
    async fn daily_rollups(&self, user: UserId, filter: &RollupFilter) -> Result<Vec<DailyRollup>> {
        Ok(self.state().rollups_of(user, filter))
    }

    #[tracing::instrument(name = "analytics.memory.cost_trend", skip_all, fields(%user))]
    async fn cost_trend(&self, user: UserId, query: &TrendQuery) -> Result<Vec<TrendPoint>> {
        let rollups = self.state().rollups_of(user, &query.filter);
        Ok(trend_of(&rollups, query))
    }

    #[tracing::instrument(name = "analytics.memory.set_sla_target", skip_all, fields(%user))]
    async fn set_sla_target(&self, user: UserId, target: SlaTarget) -> Result<()> {
        self.state()
            .sla_targets
            .insert((user, target.operation_id().clone()), target);
        Ok(())
    }

    #[tracing::instrument(name = "analytics.memory.sla_targets", skip_all, fields(%user))]
    async fn sla_targets(&self, user: UserId) -> Result<Vec<SlaTarget>> {
        Ok(self
            .state()
            .sla_targets
            .iter()
            .filter(|((owner, _), _)| *owner == user)
            .map(|(_, target)| target.clone())
            .collect())
    }

    #[tracing::instrument(name = "analytics.memory.delete_sla_target", skip_all, fields(%user))]
    async fn delete_sla_target(&self, user: UserId, operation: &OperationId) -> Result<bool> {
        Ok(self
            .state()
            .sla_targets
            .remove(&(user, operation.clone()))
            .is_some())
    }

    #[tracing::instrument(name = "analytics.memory.save_recommendations", skip_all, fields(%user))]
    async fn save_recommendations(
        &self,
        user: UserId,
        findings: Vec<Finding>,
        cooldown: Duration,
    ) -> Result<Vec<Recommendation>> {
        let now = OffsetDateTime::now_utc();
        let findings = dedupe_findings(findings);
        let mut state = self.state();
        let stored = state.recommendations.entry(user).or_default();
        // Active ones the rules no longer produce do not hold any more.
        for stale in stored.iter_mut().filter(|r| {
            r.status == RecommendationStatus::Active
                && !findings
                    .iter()
                    .any(|f| f.kind() == r.finding.kind() && f.subject() == r.finding.subject())
        }) {
            expire(stale, now);
        }
        let mut saved = Vec::new();
        for finding in findings {
            let (kind, subject) = (finding.kind(), finding.subject());
            let same =
                |r: &Recommendation| r.finding.kind() == kind && r.finding.subject() == subject;
            if let Some(active) = stored
                .iter_mut()
                .find(|r| r.status == RecommendationStatus::Active && same(r))
            {
                active.finding = finding;
                active.updated_at = now;
                saved.push(active.clone());
                continue;
            }
            // A huge cooldown saturates instead of overflowing.
            let since = time::Duration::try_from(cooldown)
                .ok()
                .and_then(|cooldown| now.checked_sub(cooldown))
                .unwrap_or(OffsetDateTime::new_utc(Date::MIN, time::Time::MIDNIGHT));
            // Only the user's decisions suppress; an expiry does not.
            let suppressed = stored.iter().any(|r| {
                same(r)
                    && matches!(
                        r.status,
                        RecommendationStatus::Dismissed | RecommendationStatus::Applied
                    )
                    && r.status_changed_at.is_some_and(|at| at > since)
            });
            if suppressed {
                continue;
            }
            let created = Recommendation {
                id: RecommendationId::random(),
                user_id: user,
                finding,
                status: RecommendationStatus::Active,
                created_at: now,
                updated_at: now,
                status_changed_at: None,
            };
            stored.push(created.clone());
            saved.push(created);
        }
        Ok(saved)
    }

    #[tracing::instrument(name = "analytics.memory.recommendations", skip_all, fields(%user))]
    async fn recommendations(
        &self,
        user: UserId,
        status: Option<RecommendationStatus>,
    ) -> Result<Vec<Recommendation>> {
        let state = self.state();
        let mut found: Vec<Recommendation> = state
            .recommendations
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        found.sort_by_cached_key(|r| (r.created_at, r.finding.kind(), r.finding.subject(), r.id));
        Ok(found)
    }

    #[tracing::instrument(name = "analytics.memory.resolve_recommendation", skip_all, fields(%user))]
    async fn resolve_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
        resolution: Resolution,
    ) -> Result<Recommendation> {
        let mut state = self.state();
        let found = state
            .recommendations
            .get_mut(&user)
            .and_then(|all| all.iter_mut().find(|r| r.id == id))
            .ok_or(Error::NotFound(id))?;
        let to = resolution.status();
        match found.status {
            RecommendationStatus::Active => {
                let now = OffsetDateTime::now_utc();
                found.status = to;
                found.status_changed_at = Some(now);
                found.updated_at = now;
                Ok(found.clone())
            }
            from if from == to => Ok(found.clone()),
            from => Err(Error::InvalidTransition { id, from, to }),
        }
    }

    #[tracing::instrument(name = "analytics.memory.expire_recommendations_before", skip_all)]
    async fn expire_recommendations_before(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let now = OffsetDateTime::now_utc();
        check_expiry_cutoff(cutoff, now)?;
        let mut state = self.state();
        let mut expired = 0;
        for stale in state
            .recommendations
            .values_mut()
            .flatten()
            .filter(|r| r.status == RecommendationStatus::Active && r.updated_at < cutoff)
        {
            expire(stale, now);
            expired += 1;
        }
        Ok(expired)
    }

    #[tracing::instrument(name = "analytics.memory.purge_executions_before", skip_all)]
    async fn purge_executions_before(&self, cutoff: OffsetDateTime) -> Result<RetentionReport> {
        let horizon = retention_horizon(cutoff, OffsetDateTime::now_utc())?;
        let mut state = self.state();
        let before = state.ledger.len();
        state
            .ledger
            .retain(|_, executed_at| *executed_at >= horizon);
        state
            .log
            .retain(|(_, executed_at, _), _| *executed_at >= horizon);
        let horizon = state.horizon.map_or(horizon, |old| old.max(horizon));
        state.horizon = Some(horizon);
        Ok(RetentionReport {
            horizon,
            dropped_partitions: Vec::new(),
            forgotten_ids: (before - state.ledger.len()) as u64,
        })
    }
}

/// Moves an active recommendation to expired.
fn expire(recommendation: &mut Recommendation, now: OffsetDateTime) {
    recommendation.status = RecommendationStatus::Expired;
    recommendation.status_changed_at = Some(now);
    recommendation.updated_at = now;
}
