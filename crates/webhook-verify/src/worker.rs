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
use crate::repository::EventRepository;

/// What the application does with a verified event.
///
/// Delivery is exactly once while workers stay alive: a claimed event is
/// fenced to its claimant and never handed to another worker before the
/// claimant's lease ends, and the handler is cancelled when the lease ends.
/// If a worker process dies mid-event, the event is claimed again after its
/// lease, so a handler with external side effects should use
/// [`WebhookEvent::id`] as its idempotency key.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event; an error schedules a retry (or, on the last
    /// allowed attempt, marks the event failed). A panic counts as an error.
    async fn handle(&self, event: &WebhookEvent) -> std::result::Result<(), HandlerError>;
}

/// Why a handler failed; kept (up to 2000 characters) as the event's
/// `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
}

impl HandlerError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
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
        HandlerError { message }
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
    /// How long a claim lasts; a handler still running then is cancelled
    /// and the attempt counts as failed; default 5 minutes.
    pub lease: Duration,
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
            lease: Duration::from_secs(300),
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
        // Taken before the claim, so the local deadline ends no later than
        // the lease the database grants.
        let deadline = Instant::now() + self.config.lease;
        let events = self
            .repository
            .claim(self.config.batch_size, self.config.lease)
            .await?;
        let claimed = events.len();
        let mut running = JoinSet::new();
        for event in events {
            running.spawn(self.clone().process(event, deadline));
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
    async fn process(self, event: WebhookEvent, deadline: Instant) {
        let (id, attempt) = (event.id, event.attempts);
        let handler = Arc::clone(&self.handler);
        // Its own task, so a panicking handler fails this attempt instead of
        // the worker.
        let mut task = tokio::spawn(async move { handler.handle(&event).await });
        let failure = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(error))) => Some(error.message),
            Ok(Err(_)) => Some("handler panicked".to_owned()),
            Err(_) => {
                task.abort();
                Some("handler did not finish within the lease".to_owned())
            }
        };
        let outcome = match failure {
            None => Outcome::Processed,
            Some(error)
                if u32::try_from(attempt).unwrap_or(u32::MAX) >= self.config.max_attempts =>
            {
                Outcome::Failed { error }
            }
            Some(error) => Outcome::Retry {
                error,
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
}
