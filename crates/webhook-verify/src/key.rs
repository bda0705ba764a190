//! Prepared HMAC keys and key sets for rotation. A leaf module below the
//! schemes (which sign and verify with these keys) and the
//! [`crate::KeyRing`] (which builds them from secret sources).

use std::fmt;
use std::sync::Arc;

use hmac::{KeyInit, Mac};

use crate::secret::SecretError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Length of an HMAC-SHA256 tag in bytes.
pub const MAC_LEN: usize = 32;

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
