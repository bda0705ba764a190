use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::Validation;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::event::{
    EventStatus, Inserted, NewEvent, Outcome, Payload, PurgeReport, StatusCounts, WebhookEvent,
    truncate_error,
};
use crate::ids::{EndpointName, EventId};
use crate::repository::{EventRepository, MAX_CLAIM, check_purge_cutoff};

/// The event log in PostgreSQL (table `opsdeck.webhook_events`, created by
/// the workspace migrations).
///
/// - Logging is one statement: an insert that does nothing on a duplicate
///   `(source, external_id)` and returns the existing id instead.
/// - Claiming is one statement: `UPDATE … FROM (SELECT … FOR UPDATE SKIP
///   LOCKED)`, so concurrent workers in any number of processes each get
///   different events and never wait for each other.
/// - Times (`now()`, leases, backoff) come from the database clock, so
///   workers on machines with skewed clocks still agree.
#[derive(Debug, Clone)]
pub struct PgEventRepository {
    pool: PgPool,
}

impl PgEventRepository {
    /// A repository on `pool`; the schema must be migrated.
    pub fn new(pool: PgPool) -> Self {
        PgEventRepository { pool }
    }

    /// The pool this repository uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

macro_rules! columns {
    () => {
        "id, source, scheme, external_id, event_type, key_id, headers, payload, payload_bytes,
         received_at, status, attempts, last_error, next_attempt_at, processed_at"
    };
}

/// The second branch finds a row committed before this statement began; a
/// row committed by a concurrent insert while this one waited is invisible
/// to it, which `insert` handles with a follow-up read.
const INSERT: &str = "
    WITH inserted AS (
        INSERT INTO opsdeck.webhook_events
            (id, source, scheme, external_id, event_type, key_id, headers, payload, payload_bytes)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (source, external_id) DO NOTHING
        RETURNING id
    )
    SELECT id, false AS duplicate FROM inserted
    UNION ALL
    SELECT id, true AS duplicate FROM opsdeck.webhook_events
    WHERE source = $2 AND external_id = $4";

const FIND_ID: &str =
    "SELECT id FROM opsdeck.webhook_events WHERE source = $1 AND external_id = $2";

const GET: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM opsdeck.webhook_events WHERE id = $1"
);

const FIND: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM opsdeck.webhook_events WHERE source = $1 AND external_id = $2"
);

/// Expired leases (`processing` past `next_attempt_at`) are claimable like
/// new events: their worker died or stalled.
const CLAIM: &str = concat!(
    "UPDATE opsdeck.webhook_events AS e
     SET status = 'processing',
         attempts = e.attempts + 1,
         next_attempt_at = now() + $2::bigint * interval '1 microsecond',
         updated_at = now()
     FROM (
         SELECT id FROM opsdeck.webhook_events
         WHERE status IN ('received', 'processing') AND next_attempt_at <= now()
         ORDER BY next_attempt_at, received_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED
     ) AS due
     WHERE e.id = due.id
     RETURNING ",
    "e.id, e.source, e.scheme, e.external_id, e.event_type, e.key_id, e.headers, e.payload,
     e.payload_bytes, e.received_at, e.status, e.attempts, e.last_error, e.next_attempt_at,
     e.processed_at"
);

/// Fenced by `(status, attempts)`: only the claim that is still current can
/// finish an attempt.
const COMPLETE: &str = "
    UPDATE opsdeck.webhook_events
    SET status = $3,
        last_error = $4,
        next_attempt_at = CASE WHEN $3 = 'received'
                               THEN now() + $5::bigint * interval '1 microsecond'
                               ELSE next_attempt_at END,
        processed_at = CASE WHEN $3 = 'processed' THEN now() ELSE processed_at END,
        updated_at = now()
    WHERE id = $1 AND status = 'processing' AND attempts = $2";

/// A heartbeat: fenced by `(status, attempts)` like `COMPLETE`.
const EXTEND_LEASE: &str = "
    UPDATE opsdeck.webhook_events
    SET next_attempt_at = now() + $3::bigint * interval '1 microsecond',
        updated_at = now()
    WHERE id = $1 AND status = 'processing' AND attempts = $2";

/// Events deleted per purge statement: each batch is its own short
/// transaction, so a purge of millions of rows neither holds locks nor
/// keeps a snapshot open for long.
const PURGE_BATCH: i64 = 5000;

/// A final row's `updated_at` is when it became final (nothing updates a
/// processed or failed row); the partial index `webhook_events_finished_idx`
/// (migration 0006) finds a batch oldest first, and `id = ANY(ARRAY(…))`
/// deletes it through the primary key (a join plan hashed the whole table
/// for every batch). `SKIP LOCKED` lets concurrent purges share the work
/// instead of queueing on each other's rows.
const PURGE: &str = "
    WITH deleted AS (
        DELETE FROM opsdeck.webhook_events
        WHERE id = ANY (ARRAY(
            SELECT id FROM opsdeck.webhook_events
            WHERE status IN ('processed', 'failed') AND updated_at < $1
            ORDER BY updated_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ))
        RETURNING status
    )
    SELECT count(*) FILTER (WHERE status = 'processed'),
           count(*) FILTER (WHERE status = 'failed')
    FROM deleted";

const COUNTS: &str = "
    SELECT status, count(*) FROM opsdeck.webhook_events WHERE source = $1 GROUP BY status";

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventRepository for PgEventRepository {
    #[tracing::instrument(
        name = "webhooks.pg.insert",
        skip(self, event),
        fields(source = %event.source, external_id = %event.external_id, duplicate)
    )]
    async fn insert(&self, event: NewEvent) -> Result<Inserted> {
        event.validate()?;
        let headers = serde_json::to_value(&event.headers)
            .map_err(|e| Validation::new("headers", e.to_string()))?;
        let (json, bytes) = match event.payload {
            Payload::Json(json) => (Some(json), None),
            Payload::Bytes(bytes) => (None, Some(bytes)),
        };
        let row: Option<(EventId, bool)> = sqlx::query_as(INSERT)
            .bind(EventId::random())
            .bind(&event.source)
            .bind(&event.scheme)
            .bind(&event.external_id)
            .bind(&event.event_type)
            .bind(&event.key_id)
            .bind(headers)
            .bind(json)
            .bind(bytes)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?;
        let (id, duplicate) = match row {
            Some(found) => found,
            // A concurrent insert of the same id committed while this one
            // waited on it; it is visible to a new statement.
            None => {
                let id: EventId = sqlx::query_scalar(FIND_ID)
                    .bind(&event.source)
                    .bind(&event.external_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_db_error)?;
                (id, true)
            }
        };
        tracing::Span::current().record("duplicate", duplicate);
        Ok(Inserted { id, duplicate })
    }

    #[tracing::instrument(name = "webhooks.pg.get", skip(self), fields(%id))]
    async fn get(&self, id: EventId) -> Result<Option<WebhookEvent>> {
        sqlx::query_as::<_, EventRow>(GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?
            .map(EventRow::into_domain)
            .transpose()
    }

    #[tracing::instrument(name = "webhooks.pg.find", skip(self), fields(%source))]
    async fn find(&self, source: &EndpointName, external_id: &str) -> Result<Option<WebhookEvent>> {
        sqlx::query_as::<_, EventRow>(FIND)
            .bind(source)
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?
            .map(EventRow::into_domain)
            .transpose()
    }

    #[tracing::instrument(name = "webhooks.pg.claim", skip(self), fields(rows))]
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<WebhookEvent>> {
        let limit = i64::try_from(limit.min(MAX_CLAIM)).unwrap_or(0);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as::<_, EventRow>(CLAIM)
            .bind(limit)
            .bind(micros(lease))
            .fetch_all(&self.pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        rows.into_iter().map(EventRow::into_domain).collect()
    }

    #[tracing::instrument(name = "webhooks.pg.complete", skip(self, outcome), fields(%id, attempt))]
    async fn complete(&self, id: EventId, attempt: i32, outcome: Outcome) -> Result<()> {
        let (status, error, wait) = match &outcome {
            Outcome::Processed => (EventStatus::Processed, None, Duration::ZERO),
            Outcome::Retry { error, after } => {
                (EventStatus::Received, Some(truncate_error(error)), *after)
            }
            Outcome::Failed { error } => (
                EventStatus::Failed,
                Some(truncate_error(error)),
                Duration::ZERO,
            ),
        };
        let result = sqlx::query(COMPLETE)
            .bind(id)
            .bind(attempt)
            .bind(status.as_str())
            .bind(error)
            .bind(micros(wait))
            .execute(&self.pool)
            .await
            .map_err(map_db_error)?;
        if result.rows_affected() == 0 {
            return Err(Error::LeaseLost { id });
        }
        Ok(())
    }

    #[tracing::instrument(name = "webhooks.pg.extend_lease", skip(self), fields(%id, attempt))]
    async fn extend_lease(&self, id: EventId, attempt: i32, lease: Duration) -> Result<()> {
        let result = sqlx::query(EXTEND_LEASE)
            .bind(id)
            .bind(attempt)
            .bind(micros(lease))
            .execute(&self.pool)
            .await
            .map_err(map_db_error)?;
        if result.rows_affected() == 0 {
            return Err(Error::LeaseLost { id });
        }
        Ok(())
    }

    #[tracing::instrument(
        name = "webhooks.pg.purge_events_before",
        skip(self),
        fields(processed, failed)
    )]
    async fn purge_events_before(&self, cutoff: OffsetDateTime) -> Result<PurgeReport> {
        // The database's clock, which also stamped `updated_at`.
        let now: OffsetDateTime = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
            .map_err(map_db_error)?;
        check_purge_cutoff(cutoff, now)?;
        let mut report = PurgeReport::default();
        loop {
            let (processed, failed): (i64, i64) = sqlx::query_as(PURGE)
                .bind(cutoff)
                .bind(PURGE_BATCH)
                .fetch_one(&self.pool)
                .await
                .map_err(map_db_error)?;
            report.processed += u64::try_from(processed).unwrap_or(0);
            report.failed += u64::try_from(failed).unwrap_or(0);
            if processed + failed < PURGE_BATCH {
                break;
            }
        }
        let span = tracing::Span::current();
        span.record("processed", report.processed);
        span.record("failed", report.failed);
        Ok(report)
    }

    #[tracing::instrument(name = "webhooks.pg.counts", skip(self), fields(%source))]
    async fn counts(&self, source: &EndpointName) -> Result<StatusCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as(COUNTS)
            .bind(source)
            .fetch_all(&self.pool)
            .await
            .map_err(map_db_error)?;
        let mut counts = StatusCounts::default();
        for (status, n) in rows {
            counts.add(status.parse()?, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: EventId,
    source: EndpointName,
    scheme: String,
    external_id: String,
    event_type: Option<String>,
    key_id: String,
    headers: serde_json::Value,
    payload: Option<serde_json::Value>,
    payload_bytes: Option<Vec<u8>>,
    received_at: OffsetDateTime,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: OffsetDateTime,
    processed_at: Option<OffsetDateTime>,
}

impl EventRow {
    fn into_domain(self) -> Result<WebhookEvent> {
        let corrupt = |what: String| Error::Corrupt(format!("event {}: {what}", self.id));
        let payload = match (self.payload, self.payload_bytes) {
            (Some(json), None) => Payload::Json(json),
            (None, Some(bytes)) => Payload::Bytes(bytes),
            _ => {
                return Err(corrupt(
                    "needs exactly one of payload, payload_bytes".into(),
                ));
            }
        };
        let headers: BTreeMap<String, String> =
            serde_json::from_value(self.headers).map_err(|e| corrupt(format!("headers: {e}")))?;
        Ok(WebhookEvent {
            id: self.id,
            source: self.source,
            scheme: self.scheme,
            external_id: self.external_id,
            event_type: self.event_type,
            key_id: self.key_id,
            headers,
            payload,
            received_at: self.received_at,
            status: self.status.parse()?,
            attempts: self.attempts,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            processed_at: self.processed_at,
        })
    }
}

/// The table's `CHECK` constraints and the field each guards; they mirror
/// the types' rules, so a violation is refused input, not a database fault.
const CONSTRAINTS: &[(&str, &str)] = &[
    ("webhook_events_source_check", "source"),
    ("webhook_events_scheme_check", "scheme"),
    ("webhook_events_external_id_check", "external_id"),
    ("webhook_events_status_check", "status"),
    ("webhook_events_attempts_check", "attempts"),
    ("webhook_events_payload_check", "payload"),
    ("webhook_events_headers_check", "headers"),
];

/// Constraint violations are refused input; a stored value the types
/// refuse (the ids parse while decoding) is a corrupt row; everything else
/// is a database error.
fn map_db_error(error: sqlx::Error) -> Error {
    if let Some(refused) = opsdeck_core::db::constraint_violation(&error, CONSTRAINTS) {
        return refused.into();
    }
    if let sqlx::Error::ColumnDecode { index, source } = &error {
        return Error::Corrupt(format!("column {index}: {source}"));
    }
    Error::Database(error)
}
