//! Signature schemes: how a sender signs a request and how to check it.
//!
//! Every scheme here is HMAC-SHA256 over some framing of the raw body; they
//! differ in which headers carry the signature, timestamp and id, how the
//! MAC is encoded (base64 or hex) and how a secret becomes the HMAC key.
//! The shared machinery lives in this module so each scheme file only
//! describes its framing.

// The crate root re-exports each scheme from its module; this module only
// holds what they share, so the schemes import it and it imports none.
pub(crate) mod github;
pub(crate) mod slack;
pub(crate) mod standard;
pub(crate) mod stripe;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, HeaderValue};
use opsdeck_core::Secret;
use subtle::{Choice, ConstantTimeEq};

use crate::key::{Key, KeySet, MAC_LEN};
use crate::secret::SecretError;

/// Most signatures one header may carry. Senders put several there only
/// while rotating keys; the cap bounds the work a hostile header can cause.
pub const MAX_SIGNATURES: usize = 8;

/// A webhook signature scheme. The four schemes senders actually use are
/// provided: [`crate::StandardWebhooks`], [`crate::Stripe`],
/// [`crate::GitHub`] and [`crate::Slack`].
///
/// # Contract
/// - `verify` never panics, whatever the headers and body; it succeeds only
///   when a signature in the headers is the HMAC of the scheme's signed
///   content under one of `keys`, compared in constant time on the decoded
///   MAC bytes after checking their length, and (for schemes with a
///   timestamp) the timestamp is within `tolerance` of `now` both ways.
/// - `sign` produces headers that `verify` accepts for the same key, body
///   and a `now` close to the message's timestamp.
/// - `identify` reads the sender's message id and event type, if the scheme
///   has them; it never fails.
pub trait Scheme: Send + Sync + fmt::Debug {
    /// Stable lowercase name, stored with every event (`standard`, `stripe`,
    /// `github`, `slack`).
    fn name(&self) -> &'static str;

    /// Turns a secret, as the sender hands it out, into a key for this
    /// scheme. By default the secret's bytes are the HMAC key, as for
    /// Stripe (whole string, `whsec_` included), GitHub and Slack; Standard
    /// Webhooks overrides it to decode `whsec_<base64>`.
    fn key(&self, id: &str, secret: &Secret) -> Result<Key, SecretError> {
        Key::from_bytes(id, secret.expose())
    }

    /// Verifies a request; `now` is the current Unix time in seconds.
    fn verify(
        &self,
        keys: &KeySet,
        headers: &HeaderMap,
        body: &[u8],
        tolerance: Tolerance,
        now: i64,
    ) -> Result<Verified, VerifyError>;

    /// Signs an outgoing message with `key` and returns the headers to send
    /// with its body.
    fn sign(&self, key: &Key, message: &Outgoing<'_>) -> Result<HeaderMap, SignError>;

    /// The sender's id and type of the event, from headers or the JSON body.
    fn identify(&self, headers: &HeaderMap, json: Option<&serde_json::Value>) -> Identity;

    /// Headers worth storing with the event. Signature headers are never
    /// among them: they are useless once verified and would let anyone who
    /// reads the log attack a weak secret offline.
    fn kept_headers(&self) -> &'static [&'static str];
}

/// The current Unix time in seconds, the `now` that [`Scheme::verify`] takes.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How far a signed timestamp may be from the receiver's clock: `past`
/// bounds replays of old captured requests, `future` bounds clock skew.
/// Both default to 5 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    past: Duration,
    future: Duration,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::symmetric(Duration::from_secs(300))
    }
}

impl Tolerance {
    /// Different bounds for old and for future timestamps.
    pub const fn new(past: Duration, future: Duration) -> Self {
        Tolerance { past, future }
    }

    /// The same bound both ways.
    pub const fn symmetric(bound: Duration) -> Self {
        Tolerance::new(bound, bound)
    }

    /// How old a timestamp may be.
    pub fn past(&self) -> Duration {
        self.past
    }

    /// How far ahead a timestamp may be.
    pub fn future(&self) -> Duration {
        self.future
    }

    pub(crate) fn check(&self, timestamp: i64, now: i64) -> Result<(), VerifyError> {
        // i128 so that hostile timestamps near i64::MIN/MAX cannot overflow.
        let age = i128::from(now) - i128::from(timestamp);
        let past = i128::from(self.past.as_secs());
        let future = i128::from(self.future.as_secs());
        if age > past {
            Err(VerifyError::TimestampTooOld {
                age_secs: saturate(age),
                tolerance_secs: self.past.as_secs(),
            })
        } else if -age > future {
            Err(VerifyError::TimestampInFuture {
                ahead_secs: saturate(-age),
                tolerance_secs: self.future.as_secs(),
            })
        } else {
            Ok(())
        }
    }
}

fn saturate(value: i128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// A successful verification: which key matched, and the signed timestamp
/// when the scheme has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Position of the matching key in the key set (0 is the primary key).
    pub key_index: usize,
    /// The matching key's id, e.g. `current` or `previous`.
    pub key_id: Arc<str>,
    /// The signed Unix timestamp, if the scheme signs one.
    pub timestamp: Option<i64>,
}

/// What a sender's headers and body say about an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The sender's unique id for the message, if the scheme has one.
    pub external_id: Option<String>,
    /// The event type, e.g. `invoice.paid` or `push`.
    pub event_type: Option<String>,
}

/// An outgoing message to sign.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The message id (Standard Webhooks `webhook-id`, GitHub
    /// `X-GitHub-Delivery`; Stripe and Slack carry theirs in the body).
    pub id: &'a str,
    /// Unix time in seconds (ignored by GitHub, which signs none).
    pub timestamp: i64,
    /// The exact bytes that will be sent.
    pub body: &'a [u8],
}

/// Why a request failed verification. Every variant is a refusal; none
/// tells which key was tried or what the expected signature was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but unusable.
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signed timestamp is older than the tolerance allows.
    #[error("timestamp is {age_secs} s old; at most {tolerance_secs} s accepted")]
    TimestampTooOld {
        /// Age of the timestamp in seconds.
        age_secs: u64,
        /// The tolerance in seconds.
        tolerance_secs: u64,
    },
    /// The signed timestamp is further in the future than the tolerance.
    #[error("timestamp is {ahead_secs} s in the future; at most {tolerance_secs} s accepted")]
    TimestampInFuture {
        /// How far ahead the timestamp is, in seconds.
        ahead_secs: u64,
        /// The tolerance in seconds.
        tolerance_secs: u64,
    },
    /// The signature header holds no signature of a version this scheme
    /// checks (e.g. only `v1a,` entries, or no `v1=` item).
    #[error("no signature of a supported version in header {header}")]
    NoSignature {
        /// The signature header's name.
        header: &'static str,
    },
    /// No signature matched any key. Malformed entries (empty, truncated,
    /// not base64/hex) land here too: they simply match nothing.
    #[error("signature does not match")]
    SignatureMismatch,
}

impl VerifyError {
    /// Whether the request was well-formed but not authentic (wrong or stale
    /// signature), as opposed to malformed. HTTP maps the first to 401 and
    /// the second to 400.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            VerifyError::TimestampTooOld { .. }
                | VerifyError::TimestampInFuture { .. }
                | VerifyError::NoSignature { .. }
                | VerifyError::SignatureMismatch
        )
    }
}

/// Why an outgoing message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// A value cannot be sent as an HTTP header (e.g. an id with a newline).
    #[error("{header} cannot be sent as an HTTP header value")]
    InvalidHeaderValue {
        /// The header's name.
        header: &'static str,
    },
}

// ---- shared machinery for the schemes ------------------------------------

/// Several headers in one pass over the map. For the handful of headers a
/// webhook request carries this is about twice as fast as one hash lookup
/// per name; the first value of a repeated header wins, as with `get`.
pub(crate) fn find_all<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&'static HeaderName; N],
) -> Result<[&'h HeaderValue; N], VerifyError> {
    let mut found: [Option<&'h HeaderValue>; N] = [None; N];
    for (name, value) in headers {
        for (slot, wanted) in found.iter_mut().zip(names) {
            if slot.is_none() && name == wanted {
                *slot = Some(value);
            }
        }
    }
    let mut out: [&'h HeaderValue; N] = [&EMPTY; N];
    for ((slot, value), name) in out.iter_mut().zip(found).zip(names) {
        *slot = value.ok_or(VerifyError::MissingHeader(name.as_str()))?;
    }
    Ok(out)
}

static EMPTY: HeaderValue = HeaderValue::from_static("");

/// A header value as text, or the typed reason it is unusable.
pub(crate) fn text<'h>(
    value: &'h HeaderValue,
    name: &'static HeaderName,
) -> Result<&'h str, VerifyError> {
    value.to_str().map_err(|_| VerifyError::MalformedHeader {
        header: name.as_str(),
        reason: "not visible ASCII",
    })
}

/// A header as text, or the typed reason it is unusable.
pub(crate) fn required<'h>(
    headers: &'h HeaderMap,
    name: &'static HeaderName,
) -> Result<&'h str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or(VerifyError::MissingHeader(name.as_str()))?;
    text(value, name)
}

/// An optional header as text; unusable values count as absent.
pub(crate) fn optional<'h>(headers: &'h HeaderMap, name: &'static HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses a Unix timestamp in canonical decimal form only. Refusing signs,
/// leading zeros and whitespace matters: the raw text is what gets signed,
/// so two spellings of one number must not both be accepted.
pub(crate) fn parse_timestamp(raw: &str, header: &'static str) -> Result<i64, VerifyError> {
    let malformed = |reason| VerifyError::MalformedHeader { header, reason };
    let bytes = raw.as_bytes();
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(malformed("timestamp is not a decimal number of seconds"));
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return Err(malformed("timestamp has leading zeros"));
    }
    // At most 18 digits always fits an i64.
    raw.parse()
        .map_err(|_| malformed("timestamp is not a decimal number of seconds"))
}

/// Decodes a base64 MAC into a fixed buffer; `None` unless it is exactly
/// [`MAC_LEN`] bytes, so empty and truncated signatures never compare.
pub(crate) fn decode_base64_mac(text: &[u8]) -> Option<[u8; MAC_LEN]> {
    // 44 characters encode 32 bytes; anything longer cannot be a MAC and is
    // refused before decoding so the stack buffer below is always enough.
    if text.len() > 44 {
        return None;
    }
    let mut buf = [0u8; 48];
    match BASE64.decode_slice(text, &mut buf) {
        Ok(MAC_LEN) => buf[..MAC_LEN].try_into().ok(),
        _ => None,
    }
}

/// Decodes a hex MAC; `None` unless it is exactly [`MAC_LEN`] bytes.
pub(crate) fn decode_hex_mac(text: &str) -> Option<[u8; MAC_LEN]> {
    let mut out = [0u8; MAC_LEN];
    hex::decode_to_slice(text, &mut out).ok().map(|()| out)
}

/// The signatures found in a header, decoded onto the stack.
pub(crate) struct Candidates {
    macs: [[u8; MAC_LEN]; MAX_SIGNATURES],
    len: usize,
    /// Entries of the right version, well-formed or not.
    seen: usize,
    header: &'static str,
}

impl Candidates {
    pub(crate) fn new(header: &'static str) -> Self {
        Candidates {
            macs: [[0; MAC_LEN]; MAX_SIGNATURES],
            len: 0,
            seen: 0,
            header,
        }
    }

    /// Records one entry of the scheme's version; `None` is a malformed one.
    pub(crate) fn push(&mut self, decoded: Option<[u8; MAC_LEN]>) -> Result<(), VerifyError> {
        self.seen += 1;
        if self.seen > MAX_SIGNATURES {
            return Err(VerifyError::MalformedHeader {
                header: self.header,
                reason: "too many signatures",
            });
        }
        if let Some(mac) = decoded {
            self.macs[self.len] = mac;
            self.len += 1;
        }
        Ok(())
    }

    /// Finds the first key whose MAC over `parts` equals a candidate.
    pub(crate) fn match_keys(
        &self,
        keys: &KeySet,
        parts: &[&[u8]],
        timestamp: Option<i64>,
    ) -> Result<Verified, VerifyError> {
        if self.seen == 0 {
            return Err(VerifyError::NoSignature {
                header: self.header,
            });
        }
        if self.len == 0 {
            return Err(VerifyError::SignatureMismatch);
        }
        for (key_index, key) in keys.iter().enumerate() {
            let expected = key.mac(parts);
            if self.macs[..self.len]
                .iter()
                .any(|given| macs_equal(&expected, given))
            {
                return Ok(Verified {
                    key_index,
                    key_id: key.shared_id(),
                    timestamp,
                });
            }
        }
        Err(VerifyError::SignatureMismatch)
    }
}

/// Constant-time equality of MAC bytes. The length is checked first (and
/// may leak: it is public); the content never short-circuits. Compared in
/// 64-bit words: subtle's byte-wise slice comparison costs about as much
/// as a third of the whole HMAC of a small webhook.
pub(crate) fn macs_equal(expected: &[u8; MAC_LEN], given: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let mut equal = Choice::from(1);
    for (a, b) in expected.chunks_exact(8).zip(given.chunks_exact(8)) {
        equal &= word(a).ct_eq(&word(b));
    }
    bool::from(equal)
}

fn word(bytes: &[u8]) -> u64 {
    // chunks_exact(8) always yields 8 bytes.
    u64::from_ne_bytes(bytes.try_into().unwrap_or([0; 8]))
}

pub(crate) fn encode_base64(mac: &[u8; MAC_LEN]) -> String {
    BASE64.encode(mac)
}

/// Builds a header map from name/value pairs, refusing values that are not
/// valid header text.
pub(crate) fn header_map<const N: usize>(
    pairs: [(&'static HeaderName, String); N],
) -> Result<HeaderMap, SignError> {
    let mut headers = HeaderMap::with_capacity(N);
    for (name, value) in pairs {
        let value = HeaderValue::try_from(value).map_err(|_| SignError::InvalidHeaderValue {
            header: name.as_str(),
        })?;
        headers.insert(name.clone(), value);
    }
    Ok(headers)
}

/// The string at JSON `pointer` (e.g. `/event/type`) in the body, if the
/// body is JSON and has one there.
pub(crate) fn json_str(json: Option<&serde_json::Value>, pointer: &str) -> Option<String> {
    json?.pointer(pointer)?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_must_be_canonical() {
        assert_eq!(parse_timestamp("1700000000", "t"), Ok(1_700_000_000));
        assert_eq!(parse_timestamp("0", "t"), Ok(0));
        for bad in [
            "",
            "+1",
            "-1",
            "01",
            " 1",
            "1 ",
            "1.0",
            "1e9",
            "9999999999999999999",
        ] {
            assert!(parse_timestamp(bad, "t").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tolerance_is_checked_both_ways_without_overflow() {
        let t = Tolerance::new(Duration::from_secs(10), Duration::from_secs(5));
        assert!(t.check(100, 110).is_ok());
        assert!(matches!(
            t.check(99, 110),
            Err(VerifyError::TimestampTooOld { age_secs: 11, .. })
        ));
        assert!(t.check(115, 110).is_ok());
        assert!(matches!(
            t.check(116, 110),
            Err(VerifyError::TimestampInFuture { ahead_secs: 6, .. })
        ));
        assert!(t.check(i64::MIN, i64::MAX).is_err());
        assert!(t.check(i64::MAX, i64::MIN).is_err());
    }

    #[test]
    fn mac_decoding_requires_the_exact_length() {
        let mac = [7u8; MAC_LEN];
        assert_eq!(decode_base64_mac(encode_base64(&mac).as_bytes()), Some(mac));
        assert_eq!(decode_hex_mac(&hex::encode(mac)), Some(mac));
        assert_eq!(decode_base64_mac(b""), None);
        assert_eq!(decode_hex_mac(""), None);
        assert_eq!(decode_hex_mac(&hex::encode(mac)[..62]), None);
        assert_eq!(
            decode_base64_mac(&encode_base64(&mac).as_bytes()[..40]),
            None
        );
        assert_eq!(decode_base64_mac(BASE64.encode([7u8; 31]).as_bytes()), None);
        assert_eq!(decode_base64_mac(BASE64.encode([7u8; 33]).as_bytes()), None);
    }

    #[test]
    fn mac_comparison_checks_length_and_content() {
        let mac = [1u8; MAC_LEN];
        assert!(macs_equal(&mac, &[1u8; MAC_LEN]));
        assert!(!macs_equal(&mac, &[1u8; MAC_LEN - 1]));
        assert!(!macs_equal(&mac, &[]));
        // A difference in any word must count.
        for i in [0, 7, 8, 15, 16, 31] {
            let mut other = mac;
            other[i] ^= 0x80;
            assert!(!macs_equal(&mac, &other), "byte {i}");
        }
    }
}
