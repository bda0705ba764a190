//! The receiving side: verify, log, answer 202; processing happens later in
//! a [`crate::Worker`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use opsdeck_core::{Snippet, Validation};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::event::{
    MAX_EXTERNAL_ID_LEN, NewEvent, Payload, PurgeReport, StatusCounts, WebhookEvent,
};
use crate::ids::{EndpointName, EventId};
use crate::keyring::KeyRing;
use crate::repository::EventRepository;
use crate::scheme::{Scheme, Tolerance, VerifyError, unix_now};
use crate::worker::{EventHandler, Worker};

/// One receiving endpoint: its name, scheme and keys, clock tolerance and
/// body size limit.
#[derive(Debug)]
pub struct Endpoint {
    name: EndpointName,
    keys: KeyRing,
    tolerance: Tolerance,
    max_body_bytes: usize,
}

impl Endpoint {
    /// Default body size limit: 1 MiB, above what Stripe, Slack and Svix
    /// send; raise it for GitHub, whose payloads may reach 25 MB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

    /// An endpoint verifying with `keys` (which carry the scheme), with the
    /// default tolerance (5 minutes both ways) and body limit.
    pub fn new(name: EndpointName, keys: KeyRing) -> Self {
        Endpoint {
            name,
            keys,
            tolerance: Tolerance::default(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Sets the timestamp tolerance.
    pub fn tolerance(mut self, tolerance: Tolerance) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets the largest body accepted, in bytes.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &EndpointName {
        &self.name
    }

    /// The endpoint's keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The endpoint's scheme.
    pub fn scheme(&self) -> &dyn Scheme {
        self.keys.scheme().as_ref()
    }

    /// The largest body accepted, in bytes.
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes
    }
}

/// A webhook taken in: logged (or recognised as a duplicate) and not yet
/// processed. Answer it with HTTP 202.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The event's id in the log (the earlier one for a duplicate).
    pub event_id: EventId,
    /// Whether the event was already logged; a duplicate is never
    /// processed again.
    pub duplicate: bool,
    /// Which key verified the signature.
    pub key_id: Arc<str>,
}

/// Counters of what a [`Receiver`] did since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// New events logged.
    pub accepted: u64,
    /// Valid requests for events already logged.
    pub duplicates: u64,
    /// Refused: no signature matched.
    pub rejected_signature: u64,
    /// Refused: timestamp outside the tolerance.
    pub rejected_timestamp: u64,
    /// Refused: missing or malformed headers.
    pub rejected_malformed: u64,
    /// Refused: body over the limit.
    pub rejected_too_large: u64,
    /// Refused: no such endpoint.
    pub unknown_endpoint: u64,
    /// Failed on our side (keys unavailable, database).
    pub errors: u64,
}

/// What one call of [`Receiver::accept`] counts as.
#[derive(Debug, Clone, Copy)]
enum Tally {
    Accepted,
    Duplicate,
    Signature,
    Timestamp,
    Malformed,
    TooLarge,
    UnknownEndpoint,
    Error,
}

impl Tally {
    fn of(result: &Result<Accepted>) -> Self {
        match result {
            Ok(accepted) if accepted.duplicate => Tally::Duplicate,
            Ok(_) => Tally::Accepted,
            Err(Error::Verification(
                VerifyError::SignatureMismatch | VerifyError::NoSignature { .. },
            )) => Tally::Signature,
            Err(Error::Verification(
                VerifyError::TimestampTooOld { .. } | VerifyError::TimestampInFuture { .. },
            )) => Tally::Timestamp,
            Err(Error::Verification(_)) => Tally::Malformed,
            Err(Error::BodyTooLarge { .. }) => Tally::TooLarge,
            Err(Error::UnknownEndpoint { .. }) => Tally::UnknownEndpoint,
            Err(_) => Tally::Error,
        }
    }
}

#[derive(Debug, Default)]
struct Counters([AtomicU64; 8]);

impl Counters {
    fn bump(&self, tally: Tally) {
        self.0[tally as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ReceiverStats {
        let get = |tally: Tally| self.0[tally as usize].load(Ordering::Relaxed);
        ReceiverStats {
            accepted: get(Tally::Accepted),
            duplicates: get(Tally::Duplicate),
            rejected_signature: get(Tally::Signature),
            rejected_timestamp: get(Tally::Timestamp),
            rejected_malformed: get(Tally::Malformed),
            rejected_too_large: get(Tally::TooLarge),
            unknown_endpoint: get(Tally::UnknownEndpoint),
            errors: get(Tally::Error),
        }
    }
}

/// Verifies incoming webhooks, logs them and returns at once.
///
/// [`Receiver::accept`] never runs the application's handler: it verifies
/// the signature, enforces the body limit, writes the event to the log
/// (one statement on PostgreSQL) and wakes a local [`crate::Worker`]. A
/// refused request is counted ([`Receiver::stats`]) and logged through
/// `tracing` (warn), and nothing of it is stored.
///
/// Reads of the log ([`Receiver::get`], [`Receiver::find`],
/// [`Receiver::counts`]), retention ([`Receiver::purge_events_before`]) and
/// workers ([`Receiver::worker`]) go through the receiver too; it hands out
/// no accessor of the backend under it.
#[derive(Debug)]
pub struct Receiver {
    endpoints: HashMap<EndpointName, Endpoint>,
    repository: Arc<dyn EventRepository>,
    counters: Counters,
    wakeup: Arc<Notify>,
}

impl Receiver {
    /// A receiver logging into `repository`, with no endpoints yet.
    pub fn new(repository: Arc<dyn EventRepository>) -> Self {
        Receiver {
            endpoints: HashMap::new(),
            repository,
            counters: Counters::default(),
            wakeup: Arc::new(Notify::new()),
        }
    }

    /// Adds an endpoint (replacing one of the same name).
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.insert(endpoint.name.clone(), endpoint);
        self
    }

    /// The endpoint called `name`, if configured.
    pub fn get_endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.get(name)
    }

    /// Notified whenever a new event is logged; give it to the workers of
    /// this process ([`crate::Worker::wakeup`]) so they start at once
    /// instead of at their next poll.
    pub fn wakeup(&self) -> Arc<Notify> {
        Arc::clone(&self.wakeup)
    }

    /// What the receiver did so far.
    pub fn stats(&self) -> ReceiverStats {
        self.counters.snapshot()
    }

    /// A worker processing this receiver's event log with `handler`, woken
    /// by this receiver ([`Receiver::wakeup`]) when it logs a new event.
    /// Call it once per worker; run each with [`Worker::run`].
    pub fn worker(&self, handler: Arc<dyn EventHandler>) -> Worker {
        Worker::new(Arc::clone(&self.repository), handler).wakeup(self.wakeup())
    }

    /// One logged event by its id (e.g. [`Accepted::event_id`]); `None` if
    /// there is none.
    pub async fn get(&self, id: impl Into<EventId>) -> Result<Option<WebhookEvent>> {
        self.repository.get(id.into()).await
    }

    /// One logged event of endpoint `source` by its sender's id; `None` if
    /// there is none. A `source` that is no endpoint name is
    /// [`Error::Validation`].
    pub async fn find(&self, source: &str, external_id: &str) -> Result<Option<WebhookEvent>> {
        let source = parse_source(source)?;
        self.repository.find(&source, external_id).await
    }

    /// How many events of endpoint `source` are in each status (zero for a
    /// source that never logged one). A `source` that is no endpoint name is
    /// [`Error::Validation`].
    pub async fn counts(&self, source: &str) -> Result<StatusCounts> {
        let source = parse_source(source)?;
        self.repository.counts(&source).await
    }

    /// Deletes the processed and failed events of every endpoint that
    /// became final before `cutoff`; events still to process are kept
    /// whatever their age. A `cutoff` later than now minus
    /// [`crate::MIN_EVENT_RETENTION`] (7 days) is refused with
    /// [`Error::Validation`] (field `cutoff`) and deletes nothing: the log
    /// is also what recognises a sender's redelivery. Call it from a
    /// periodic job, e.g. daily with `now - 30 days`.
    #[tracing::instrument(name = "webhooks.purge_events_before", skip(self))]
    pub async fn purge_events_before(&self, cutoff: OffsetDateTime) -> Result<PurgeReport> {
        let report = self.repository.purge_events_before(cutoff).await?;
        tracing::info!(
            processed = report.processed,
            failed = report.failed,
            "purged webhook events"
        );
        Ok(report)
    }

    /// Verifies and logs one request to `endpoint`.
    ///
    /// Returns [`Accepted`] for a new event and for a duplicate of a logged
    /// one; errors map to HTTP statuses with [`Error::status_code`].
    #[tracing::instrument(
        name = "webhooks.accept",
        skip_all,
        fields(endpoint = %Snippet::new(endpoint), bytes = body.len(), event_id, duplicate, key_id)
    )]
    pub async fn accept(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Accepted> {
        let result = self.verify_and_log(endpoint, headers, body).await;
        if let Ok(accepted) = &result {
            let span = tracing::Span::current();
            span.record("event_id", tracing::field::display(accepted.event_id));
            span.record("duplicate", accepted.duplicate);
            span.record("key_id", &*accepted.key_id);
        }
        self.tally(result)
    }

    /// Counts and logs a request that an HTTP layer refused before it could
    /// reach [`Receiver::accept`] (e.g. a body over the limit while being
    /// read), so [`Receiver::stats`] sees every refusal. Returns `error`.
    pub fn refuse(&self, endpoint: &str, error: Error) -> Result<Accepted> {
        let _span =
            tracing::info_span!("webhooks.refuse", endpoint = %Snippet::new(endpoint)).entered();
        self.tally(Err(error))
    }

    fn tally(&self, result: Result<Accepted>) -> Result<Accepted> {
        if let Err(error) = &result {
            tracing::warn!(%error, status = error.status_code().as_u16(), "webhook refused");
        }
        self.counters.bump(Tally::of(&result));
        result
    }

    async fn verify_and_log(
        &self,
        endpoint: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Accepted> {
        let endpoint = self
            .endpoints
            .get(endpoint)
            .ok_or_else(|| Error::UnknownEndpoint {
                endpoint: Snippet::new(endpoint),
            })?;
        // Checked before anything else so an oversized body costs nothing.
        if body.len() > endpoint.max_body_bytes {
            return Err(Error::BodyTooLarge {
                len: body.len(),
                limit: endpoint.max_body_bytes,
            });
        }
        let keys = endpoint.keys.keys().await?;
        let scheme = endpoint.scheme();
        let verified = scheme.verify(&keys, headers, body, endpoint.tolerance, unix_now())?;

        let payload = Payload::from_body(body);
        let identity = scheme.identify(headers, payload.json());
        let external_id = match identity.external_id {
            Some(id) if !id.is_empty() && id.chars().count() <= MAX_EXTERNAL_ID_LEN => id,
            Some(id) if !id.is_empty() => digest_id(&[id.as_bytes()]),
            // Without a sender id, an exact replay (same signed timestamp
            // and body) is what counts as a duplicate.
            _ => {
                let timestamp = verified
                    .timestamp
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                digest_id(&[timestamp.as_bytes(), b".", body])
            }
        };
        let kept: BTreeMap<String, String> = scheme
            .kept_headers()
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.chars().take(512).collect()))
            })
            .collect();
        let inserted = self
            .repository
            .insert(NewEvent {
                source: endpoint.name.clone(),
                scheme: scheme.name().to_owned(),
                external_id,
                event_type: identity.event_type,
                key_id: verified.key_id.to_string(),
                headers: kept,
                payload,
            })
            .await?;
        if !inserted.duplicate {
            self.wakeup.notify_one();
        }
        Ok(Accepted {
            event_id: inserted.id,
            duplicate: inserted.duplicate,
            key_id: verified.key_id,
        })
    }
}

fn digest_id(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// A caller's endpoint name, parsed at the edge.
fn parse_source(source: &str) -> Result<EndpointName> {
    EndpointName::parse(source).map_err(|e| Validation::from(("source", e)).into())
}
