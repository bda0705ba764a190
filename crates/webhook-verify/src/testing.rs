//! The conformance suite every [`EventRepository`] backend must pass.
//!
//! Each check uses its own random source names. Claims are not scoped by
//! source, so checks that claim first drain what earlier checks left due:
//! give the suite a repository of its own (a fresh `#[sqlx::test]`
//! database, a new in-memory log). See `tests/webhooks/` for the PostgreSQL
//! and in-memory runs. The checks panic with a message on failure, like
//! assertions in a test.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::{
    EndpointName, Error, EventId, EventRepository, EventStatus, MAX_CLAIM, MAX_EXTERNAL_ID_LEN,
    MIN_EVENT_RETENTION, NewEvent, Outcome, Payload, PurgeReport, WebhookEvent,
};

const LONG: Duration = Duration::from_secs(3600);

/// A fresh source name, unique per call.
pub fn unique_source(prefix: &str) -> EndpointName {
    let suffix = EventId::random().as_uuid().simple().to_string();
    EndpointName::parse(&format!("{prefix}-{}", &suffix[..12])).expect("valid endpoint name")
}

/// A valid event of `source` with a small JSON payload.
pub fn new_event(source: &EndpointName, external_id: &str) -> NewEvent {
    NewEvent {
        source: source.clone(),
        scheme: "standard".to_owned(),
        external_id: external_id.to_owned(),
        event_type: Some("test.event".to_owned()),
        key_id: "current".to_owned(),
        headers: BTreeMap::from([("webhook-id".to_owned(), external_id.to_owned())]),
        payload: Payload::Json(json!({ "id": external_id, "n": 1 })),
    }
}

/// Runs every check of the suite against `repo`.
pub async fn run_all(repo: &dyn EventRepository) {
    insert_then_read_back(repo).await;
    duplicates_are_detected(repo).await;
    concurrent_duplicates_yield_one_original(repo).await;
    sources_are_separate(repo).await;
    payloads_round_trip(repo).await;
    invalid_events_write_nothing(repo).await;
    missing_rows_read_as_none(repo).await;
    claims_hand_out_each_event_once(repo).await;
    outcomes_are_recorded(repo).await;
    retries_wait_for_their_backoff(repo).await;
    expired_leases_are_reclaimed_and_fenced(repo).await;
    leases_are_extended_only_by_their_holder(repo).await;
    purges_refuse_recent_cutoffs_and_keep_recent_events(repo).await;
}

/// Claims and finishes every event due now, so a check sees only its own.
pub async fn drain(repo: &dyn EventRepository) {
    loop {
        let claimed = repo.claim(MAX_CLAIM, LONG).await.unwrap();
        if claimed.is_empty() {
            return;
        }
        for event in claimed {
            repo.complete(event.id, event.attempts, Outcome::Processed)
                .await
                .unwrap();
        }
    }
}

/// A logged event reads back as written, `received` and due.
pub async fn insert_then_read_back(repo: &dyn EventRepository) {
    let source = unique_source("read");
    let inserted = repo.insert(new_event(&source, "msg_1")).await.unwrap();
    assert!(!inserted.duplicate);
    let event = repo.get(inserted.id).await.unwrap().expect("event stored");
    assert_eq!(event.id, inserted.id);
    assert_eq!(event.source, source);
    assert_eq!(event.external_id, "msg_1");
    assert_eq!(event.scheme, "standard");
    assert_eq!(event.key_id, "current");
    assert_eq!(event.event_type.as_deref(), Some("test.event"));
    assert_eq!(
        event.headers.get("webhook-id").map(String::as_str),
        Some("msg_1")
    );
    assert_eq!(
        event.payload,
        Payload::Json(json!({ "id": "msg_1", "n": 1 }))
    );
    assert_eq!(event.status, EventStatus::Received);
    assert_eq!(event.attempts, 0);
    assert_eq!(event.last_error, None);
    assert_eq!(event.processed_at, None);
    assert!(event.next_attempt_at <= time::OffsetDateTime::now_utc());
    assert_eq!(repo.find(&source, "msg_1").await.unwrap(), Some(event));
    assert_eq!(repo.counts(&source).await.unwrap().received, 1);
}

/// A second insert of one `(source, external_id)` returns the first id and
/// changes nothing.
pub async fn duplicates_are_detected(repo: &dyn EventRepository) {
    let source = unique_source("dup");
    let first = repo.insert(new_event(&source, "msg_1")).await.unwrap();
    let mut again = new_event(&source, "msg_1");
    again.payload = Payload::Json(json!({ "changed": true }));
    let second = repo.insert(again).await.unwrap();
    assert!(second.duplicate, "same external id must be a duplicate");
    assert_eq!(second.id, first.id);
    let stored = repo.get(first.id).await.unwrap().unwrap();
    assert_eq!(
        stored.payload,
        Payload::Json(json!({ "id": "msg_1", "n": 1 })),
        "a duplicate must not overwrite the logged event"
    );
    assert_eq!(repo.counts(&source).await.unwrap().total(), 1);
}

/// Racing inserts of one id: exactly one original, all report its id.
pub async fn concurrent_duplicates_yield_one_original(repo: &dyn EventRepository) {
    let source = unique_source("race");
    let insert = || repo.insert(new_event(&source, "msg_race"));
    let (a, b, c, d) = tokio::join!(insert(), insert(), insert(), insert());
    let results = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    assert_eq!(
        results.iter().filter(|r| !r.duplicate).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|r| r.id == results[0].id), "{results:?}");
    assert_eq!(repo.counts(&source).await.unwrap().total(), 1);
}

/// The same external id under two sources is two events.
pub async fn sources_are_separate(repo: &dyn EventRepository) {
    let (a, b) = (unique_source("src-a"), unique_source("src-b"));
    let first = repo.insert(new_event(&a, "msg_1")).await.unwrap();
    let second = repo.insert(new_event(&b, "msg_1")).await.unwrap();
    assert!(!first.duplicate && !second.duplicate);
    assert_ne!(first.id, second.id);
    assert_eq!(repo.find(&b, "msg_1").await.unwrap().unwrap().id, second.id);
}

/// JSON is stored as JSON, anything else byte for byte (not only UTF-8).
pub async fn payloads_round_trip(repo: &dyn EventRepository) {
    let source = unique_source("payload");
    let bytes = vec![0u8, 0xff, 0xfe, b'a', 0x80];
    let mut binary = new_event(&source, "bin");
    binary.payload = Payload::Bytes(bytes.clone());
    let id = repo.insert(binary).await.unwrap().id;
    assert_eq!(
        repo.get(id).await.unwrap().unwrap().payload,
        Payload::Bytes(bytes)
    );

    let nested = json!({ "data": { "list": [1, 2.5, null, "x"], "ok": true } });
    let mut json_event = new_event(&source, "json");
    json_event.payload = Payload::Json(nested.clone());
    json_event.event_type = None;
    let id = repo.insert(json_event).await.unwrap().id;
    let stored = repo.get(id).await.unwrap().unwrap();
    assert_eq!(stored.payload, Payload::Json(nested));
    assert_eq!(stored.event_type, None);
}

/// Refused events are errors and write nothing.
pub async fn invalid_events_write_nothing(repo: &dyn EventRepository) {
    let source = unique_source("invalid");
    let too_long = "x".repeat(MAX_EXTERNAL_ID_LEN + 1);
    for external_id in ["", too_long.as_str()] {
        let result = repo.insert(new_event(&source, external_id)).await;
        assert!(
            matches!(result, Err(Error::Validation(ref v)) if v.field == "external_id"),
            "external id of {} chars: {result:?}",
            external_id.len()
        );
    }
    let mut bad_scheme = new_event(&source, "msg");
    bad_scheme.scheme = "Not A Scheme".to_owned();
    assert!(matches!(
        repo.insert(bad_scheme).await,
        Err(Error::Validation(v)) if v.field == "scheme"
    ));
    let longest = "y".repeat(MAX_EXTERNAL_ID_LEN);
    assert!(
        !repo
            .insert(new_event(&source, &longest))
            .await
            .unwrap()
            .duplicate
    );
    assert_eq!(repo.counts(&source).await.unwrap().total(), 1);
}

/// Unknown ids and sources read as nothing.
pub async fn missing_rows_read_as_none(repo: &dyn EventRepository) {
    let source = unique_source("missing");
    assert_eq!(repo.get(EventId::random()).await.unwrap(), None);
    assert_eq!(repo.find(&source, "nope").await.unwrap(), None);
    assert_eq!(repo.counts(&source).await.unwrap().total(), 0);
    assert!(matches!(
        repo.complete(EventId::random(), 1, Outcome::Processed)
            .await,
        Err(Error::LeaseLost { .. })
    ));
}

/// Claims mark events processing, respect the limit and never hand out an
/// event twice while its lease runs.
pub async fn claims_hand_out_each_event_once(repo: &dyn EventRepository) {
    drain(repo).await;
    let source = unique_source("claim");
    let mut ids = HashSet::new();
    for i in 0..5 {
        ids.insert(
            repo.insert(new_event(&source, &format!("m{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    assert!(repo.claim(0, LONG).await.unwrap().is_empty());
    let first = repo.claim(3, LONG).await.unwrap();
    assert_eq!(first.len(), 3);
    let second = repo.claim(10, LONG).await.unwrap();
    assert_eq!(second.len(), 2);
    assert!(repo.claim(10, LONG).await.unwrap().is_empty());
    let claimed: Vec<&WebhookEvent> = first.iter().chain(&second).collect();
    let claimed_ids: HashSet<EventId> = claimed.iter().map(|e| e.id).collect();
    assert_eq!(claimed_ids, ids, "every event exactly once");
    for event in &claimed {
        assert_eq!(event.status, EventStatus::Processing);
        assert_eq!(event.attempts, 1);
        assert!(event.next_attempt_at > time::OffsetDateTime::now_utc());
    }
    assert_eq!(repo.counts(&source).await.unwrap().processing, 5);
    drain_claimed(repo, &claimed).await;
}

async fn drain_claimed(repo: &dyn EventRepository, claimed: &[&WebhookEvent]) {
    for event in claimed {
        repo.complete(event.id, event.attempts, Outcome::Processed)
            .await
            .unwrap();
    }
}

/// Processed and failed are final; retry makes the event received again.
pub async fn outcomes_are_recorded(repo: &dyn EventRepository) {
    drain(repo).await;
    let source = unique_source("outcome");
    let done = repo.insert(new_event(&source, "done")).await.unwrap().id;
    let retry = repo.insert(new_event(&source, "retry")).await.unwrap().id;
    let failed = repo.insert(new_event(&source, "failed")).await.unwrap().id;
    let claimed = repo.claim(10, LONG).await.unwrap();
    assert_eq!(claimed.len(), 3);

    repo.complete(done, 1, Outcome::Processed).await.unwrap();
    let error = "e".repeat(5000);
    repo.complete(
        retry,
        1,
        Outcome::Retry {
            error: error.clone(),
            after: LONG,
        },
    )
    .await
    .unwrap();
    repo.complete(
        failed,
        1,
        Outcome::Failed {
            error: "gave up".to_owned(),
        },
    )
    .await
    .unwrap();

    let done = repo.get(done).await.unwrap().unwrap();
    assert_eq!(done.status, EventStatus::Processed);
    assert!(done.processed_at.is_some());
    let retry = repo.get(retry).await.unwrap().unwrap();
    assert_eq!(retry.status, EventStatus::Received);
    assert_eq!(retry.attempts, 1);
    let kept = retry.last_error.as_deref().unwrap_or_default();
    assert!(
        kept.len() >= 100 && kept.len() < error.len(),
        "errors are kept but bounded"
    );
    assert!(retry.next_attempt_at > time::OffsetDateTime::now_utc() + Duration::from_secs(3000));
    let failed_event = repo.get(failed).await.unwrap().unwrap();
    assert_eq!(failed_event.status, EventStatus::Failed);
    assert_eq!(failed_event.last_error.as_deref(), Some("gave up"));

    // A finished attempt cannot be finished again.
    assert!(matches!(
        repo.complete(done.id, 1, Outcome::Processed).await,
        Err(Error::LeaseLost { .. })
    ));
    // Final states are never handed out again; the retry waits an hour.
    assert!(repo.claim(10, Duration::ZERO).await.unwrap().is_empty());
    let counts = repo.counts(&source).await.unwrap();
    assert_eq!(
        (counts.processed, counts.received, counts.failed),
        (1, 1, 1)
    );
}

/// A retried event is claimable once its backoff has passed, as attempt 2.
pub async fn retries_wait_for_their_backoff(repo: &dyn EventRepository) {
    drain(repo).await;
    let source = unique_source("backoff");
    let id = repo.insert(new_event(&source, "m")).await.unwrap().id;
    assert_eq!(repo.claim(10, LONG).await.unwrap().len(), 1);
    repo.complete(
        id,
        1,
        Outcome::Retry {
            error: "try later".to_owned(),
            // Long enough that a stalled test machine cannot make the
            // "still backing off" claim below come too late.
            after: Duration::from_secs(1),
        },
    )
    .await
    .unwrap();
    assert!(
        repo.claim(10, LONG).await.unwrap().is_empty(),
        "still backing off"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = repo.claim(10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("try later"));
    repo.complete(id, 2, Outcome::Processed).await.unwrap();
}

/// An event whose lease ran out is claimed again, and its first claimant
/// can no longer record an outcome.
pub async fn expired_leases_are_reclaimed_and_fenced(repo: &dyn EventRepository) {
    drain(repo).await;
    let source = unique_source("lease");
    let id = repo.insert(new_event(&source, "m")).await.unwrap().id;
    let first = repo.claim(1, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = repo.claim(1, LONG).await.unwrap();
    assert_eq!(second.len(), 1, "an expired lease is claimable");
    assert_eq!((second[0].id, second[0].attempts), (id, 2));
    assert!(matches!(
        repo.complete(id, 1, Outcome::Processed).await,
        Err(Error::LeaseLost { .. })
    ));
    repo.complete(id, 2, Outcome::Processed).await.unwrap();
    assert_eq!(repo.counts(&source).await.unwrap().processed, 1);
}

/// A heartbeat keeps an event from being claimed again; only the current
/// attempt can extend its lease, and never after it finished or was taken
/// over.
pub async fn leases_are_extended_only_by_their_holder(repo: &dyn EventRepository) {
    drain(repo).await;
    let source = unique_source("heartbeat");
    let id = repo.insert(new_event(&source, "m")).await.unwrap().id;
    // Claimed with a lease that has already ended: only the heartbeat
    // keeps it from the next claim.
    assert_eq!(repo.claim(1, Duration::ZERO).await.unwrap().len(), 1);
    repo.extend_lease(id, 1, LONG).await.unwrap();
    assert!(
        repo.claim(10, Duration::ZERO).await.unwrap().is_empty(),
        "an extended lease is not claimable"
    );
    let held = repo.get(id).await.unwrap().unwrap();
    assert_eq!((held.status, held.attempts), (EventStatus::Processing, 1));
    assert!(held.next_attempt_at > OffsetDateTime::now_utc() + Duration::from_secs(3000));
    for (other_id, attempt) in [(id, 2), (id, 0), (EventId::random(), 1)] {
        assert!(
            matches!(
                repo.extend_lease(other_id, attempt, LONG).await,
                Err(Error::LeaseLost { .. })
            ),
            "attempt {attempt} of {other_id} holds no lease"
        );
    }
    assert_eq!(
        repo.get(id).await.unwrap().unwrap(),
        held,
        "nothing written"
    );
    repo.complete(id, 1, Outcome::Processed).await.unwrap();
    assert!(matches!(
        repo.extend_lease(id, 1, LONG).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(
        repo.get(id).await.unwrap().unwrap().status,
        EventStatus::Processed
    );

    // Taken over after its lease ran out: the first claimant's heartbeat is
    // fenced, the new claimant's is not.
    let id = repo.insert(new_event(&source, "n")).await.unwrap().id;
    assert_eq!(repo.claim(1, Duration::ZERO).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(repo.claim(1, Duration::ZERO).await.unwrap()[0].attempts, 2);
    assert!(matches!(
        repo.extend_lease(id, 1, LONG).await,
        Err(Error::LeaseLost { .. })
    ));
    repo.extend_lease(id, 2, LONG).await.unwrap();
    repo.complete(id, 2, Outcome::Processed).await.unwrap();
}

fn days_ago(days: u64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::from_secs(days * 86_400)
}

/// A cutoff within [`MIN_EVENT_RETENTION`] is refused and deletes nothing;
/// events finished just now survive any accepted cutoff.
pub async fn purges_refuse_recent_cutoffs_and_keep_recent_events(repo: &dyn EventRepository) {
    drain(repo).await;
    let source = unique_source("purge-recent");
    let id = repo.insert(new_event(&source, "done")).await.unwrap().id;
    assert_eq!(repo.claim(10, LONG).await.unwrap().len(), 1);
    repo.complete(id, 1, Outcome::Processed).await.unwrap();

    let almost = OffsetDateTime::now_utc() - MIN_EVENT_RETENTION + Duration::from_secs(60);
    for cutoff in [
        OffsetDateTime::now_utc() + Duration::from_secs(3600),
        OffsetDateTime::now_utc(),
        almost,
    ] {
        let refused = repo.purge_events_before(cutoff).await;
        assert!(
            matches!(&refused, Err(Error::Validation(v)) if v.field == "cutoff"),
            "{cutoff}: {refused:?}"
        );
    }
    let oldest_allowed = OffsetDateTime::now_utc() - MIN_EVENT_RETENTION - Duration::from_secs(60);
    assert_eq!(
        repo.purge_events_before(oldest_allowed).await.unwrap(),
        PurgeReport::default()
    );
    assert!(
        repo.get(id).await.unwrap().is_some(),
        "a recent event stays"
    );
    assert_eq!(repo.counts(&source).await.unwrap().processed, 1);
}

/// Purging deletes exactly the processed and failed events that finished
/// before the cutoff: events still to process stay whatever their age, and
/// so do final events finished after it. `backdate(id, by)` must move the
/// event's timestamps (received, finished) `by` into the past, as if it
/// were that much older; give the check a repository of its own.
pub async fn purge_deletes_only_old_final_events<F, Fut>(repo: &dyn EventRepository, backdate: F)
where
    F: Fn(EventId, Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    drain(repo).await;
    let source = unique_source("purge");
    let insert = |name: &'static str| repo.insert(new_event(&source, name));
    let old_processed = insert("old-processed").await.unwrap().id;
    let old_failed = insert("old-failed").await.unwrap().id;
    let new_processed = insert("new-processed").await.unwrap().id;
    let old_retry = insert("old-retry").await.unwrap().id;
    let old_processing = insert("old-processing").await.unwrap().id;
    assert_eq!(repo.claim(10, LONG).await.unwrap().len(), 5);
    let old_received = insert("old-received").await.unwrap().id;
    repo.complete(old_processed, 1, Outcome::Processed)
        .await
        .unwrap();
    repo.complete(
        old_failed,
        1,
        Outcome::Failed {
            error: "gave up".to_owned(),
        },
    )
    .await
    .unwrap();
    repo.complete(new_processed, 1, Outcome::Processed)
        .await
        .unwrap();
    repo.complete(
        old_retry,
        1,
        Outcome::Retry {
            error: "later".to_owned(),
            after: LONG,
        },
    )
    .await
    .unwrap();
    let age = MIN_EVENT_RETENTION + Duration::from_secs(2 * 86_400);
    for id in [
        old_processed,
        old_failed,
        old_retry,
        old_processing,
        old_received,
    ] {
        backdate(id, age).await;
    }
    // New-processed finished 3 days after the others: after the cutoff.
    backdate(new_processed, age - Duration::from_secs(3 * 86_400)).await;

    let cutoff = days_ago(MIN_EVENT_RETENTION.as_secs() / 86_400 + 1);
    let report = repo.purge_events_before(cutoff).await.unwrap();
    assert_eq!(
        report,
        PurgeReport {
            processed: 1,
            failed: 1
        }
    );
    assert_eq!(report.total(), 2);
    for gone in [old_processed, old_failed] {
        assert_eq!(repo.get(gone).await.unwrap(), None, "{gone} purged");
    }
    assert_eq!(repo.find(&source, "old-processed").await.unwrap(), None);
    for kept in [new_processed, old_retry, old_processing, old_received] {
        assert!(repo.get(kept).await.unwrap().is_some(), "{kept} kept");
    }
    let counts = repo.counts(&source).await.unwrap();
    assert_eq!(
        (
            counts.processed,
            counts.failed,
            counts.received,
            counts.processing
        ),
        (1, 0, 2, 1)
    );
    // Nothing left to purge at that cutoff; a purged id is forgotten, so the
    // same delivery would now be logged as new.
    assert_eq!(
        repo.purge_events_before(cutoff).await.unwrap(),
        PurgeReport::default()
    );
    assert!(!insert("old-processed").await.unwrap().duplicate);
    // The event still processing finishes normally.
    repo.complete(old_processing, 1, Outcome::Processed)
        .await
        .unwrap();
}
