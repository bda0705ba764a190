//! The shared L2 tier and its health: reads, fills, and the invalidations
//! deferred while it is down and replayed before it is trusted again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CacheValue, Inner};
use crate::bus::Scope;
use crate::error::TierError;
use crate::key::CacheKey;
use crate::remote::RemoteStore;
use crate::stats::Counters;

/// The L2 and its health. While unhealthy, reads and fills skip L2 (the
/// cache degrades to L1 + loader) and failed invalidations wait in
/// `pending`; after the cooldown the next operation replays them, and only
/// when all went through is L2 trusted again — otherwise a value that a
/// failed invalidation should have removed could be served after recovery.
pub(super) struct Remote {
    pub(super) store: Arc<dyn RemoteStore>,
    pub(super) healthy: AtomicBool,
    pub(super) state: Mutex<RemoteState>,
    /// Serializes recovery so one task replays the pending invalidations.
    pub(super) recovery: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct RemoteState {
    pub(super) retry_at: Option<Instant>,
    pub(super) pending: Vec<Scope>,
}

impl<V: CacheValue> Inner<V> {
    /// Reads L2 if it is usable: `None` when skipped or failed, otherwise
    /// the decoded value (if any) and the partition generation.
    pub(super) async fn remote_read(&self, key: &CacheKey) -> Option<(Option<V>, u64)> {
        let store = self.remote_ready().await?;
        match store.get(self.config.name, key).await {
            Ok(read) => {
                let value = match read.value.as_deref().map(decode::<V>) {
                    None => None,
                    Some(Ok(value)) => Some(value),
                    Some(Err(error)) => {
                        // Treat an undecodable entry (e.g. from an older
                        // release) as a miss; the fill below overwrites it.
                        self.codec_failed(&error);
                        None
                    }
                };
                Some((value, read.generation))
            }
            Err(error) => {
                self.remote_failed(&error, None);
                None
            }
        }
    }

    pub(super) async fn fill_remote(&self, key: &CacheKey, value: &V, generation: u64) {
        let Some(store) = self.remote_ready().await else {
            return;
        };
        let bytes = match encode(value) {
            Ok(bytes) => bytes,
            Err(error) => return self.codec_failed(&error),
        };
        match store
            .put_if_generation(self.config.name, key, &bytes, self.config.ttl, generation)
            .await
        {
            Ok(true) => {}
            Ok(false) => Counters::bump(&self.counters.stale_loads_discarded),
            Err(error) => self.remote_failed(&error, None),
        }
    }

    /// The L2 store if it may be used now, replaying deferred invalidations
    /// first when it is recovering.
    pub(super) async fn remote_ready(&self) -> Option<&Arc<dyn RemoteStore>> {
        let remote = self.remote.as_ref()?;
        if remote.healthy.load(Ordering::Acquire) {
            return Some(&remote.store);
        }
        if remote.cooling_down() {
            return None;
        }
        let _recovering = remote.recovery.try_lock().ok()?;
        if remote.healthy.load(Ordering::Acquire) {
            return Some(&remote.store);
        }
        loop {
            let next = remote.state().pending.last().cloned();
            let Some(scope) = next else { break };
            if let Err(error) =
                remote_invalidate(remote.store.as_ref(), self.config.name, &scope).await
            {
                self.remote_failed(&error, None);
                return None;
            }
            remote.state().pending.pop();
        }
        remote.state().retry_at = None;
        remote.healthy.store(true, Ordering::Release);
        tracing::info!(cache = self.config.name, "shared cache tier recovered");
        Some(&remote.store)
    }

    pub(super) fn remote_failed(&self, error: &TierError, deferred: Option<Scope>) {
        Counters::bump(&self.counters.remote_errors);
        if let Some(remote) = &self.remote {
            let was_healthy = remote.healthy.swap(false, Ordering::AcqRel);
            let mut state = remote.state();
            state.retry_at = Some(Instant::now() + self.config.remote_cooldown);
            if let Some(scope) = deferred {
                state.pending.push(scope);
            }
            if was_healthy {
                tracing::warn!(cache = self.config.name, %error, cooldown = ?self.config.remote_cooldown,
                    "shared cache tier failed; serving from L1 and the loader");
            } else {
                tracing::debug!(cache = self.config.name, %error, "shared cache tier still failing");
            }
        }
    }

    pub(super) fn codec_failed(&self, error: &TierError) {
        Counters::bump(&self.counters.remote_errors);
        tracing::warn!(cache = self.config.name, %error, "cache value codec failed");
    }
}

impl Remote {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn cooling_down(&self) -> bool {
        self.state().retry_at.is_some_and(|at| Instant::now() < at)
    }

    pub(super) fn defer(&self, scope: Scope) {
        self.state().pending.push(scope);
    }

    /// Whether L2 deletes wait to be replayed.
    pub(super) fn has_pending(&self) -> bool {
        !self.state().pending.is_empty() || !self.healthy.load(Ordering::Acquire)
    }
}

pub(super) async fn remote_invalidate(
    store: &dyn RemoteStore,
    namespace: &str,
    scope: &Scope,
) -> Result<(), TierError> {
    match scope {
        Scope::Key { user, item } => {
            store
                .invalidate(namespace, &CacheKey::new(*user, item.as_str()))
                .await
        }
        Scope::User { user } => store.invalidate_user(namespace, *user).await,
        Scope::All => Ok(()),
    }
}

pub(super) fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, TierError> {
    serde_json::to_vec(value).map_err(TierError::Codec)
}

pub(super) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, TierError> {
    serde_json::from_slice(bytes).map_err(TierError::Codec)
}
