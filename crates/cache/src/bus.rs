use async_trait::async_trait;
use opsdeck_core::UserId;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::error::TierError;

/// What an invalidation drops. Messages carry keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    /// One key.
    Key {
        /// The key's user.
        user: UserId,
        /// The key's item.
        item: String,
    },
    /// Every key of one user.
    User {
        /// The user.
        user: UserId,
    },
    /// Every key of the namespace.
    All,
}

/// An invalidation announced to the other instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    /// The cache instance that made it (receivers skip their own).
    pub origin: Uuid,
    /// The namespace it applies to.
    pub namespace: String,
    /// What to drop.
    pub scope: Scope,
    /// The sender could not drop the entries from the shared L2 (it was cut
    /// off from it, or the message was queued while the bus was down):
    /// receivers drop them from L2 too, before their L1, so none of them
    /// re-reads the old value from L2. Absent in older messages.
    #[serde(default)]
    pub remote_pending: bool,
}

/// What subscribers of a bus receive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusEvent {
    /// Another instance invalidated something.
    Invalidated(Invalidation),
    /// The bus lost its connection and got it back: messages sent meanwhile
    /// are lost, so every subscriber must drop its whole L1.
    Resync,
}

/// Carries invalidations between the instances of a service.
///
/// Delivery is at most once (Redis pub/sub and PostgreSQL NOTIFY both drop
/// messages while a subscriber is disconnected); implementations therefore
/// emit [`BusEvent::Resync`] after every reconnect.
#[async_trait]
pub trait InvalidationBus: Send + Sync + std::fmt::Debug {
    /// Announces an invalidation to every subscriber (including, possibly,
    /// the sender's own, which skip it by `origin`).
    async fn publish(&self, invalidation: &Invalidation) -> Result<(), TierError>;

    /// A new receiver of the bus's events.
    fn subscribe(&self) -> broadcast::Receiver<BusEvent>;

    /// Waits until the bus receives messages (or `timeout` passes) and
    /// returns whether it does; useful before relying on delivery, e.g. in
    /// tests. An in-process bus always does.
    async fn wait_until_subscribed(&self, timeout: std::time::Duration) -> bool {
        let _ = timeout;
        true
    }
}

/// Capacity of the broadcast channel between a bus's reader task and the
/// caches; a cache that falls further behind treats it as a resync.
pub(crate) const BUS_CHANNEL_CAPACITY: usize = 4096;

/// An in-process bus: connects caches in one process (tests, or several
/// caches sharing a namespace). Never loses messages while it exists.
#[derive(Debug, Clone)]
pub struct InMemoryInvalidationBus {
    sender: broadcast::Sender<BusEvent>,
}

impl Default for InMemoryInvalidationBus {
    fn default() -> Self {
        InMemoryInvalidationBus {
            sender: broadcast::channel(BUS_CHANNEL_CAPACITY).0,
        }
    }
}

impl InMemoryInvalidationBus {
    /// A new bus with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends [`BusEvent::Resync`] to every subscriber, as a real bus does
    /// after a reconnect.
    pub fn resync(&self) {
        let _ = self.sender.send(BusEvent::Resync);
    }
}

#[async_trait]
impl InvalidationBus for InMemoryInvalidationBus {
    async fn publish(&self, invalidation: &Invalidation) -> Result<(), TierError> {
        // No subscriber is not an error: nobody needs to hear it.
        let _ = self
            .sender
            .send(BusEvent::Invalidated(invalidation.clone()));
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.sender.subscribe()
    }
}

/// The reader side shared by the network buses: a background task that
/// feeds a broadcast channel, and whether it is subscribed right now. The
/// task stops when this is dropped.
#[cfg(any(feature = "redis", feature = "postgres"))]
#[derive(Debug)]
pub(crate) struct ReaderTask {
    sender: broadcast::Sender<BusEvent>,
    connected: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl ReaderTask {
    /// Spawns `read(events, connected)`; it must send every event it reads
    /// and keep `connected` up to date.
    pub(crate) fn spawn<F, Fut>(read: F) -> Self
    where
        F: FnOnce(broadcast::Sender<BusEvent>, tokio::sync::watch::Sender<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (sender, _) = broadcast::channel(BUS_CHANNEL_CAPACITY);
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(read(sender.clone(), connected_tx));
        ReaderTask {
            sender,
            connected,
            task,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.sender.subscribe()
    }

    pub(crate) async fn wait_until_subscribed(&self, timeout: std::time::Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(timeout, connected.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl Drop for ReaderTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reconnection delays of the bus readers: 50 ms doubling to 500 ms, so a
/// healed channel is used again well within a second.
#[cfg(any(feature = "redis", feature = "postgres"))]
#[derive(Debug)]
pub(crate) struct Backoff(std::time::Duration);

#[cfg(any(feature = "redis", feature = "postgres"))]
impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(50);
    const MAX: std::time::Duration = std::time::Duration::from_millis(500);

    pub(crate) fn new() -> Self {
        Backoff(Self::FIRST)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn encode_message(invalidation: &Invalidation) -> Result<String, TierError> {
    serde_json::to_string(invalidation).map_err(TierError::Codec)
}

#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn decode_message(payload: &str) -> Option<Invalidation> {
    match serde_json::from_str(payload) {
        Ok(message) => Some(message),
        Err(error) => {
            // A foreign or corrupt message must not stop the reader task.
            tracing::warn!(%error, "ignoring undecodable cache invalidation message");
            None
        }
    }
}
