use http::{HeaderMap, HeaderName};

use super::{
    Candidates, Identity, Outgoing, Scheme, SignError, Tolerance, Verified, VerifyError,
    decode_hex_mac, header_map, json_str, parse_timestamp, required,
};
use crate::key::{Key, KeySet};

static STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

/// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over
/// `{t}.{body}`.
///
/// The HMAC key is the whole endpoint secret *including* its `whsec_`
/// prefix. Standard Webhooks secrets share that prefix but are base64
/// decoded, which is why the scheme is configured per endpoint and never
/// guessed from the secret. The event id and type come from the JSON body
/// (`id`, `type`). Items other than `t` and `v1` (e.g. `v0`) are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stripe;

impl Stripe {
    /// The `Stripe-Signature` value for one message.
    pub fn signature(key: &Key, timestamp: i64, body: &[u8]) -> String {
        let t = timestamp.to_string();
        let mac = key.mac(&[t.as_bytes(), b".", body]);
        format!("t={t},v1={}", hex::encode(mac))
    }
}

impl Scheme for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn verify(
        &self,
        keys: &KeySet,
        headers: &HeaderMap,
        body: &[u8],
        tolerance: Tolerance,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let header = STRIPE_SIGNATURE.as_str();
        let mut raw_timestamp = None;
        let mut candidates = Candidates::new(header);
        for item in required(headers, &STRIPE_SIGNATURE)?.split(',') {
            match item.split_once('=') {
                Some(("t", value)) if raw_timestamp.is_none() => raw_timestamp = Some(value),
                // Two timestamps would make "which one was signed" ambiguous.
                Some(("t", _)) => {
                    return Err(VerifyError::MalformedHeader {
                        header,
                        reason: "more than one timestamp",
                    });
                }
                Some(("v1", value)) => candidates.push(decode_hex_mac(value))?,
                _ => {}
            }
        }
        let raw_timestamp = raw_timestamp.ok_or(VerifyError::MalformedHeader {
            header,
            reason: "no t= timestamp",
        })?;
        let timestamp = parse_timestamp(raw_timestamp, header)?;
        tolerance.check(timestamp, now)?;
        candidates.match_keys(
            keys,
            &[raw_timestamp.as_bytes(), b".", body],
            Some(timestamp),
        )
    }

    fn sign(&self, key: &Key, message: &Outgoing<'_>) -> Result<HeaderMap, SignError> {
        header_map([(
            &STRIPE_SIGNATURE,
            Self::signature(key, message.timestamp, message.body),
        )])
    }

    fn identify(&self, _headers: &HeaderMap, json: Option<&serde_json::Value>) -> Identity {
        Identity {
            external_id: json_str(json, "/id"),
            event_type: json_str(json, "/type"),
        }
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &["content-type", "user-agent"]
    }
}
