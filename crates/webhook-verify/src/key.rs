//! Prepared HMAC keys, key sets for rotation, and the cached, reloadable
//! [`KeyRing`] that builds them from secret sources.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

use crate::scheme::{MAC_LEN, Scheme};
use crate::secret::{SecretError, SecretSource};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// One HMAC-SHA256 key, prepared once: the keyed inner and outer hash
/// states are computed when the key is made, so each verification only
/// clones them instead of re-deriving them from the secret (the derivation
/// costs two SHA-256 blocks, a sizeable share of a small webhook's cost).
///
/// The prepared state can forge signatures, so it is treated as a secret:
/// `Debug` hides it and it is zeroized on drop (sha2's `zeroize` feature).
#[derive(Clone)]
pub struct Key {
    id: Arc<str>,
    mac: HmacSha256,
}

impl Key {
    /// A key with an id (e.g. `current`, `2024-06`) from raw HMAC key bytes.
    /// Empty key bytes are refused: anyone could sign with them.
    pub fn from_bytes(id: &str, bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.is_empty() {
            return Err(SecretError::InvalidKey {
                key_id: id.to_owned(),
                reason: "key is empty",
            });
        }
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| SecretError::InvalidKey {
            key_id: id.to_owned(),
            reason: "HMAC refused the key",
        })?;
        Ok(Key {
            id: Arc::from(id),
            mac,
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn shared_id(&self) -> Arc<str> {
        Arc::clone(&self.id)
    }

    /// HMAC-SHA256 of the concatenation of `parts`; schemes pass their
    /// framing as parts so the signed content is never copied together.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("mac", &"[redacted]")
            .finish()
    }
}

/// The keys an endpoint accepts, in order of preference. The first is the
/// primary key (used to sign); the others are accepted during rotation.
/// Never empty.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// A key set from keys in order of preference; refuses an empty list.
    pub fn new(keys: Vec<Key>) -> Result<Self, SecretError> {
        if keys.is_empty() {
            return Err(SecretError::NoKeys);
        }
        Ok(KeySet { keys })
    }

    /// A key set of one key.
    pub fn single(key: Key) -> Self {
        KeySet { keys: vec![key] }
    }

    /// The primary key.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The keys in order of preference.
    pub fn iter(&self) -> std::slice::Iter<'_, Key> {
        self.keys.iter()
    }

    /// How many keys there are (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a key set has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl<'a> IntoIterator for &'a KeySet {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

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
