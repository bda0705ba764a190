//! Verified incoming webhooks for opsdeck: check the signature, log the
//! event durably, answer 202 at once, process it later exactly once.
//!
//! - **Schemes** ([`Scheme`]): [`StandardWebhooks`] (Svix and others),
//!   [`Stripe`], [`GitHub`] and [`Slack`]. Each verifies raw `&[u8]` bodies
//!   with HMAC-SHA256, compares decoded MAC bytes in constant time after a
//!   length check, checks timestamps both ways ([`Tolerance`], default 5
//!   minutes), accepts several keys for rotation ([`KeySet`], reporting the
//!   key that matched in [`Verified`]) and can sign outgoing messages.
//! - **Secrets** ([`Secret`], [`SecretSource`]): from the environment, a
//!   file or 1Password's `op` CLI, cached and reloaded by a [`KeyRing`] so
//!   rotation needs no restart. Secrets print as `[redacted]` and are
//!   zeroized on drop.
//! - **Event log** ([`EventRepository`]): table `opsdeck.webhook_events`
//!   ([`PgEventRepository`], feature `postgres`, default) or memory
//!   ([`InMemoryEventRepository`]); one conformance suite ([`testing`],
//!   feature `testing`). `(source, external_id)` is unique, so a redelivered
//!   webhook is recognised and never processed twice.
//! - **Receiver** ([`Receiver::accept`]): verify, enforce the body limit,
//!   log, return [`Accepted`] without waiting for processing.
//! - **Worker** ([`Worker`]): claims due events (`FOR UPDATE SKIP LOCKED`),
//!   calls an [`EventHandler`], retries with exponential [`Backoff`], marks
//!   events processed or failed.
//! - **Axum** (feature `axum`): `axum::router` serves
//!   `POST /webhook-trigger/{endpoint}` answering 202, 400, 401, 404 or 413.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use opsdeck_webhook_verify::{
//!     Endpoint, InMemoryEventRepository, KeyRing, Outgoing, Receiver, Scheme, Secret,
//!     StandardWebhooks, unix_now,
//! };
//!
//! let secret = Secret::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
//! let receiver = Receiver::new(Arc::new(InMemoryEventRepository::new())).endpoint(
//!     Endpoint::new("billing".parse()?, KeyRing::new(StandardWebhooks).source("current", secret.clone())),
//! );
//!
//! // What a sender does (here with the same secret):
//! let key = StandardWebhooks.key("current", &secret)?;
//! let body = br#"{"type":"invoice.paid"}"#;
//! let headers = StandardWebhooks.sign(&key, &Outgoing { id: "msg_1", timestamp: unix_now(), body })?;
//!
//! let accepted = receiver.accept("billing", &headers, body).await?;
//! assert!(!accepted.duplicate);
//! assert_eq!(&*accepted.key_id, "current");
//! // A redelivery is recognised.
//! assert!(receiver.accept("billing", &headers, body).await?.duplicate);
//! // A tampered body is refused (HTTP 401).
//! let refused = receiver.accept("billing", &headers, b"{}").await.unwrap_err();
//! assert_eq!(refused.status_code(), 401);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
pub mod axum;
mod error;
mod event;
mod key;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod receiver;
mod scheme;
mod secret;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

use std::time::Duration;

use async_trait::async_trait;

pub use error::{Error, Result};
pub use event::{
    EndpointName, EventId, EventStatus, Inserted, MAX_EXTERNAL_ID_LEN, NewEvent, Outcome, Payload,
    StatusCounts, WebhookEvent,
};
pub use key::{Key, KeyRing, KeySet};
pub use memory::InMemoryEventRepository;
#[cfg(feature = "postgres")]
pub use postgres::PgEventRepository;
pub use receiver::{Accepted, Endpoint, Receiver, ReceiverStats};
pub use scheme::{
    GitHub, Identity, MAC_LEN, MAX_SIGNATURES, Outgoing, Scheme, SignError, Slack,
    StandardWebhooks, Stripe, Tolerance, Verified, VerifyError, unix_now,
};
pub use secret::{EnvSecret, FileSecret, OnePasswordSecret, Secret, SecretError, SecretSource};
#[cfg(feature = "mock")]
pub use worker::MockEventHandler;
pub use worker::{Backoff, EventHandler, HandlerError, Worker, WorkerConfig};

/// Most events one [`EventRepository::claim`] hands out.
pub const MAX_CLAIM: usize = 1000;

/// Storage of verified webhook events.
///
/// # Contract (checked by [`testing`] for every backend)
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
///   returns [`Error::LeaseLost`]. `Retry` makes the event `received` again,
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
