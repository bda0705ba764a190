use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::{
    EventStatus, Inserted, NewEvent, Outcome, PurgeReport, StatusCounts, WebhookEvent,
    truncate_error,
};
use crate::ids::{EndpointName, EventId};
use crate::repository::{EventRepository, MAX_CLAIM, check_purge_cutoff};

/// The event log in process memory: for tests, examples and single-process
/// services that accept losing the log on restart. It behaves like
/// [`crate::PgEventRepository`] (both pass [`crate::testing`]); several
/// workers in one process share it safely.
///
/// One mutex guards everything, which makes each call atomic like one SQL
/// statement; calls never await while holding it.
#[derive(Debug, Default)]
pub struct InMemoryEventRepository {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    events: HashMap<EventId, WebhookEvent>,
    by_external_id: HashMap<(EndpointName, String), EventId>,
    /// Insertion order breaks ties between equal due times, like the
    /// PostgreSQL query's ordering keeps claims fair.
    order: Vec<EventId>,
    /// When each processed or failed event became final (PostgreSQL's
    /// `updated_at` of a final row); what retention measures.
    finished_at: HashMap<EventId, OffsetDateTime>,
}

impl InMemoryEventRepository {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves event `id`'s timestamps `by` into the past, as if it had been
    /// received and finished that much earlier; `false` if there is no
    /// such event. For retention tests, which cannot wait a week
    /// ([`crate::testing::purge_deletes_only_old_final_events`]).
    #[cfg(feature = "testing")]
    pub fn backdate(&self, id: EventId, by: Duration) -> bool {
        let earlier = |t: OffsetDateTime| {
            time::Duration::try_from(by)
                .ok()
                .and_then(|by| t.checked_sub(by))
                .unwrap_or(t)
        };
        let mut state = self.state();
        let finished = state.finished_at.get(&id).copied().map(earlier);
        let Some(event) = state.events.get_mut(&id) else {
            return false;
        };
        event.received_at = earlier(event.received_at);
        event.processed_at = event.processed_at.map(earlier);
        if let Some(finished) = finished {
            state.finished_at.insert(id, finished);
        }
        true
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every write below is computed before it is applied, so a panic
        // elsewhere cannot have left a half-applied change behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `now + duration`; durations past what a date can hold mean "never" and
/// are capped instead of overflowing.
fn after(now: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|d| now.checked_add(d))
        .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC))
}

#[async_trait]
impl EventRepository for InMemoryEventRepository {
    async fn insert(&self, event: NewEvent) -> Result<Inserted> {
        event.validate()?;
        let mut state = self.state();
        let key = (event.source.clone(), event.external_id.clone());
        if let Some(&id) = state.by_external_id.get(&key) {
            return Ok(Inserted {
                id,
                duplicate: true,
            });
        }
        let now = OffsetDateTime::now_utc();
        let id = EventId::random();
        state.events.insert(
            id,
            WebhookEvent {
                id,
                source: event.source,
                scheme: event.scheme,
                external_id: event.external_id,
                event_type: event.event_type,
                key_id: event.key_id,
                headers: event.headers,
                payload: event.payload,
                received_at: now,
                status: EventStatus::Received,
                attempts: 0,
                last_error: None,
                next_attempt_at: now,
                processed_at: None,
            },
        );
        state.by_external_id.insert(key, id);
        state.order.push(id);
        Ok(Inserted {
            id,
            duplicate: false,
        })
    }

    async fn get(&self, id: EventId) -> Result<Option<WebhookEvent>> {
        Ok(self.state().events.get(&id).cloned())
    }

    async fn find(&self, source: &EndpointName, external_id: &str) -> Result<Option<WebhookEvent>> {
        let state = self.state();
        Ok(state
            .by_external_id
            .get(&(source.clone(), external_id.to_owned()))
            .and_then(|id| state.events.get(id))
            .cloned())
    }

    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<WebhookEvent>> {
        let limit = limit.min(MAX_CLAIM);
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let mut due: Vec<(OffsetDateTime, usize, EventId)> = state
            .order
            .iter()
            .enumerate()
            .filter_map(|(position, id)| {
                let event = &state.events[id];
                let claimable = matches!(
                    event.status,
                    EventStatus::Received | EventStatus::Processing
                ) && event.next_attempt_at <= now;
                claimable.then_some((event.next_attempt_at, position, *id))
            })
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        let lease_end = after(now, lease);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, _, id) in due {
            if let Some(event) = state.events.get_mut(&id) {
                event.status = EventStatus::Processing;
                event.attempts = event.attempts.saturating_add(1);
                event.next_attempt_at = lease_end;
                claimed.push(event.clone());
            }
        }
        Ok(claimed)
    }

    async fn complete(&self, id: EventId, attempt: i32, outcome: Outcome) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let event = state
            .events
            .get_mut(&id)
            .filter(|e| e.status == EventStatus::Processing && e.attempts == attempt)
            .ok_or(Error::LeaseLost { id })?;
        match outcome {
            Outcome::Processed => {
                event.status = EventStatus::Processed;
                event.processed_at = Some(now);
                event.last_error = None;
            }
            Outcome::Retry { error, after: wait } => {
                event.status = EventStatus::Received;
                event.last_error = Some(truncate_error(&error));
                event.next_attempt_at = after(now, wait);
            }
            Outcome::Failed { error } => {
                event.status = EventStatus::Failed;
                event.last_error = Some(truncate_error(&error));
            }
        }
        if matches!(event.status, EventStatus::Processed | EventStatus::Failed) {
            state.finished_at.insert(id, now);
        }
        Ok(())
    }

    async fn extend_lease(&self, id: EventId, attempt: i32, lease: Duration) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let event = state
            .events
            .get_mut(&id)
            .filter(|e| e.status == EventStatus::Processing && e.attempts == attempt)
            .ok_or(Error::LeaseLost { id })?;
        event.next_attempt_at = after(now, lease);
        Ok(())
    }

    async fn counts(&self, source: &EndpointName) -> Result<StatusCounts> {
        let mut counts = StatusCounts::default();
        for event in self.state().events.values() {
            if &event.source == source {
                counts.add(event.status, 1);
            }
        }
        Ok(counts)
    }

    async fn purge_events_before(&self, cutoff: OffsetDateTime) -> Result<PurgeReport> {
        check_purge_cutoff(cutoff, OffsetDateTime::now_utc())?;
        let mut state = self.state();
        let doomed: Vec<EventId> = state
            .finished_at
            .iter()
            .filter(|(_, finished)| **finished < cutoff)
            .map(|(id, _)| *id)
            .collect();
        let mut report = PurgeReport::default();
        for id in &doomed {
            state.finished_at.remove(id);
            if let Some(event) = state.events.remove(id) {
                match event.status {
                    EventStatus::Processed => report.processed += 1,
                    _ => report.failed += 1,
                }
                state
                    .by_external_id
                    .remove(&(event.source, event.external_id));
            }
        }
        if !doomed.is_empty() {
            let State { events, order, .. } = &mut *state;
            order.retain(|id| events.contains_key(id));
        }
        Ok(report)
    }
}
