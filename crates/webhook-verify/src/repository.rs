//! The storage trait of the event log; the backends (`memory.rs`,
//! `postgres.rs`) implement it, the receiver and the worker use it.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{Inserted, NewEvent, Outcome, StatusCounts, WebhookEvent};
use crate::ids::{EndpointName, EventId};

/// Most events one [`EventRepository::claim`] hands out.
pub const MAX_CLAIM: usize = 1000;

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

    /// How many events of `source` are in each status.
    async fn counts(&self, source: &EndpointName) -> Result<StatusCounts>;
}
