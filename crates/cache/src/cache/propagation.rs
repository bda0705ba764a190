//! Telling the other tiers and instances.
//!
//! An invalidation drops the entries from L2 first, then from L1, then
//! announces them on the bus. L2 before L1: dropping L1 first would let a
//! concurrent local read refill L1 from the old L2 value. What cannot be
//! done now is queued, never dropped: L2 deletes wait in the tier's pending
//! list, announcements in the `Backlog`, and one repair task per namespace
//! replays both (L2 first) until they went through. A message whose L2
//! delete is still pending says so (`remote_pending`), and receivers then
//! delete from L2 themselves before dropping their L1 — so once the faults
//! heal, no instance keeps or re-reads a value older than an acknowledged
//! write.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::remote::remote_invalidate;
use super::{CacheValue, Inner, Propagation};
use crate::bus::{BusEvent, Invalidation, Scope};
use crate::stats::Counters;

/// Most announcements kept while the bus is down; beyond it they collapse
/// into one `All` (every receiver flushes its L1), which bounds memory
/// during a long outage at the price of a cold L1 afterwards.
const MAX_BACKLOG: usize = 4096;
/// First and longest pause between replay attempts of the repair task.
const REPAIR_FIRST: Duration = Duration::from_millis(25);
const REPAIR_MAX: Duration = Duration::from_millis(250);

/// Announcements not yet on the bus, oldest first.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    queue: VecDeque<Scope>,
    /// Whether a repair task runs; at most one per namespace.
    repairing: bool,
}

impl<V: CacheValue> Inner<V> {
    pub(super) async fn invalidate_with(&self, scope: Scope, propagation: Propagation) {
        match propagation {
            Propagation::Await => self.invalidate_everywhere(scope).await,
            Propagation::Background => {
                // Our own readers must not see the old value meanwhile.
                self.invalidate_local(&scope).await;
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move { me.invalidate_everywhere(scope).await });
                }
            }
        }
    }

    pub(super) async fn invalidate_everywhere(&self, scope: Scope) {
        Counters::bump(&self.counters.invalidations);
        let remote_pending = self.invalidate_remote(&scope).await;
        self.invalidate_local(&scope).await;
        self.announce(scope, remote_pending).await;
        tracing::trace!(cache = self.config.name, "invalidated");
    }

    /// Drops `scope` from L2 now, or defers it; returns whether it is
    /// still pending. `All` is not sent to L2: it would need a SCAN, and
    /// the entries expire by TTL.
    async fn invalidate_remote(&self, scope: &Scope) -> bool {
        let Some(remote) = self.remote.as_ref() else {
            return false;
        };
        if matches!(scope, Scope::All) {
            return false;
        }
        let pending = match self.remote_ready().await {
            Some(store) => match remote_invalidate(store.as_ref(), self.config.name, scope).await {
                Ok(()) => false,
                Err(error) => {
                    self.remote_failed(&error, Some(scope.clone()));
                    true
                }
            },
            None => {
                remote.defer(scope.clone());
                true
            }
        };
        if pending {
            self.ensure_repair();
        }
        pending
    }

    /// Publishes the invalidation, or queues it behind earlier ones that
    /// are still waiting (order matters: a later `User` may cover them).
    async fn announce(&self, scope: Scope, remote_pending: bool) {
        let Some(bus) = &self.bus else { return };
        if self.backlog_len() > 0 {
            self.enqueue(scope);
            return;
        }
        let message = Invalidation {
            origin: self.id,
            namespace: self.config.name.to_string(),
            scope,
            remote_pending,
        };
        if let Err(error) = bus.publish(&message).await {
            Counters::bump(&self.counters.bus_errors);
            tracing::warn!(cache = self.config.name, %error,
                "could not publish a cache invalidation; queued for replay");
            self.enqueue(message.scope);
        }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn backlog_len(&self) -> usize {
        self.backlog().queue.len()
    }

    fn enqueue(&self, scope: Scope) {
        {
            let mut backlog = self.backlog();
            if !backlog.queue.contains(&scope) {
                if backlog.queue.len() >= MAX_BACKLOG {
                    backlog.queue.clear();
                    backlog.queue.push_back(Scope::All);
                } else {
                    backlog.queue.push_back(scope);
                }
            }
        }
        self.ensure_repair();
    }

    /// Starts the repair task unless one runs.
    fn ensure_repair(&self) {
        {
            let mut backlog = self.backlog();
            if backlog.repairing {
                return;
            }
            backlog.repairing = true;
        }
        let me = self.me.clone();
        tokio::spawn(repair(me));
    }

    /// One replay attempt: deferred L2 deletes first (so no receiver
    /// re-reads an old L2 value), then the queued announcements in order.
    /// Returns whether everything went through.
    async fn replay(&self) -> bool {
        // `remote_ready` replays the deferred L2 deletes once the cooldown
        // passed. If L2 is still down the announcements go out anyway,
        // flagged, so that instances which can reach L2 delete from it.
        if self.remote.is_some() {
            let _ = self.remote_ready().await;
        }
        let remote_pending = self.remote.as_ref().is_some_and(|r| r.has_pending());
        let Some(bus) = &self.bus else {
            return !remote_pending;
        };
        loop {
            let Some(scope) = self.backlog().queue.front().cloned() else {
                return !remote_pending;
            };
            let message = Invalidation {
                origin: self.id,
                namespace: self.config.name.to_string(),
                scope,
                // Queued announcements always ask receivers to drop L2 as
                // well: ours may have been replayed after they re-read it.
                remote_pending: true,
            };
            if bus.publish(&message).await.is_err() {
                return false;
            }
            let mut backlog = self.backlog();
            if backlog.queue.front() == Some(&message.scope) {
                backlog.queue.pop_front();
            }
        }
    }

    /// Applies an invalidation another instance announced: L2 first when the
    /// sender could not reach it, then L1.
    async fn apply_remote(&self, message: Invalidation) {
        if message.remote_pending {
            self.invalidate_remote(&message.scope).await;
        }
        self.invalidate_local(&message.scope).await;
    }

    pub(super) fn apply_bus_event(
        &self,
        event: Result<BusEvent, RecvError>,
    ) -> Option<Invalidation> {
        match event {
            Ok(BusEvent::Invalidated(message)) => {
                if message.origin == self.id || message.namespace != self.config.name {
                    return None;
                }
                Counters::bump(&self.counters.remote_invalidations);
                Some(message)
            }
            Ok(BusEvent::Resync) | Err(RecvError::Lagged(_)) => {
                // Messages may have been lost: nothing in L1 can be trusted.
                Counters::bump(&self.counters.resyncs);
                tracing::info!(
                    cache = self.config.name,
                    "invalidation channel resync: flushing L1"
                );
                Some(Invalidation {
                    origin: self.id,
                    namespace: self.config.name.to_string(),
                    scope: Scope::All,
                    remote_pending: false,
                })
            }
            Err(RecvError::Closed) => None,
        }
    }
}

/// Replays deferred L2 deletes and queued announcements until both went
/// through, with a short backoff, then stops (the next failure starts it
/// again). Holds only a weak reference: a dropped cache ends it.
async fn repair<V: CacheValue>(cache: Weak<Inner<V>>) {
    let mut pause = REPAIR_FIRST;
    loop {
        tokio::time::sleep(pause).await;
        let Some(inner) = cache.upgrade() else { return };
        if inner.replay().await {
            let mut backlog = inner.backlog();
            let remote_pending = inner.remote.as_ref().is_some_and(|r| r.has_pending());
            if backlog.queue.is_empty() && !remote_pending {
                backlog.repairing = false;
                return;
            }
        }
        pause = (pause * 2).min(REPAIR_MAX);
    }
}

/// Applies other instances' invalidations to this instance's caches until
/// the cache is dropped or the bus closes.
pub(super) async fn apply_remote_invalidations<V: CacheValue>(
    cache: Weak<Inner<V>>,
    mut events: tokio::sync::broadcast::Receiver<BusEvent>,
) {
    loop {
        let event = events.recv().await;
        let closed = matches!(event, Err(RecvError::Closed));
        let Some(inner) = cache.upgrade() else { return };
        if let Some(message) = inner.apply_bus_event(event) {
            inner.apply_remote(message).await;
        }
        drop(inner);
        if closed {
            return;
        }
    }
}
