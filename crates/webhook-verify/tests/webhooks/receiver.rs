//! The receiver: verify, limit, log, answer at once; duplicates and
//! refusals, on PostgreSQL and in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderMap;
use opsdeck_webhook_verify::{
    Endpoint, Error, EventHandler, EventId, EventRepository, EventStatus, FileSecret, GitHub,
    HandlerError, InMemoryEventRepository, KeyRing, MIN_EVENT_RETENTION, Outgoing, Payload,
    PgEventRepository, Receiver, Scheme, Secret, Slack, StandardWebhooks, Stripe, VerifyError,
    WebhookEvent, WorkerConfig, unix_now,
};
use serde_json::json;
use sqlx::PgPool;

use crate::STANDARD_SECRET;

const GITHUB_LIMIT: usize = 1024;

fn endpoint(name: &str, scheme: impl Scheme + 'static, secret: &str) -> Endpoint {
    Endpoint::new(
        name.parse().unwrap(),
        KeyRing::new(scheme).source("current", Secret::from(secret)),
    )
}

fn receiver(repo: Arc<dyn EventRepository>) -> Receiver {
    Receiver::new(repo)
        .endpoint(endpoint("billing", StandardWebhooks, STANDARD_SECRET))
        .endpoint(endpoint("payments", Stripe, "whsec_stripe_secret"))
        .endpoint(endpoint("ci", GitHub, "gh-secret").max_body_bytes(GITHUB_LIMIT))
        .endpoint(endpoint("chat", Slack, "slack-secret"))
}

fn sign(receiver: &Receiver, endpoint: &str, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let scheme = receiver.get_endpoint(endpoint).unwrap().scheme();
    let secret = match endpoint {
        "billing" => STANDARD_SECRET,
        "payments" => "whsec_stripe_secret",
        "ci" => "gh-secret",
        _ => "slack-secret",
    };
    let key = scheme.key("current", &Secret::from(secret)).unwrap();
    scheme
        .sign(
            &key,
            &Outgoing {
                id,
                timestamp,
                body,
            },
        )
        .unwrap()
}

/// Accepts a request and reads back the logged event.
async fn accept_and_load(
    receiver: &Receiver,
    repo: &dyn EventRepository,
    endpoint: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> WebhookEvent {
    let accepted = receiver.accept(endpoint, headers, body).await.unwrap();
    repo.get(accepted.event_id)
        .await
        .unwrap()
        .expect("the accepted event is logged")
}

async fn logs_each_scheme_with_its_identity(repo: Arc<dyn EventRepository>) {
    let receiver = receiver(Arc::clone(&repo));
    let now = unix_now();

    let body = br#"{"type":"invoice.paid","data":{"amount":100}}"#;
    let headers = sign(&receiver, "billing", "msg_std_1", now, body);
    let accepted = receiver.accept("billing", &headers, body).await.unwrap();
    assert!(!accepted.duplicate);
    assert_eq!(&*accepted.key_id, "current");
    let event = repo.get(accepted.event_id).await.unwrap().unwrap();
    assert_eq!(
        (
            event.source.as_str(),
            event.scheme.as_str(),
            event.external_id.as_str()
        ),
        ("billing", "standard", "msg_std_1")
    );
    assert_eq!(event.event_type.as_deref(), Some("invoice.paid"));
    assert_eq!(
        event.payload,
        Payload::Json(json!({"type":"invoice.paid","data":{"amount":100}}))
    );
    assert_eq!(
        event.headers.get("webhook-id").map(String::as_str),
        Some("msg_std_1")
    );
    assert!(
        !event.headers.contains_key("webhook-signature"),
        "signatures are not kept"
    );
    assert_eq!(
        event.status,
        EventStatus::Received,
        "accept does not process"
    );

    let body = br#"{"id":"evt_42","type":"charge.succeeded"}"#;
    let headers = sign(&receiver, "payments", "", now, body);
    let event = accept_and_load(&receiver, &*repo, "payments", &headers, body).await;
    assert_eq!(event.external_id, "evt_42");
    assert_eq!(event.event_type.as_deref(), Some("charge.succeeded"));

    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut headers = sign(
        &receiver,
        "ci",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        now,
        body,
    );
    headers.insert("x-github-event", "push".parse().unwrap());
    let event = accept_and_load(&receiver, &*repo, "ci", &headers, body).await;
    // GitHub's delivery id is not signed: the event is keyed on its signed
    // body, and the delivery id is kept as a header.
    assert!(
        event.external_id.starts_with("sha256:"),
        "{}",
        event.external_id
    );
    assert_eq!(
        event.headers.get("x-github-delivery").map(String::as_str),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert_eq!(event.event_type.as_deref(), Some("push"));
    assert!(!event.headers.contains_key("x-hub-signature-256"));
    // A captured request replayed under a new delivery id is a duplicate.
    let mut replay = sign(&receiver, "ci", "forged-delivery-id", now, body);
    replay.insert("x-github-event", "push".parse().unwrap());
    assert!(
        receiver
            .accept("ci", &replay, body)
            .await
            .unwrap()
            .duplicate
    );

    // A form-encoded slash command: no id anywhere, bytes stored as is.
    let body = b"command=%2Fdeploy&text=prod&user_id=U1";
    let headers = sign(&receiver, "chat", "", now, body);
    let event = accept_and_load(&receiver, &*repo, "chat", &headers, body).await;
    assert!(
        event.external_id.starts_with("sha256:"),
        "{}",
        event.external_id
    );
    assert_eq!(event.payload, Payload::Bytes(body.to_vec()));
    assert_eq!(receiver.stats().accepted, 4);
}

#[tokio::test]
async fn in_memory_logs_each_scheme_with_its_identity() {
    logs_each_scheme_with_its_identity(Arc::new(InMemoryEventRepository::new())).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_logs_each_scheme_with_its_identity(pool: PgPool) {
    logs_each_scheme_with_its_identity(Arc::new(PgEventRepository::new(pool))).await;
}

async fn duplicates_are_accepted_and_logged_once(repo: Arc<dyn EventRepository>) {
    let receiver = receiver(Arc::clone(&repo));
    let now = unix_now();
    let body = br#"{"type":"user.created"}"#;
    let headers = sign(&receiver, "billing", "msg_dup", now, body);
    let first = receiver.accept("billing", &headers, body).await.unwrap();
    // A sender retry re-signs with a new timestamp but keeps the id.
    let retry = sign(&receiver, "billing", "msg_dup", now + 30, body);
    let second = receiver.accept("billing", &retry, body).await.unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.event_id, second.event_id);

    // Without sender ids, an exact replay is the duplicate; a new
    // timestamp is a new event.
    let form = b"command=%2Fping";
    let slack = sign(&receiver, "chat", "", now, form);
    assert!(
        !receiver
            .accept("chat", &slack, form)
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        receiver
            .accept("chat", &slack, form)
            .await
            .unwrap()
            .duplicate
    );
    let later = sign(&receiver, "chat", "", now + 1, form);
    assert!(
        !receiver
            .accept("chat", &later, form)
            .await
            .unwrap()
            .duplicate
    );

    let stats = receiver.stats();
    assert_eq!((stats.accepted, stats.duplicates), (3, 2));
    assert_eq!(
        repo.counts(&"billing".parse().unwrap())
            .await
            .unwrap()
            .total(),
        1
    );
    assert_eq!(
        repo.counts(&"chat".parse().unwrap()).await.unwrap().total(),
        2
    );
}

#[tokio::test]
async fn in_memory_duplicates_are_accepted_and_logged_once() {
    duplicates_are_accepted_and_logged_once(Arc::new(InMemoryEventRepository::new())).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_duplicates_are_accepted_and_logged_once(pool: PgPool) {
    duplicates_are_accepted_and_logged_once(Arc::new(PgEventRepository::new(pool))).await;
}

/// Counts the events it handles.
#[derive(Debug, Default)]
struct Counting(AtomicUsize);

#[async_trait]
impl EventHandler for Counting {
    async fn handle(&self, _event: &WebhookEvent) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Reading the log and processing it go through the receiver (it hands
/// out no backend): the same events the backend holds, names parsed at the
/// edge, and workers woken by the receiver that logged the event.
async fn reads_and_workers_go_through_the_receiver(repo: Arc<dyn EventRepository>) {
    let receiver = receiver(Arc::clone(&repo));
    let body = br#"{"type":"invoice.paid"}"#;
    let headers = sign(&receiver, "billing", "msg_read", unix_now(), body);
    let accepted = receiver.accept("billing", &headers, body).await.unwrap();

    let event = receiver
        .get(accepted.event_id)
        .await
        .unwrap()
        .expect("the accepted event is logged");
    assert_eq!(
        Some(&event),
        repo.get(accepted.event_id).await.unwrap().as_ref()
    );
    assert_eq!(
        (event.external_id.as_str(), event.status),
        ("msg_read", EventStatus::Received)
    );
    assert_eq!(
        receiver.get(accepted.event_id.as_uuid()).await.unwrap(),
        Some(event.clone()),
        "a raw UUID reads the same event"
    );
    assert_eq!(receiver.get(EventId::random()).await.unwrap(), None);
    assert_eq!(
        receiver.find("billing", "msg_read").await.unwrap(),
        Some(event)
    );
    assert_eq!(receiver.find("billing", "msg_other").await.unwrap(), None);
    assert_eq!(receiver.find("chat", "msg_read").await.unwrap(), None);
    let counts = receiver.counts("billing").await.unwrap();
    assert_eq!((counts.received, counts.total()), (1, 1));
    assert_eq!(receiver.counts("chat").await.unwrap().total(), 0);
    for bad in ["", "Not A Name", "billing/../x"] {
        let error = receiver.counts(bad).await.unwrap_err();
        assert!(
            matches!(&error, Error::Validation(v) if v.field == "source"),
            "{bad:?}: {error:?}"
        );
        assert_eq!(error.status_code(), 400);
        assert!(
            matches!(
                receiver.find(bad, "msg_read").await,
                Err(Error::Validation(v)) if v.field == "source"
            ),
            "{bad:?}"
        );
    }

    let handler = Arc::new(Counting::default());
    let worker = receiver.worker(handler.clone());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(handler.0.load(Ordering::SeqCst), 1);
    assert_eq!(receiver.counts("billing").await.unwrap().processed, 1);

    // Idle, the worker would poll again only after an hour: the receiver's
    // wakeup is what makes it handle the next event at once.
    let idle = worker.config(WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..WorkerConfig::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        idle.run(async {
            let _ = stopped.await;
        })
        .await;
    });
    let headers = sign(&receiver, "billing", "msg_wake", unix_now(), body);
    assert!(
        !receiver
            .accept("billing", &headers, body)
            .await
            .unwrap()
            .duplicate
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while receiver.counts("billing").await.unwrap().processed < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the woken worker handles the new event");
    assert_eq!(handler.0.load(Ordering::SeqCst), 2);
    stop.send(()).unwrap();
    running.await.unwrap();

    // Retention goes through the receiver too: a cutoff within the minimum
    // retention is a 400 and deletes nothing; the processed events are
    // too recent for any accepted cutoff.
    let now = time::OffsetDateTime::now_utc();
    let error = receiver
        .purge_events_before(now - Duration::from_secs(86_400))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Validation(v) if v.field == "cutoff"),
        "{error:?}"
    );
    assert_eq!(error.status_code(), 400);
    let report = receiver
        .purge_events_before(now - MIN_EVENT_RETENTION - Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(report.total(), 0);
    assert_eq!(receiver.counts("billing").await.unwrap().processed, 2);
}

#[tokio::test]
async fn in_memory_reads_and_workers_go_through_the_receiver() {
    reads_and_workers_go_through_the_receiver(Arc::new(InMemoryEventRepository::new())).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_reads_and_workers_go_through_the_receiver(pool: PgPool) {
    reads_and_workers_go_through_the_receiver(Arc::new(PgEventRepository::new(pool))).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_deliveries_of_one_message_log_it_once(pool: PgPool) {
    let receiver = Arc::new(receiver(Arc::new(PgEventRepository::new(pool))));
    let body = br#"{"type":"race"}"#;
    let headers = sign(&receiver, "billing", "msg_race", unix_now(), body);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (receiver, headers) = (Arc::clone(&receiver), headers.clone());
        tasks.push(tokio::spawn(async move {
            receiver.accept("billing", &headers, body).await.unwrap()
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(results.iter().all(|r| r.event_id == results[0].event_id));
}

#[tokio::test]
async fn refused_requests_are_counted_and_never_stored() {
    let repo = Arc::new(InMemoryEventRepository::new());
    let receiver = receiver(repo.clone());
    let now = unix_now();
    let body = br#"{"type":"x"}"#;
    let billing = "billing".parse().unwrap();

    let headers = sign(&receiver, "billing", "msg_bad", now, body);
    let tampered = receiver
        .accept("billing", &headers, b"{\"type\":\"y\"}")
        .await
        .unwrap_err();
    assert!(matches!(
        tampered,
        Error::Verification(VerifyError::SignatureMismatch)
    ));
    assert_eq!(tampered.status_code(), 401);

    let stale = sign(&receiver, "billing", "msg_old", now - 3600, body);
    let error = receiver.accept("billing", &stale, body).await.unwrap_err();
    assert_eq!(error.status_code(), 401);
    let future = sign(&receiver, "billing", "msg_future", now + 3600, body);
    assert_eq!(
        receiver
            .accept("billing", &future, body)
            .await
            .unwrap_err()
            .status_code(),
        401
    );

    let mut missing = headers.clone();
    missing.remove("webhook-id");
    let error = receiver
        .accept("billing", &missing, body)
        .await
        .unwrap_err();
    assert_eq!(error.status_code(), 400);

    let error = receiver.accept("nope", &headers, body).await.unwrap_err();
    assert_eq!(error.status_code(), 404);

    assert_eq!(
        repo.counts(&billing).await.unwrap().total(),
        0,
        "nothing refused is stored"
    );
    let stats = receiver.stats();
    assert_eq!(
        (
            stats.rejected_signature,
            stats.rejected_timestamp,
            stats.rejected_malformed,
            stats.unknown_endpoint,
            stats.accepted
        ),
        (1, 2, 1, 1, 0)
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_verification() {
    let repo = Arc::new(InMemoryEventRepository::new());
    let receiver = receiver(repo.clone());
    let now = unix_now();
    let at_limit = vec![b'a'; GITHUB_LIMIT];
    let headers = sign(&receiver, "ci", "d-1", now, &at_limit);
    assert!(receiver.accept("ci", &headers, &at_limit).await.is_ok());

    let over = vec![b'a'; GITHUB_LIMIT + 1];
    let headers = sign(&receiver, "ci", "d-2", now, &over);
    let error = receiver.accept("ci", &headers, &over).await.unwrap_err();
    assert!(
        matches!(error, Error::BodyTooLarge { len, limit } if len == GITHUB_LIMIT + 1 && limit == GITHUB_LIMIT)
    );
    assert_eq!(error.status_code(), 413);
    assert_eq!(
        repo.counts(&"ci".parse().unwrap()).await.unwrap().total(),
        1
    );
    assert_eq!(receiver.stats().rejected_too_large, 1);
}

#[tokio::test]
async fn unavailable_keys_are_a_server_error() {
    let receiver = Receiver::new(Arc::new(InMemoryEventRepository::new())).endpoint(Endpoint::new(
        "billing".parse().unwrap(),
        KeyRing::new(StandardWebhooks).source("current", FileSecret::new("/nonexistent/secret")),
    ));
    let body = b"{}";
    let headers = sign(&receiver, "billing", "m", unix_now(), body);
    let error = receiver
        .accept("billing", &headers, body)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Secret(_)), "{error:?}");
    assert_eq!(error.status_code(), 503);
    assert_eq!(receiver.stats().errors, 1);
}

#[tokio::test]
async fn over_long_sender_ids_are_stored_as_their_digest() {
    let repo = Arc::new(InMemoryEventRepository::new());
    let receiver = receiver(repo.clone());
    let id = "m".repeat(300);
    let body = b"{}";
    let headers = sign(&receiver, "billing", &id, unix_now(), body);
    let accepted = receiver.accept("billing", &headers, body).await.unwrap();
    let event = repo.get(accepted.event_id).await.unwrap().unwrap();
    assert!(event.external_id.starts_with("sha256:") && event.external_id.len() == 71);
    let again = sign(&receiver, "billing", &id, unix_now(), body);
    assert!(
        receiver
            .accept("billing", &again, body)
            .await
            .unwrap()
            .duplicate
    );
}

#[test]
fn json_that_jsonb_cannot_hold_is_kept_as_bytes() {
    assert!(matches!(
        Payload::from_body(br#"{"a":"\u0000"}"#),
        Payload::Bytes(_)
    ));
    assert!(matches!(
        Payload::from_body(br#"{"a":"\u0001"}"#),
        Payload::Json(_)
    ));
    assert!(matches!(Payload::from_body(b"not json"), Payload::Bytes(_)));
    assert!(matches!(Payload::from_body(b"[1,2]"), Payload::Json(_)));
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_stores_bodies_jsonb_refuses(pool: PgPool) {
    let repo = Arc::new(PgEventRepository::new(pool));
    let receiver = receiver(repo.clone());
    let body = br#"{"type":"nul","text":"a\u0000b"}"#;
    let headers = sign(&receiver, "billing", "msg_nul", unix_now(), body);
    let accepted = receiver.accept("billing", &headers, body).await.unwrap();
    let event = repo.get(accepted.event_id).await.unwrap().unwrap();
    assert_eq!(event.payload, Payload::Bytes(body.to_vec()));
}

/// With a mocked log: refused requests never reach it, and a log that
/// fails turns into a server error, not a 202.
#[cfg(feature = "mock")]
#[tokio::test]
async fn refusals_never_touch_the_log_and_log_failures_are_server_errors() {
    use opsdeck_webhook_verify::MockEventRepository;

    let mut repo = MockEventRepository::new();
    // Exactly one insert: the valid request's. Any refused request reaching
    // the log would exceed it and fail the test.
    repo.expect_insert()
        .times(1)
        .returning(|_| Err(Error::Corrupt("disk on fire".into())));
    let receiver = receiver(Arc::new(repo));
    let body = br#"{"type":"x"}"#;
    let headers = sign(&receiver, "billing", "msg_mock", unix_now(), body);

    assert_eq!(
        receiver
            .accept("billing", &headers, b"{}")
            .await
            .unwrap_err()
            .status_code(),
        401
    );
    let stale = sign(&receiver, "billing", "msg_mock", unix_now() - 3600, body);
    assert_eq!(
        receiver
            .accept("billing", &stale, body)
            .await
            .unwrap_err()
            .status_code(),
        401
    );
    let error = receiver
        .accept("billing", &headers, body)
        .await
        .unwrap_err();
    assert_eq!(error.status_code(), 500);
    assert_eq!(receiver.stats().errors, 1);
}
