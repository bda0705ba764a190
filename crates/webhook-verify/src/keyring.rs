//! The cached, reloadable [`KeyRing`] that builds an endpoint's keys from
//! its secret sources with its scheme.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::key::KeySet;
use crate::scheme::Scheme;
use crate::secret::{SecretError, SecretSource};

/// An endpoint's keys, loaded from [`SecretSource`]s and cached.
///
/// - The keys are built on first use and kept for the TTL (if one is set);
///   the next use after that reloads them, so a rotated secret takes
///   effect without a restart. [`KeyRing::reload`] reloads at once.
/// - One reload runs at a time; concurrent callers wait for it and share
///   its result instead of each running `op read`.
/// - If a TTL reload fails while keys are cached, the cached keys stay in
///   use (a 1Password outage must not stop webhooks) and the failure is
///   logged; the next attempt comes one TTL later. An explicit `reload`
///   returns the error instead, still keeping the old keys.
#[derive(Debug)]
pub struct KeyRing {
    scheme: Arc<dyn Scheme>,
    sources: Vec<(String, Arc<dyn SecretSource>)>,
    ttl: Option<Duration>,
    cached: RwLock<Option<Cached>>,
    reloading: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct Cached {
    keys: Arc<KeySet>,
    loaded_at: Instant,
}

impl KeyRing {
    /// An empty key ring for `scheme`; add sources with
    /// [`KeyRing::source`]. Without a TTL, keys load once and reload only
    /// on [`KeyRing::reload`].
    pub fn new(scheme: impl Scheme + 'static) -> Self {
        KeyRing::with_scheme(Arc::new(scheme))
    }

    /// Like [`KeyRing::new`] for a shared scheme.
    pub fn with_scheme(scheme: Arc<dyn Scheme>) -> Self {
        KeyRing {
            scheme,
            sources: Vec::new(),
            ttl: None,
            cached: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds a key, loaded from `source`, after those already added (the
    /// first added is the primary key).
    pub fn source(
        mut self,
        key_id: impl Into<String>,
        source: impl SecretSource + 'static,
    ) -> Self {
        self.sources.push((key_id.into(), Arc::new(source)));
        self
    }

    /// Reload the keys when they are older than `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The scheme the keys are for.
    pub fn scheme(&self) -> &Arc<dyn Scheme> {
        &self.scheme
    }

    /// The current keys, loading or reloading them if needed.
    pub async fn keys(&self) -> Result<Arc<KeySet>, SecretError> {
        if let Some(keys) = self.fresh() {
            return Ok(keys);
        }
        let _one_at_a_time = self.reloading.lock().await;
        // Whoever held the lock before may have just reloaded.
        if let Some(keys) = self.fresh() {
            return Ok(keys);
        }
        match self.load().await {
            Ok(keys) => Ok(self.store(keys)),
            Err(error) => match self.cached() {
                Some(stale) => {
                    tracing::warn!(%error, "reloading webhook keys failed; keeping the previous keys");
                    Ok(self.store(stale.keys))
                }
                None => Err(error),
            },
        }
    }

    /// Reloads the keys now (e.g. on a rotation signal). On failure the
    /// previous keys stay in use and the error is returned.
    pub async fn reload(&self) -> Result<Arc<KeySet>, SecretError> {
        let _one_at_a_time = self.reloading.lock().await;
        let keys = self.load().await?;
        Ok(self.store(keys))
    }

    fn cached(&self) -> Option<Cached> {
        self.cached
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn fresh(&self) -> Option<Arc<KeySet>> {
        let cached = self.cached()?;
        match self.ttl {
            Some(ttl) if cached.loaded_at.elapsed() >= ttl => None,
            _ => Some(cached.keys),
        }
    }

    fn store(&self, keys: Arc<KeySet>) -> Arc<KeySet> {
        *self
            .cached
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Cached {
            keys: Arc::clone(&keys),
            loaded_at: Instant::now(),
        });
        keys
    }

    async fn load(&self) -> Result<Arc<KeySet>, SecretError> {
        let mut keys = Vec::with_capacity(self.sources.len());
        for (key_id, source) in &self.sources {
            let secret = source.load().await?;
            keys.push(self.scheme.key(key_id, &secret)?);
        }
        let keys = Arc::new(KeySet::new(keys)?);
        tracing::debug!(
            scheme = self.scheme.name(),
            keys = keys.len(),
            "loaded webhook keys"
        );
        Ok(keys)
    }
}
