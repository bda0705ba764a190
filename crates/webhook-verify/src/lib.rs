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
//!   webhook is recognised and never processed twice. Retention:
//!   [`Receiver::purge_events_before`] deletes processed and failed events
//!   older than a cutoff, at least [`MIN_EVENT_RETENTION`] (7 days) ago.
//! - **Receiver** ([`Receiver::accept`]): verify, enforce the body limit,
//!   log, return [`Accepted`] without waiting for processing. It is the one
//!   way into its log: [`Receiver::get`], [`Receiver::find`] and
//!   [`Receiver::counts`] read it, [`Receiver::worker`] makes workers that
//!   it wakes; it hands out no backend.
//! - **Worker** ([`Worker`]): claims due events (`FOR UPDATE SKIP LOCKED`)
//!   under a lease it extends while the handler runs (a heartbeat), calls an
//!   [`EventHandler`], retries with exponential [`Backoff`] (not a
//!   [permanent](HandlerError::permanent) error), marks events processed or
//!   failed.
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
mod ids;
mod key;
mod keyring;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod receiver;
mod repository;
mod scheme;
mod secret;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use error::{Error, Result};
pub use event::{
    EventStatus, Inserted, MAX_EXTERNAL_ID_LEN, NewEvent, Outcome, Payload, PurgeReport,
    StatusCounts, WebhookEvent,
};
pub use ids::{EndpointName, EventId};
pub use key::{Key, KeySet, MAC_LEN};
pub use keyring::KeyRing;
pub use memory::InMemoryEventRepository;
/// Secret bytes that never print; it moved to `opsdeck_core` (shared with
/// the cache and the facade) and is re-exported here for existing users.
pub use opsdeck_core::Secret;
#[cfg(feature = "postgres")]
pub use postgres::PgEventRepository;
pub use receiver::{Accepted, Endpoint, Receiver, ReceiverStats};
#[cfg(feature = "mock")]
pub use repository::MockEventRepository;
pub use repository::{EventRepository, MAX_CLAIM, MIN_EVENT_RETENTION};
pub use scheme::github::GitHub;
pub use scheme::slack::Slack;
pub use scheme::standard::StandardWebhooks;
pub use scheme::stripe::Stripe;
pub use scheme::{
    Identity, MAX_SIGNATURES, Outgoing, Scheme, SignError, Tolerance, Verified, VerifyError,
    unix_now,
};
pub use secret::{EnvSecret, FileSecret, OnePasswordSecret, SecretError, SecretSource};
#[cfg(feature = "mock")]
pub use worker::MockEventHandler;
pub use worker::{Backoff, EventHandler, HandlerError, Worker, WorkerConfig};
