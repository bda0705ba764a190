use http::{HeaderMap, HeaderName};

use super::{
    Candidates, Identity, Outgoing, Scheme, SignError, Tolerance, Verified, VerifyError,
    decode_hex_mac, header_map, optional, required,
};
use crate::key::{Key, KeySet};

static SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");
static DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
static EVENT: HeaderName = HeaderName::from_static("x-github-event");

/// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body, delivery
/// id in `X-GitHub-Delivery`, event type in `X-GitHub-Event`.
///
/// GitHub signs no timestamp, so the tolerance does not apply and a
/// captured request stays valid forever. The delivery id is not signed
/// either (an attacker can change it), so the event log identifies a GitHub
/// event by the digest of its signed body instead: a replay with a new
/// delivery id is still a duplicate. The delivery id is kept in the stored
/// headers. (GitHub's own redeliveries resend the same body, so they are
/// duplicates too, as they should be.)
#[derive(Debug, Clone, Copy, Default)]
pub struct GitHub;

impl GitHub {
    /// The `X-Hub-Signature-256` value for a body.
    pub fn signature(key: &Key, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(key.mac(&[body])))
    }
}

impl Scheme for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn verify(
        &self,
        keys: &KeySet,
        headers: &HeaderMap,
        body: &[u8],
        _tolerance: Tolerance,
        _now: i64,
    ) -> Result<Verified, VerifyError> {
        let mut candidates = Candidates::new(SIGNATURE_256.as_str());
        if let Some(hex) = required(headers, &SIGNATURE_256)?.strip_prefix("sha256=") {
            candidates.push(decode_hex_mac(hex))?;
        }
        candidates.match_keys(keys, &[body], None)
    }

    fn sign(&self, key: &Key, message: &Outgoing<'_>) -> Result<HeaderMap, SignError> {
        let mut headers = header_map([(&SIGNATURE_256, Self::signature(key, message.body))])?;
        if !message.id.is_empty() {
            headers.extend(header_map([(&DELIVERY, message.id.to_owned())])?);
        }
        Ok(headers)
    }

    fn identify(&self, headers: &HeaderMap, _json: Option<&serde_json::Value>) -> Identity {
        // No external id: the receiver then keys the event on the digest of
        // the signed body (see the type's documentation).
        Identity {
            external_id: None,
            event_type: optional(headers, &EVENT).map(str::to_owned),
        }
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[
            "x-github-delivery",
            "x-github-event",
            "x-github-hook-id",
            "x-github-hook-installation-target-id",
            "x-github-hook-installation-target-type",
            "content-type",
            "user-agent",
        ]
    }
}
