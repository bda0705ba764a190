//! Telling the other tiers and instances: an invalidation goes to L1, then
//! L2, then the bus; other instances' messages are applied to our L1.

use std::sync::Weak;

use tokio::sync::broadcast::error::RecvError;

use super::remote::remote_invalidate;
use super::{CacheValue, Inner};
use crate::bus::{BusEvent, Invalidation, Scope};
use crate::stats::Counters;

impl<V: CacheValue> Inner<V> {
    pub(super) async fn invalidate_everywhere(&self, scope: Scope) {
        Counters::bump(&self.counters.invalidations);
        self.invalidate_local(&scope).await;
        // `All` is not sent to L2: it would need a SCAN; entries expire by TTL.
        if let Some(remote) = self
            .remote
            .as_ref()
            .filter(|_| !matches!(scope, Scope::All))
        {
            match self.remote_ready().await {
                Some(store) => {
                    if let Err(error) =
                        remote_invalidate(store.as_ref(), self.config.name, &scope).await
                    {
                        self.remote_failed(&error, Some(scope.clone()));
                    }
                }
                None => remote.defer(scope.clone()),
            }
        }
        if let Some(bus) = &self.bus {
            let message = Invalidation {
                origin: self.id,
                namespace: self.config.name.to_string(),
                scope,
            };
            if let Err(error) = bus.publish(&message).await {
                // At-most-once anyway: the other instances flush their L1 when
                // their own subscription reconnects, and entries expire by TTL.
                Counters::bump(&self.counters.bus_errors);
                tracing::warn!(cache = self.config.name, %error, "could not publish cache invalidation");
            }
        }
        tracing::trace!(cache = self.config.name, "invalidated");
    }

    pub(super) fn apply_bus_event(&self, event: Result<BusEvent, RecvError>) -> Option<Scope> {
        match event {
            Ok(BusEvent::Invalidated(message)) => {
                if message.origin == self.id || message.namespace != self.config.name {
                    return None;
                }
                Counters::bump(&self.counters.remote_invalidations);
                Some(message.scope)
            }
            Ok(BusEvent::Resync) | Err(RecvError::Lagged(_)) => {
                // Messages may have been lost: nothing in L1 can be trusted.
                Counters::bump(&self.counters.resyncs);
                tracing::info!(
                    cache = self.config.name,
                    "invalidation channel resync: flushing L1"
                );
                Some(Scope::All)
            }
            Err(RecvError::Closed) => None,
        }
    }
}

/// Applies other instances' invalidations to this instance's L1 until the
/// cache is dropped or the bus closes.
pub(super) async fn apply_remote_invalidations<V: CacheValue>(
    cache: Weak<Inner<V>>,
    mut events: tokio::sync::broadcast::Receiver<BusEvent>,
) {
    loop {
        let event = events.recv().await;
        let closed = matches!(event, Err(RecvError::Closed));
        let Some(inner) = cache.upgrade() else { return };
        if let Some(scope) = inner.apply_bus_event(event) {
            inner.invalidate_local(&scope).await;
        }
        if closed {
            return;
        }
    }
}
