//! Property tests over header parsing: hostile headers never panic and
//! never verify; noise around a valid signature does not stop it verifying;
//! any change to a valid signature does. Bounded case counts keep them in
//! the normal `cargo test` run (a few seconds).

use http::{HeaderMap, HeaderName, HeaderValue};
use opsdeck_webhook_verify::{
    GitHub, KeySet, Outgoing, Scheme, Slack, StandardWebhooks, Stripe, Tolerance, unix_now,
};
use proptest::prelude::*;

use crate::{STANDARD_SECRET, keys};

/// Header text built from the tokens the parsers look for, plus anything.
fn header_text() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"v1,".to_vec()),
        Just(b"v0=".to_vec()),
        Just(b"v1=".to_vec()),
        Just(b"t=".to_vec()),
        Just(b"sha256=".to_vec()),
        Just(b",".to_vec()),
        Just(b" ".to_vec()),
        Just(b"=".to_vec()),
        "[0-9]{1,20}".prop_map(String::into_bytes),
        "[0-9a-fA-F]{0,70}".prop_map(String::into_bytes),
        "[A-Za-z0-9+/=]{0,50}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..12).prop_map(|parts| parts.concat())
}

/// Each scheme with the headers it reads.
fn schemes() -> Vec<(Box<dyn Scheme>, &'static [&'static str])> {
    vec![
        (
            Box::new(StandardWebhooks),
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        ),
        (Box::new(Stripe), &["stripe-signature"]),
        (
            Box::new(GitHub),
            &["x-hub-signature-256", "x-github-delivery"],
        ),
        (
            Box::new(Slack),
            &["x-slack-request-timestamp", "x-slack-signature"],
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn hostile_headers_never_panic_and_never_verify(
        values in proptest::collection::vec(proptest::option::of(header_text()), 3),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        now in prop_oneof![Just(unix_now()), any::<i64>()],
    ) {
        for (scheme, names) in schemes() {
            let keys = keys(scheme.as_ref(), if scheme.name() == "standard" { STANDARD_SECRET } else { "s3cret" });
            let mut headers = HeaderMap::new();
            for (name, value) in names.iter().zip(&values) {
                if let Some(Ok(value)) = value.as_ref().map(|v| HeaderValue::from_bytes(v)) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            let result = scheme.verify(&keys, &headers, &body, Tolerance::default(), now);
            prop_assert!(result.is_err(), "{}: random headers verified: {:?}", scheme.name(), headers);
        }
    }

    #[test]
    fn noise_around_a_valid_signature_is_ignored(
        before in proptest::collection::vec("[!-~]{0,20}", 0..3),
        after in proptest::collection::vec("[!-~]{0,20}", 0..3),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let keys = keys(&StandardWebhooks, STANDARD_SECRET);
        let now = unix_now();
        let mut headers = StandardWebhooks
            .sign(keys.primary(), &Outgoing { id: "msg_prop", timestamp: now, body: &body })
            .unwrap();
        let good = headers["webhook-signature"].to_str().unwrap().to_owned();
        let noisy: Vec<&str> = before.iter().map(String::as_str)
            .chain([good.as_str()])
            .chain(after.iter().map(String::as_str))
            .collect();
        // More than MAX_SIGNATURES v1 entries is refused on purpose; noise
        // here has at most 6 extra entries.
        headers.insert("webhook-signature", HeaderValue::from_str(&noisy.join(" ")).unwrap());
        prop_assert!(StandardWebhooks.verify(&keys, &headers, &body, Tolerance::default(), now).is_ok());
    }

    #[test]
    fn any_change_to_a_valid_signature_is_refused(
        position in any::<prop::sample::Index>(),
        replacement in "[0-9a-f]",
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let keys = KeySet::single(GitHub.key("k", &"secret".into()).unwrap());
        let signature = GitHub::signature(keys.primary(), &body);
        let hex_start = "sha256=".len();
        let at = hex_start + position.index(signature.len() - hex_start);
        let mut changed = signature.clone().into_bytes();
        changed[at] = replacement.as_bytes()[0];
        prop_assume!(changed != signature.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", HeaderValue::from_bytes(&changed).unwrap());
        prop_assert!(GitHub.verify(&keys, &headers, &body, Tolerance::default(), 0).is_err());
    }
}
