use http::{HeaderMap, HeaderName};

use super::{
    Candidates, Identity, Outgoing, Scheme, SignError, Tolerance, Verified, VerifyError,
    decode_hex_mac, header_map, json_str, parse_timestamp, required,
};
use crate::key::{Key, KeySet};

static SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
static TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");

/// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{timestamp}:{body}`, the
/// timestamp in `X-Slack-Request-Timestamp`; the key is the signing secret
/// as given.
///
/// Events API bodies carry `event_id` and `event.type`; slash commands and
/// interactivity payloads are form-encoded and carry no id, so the receiver
/// falls back to a digest of timestamp and body for deduplication.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slack;

impl Slack {
    /// The `X-Slack-Signature` value for one message.
    pub fn signature(key: &Key, timestamp: i64, body: &[u8]) -> String {
        let t = timestamp.to_string();
        format!(
            "v0={}",
            hex::encode(key.mac(&[b"v0:", t.as_bytes(), b":", body]))
        )
    }
}

impl Scheme for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn verify(
        &self,
        keys: &KeySet,
        headers: &HeaderMap,
        body: &[u8],
        tolerance: Tolerance,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let raw_timestamp = required(headers, &TIMESTAMP)?;
        let timestamp = parse_timestamp(raw_timestamp, TIMESTAMP.as_str())?;
        tolerance.check(timestamp, now)?;
        let mut candidates = Candidates::new(SIGNATURE.as_str());
        if let Some(hex) = required(headers, &SIGNATURE)?.strip_prefix("v0=") {
            candidates.push(decode_hex_mac(hex))?;
        }
        candidates.match_keys(
            keys,
            &[b"v0:", raw_timestamp.as_bytes(), b":", body],
            Some(timestamp),
        )
    }

    fn sign(&self, key: &Key, message: &Outgoing<'_>) -> Result<HeaderMap, SignError> {
        header_map([
            (&TIMESTAMP, message.timestamp.to_string()),
            (
                &SIGNATURE,
                Self::signature(key, message.timestamp, message.body),
            ),
        ])
    }

    fn identify(&self, _headers: &HeaderMap, json: Option<&serde_json::Value>) -> Identity {
        Identity {
            external_id: json_str(json, "/event_id"),
            event_type: json_str(json, "/event/type").or_else(|| json_str(json, "/type")),
        }
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[
            "x-slack-request-timestamp",
            "x-slack-retry-num",
            "x-slack-retry-reason",
            "content-type",
            "user-agent",
        ]
    }
}
