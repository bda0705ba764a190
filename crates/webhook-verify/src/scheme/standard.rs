use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, STANDARD_NO_PAD as BASE64_NO_PAD};
use http::{HeaderMap, HeaderName};
use opsdeck_core::Secret;
use zeroize::Zeroizing;

use super::{
    Candidates, Identity, Outgoing, Scheme, SignError, Tolerance, Verified, VerifyError,
    decode_base64_mac, encode_base64, find_all, header_map, json_str, parse_timestamp, text,
};
use crate::key::{Key, KeySet};
use crate::secret::SecretError;

static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// [Standard Webhooks] v1, as sent by Svix and the many services built on
/// it: headers `webhook-id`, `webhook-timestamp`, `webhook-signature`;
/// signed content `{id}.{timestamp}.{body}`; signatures `v1,<base64>`,
/// several per header separated by spaces; secrets `whsec_<base64>`, the
/// key being the decoded bytes (the prefix is optional; the base64 may be
/// padded with `=` or not, as senders hand out both).
///
/// Entries of other versions (e.g. asymmetric `v1a,`) are ignored, so a
/// header with only those is [`VerifyError::NoSignature`].
///
/// [Standard Webhooks]: https://www.standardwebhooks.com/
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardWebhooks;

impl StandardWebhooks {
    /// The `webhook-signature` value (`v1,<base64>`) for one message.
    pub fn signature(key: &Key, id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mac = key.mac(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
        format!("v1,{}", encode_base64(&mac))
    }
}

impl Scheme for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard"
    }

    fn key(&self, id: &str, secret: &Secret) -> Result<Key, SecretError> {
        let text = secret.expose();
        let encoded = text.strip_prefix(b"whsec_").unwrap_or(text);
        // Senders hand out secrets with and without `=` padding, so a copied
        // secret must not fail on its padding.
        // Exactly these two: canonical padding, or none at all; a partly
        // padded or otherwise odd text is refused.
        let engine = if encoded.ends_with(b"=") {
            &BASE64
        } else {
            &BASE64_NO_PAD
        };
        let decoded =
            Zeroizing::new(
                engine
                    .decode(encoded)
                    .map_err(|_| SecretError::InvalidKey {
                        key_id: id.to_owned(),
                        reason: "a Standard Webhooks secret is whsec_ followed by base64",
                    })?,
            );
        Key::from_bytes(id, &decoded)
    }

    fn verify(
        &self,
        keys: &KeySet,
        headers: &HeaderMap,
        body: &[u8],
        tolerance: Tolerance,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let [id, raw_timestamp, signatures] = find_all(
            headers,
            [&WEBHOOK_ID, &WEBHOOK_TIMESTAMP, &WEBHOOK_SIGNATURE],
        )?;
        let id = text(id, &WEBHOOK_ID)?;
        let raw_timestamp = text(raw_timestamp, &WEBHOOK_TIMESTAMP)?;
        let timestamp = parse_timestamp(raw_timestamp, WEBHOOK_TIMESTAMP.as_str())?;
        tolerance.check(timestamp, now)?;
        let mut candidates = Candidates::new(WEBHOOK_SIGNATURE.as_str());
        // Parsed as bytes: the longest header, and base64 refuses anything
        // but ASCII anyway.
        for entry in signatures.as_bytes().split(|&b| b == b' ') {
            if let Some(encoded) = entry.strip_prefix(b"v1,") {
                candidates.push(decode_base64_mac(encoded))?;
            }
        }
        candidates.match_keys(
            keys,
            &[id.as_bytes(), b".", raw_timestamp.as_bytes(), b".", body],
            Some(timestamp),
        )
    }

    fn sign(&self, key: &Key, message: &Outgoing<'_>) -> Result<HeaderMap, SignError> {
        header_map([
            (&WEBHOOK_ID, message.id.to_owned()),
            (&WEBHOOK_TIMESTAMP, message.timestamp.to_string()),
            (
                &WEBHOOK_SIGNATURE,
                Self::signature(key, message.id, message.timestamp, message.body),
            ),
        ])
    }

    fn identify(&self, headers: &HeaderMap, json: Option<&serde_json::Value>) -> Identity {
        Identity {
            external_id: super::optional(headers, &WEBHOOK_ID).map(str::to_owned),
            event_type: json_str(json, "/type"),
        }
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &[
            "webhook-id",
            "webhook-timestamp",
            "content-type",
            "user-agent",
        ]
    }
}
