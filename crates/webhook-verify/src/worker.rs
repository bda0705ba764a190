//! The processing side: claim logged events, run the application's handler,
//! retry with backoff, record the outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::event::{Outcome, WebhookEvent};
use crate::ids::EventId;
use crate::repository::EventRepository;

/// What the application does with a verified event.
///
/// Delivery is exactly once while workers stay alive: a claimed event is
/// fenced to its claimant and never handed to another worker while the
/// claimant's lease runs; the worker extends the lease (a heartbeat every
/// third of [`WorkerConfig::lease`]) for as long as the handler runs, up to
/// [`WorkerConfig::max_handling_time`], and cancels the handler if it can no
/// longer hold the lease. If a worker process dies mid-event, the event is
/// claimed again after its lease, so a handler with external side effects
/// should use [`WebhookEvent::id`] as its idempotency key.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event; an error schedules a retry (or, on the last
    /// allowed attempt, marks the event failed), a
    /// [permanent](HandlerError::permanent) error marks it failed at once.
    /// A panic counts as an error.
    async fn handle(&self, event: &WebhookEvent) -> std::result::Result<(), HandlerError>;
}

/// Why a handler failed; kept (up to 2000 characters) as the event's
/// `last_error`. Errors are retried unless made
/// [permanent](HandlerError::permanent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    permanent: bool,
}

impl HandlerError {
    /// An error with a message; the event is tried again after the
    /// backoff.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: false,
        }
    }

    /// An error no retry can fix (a malformed or refused payload): the
    /// event is marked failed at once, whatever attempts are left.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: true,
        }
    }

    /// The same error, made permanent.
    pub fn into_permanent(self) -> Self {
        HandlerError {
            permanent: true,
            ..self
        }
    }

    /// Whether the event fails at once instead of being retried.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// An error describing `error` and its sources.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError {
            message,
            permanent: false,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Exponential backoff between attempts: `base`, `2·base`, `4·base`, …
/// capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// 5 s doubling up to 1 h.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(5), Duration::from_secs(3600))
    }
}

impl Backoff {
    /// A backoff starting at `base`, never above `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The wait after the `attempt`-th failed attempt (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// How a [`Worker`] claims and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Events claimed (and handled concurrently) per round; default 16.
    pub batch_size: usize,
    /// Wait between rounds when there was nothing to do; default 1 s (a
    /// local [`crate::Receiver`] wakes the worker sooner).
    pub poll_interval: Duration,
    /// How long a claim lasts without a heartbeat; default 60 s. While a
    /// handler runs, the worker extends the lease every third of it, so
    /// this bounds how long a crashed worker's events wait to be claimed
    /// again, not how long a handler may run. If the lease cannot be
    /// extended in time (the log unreachable), the handler is cancelled
    /// when it ends and the attempt counts as failed; if another worker
    /// took the event over, the handler is cancelled and nothing is
    /// recorded.
    pub lease: Duration,
    /// How long a handler may run; default 5 minutes. A handler still
    /// running then is abandoned (cancelled) and the attempt counts as
    /// failed: retried after the backoff, or failed on the last attempt.
    pub max_handling_time: Duration,
    /// Attempts before an event is marked failed; default 8.
    pub max_attempts: u32,
    /// Wait between attempts.
    pub backoff: Backoff,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_size: 16,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            max_handling_time: Duration::from_secs(300),
            max_attempts: 8,
            backoff: Backoff::default(),
        }
    }
}

/// Processes logged events with an [`EventHandler`]. Run as many as you
/// like, in one process or many: claims use `FOR UPDATE SKIP LOCKED` on
/// PostgreSQL, so no two workers get the same event.
#[derive(Debug, Clone)]
pub struct Worker {
    repository: Arc<dyn EventRepository>,
    handler: Arc<dyn EventHandler>,
    config: WorkerConfig,
    wakeup: Option<Arc<Notify>>,
}

impl std::fmt::Debug for dyn EventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventHandler")
    }
}

impl Worker {
    /// A worker with the default configuration.
    pub fn new(repository: Arc<dyn EventRepository>, handler: Arc<dyn EventHandler>) -> Self {
        Worker {
            repository,
            handler,
            config: WorkerConfig::default(),
            wakeup: None,
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Wakes the idle worker when notified ([`crate::Receiver::wakeup`]).
    pub fn wakeup(mut self, wakeup: Arc<Notify>) -> Self {
        self.wakeup = Some(wakeup);
        self
    }

    /// Claims one batch of due events, handles them concurrently and records
    /// each outcome. Returns how many events were claimed.
    pub async fn run_once(&self) -> Result<usize> {
        // Taken before the claim, so the local view of the lease ends no
        // later than the lease the database grants.
        let claimed_at = Instant::now();
        let events = self
            .repository
            .claim(self.config.batch_size, self.config.lease)
            .await?;
        let claimed = events.len();
        let mut running = JoinSet::new();
        for event in events {
            running.spawn(self.clone().process(event, claimed_at));
        }
        while running.join_next().await.is_some() {}
        Ok(claimed)
    }

    /// Runs rounds until `shutdown` completes; a round in progress finishes
    /// first. Errors are logged and retried after the poll interval.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let busy = match self.run_once().await {
                Ok(claimed) => claimed > 0,
                Err(error) => {
                    tracing::error!(%error, "claiming webhook events failed");
                    false
                }
            };
            if busy {
                // Ready work next, but a pending shutdown wins.
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = std::future::ready(()) => continue,
                }
            }
            let idle = async {
                match &self.wakeup {
                    Some(wakeup) => {
                        let _ = tokio::time::timeout(self.config.poll_interval, wakeup.notified())
                            .await;
                    }
                    None => tokio::time::sleep(self.config.poll_interval).await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = idle => {}
            }
        }
    }

    #[tracing::instrument(
        name = "webhooks.process",
        skip_all,
        fields(event_id = %event.id, source = %event.source, attempt = event.attempts)
    )]
    async fn process(self, event: WebhookEvent, claimed_at: Instant) {
        let (id, attempt) = (event.id, event.attempts);
        let handler = Arc::clone(&self.handler);
        // Its own task, so a panicking handler fails this attempt instead of
        // the worker.
        let mut task = tokio::spawn(async move { handler.handle(&event).await });
        let give_up = later(claimed_at, self.config.max_handling_time);
        // Polled first: a handler that finished wins over a heartbeat or
        // deadline due at the same time.
        let failure = tokio::select! {
            biased;
            joined = &mut task => match joined {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(HandlerError::new("handler panicked")),
            },
            lease = self.hold_lease(id, attempt, claimed_at) => {
                task.abort();
                match lease {
                    LeaseEnd::Lost => {
                        // Another worker owns the event now and will record
                        // its outcome; anything written here would be fenced.
                        tracing::warn!("lease on webhook event lost; handler cancelled");
                        return;
                    }
                    LeaseEnd::Expired => Some(HandlerError::new(
                        "handler cancelled: its lease could not be extended",
                    )),
                }
            },
            () = tokio::time::sleep_until(give_up) => {
                task.abort();
                Some(HandlerError::new(format!(
                    "handler did not finish within max_handling_time ({:?})",
                    self.config.max_handling_time
                )))
            },
        };
        let outcome = match failure {
            None => Outcome::Processed,
            Some(error)
                if error.is_permanent()
                    || u32::try_from(attempt).unwrap_or(u32::MAX) >= self.config.max_attempts =>
            {
                Outcome::Failed {
                    error: error.message,
                }
            }
            Some(error) => Outcome::Retry {
                error: error.message,
                after: self
                    .config
                    .backoff
                    .delay(u32::try_from(attempt).unwrap_or(1)),
            },
        };
        tracing::debug!(?outcome, "webhook event handled");
        match self.repository.complete(id, attempt, outcome).await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => {
                tracing::warn!("lease on webhook event lost; another worker owns it now");
            }
            Err(error) => tracing::error!(%error, "recording webhook outcome failed"),
        }
    }

    /// The heartbeat: extends the claim every third of the lease while the
    /// handler runs; returns only when the claim is gone. A failed
    /// extension is retried sooner; the claim counts as held until the end
    /// of the last lease granted, measured from before the request that
    /// granted it (so never later than the database's view).
    async fn hold_lease(&self, id: EventId, attempt: i32, claimed_at: Instant) -> LeaseEnd {
        let lease = self.config.lease;
        let beat = (lease / 3).max(MIN_HEARTBEAT);
        let mut held_until = later(claimed_at, lease);
        let mut next = later(claimed_at, beat);
        loop {
            tokio::time::sleep_until(next.min(held_until)).await;
            let sent = Instant::now();
            if sent >= held_until {
                return LeaseEnd::Expired;
            }
            let extended = tokio::time::timeout_at(
                held_until,
                self.repository.extend_lease(id, attempt, lease),
            )
            .await;
            match extended {
                Ok(Ok(())) => {
                    held_until = later(sent, lease);
                    next = later(sent, beat);
                }
                Ok(Err(Error::LeaseLost { .. })) => return LeaseEnd::Lost,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "extending a webhook event's lease failed");
                    next = later(Instant::now(), (beat / 2).max(MIN_HEARTBEAT));
                }
                Err(_) => return LeaseEnd::Expired,
            }
        }
    }
}

/// `at + by`; a duration past what an `Instant` can hold means "never"
/// (about 30 years) instead of a panic.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(NEVER))
        .unwrap_or(at)
}

const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Shortest wait between heartbeats, so a zero lease cannot spin.
const MIN_HEARTBEAT: Duration = Duration::from_millis(1);

/// Why [`Worker::hold_lease`] stopped holding a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseEnd {
    /// Another worker claimed the event (the attempt number moved on).
    Lost,
    /// The lease ran out before it could be extended.
    Expired,
}
