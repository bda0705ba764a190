//! The worker: exactly-once processing under concurrency on PostgreSQL,
//! retries with backoff, and failures (errors, panics, overrunning the
//! lease).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsdeck_webhook_verify::testing::{new_event, unique_source};
use opsdeck_webhook_verify::{
    Backoff, EndpointName, Error, EventHandler, EventId, EventRepository, EventStatus,
    HandlerError, InMemoryEventRepository, Inserted, NewEvent, Outcome, PgEventRepository,
    PurgeReport, StatusCounts, WebhookEvent, Worker, WorkerConfig,
};
use sqlx::PgPool;
use tokio::sync::watch;

/// Records every call; fails while `failures_left` is positive.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<HashMap<EventId, Vec<Instant>>>,
    failures_left: Mutex<usize>,
    panics: bool,
    sleep: Duration,
}

impl Recorder {
    fn failing(times: usize) -> Self {
        Recorder {
            failures_left: Mutex::new(times),
            ..Recorder::default()
        }
    }

    fn calls(&self) -> HashMap<EventId, Vec<Instant>> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &WebhookEvent) -> Result<(), HandlerError> {
        let attempt = {
            let mut calls = self.calls.lock().unwrap();
            let entry = calls.entry(event.id).or_default();
            entry.push(Instant::now());
            entry.len()
        };
        assert_eq!(event.status, EventStatus::Processing);
        assert_eq!(
            usize::try_from(event.attempts).unwrap(),
            attempt,
            "attempt numbers count up"
        );
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        } else {
            // Give other workers a chance to interleave.
            tokio::task::yield_now().await;
        }
        assert!(!self.panics, "handler bug");
        let mut left = self.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(HandlerError::new(format!("boom #{attempt}")));
        }
        Ok(())
    }
}

fn fast(max_attempts: u32) -> WorkerConfig {
    WorkerConfig {
        batch_size: 10,
        poll_interval: Duration::from_millis(10),
        lease: Duration::from_secs(30),
        max_handling_time: Duration::from_secs(30),
        max_attempts,
        backoff: Backoff::new(Duration::from_millis(60), Duration::from_millis(120)),
    }
}

/// Runs `workers` workers until `done` holds for the source's counts.
async fn run_until(
    repo: Arc<dyn EventRepository>,
    handler: Arc<dyn EventHandler>,
    config: WorkerConfig,
    workers: usize,
    source: &EndpointName,
    done: impl Fn(&StatusCounts) -> bool,
) -> StatusCounts {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let worker = Worker::new(Arc::clone(&repo), Arc::clone(&handler)).config(config);
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            worker
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let counts = repo.counts(source).await.unwrap();
        if done(&counts) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "workers did not finish: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    counts
}

#[sqlx::test(migrations = "../../migrations")]
async fn four_workers_process_a_thousand_events_exactly_once(pool: PgPool) {
    let repo: Arc<dyn EventRepository> = Arc::new(PgEventRepository::new(pool.clone()));
    let source = unique_source("load");
    let mut ids = Vec::new();
    for i in 0..1000 {
        ids.push(
            repo.insert(new_event(&source, &format!("evt_{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let recorder = Arc::new(Recorder::default());
    let counts = run_until(
        Arc::clone(&repo),
        recorder.clone(),
        fast(3),
        4,
        &source,
        |c| c.processed == 1000,
    )
    .await;
    assert_eq!(
        counts,
        StatusCounts {
            processed: 1000,
            ..StatusCounts::default()
        }
    );

    let calls = recorder.calls();
    assert_eq!(calls.len(), 1000, "every event was handled");
    let repeated: Vec<_> = calls
        .iter()
        .filter(|(_, c)| c.len() != 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        repeated.is_empty(),
        "{} events handled more than once, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(3)]
    );
    for id in ids {
        assert!(calls.contains_key(&id));
    }
    let (attempts, unprocessed): (i64, i64) = sqlx::query_as(
        "SELECT sum(attempts)::bigint, count(*) FILTER (WHERE status <> 'processed' OR processed_at IS NULL)
         FROM opsdeck.webhook_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((attempts, unprocessed), (1000, 0));
}

async fn failing_handler_is_retried_with_backoff_then_failed(repo: Arc<dyn EventRepository>) {
    let source = unique_source("fail");
    let id = repo
        .insert(new_event(&source, "evt_fail"))
        .await
        .unwrap()
        .id;
    let recorder = Arc::new(Recorder::failing(usize::MAX));
    let counts = run_until(
        Arc::clone(&repo),
        recorder.clone(),
        fast(3),
        2,
        &source,
        |c| c.failed == 1,
    )
    .await;
    assert_eq!(counts.total(), 1);

    let calls = &recorder.calls()[&id];
    assert_eq!(calls.len(), 3, "tried max_attempts times, then given up");
    // Backoff doubles: 60 ms after the first failure, 120 ms after the second.
    assert!(
        calls[1] - calls[0] >= Duration::from_millis(55),
        "{:?}",
        calls[1] - calls[0]
    );
    assert!(
        calls[2] - calls[1] >= Duration::from_millis(115),
        "{:?}",
        calls[2] - calls[1]
    );
    let event = repo.get(id).await.unwrap().unwrap();
    assert_eq!(event.status, EventStatus::Failed);
    assert_eq!(event.attempts, 3);
    assert_eq!(event.last_error.as_deref(), Some("boom #3"));
    assert_eq!(event.processed_at, None);
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_failing_handler_is_retried_with_backoff_then_failed(pool: PgPool) {
    failing_handler_is_retried_with_backoff_then_failed(Arc::new(PgEventRepository::new(pool)))
        .await;
}

#[tokio::test]
async fn in_memory_failing_handler_is_retried_with_backoff_then_failed() {
    failing_handler_is_retried_with_backoff_then_failed(Arc::new(InMemoryEventRepository::new()))
        .await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_retry_that_succeeds_ends_processed(pool: PgPool) {
    let repo: Arc<dyn EventRepository> = Arc::new(PgEventRepository::new(pool));
    let source = unique_source("flaky");
    let id = repo.insert(new_event(&source, "evt")).await.unwrap().id;
    let recorder = Arc::new(Recorder::failing(2));
    run_until(
        Arc::clone(&repo),
        recorder.clone(),
        fast(5),
        1,
        &source,
        |c| c.processed == 1,
    )
    .await;
    let event = repo.get(id).await.unwrap().unwrap();
    assert_eq!((event.attempts, event.last_error), (3, None));
    assert!(event.processed_at.is_some());
}

#[tokio::test]
async fn panics_and_overruns_fail_the_attempt_not_the_worker() {
    let repo: Arc<dyn EventRepository> = Arc::new(InMemoryEventRepository::new());
    let source = unique_source("crash");
    let panicking = repo.insert(new_event(&source, "panics")).await.unwrap().id;
    let handler = Arc::new(Recorder {
        panics: true,
        ..Recorder::default()
    });
    let worker = Worker::new(Arc::clone(&repo), handler).config(fast(1));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let event = repo.get(panicking).await.unwrap().unwrap();
    assert_eq!(event.status, EventStatus::Failed);
    assert_eq!(event.last_error.as_deref(), Some("handler panicked"));

    // Longer than its lease is fine (the heartbeat holds it); longer than
    // max_handling_time is abandoned.
    let slow = repo.insert(new_event(&source, "slow")).await.unwrap().id;
    let handler = Arc::new(Recorder {
        sleep: Duration::from_secs(30),
        ..Recorder::default()
    });
    let config = WorkerConfig {
        lease: Duration::from_millis(100),
        max_handling_time: Duration::from_millis(400),
        ..fast(1)
    };
    let started = Instant::now();
    assert_eq!(
        Worker::new(Arc::clone(&repo), handler)
            .config(config)
            .run_once()
            .await
            .unwrap(),
        1
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        "abandoned at max_handling_time, after {took:?}"
    );
    let event = repo.get(slow).await.unwrap().unwrap();
    assert_eq!(event.status, EventStatus::Failed);
    assert_eq!(
        event.last_error.as_deref(),
        Some("handler did not finish within max_handling_time (400ms)")
    );
}

/// An abandoned handler's attempt is retried like any failure when
/// attempts are left.
#[tokio::test]
async fn an_abandoned_handler_is_retried() {
    let repo: Arc<dyn EventRepository> = Arc::new(InMemoryEventRepository::new());
    let source = unique_source("abandon");
    let id = repo.insert(new_event(&source, "slow")).await.unwrap().id;
    let handler = Arc::new(Recorder {
        sleep: Duration::from_secs(30),
        ..Recorder::default()
    });
    let config = WorkerConfig {
        max_handling_time: Duration::from_millis(50),
        ..fast(3)
    };
    Worker::new(Arc::clone(&repo), handler)
        .config(config)
        .run_once()
        .await
        .unwrap();
    let event = repo.get(id).await.unwrap().unwrap();
    assert_eq!((event.status, event.attempts), (EventStatus::Received, 1));
    assert!(event.next_attempt_at > time::OffsetDateTime::now_utc());
}

/// A permanent handler error fails the event on its first attempt.
#[tokio::test]
async fn permanent_errors_are_not_retried() {
    struct Refuses;
    #[async_trait]
    impl EventHandler for Refuses {
        async fn handle(&self, _event: &WebhookEvent) -> Result<(), HandlerError> {
            Err(HandlerError::new("not for us").into_permanent())
        }
    }
    let repo: Arc<dyn EventRepository> = Arc::new(InMemoryEventRepository::new());
    let source = unique_source("permanent");
    let id = repo.insert(new_event(&source, "m")).await.unwrap().id;
    let worker = Worker::new(Arc::clone(&repo), Arc::new(Refuses)).config(fast(8));
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let event = repo.get(id).await.unwrap().unwrap();
    assert_eq!(
        (event.status, event.attempts, event.last_error.as_deref()),
        (EventStatus::Failed, 1, Some("not for us"))
    );
    assert!(HandlerError::permanent("x").is_permanent());
    assert!(!HandlerError::new("x").is_permanent());
}

/// Durations too long for a clock are "never", not a panic.
#[tokio::test]
async fn huge_durations_mean_never() {
    let repo: Arc<dyn EventRepository> = Arc::new(InMemoryEventRepository::new());
    let source = unique_source("huge");
    let id = repo.insert(new_event(&source, "m")).await.unwrap().id;
    let config = WorkerConfig {
        lease: Duration::MAX,
        max_handling_time: Duration::MAX,
        ..fast(1)
    };
    let worker = Worker::new(Arc::clone(&repo), Arc::new(Recorder::default())).config(config);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(
        repo.get(id).await.unwrap().unwrap().status,
        EventStatus::Processed
    );
}

/// The in-memory log, except that heartbeats answer `extend`.
#[derive(Debug)]
struct Heartbeats {
    inner: InMemoryEventRepository,
    lost: bool,
    extensions: AtomicUsize,
}

#[async_trait]
impl EventRepository for Heartbeats {
    async fn insert(&self, event: NewEvent) -> opsdeck_webhook_verify::Result<Inserted> {
        self.inner.insert(event).await
    }
    async fn get(&self, id: EventId) -> opsdeck_webhook_verify::Result<Option<WebhookEvent>> {
        self.inner.get(id).await
    }
    async fn find(
        &self,
        source: &EndpointName,
        external_id: &str,
    ) -> opsdeck_webhook_verify::Result<Option<WebhookEvent>> {
        self.inner.find(source, external_id).await
    }
    async fn claim(
        &self,
        limit: usize,
        lease: Duration,
    ) -> opsdeck_webhook_verify::Result<Vec<WebhookEvent>> {
        self.inner.claim(limit, lease).await
    }
    async fn complete(
        &self,
        id: EventId,
        attempt: i32,
        outcome: Outcome,
    ) -> opsdeck_webhook_verify::Result<()> {
        self.inner.complete(id, attempt, outcome).await
    }
    async fn extend_lease(
        &self,
        id: EventId,
        _attempt: i32,
        _lease: Duration,
    ) -> opsdeck_webhook_verify::Result<()> {
        self.extensions.fetch_add(1, Ordering::SeqCst);
        if self.lost {
            Err(Error::LeaseLost { id })
        } else {
            Err(Error::Corrupt("log unreachable".to_owned()))
        }
    }
    async fn counts(&self, source: &EndpointName) -> opsdeck_webhook_verify::Result<StatusCounts> {
        self.inner.counts(source).await
    }
    async fn purge_events_before(
        &self,
        cutoff: time::OffsetDateTime,
    ) -> opsdeck_webhook_verify::Result<PurgeReport> {
        self.inner.purge_events_before(cutoff).await
    }
}

/// A heartbeat told that another worker owns the event cancels the
/// handler and records nothing; heartbeats that keep failing cancel it
/// when the lease runs out, and the attempt counts as failed.
#[tokio::test]
async fn handlers_stop_when_their_lease_cannot_be_held() {
    for lost in [true, false] {
        let repo = Arc::new(Heartbeats {
            inner: InMemoryEventRepository::new(),
            lost,
            extensions: AtomicUsize::new(0),
        });
        let source = unique_source("held");
        let id = repo.insert(new_event(&source, "m")).await.unwrap().id;
        let handler = Arc::new(Slow {
            sleep: Duration::from_secs(30),
            ..Slow::default()
        });
        let config = WorkerConfig {
            lease: Duration::from_millis(300),
            ..fast(3)
        };
        let started = Instant::now();
        let worker = Worker::new(repo.clone(), handler.clone()).config(config);
        assert_eq!(worker.run_once().await.unwrap(), 1);
        assert!(started.elapsed() < Duration::from_secs(10), "{lost}");
        assert_eq!(handler.in_flight.load(Ordering::SeqCst), 0, "cancelled");
        let event = repo.get(id).await.unwrap().unwrap();
        if lost {
            assert_eq!(repo.extensions.load(Ordering::SeqCst), 1);
            assert_eq!(
                (event.status, event.attempts),
                (EventStatus::Processing, 1),
                "nothing recorded: the new owner will"
            );
        } else {
            assert!(repo.extensions.load(Ordering::SeqCst) >= 2, "retried");
            assert_eq!(event.status, EventStatus::Received);
            assert_eq!(
                event.last_error.as_deref(),
                Some("handler cancelled: its lease could not be extended")
            );
        }
    }
}

/// Sleeps longer than a worker's lease; counts its calls and how many ran
/// at once.
#[derive(Debug, Default)]
struct Slow {
    sleep: Duration,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

#[async_trait]
impl EventHandler for Slow {
    async fn handle(&self, _event: &WebhookEvent) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        // Cancellation drops this future mid-sleep; the guard still counts
        // the call as finished.
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.in_flight);
        tokio::time::sleep(self.sleep).await;
        Ok(())
    }
}

/// A handler running for more than twice its lease, with two workers on
/// the log: the heartbeat keeps the claim, so the second worker never
/// claims the event and it is handled exactly once.
async fn a_handler_outliving_its_lease_is_handled_once(repo: Arc<dyn EventRepository>) {
    let source = unique_source("slow");
    let id = repo.insert(new_event(&source, "slow")).await.unwrap().id;
    let handler = Arc::new(Slow {
        sleep: Duration::from_millis(4500),
        ..Slow::default()
    });
    // Leases of 2 s leave heartbeats (every lease / 3) room to be late on
    // a loaded machine without the claim running out.
    let config = WorkerConfig {
        lease: Duration::from_secs(2),
        ..fast(3)
    };
    let counts = run_until(
        Arc::clone(&repo),
        handler.clone(),
        config,
        2,
        &source,
        |c| c.processed + c.failed == 1,
    )
    .await;
    assert_eq!(
        handler.calls.load(Ordering::SeqCst),
        1,
        "handled more than once: {counts:?}"
    );
    assert_eq!(handler.most_in_flight.load(Ordering::SeqCst), 1);
    let event = repo.get(id).await.unwrap().unwrap();
    assert_eq!(
        (event.status, event.attempts, event.last_error),
        (EventStatus::Processed, 1, None)
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_a_handler_outliving_its_lease_is_handled_once(pool: PgPool) {
    a_handler_outliving_its_lease_is_handled_once(Arc::new(PgEventRepository::new(pool))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_a_handler_outliving_its_lease_is_handled_once() {
    a_handler_outliving_its_lease_is_handled_once(Arc::new(InMemoryEventRepository::new())).await;
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
    let delays: Vec<u64> = (1..=6).map(|n| backoff.delay(n).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(60));
    assert_eq!(backoff.delay(0), Duration::from_secs(5));
}
