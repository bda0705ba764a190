//! The event log's types: what the receiver stores and workers process.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use opsdeck_core::{OperationId, Snippet, Validation};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ids::{EndpointName, EventId};

/// Longest external id stored as is; longer sender ids are stored as their
/// SHA-256 digest (still unique per id, and bounded).
pub const MAX_EXTERNAL_ID_LEN: usize = 255;

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventStatus {
    /// Logged, waiting for a worker (first time or after a failed attempt).
    Received,
    /// Claimed by a worker whose lease has not run out.
    Processing,
    /// Handled successfully; never handed out again.
    Processed,
    /// Gave up after the last allowed attempt; never handed out again.
    Failed,
}

impl EventStatus {
    /// The name stored in the `status` column.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventStatus::Received => "received",
            EventStatus::Processing => "processing",
            EventStatus::Processed => "processed",
            EventStatus::Failed => "failed",
        }
    }
}

impl FromStr for EventStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "received" => Ok(EventStatus::Received),
            "processing" => Ok(EventStatus::Processing),
            "processed" => Ok(EventStatus::Processed),
            "failed" => Ok(EventStatus::Failed),
            other => Err(Error::Corrupt(format!("unknown event status {other:?}"))),
        }
    }
}

/// An event's body: parsed JSON when it was JSON, the raw bytes otherwise
/// (form posts, binary payloads, JSON that PostgreSQL's jsonb cannot hold).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON body.
    Json(serde_json::Value),
    /// Any other body, byte for byte.
    Bytes(Vec<u8>),
}

impl Payload {
    /// JSON when `body` parses as JSON that jsonb can store, else bytes.
    pub fn from_body(body: &[u8]) -> Self {
        // jsonb refuses the NUL character, which JSON can only spell as an
        // escape; such bodies are kept as bytes instead of failing to store.
        if body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            return Payload::Bytes(body.to_vec());
        }
        match serde_json::from_slice(body) {
            Ok(json) => Payload::Json(json),
            Err(_) => Payload::Bytes(body.to_vec()),
        }
    }

    /// The JSON, if the body was JSON.
    pub fn json(&self) -> Option<&serde_json::Value> {
        match self {
            Payload::Json(json) => Some(json),
            Payload::Bytes(_) => None,
        }
    }
}

/// A verified event to log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The receiving endpoint.
    pub source: EndpointName,
    /// The scheme that verified it ([`crate::Scheme::name`]).
    pub scheme: String,
    /// The sender's id; unique per source (1–255 characters).
    pub external_id: String,
    /// The event type, if known.
    pub event_type: Option<String>,
    /// Which key verified the signature.
    pub key_id: String,
    /// Headers kept with the event.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub payload: Payload,
}

impl NewEvent {
    pub(crate) fn validate(&self) -> Result<()> {
        let len = self.external_id.chars().count();
        if len == 0 || len > MAX_EXTERNAL_ID_LEN {
            return Err(Validation::new(
                "external_id",
                format!("must have 1 to {MAX_EXTERNAL_ID_LEN} characters, has {len}"),
            )
            .into());
        }
        if !is_scheme_name(&self.scheme) {
            return Err(Validation::new(
                "scheme",
                format!(
                    "{:?} must be 1-32 characters of a-z, 0-9, '_', '.', '-'",
                    Snippet::new(&self.scheme)
                ),
            )
            .into());
        }
        Ok(())
    }
}

/// Longest scheme name stored ([`crate::Scheme::name`]).
const MAX_SCHEME_LEN: usize = 32;

/// A scheme name: 1–32 characters of `[a-z0-9_.-]`, the character rule of
/// [`OperationId`] (checked by its parser, so the rules cannot drift) with
/// a shorter bound; the database's `webhook_events_scheme_check` says the
/// same.
fn is_scheme_name(name: &str) -> bool {
    name.len() <= MAX_SCHEME_LEN && OperationId::parse(name).is_ok()
}

/// A logged event.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// The log's id.
    pub id: EventId,
    /// The receiving endpoint.
    pub source: EndpointName,
    /// The scheme that verified it.
    pub scheme: String,
    /// The sender's id.
    pub external_id: String,
    /// The event type, if known.
    pub event_type: Option<String>,
    /// Which key verified the signature.
    pub key_id: String,
    /// Headers kept with the event.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub payload: Payload,
    /// When it was logged.
    pub received_at: OffsetDateTime,
    /// Where it is in its life.
    pub status: EventStatus,
    /// Processing attempts started so far; while processing, the current
    /// attempt's number, which also identifies the claim.
    pub attempts: i32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// When a worker may claim it next (while processing: its lease's end).
    pub next_attempt_at: OffsetDateTime,
    /// When it was processed.
    pub processed_at: Option<OffsetDateTime>,
}

/// The result of logging an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The event's id: the new one, or the existing one for a duplicate.
    pub id: EventId,
    /// Whether an event with the same source and external id was already
    /// logged (nothing was written).
    pub duplicate: bool,
}

/// How an attempt ended, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: the event becomes processed.
    Processed,
    /// Failed; try again after `after`.
    Retry {
        /// The error, kept in `last_error`.
        error: String,
        /// The backoff before the next attempt.
        after: Duration,
    },
    /// Failed for good: the event becomes failed.
    Failed {
        /// The error, kept in `last_error`.
        error: String,
    },
}

/// Events of one source per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Waiting for a worker.
    pub received: u64,
    /// Being processed.
    pub processing: u64,
    /// Done.
    pub processed: u64,
    /// Given up.
    pub failed: u64,
}

impl StatusCounts {
    pub(crate) fn add(&mut self, status: EventStatus, n: u64) {
        match status {
            EventStatus::Received => self.received += n,
            EventStatus::Processing => self.processing += n,
            EventStatus::Processed => self.processed += n,
            EventStatus::Failed => self.failed += n,
        }
    }

    /// All events counted.
    pub fn total(&self) -> u64 {
        self.received + self.processing + self.processed + self.failed
    }
}

/// What [`crate::EventRepository::purge_events_before`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Processed events deleted.
    pub processed: u64,
    /// Failed events deleted.
    pub failed: u64,
}

impl PurgeReport {
    /// All events deleted.
    pub fn total(&self) -> u64 {
        self.processed + self.failed
    }
}

/// Longest `last_error` kept; handler errors can be arbitrarily long.
pub(crate) const MAX_ERROR_LEN: usize = 2000;

pub(crate) fn truncate_error(error: &str) -> String {
    error.chars().take(MAX_ERROR_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_follow_the_old_rule() {
        // The rule before it delegated to `OperationId`.
        let old_rule = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
        };
        let (longest, too_long) = ("s".repeat(32), "s".repeat(33));
        for name in [
            "standard",
            "github",
            "a.b_c-9",
            longest.as_str(),
            too_long.as_str(),
            "",
            "Not A Scheme",
            "é",
        ] {
            assert_eq!(is_scheme_name(name), old_rule(name), "{name:?}");
        }
    }
}
