//! The storage trait of the event log; the backends (`memory.rs`,
//! `postgres.rs`) implement it, the receiver and the worker use it.

use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::Validation;
use time::OffsetDateTime;

use crate::error::Result;
use crate::event::{Inserted, NewEvent, Outcome, PurgeReport, StatusCounts, WebhookEvent};
use crate::ids::{EndpointName, EventId};

/// Most events one [`EventRepository::claim`] hands out.
pub const MAX_CLAIM: usize = 1000;

/// The shortest retention [`EventRepository::purge_events_before`] accepts:
/// 7 days. The log is also the duplicate detector, and senders retry a
/// delivery for days (Stripe for up to 3, Standard Webhooks senders for
/// about 1–2); an event purged while its sender may still redeliver it
/// would be processed a second time.
pub const MIN_EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Refuses a purge cutoff later than `now - MIN_EVENT_RETENTION`; shared by
/// the backends so they refuse exactly the same cutoffs.
pub(crate) fn check_purge_cutoff(cutoff: OffsetDateTime, now: OffsetDateTime) -> Result<()> {
    let latest = time::Duration::try_from(MIN_EVENT_RETENTION)
        .ok()
        .and_then(|retention| now.checked_sub(retention))
        .unwrap_or(now);
    if cutoff > latest {
        return Err(Validation::new(
            "cutoff",
            format!(
                "{cutoff} is later than {latest}: events are kept at least {} days",
                MIN_EVENT_RETENTION.as_secs() / 86_400
            ),
        )
        .into());
    }
    Ok(())
}

/// Storage of verified webhook events.
///
/// # Contract (checked by [`crate::testing`] for every backend)
/// - `insert` validates the event (external id 1–255 characters, scheme
///   name) and writes nothing if it is refused. If `(source, external_id)`
///   is already logged it writes nothing and returns the existing id with
///   `duplicate: true`; concurrent inserts of one id yield exactly one
///   non-duplicate. New events are `received`, 0 attempts, due at once.
/// - `claim` hands out up to `limit` (at most [`MAX_CLAIM`]) due events —
///   `received` with `next_attempt_at` reached, or `processing` whose lease
///   ran out — oldest due first, marking each `processing`, incrementing
///   `attempts` and setting `next_attempt_at` to the lease's end.
///   Concurrent claims never return the same event.
/// - `complete` records an attempt's [`Outcome`] only if the event is still
///   `processing` under that attempt number; otherwise it writes nothing and
///   returns [`crate::Error::LeaseLost`]. `Retry` makes the event `received` again,
///   due after the backoff; `Processed` and `Failed` are final.
/// - `extend_lease` (a worker's heartbeat) moves the lease's end to `lease`
///   from now, fenced like `complete`: only while the event is still
///   `processing` under that attempt number; otherwise it writes nothing
///   and returns [`crate::Error::LeaseLost`].
/// - `purge_events_before` deletes the `processed` and `failed` events
///   that became final before `cutoff`, never `received` or `processing`
///   ones, and reports how many of each it deleted. A cutoff later than
///   now minus [`MIN_EVENT_RETENTION`] (by the backend's clock) is refused
///   with [`crate::Error::Validation`] (field `cutoff`) and deletes
///   nothing. A purged event's `(source, external_id)` is forgotten: a
///   later delivery of it is a new event.
/// - Missing rows read as `None`; `counts` of an unknown source are zero.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventRepository: Send + Sync + std::fmt::Debug {
    /// Logs an event unless its `(source, external_id)` is already logged.
    async fn insert(&self, event: NewEvent) -> Result<Inserted>;

    /// One event by id.
    async fn get(&self, id: EventId) -> Result<Option<WebhookEvent>>;

    /// One event by its sender's id.
    async fn find(&self, source: &EndpointName, external_id: &str) -> Result<Option<WebhookEvent>>;

    /// Claims up to `limit` due events for `lease`.
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<WebhookEvent>>;

    /// Records the outcome of attempt number `attempt` of event `id`.
    async fn complete(&self, id: EventId, attempt: i32, outcome: Outcome) -> Result<()>;

    /// Extends the lease of attempt number `attempt` of event `id` to
    /// `lease` from now (a worker's heartbeat while its handler runs).
    async fn extend_lease(&self, id: EventId, attempt: i32, lease: Duration) -> Result<()>;

    /// How many events of `source` are in each status.
    async fn counts(&self, source: &EndpointName) -> Result<StatusCounts>;

    /// Deletes the processed and failed events that became final before
    /// `cutoff` (at least [`MIN_EVENT_RETENTION`] ago).
    async fn purge_events_before(&self, cutoff: OffsetDateTime) -> Result<PurgeReport>;
}
