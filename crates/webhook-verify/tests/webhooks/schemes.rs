//! Signature schemes: published vectors, independent HMAC oracles, round
//! trips, interoperability with the `standardwebhooks` crate, key rotation
//! and every way a request must be refused.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use http::HeaderMap;
use opsdeck_webhook_verify::{
    GitHub, KeySet, MAX_SIGNATURES, Outgoing, Scheme, Secret, SecretError, Slack, StandardWebhooks,
    Stripe, Tolerance, VerifyError, unix_now,
};

use crate::{STANDARD_SECRET, headers, key, keys, standard_key};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HMAC-SHA256 computed directly with the `hmac` crate, independent of the
/// code under test.
fn oracle(key: &[u8], content: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(content);
    mac.finalize().into_bytes().into()
}

const STRIPE_SECRET: &str = "whsec_test_5Pf3bTz0ZvV2lVx9yLwEcS";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// Every scheme with a secret of the form its senders use.
fn all() -> Vec<(Box<dyn Scheme>, &'static str)> {
    vec![
        (Box::new(StandardWebhooks), STANDARD_SECRET),
        (Box::new(Stripe), STRIPE_SECRET),
        (Box::new(GitHub), GITHUB_SECRET),
        (Box::new(Slack), SLACK_SECRET),
    ]
}

fn verify(
    scheme: &dyn Scheme,
    keys: &KeySet,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<opsdeck_webhook_verify::Verified, VerifyError> {
    scheme.verify(keys, headers, body, Tolerance::default(), unix_now())
}

/// A Standard Webhooks request carrying `signature` as its signature header.
fn standard_request(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", &timestamp.to_string()),
        ("webhook-signature", signature),
    ])
}

fn verify_standard(
    request: &HeaderMap,
    body: &[u8],
) -> Result<opsdeck_webhook_verify::Verified, VerifyError> {
    verify(
        &StandardWebhooks,
        &keys(&StandardWebhooks, STANDARD_SECRET),
        request,
        body,
    )
}

fn signed(scheme: &dyn Scheme, secret: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let key = key(scheme, "current", secret);
    scheme
        .sign(
            &key,
            &Outgoing {
                id: "msg_2Kq9",
                timestamp,
                body,
            },
        )
        .unwrap()
}

#[test]
fn github_documented_example_verifies() {
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let keys = keys(&GitHub, GITHUB_SECRET);
    let request = headers(&[("x-hub-signature-256", expected)]);
    let verified = verify(&GitHub, &keys, &request, b"Hello, World!").unwrap();
    assert_eq!((verified.key_index, verified.timestamp), (0, None));
    assert_eq!(
        GitHub::signature(keys.primary(), b"Hello, World!"),
        expected
    );
}

#[test]
fn standard_webhooks_signs_id_timestamp_and_body_with_the_decoded_secret() {
    let (id, ts, body) = (
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1_614_265_330_i64,
        br#"{"test": 2432232314}"#,
    );
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        STANDARD_SECRET.trim_start_matches("whsec_"),
    )
    .unwrap();
    let expected = oracle(
        &decoded,
        format!("{id}.{ts}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
    );
    let signature = StandardWebhooks::signature(&standard_key(), id, ts, body);
    assert_eq!(
        signature,
        format!(
            "v1,{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, expected)
        )
    );
    // The prefix is optional; the bytes after it are what matters.
    let unprefixed = key(
        &StandardWebhooks,
        "k",
        STANDARD_SECRET.trim_start_matches("whsec_"),
    );
    assert_eq!(
        StandardWebhooks::signature(&unprefixed, id, ts, body),
        signature
    );
}

#[test]
fn stripe_keys_with_the_whole_secret_including_its_prefix() {
    let (t, body) = (
        1_700_000_000_i64,
        br#"{"id":"evt_1","type":"invoice.paid"}"#,
    );
    let mut content = format!("{t}.").into_bytes();
    content.extend_from_slice(body);
    let expected = hex::encode(oracle(STRIPE_SECRET.as_bytes(), &content));
    let key = key(&Stripe, "current", STRIPE_SECRET);
    assert_eq!(
        Stripe::signature(&key, t, body),
        format!("t={t},v1={expected}")
    );

    // Decoding the secret the Standard Webhooks way must not verify: the
    // scheme is configured, never guessed from the prefix.
    let now = t + 1;
    let request = headers(&[("stripe-signature", &format!("t={t},v1={expected}"))]);
    let right = KeySet::single(key);
    assert!(
        Stripe
            .verify(&right, &request, body, Tolerance::default(), now)
            .is_ok()
    );
    let decoded_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let wrong = KeySet::single(
        StandardWebhooks
            .key("x", &Secret::from(decoded_secret))
            .unwrap(),
    );
    assert_eq!(
        Stripe.verify(&wrong, &request, body, Tolerance::default(), now),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn slack_signs_v0_timestamp_and_body() {
    let (ts, body) = (
        1_531_420_618_i64,
        b"token=abc&team_id=T1&command=%2Fdeploy&text=",
    );
    let mut content = format!("v0:{ts}:").into_bytes();
    content.extend_from_slice(body);
    let expected = format!(
        "v0={}",
        hex::encode(oracle(SLACK_SECRET.as_bytes(), &content))
    );
    let key = key(&Slack, "current", SLACK_SECRET);
    assert_eq!(Slack::signature(&key, ts, body), expected);
    let request = headers(&[
        ("x-slack-request-timestamp", "1531420618"),
        ("x-slack-signature", &expected),
    ]);
    let verified = Slack
        .verify(
            &KeySet::single(key),
            &request,
            body,
            Tolerance::default(),
            ts + 10,
        )
        .unwrap();
    assert_eq!(verified.timestamp, Some(ts));
}

#[test]
fn every_scheme_round_trips_raw_bytes() {
    // Not UTF-8, with NULs and a trailing newline: bodies are bytes.
    let body: &[u8] = &[0xff, 0x00, b'{', 0xc3, 0x28, b'\n'];
    for (scheme, secret) in all() {
        let now = unix_now();
        let request = signed(scheme.as_ref(), secret, now, body);
        let verified = verify(
            scheme.as_ref(),
            &keys(scheme.as_ref(), secret),
            &request,
            body,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", scheme.name()));
        assert_eq!(verified.key_index, 0, "{}", scheme.name());
        assert_eq!(&*verified.key_id, "current");
        let expected_ts = (scheme.name() != "github").then_some(now);
        assert_eq!(verified.timestamp, expected_ts, "{}", scheme.name());
    }
}

#[test]
fn signatures_of_the_standardwebhooks_crate_verify_and_vice_versa() {
    let theirs = standardwebhooks::Webhook::new(STANDARD_SECRET).unwrap();
    let body = br#"{"type":"user.created","data":{"id":42}}"#;
    let now = unix_now();
    let signature = theirs.sign("msg_interop", now, body).unwrap();
    verify_standard(&standard_request("msg_interop", now, &signature), body).unwrap();

    let ours = signed(&StandardWebhooks, STANDARD_SECRET, now, body);
    theirs.verify(body, &ours).unwrap();
}

/// A secret copied without its `=` padding is the same key: a payload the
/// `standardwebhooks` crate signs with the padded secret verifies under the
/// unpadded one (and the padded one), and our signature verifies there.
#[test]
fn unpadded_standard_secrets_are_the_same_key() {
    use base64::Engine;
    let body = br#"{"type":"invoice.paid","data":{"id":7}}"#;
    let now = unix_now();
    // 32 and 31 key bytes: one and two padding characters.
    for len in [32u8, 31] {
        let raw: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let padded = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        let unpadded = padded.trim_end_matches('=').to_owned();
        assert_eq!(padded.len() - unpadded.len(), usize::from(33 - len));

        let theirs = standardwebhooks::Webhook::new(&padded).unwrap();
        let signature = theirs.sign("msg_unpadded", now, body).unwrap();
        let request = standard_request("msg_unpadded", now, &signature);
        for secret in [&padded, &unpadded] {
            let keys = keys(&StandardWebhooks, secret);
            verify(&StandardWebhooks, &keys, &request, body)
                .unwrap_or_else(|e| panic!("{len} bytes, {secret:?}: {e}"));
        }
        let ours = signed(&StandardWebhooks, &unpadded, now, body);
        theirs.verify(body, &ours).unwrap();

        // Only the two canonical spellings: a partly padded secret is
        // refused, as are stray characters after the padding.
        if len == 31 {
            let partly = &padded[..padded.len() - 1];
            assert!(partly.ends_with('=') && !partly.ends_with("=="));
            assert!(matches!(
                StandardWebhooks.key("k", &Secret::from(partly)),
                Err(SecretError::InvalidKey { .. })
            ));
        }
        assert!(matches!(
            StandardWebhooks.key("k", &Secret::from(format!("{padded}A").as_str())),
            Err(SecretError::InvalidKey { .. })
        ));
    }
}

#[test]
fn rotation_reports_which_key_matched() {
    let body = br#"{"type":"ping"}"#;
    let now = unix_now();
    let keys = KeySet::new(vec![
        key(
            &StandardWebhooks,
            "2025-new",
            "whsec_bmV3LWtleS1uZXcta2V5LW5ldy1rZXk=",
        ),
        key(&StandardWebhooks, "2024-old", STANDARD_SECRET),
    ])
    .unwrap();
    let by_old = signed(&StandardWebhooks, STANDARD_SECRET, now, body);
    let verified = verify(&StandardWebhooks, &keys, &by_old, body).unwrap();
    assert_eq!((verified.key_index, &*verified.key_id), (1, "2024-old"));

    let by_new = StandardWebhooks
        .sign(
            keys.primary(),
            &Outgoing {
                id: "msg_2Kq9",
                timestamp: now,
                body,
            },
        )
        .unwrap();
    let verified = verify(&StandardWebhooks, &keys, &by_new, body).unwrap();
    assert_eq!((verified.key_index, &*verified.key_id), (0, "2025-new"));

    let stranger = signed(
        &StandardWebhooks,
        "whsec_c3RyYW5nZXItc3RyYW5nZXI=",
        now,
        body,
    );
    assert_eq!(
        verify(&StandardWebhooks, &keys, &stranger, body),
        Err(VerifyError::SignatureMismatch)
    );
    assert!(matches!(KeySet::new(vec![]), Err(SecretError::NoKeys)));
}

#[test]
fn several_signatures_per_header_any_may_match() {
    let body = b"{}";
    let now = unix_now();
    let good = StandardWebhooks::signature(&standard_key(), "msg_multi", now, body);
    let header = format!("v1,AAAA v1a,ignored-asymmetric v1, {good} v2,zzz");
    verify_standard(&standard_request("msg_multi", now, &header), body).unwrap();

    let stripe_key = key(&Stripe, "current", STRIPE_SECRET);
    let real = Stripe::signature(&stripe_key, now, body);
    let mac = real.split_once(",v1=").unwrap().1;
    let header = format!("t={now},v1={},v0=abc,v1={mac}", "0".repeat(64));
    let request = headers(&[("stripe-signature", &header)]);
    verify(&Stripe, &KeySet::single(stripe_key), &request, body).unwrap();
}

// ---- refusals -------------------------------------------------------------

#[test]
fn tampered_bodies_are_refused_by_every_scheme() {
    for (scheme, secret) in all() {
        let request = signed(scheme.as_ref(), secret, unix_now(), b"amount=100");
        assert_eq!(
            verify(
                scheme.as_ref(),
                &keys(scheme.as_ref(), secret),
                &request,
                b"amount=900"
            ),
            Err(VerifyError::SignatureMismatch),
            "{}",
            scheme.name()
        );
    }
}

#[test]
fn wrong_keys_are_refused_by_every_scheme() {
    for (scheme, secret) in all() {
        let request = signed(scheme.as_ref(), secret, unix_now(), b"payload");
        let other = if scheme.name() == "standard" {
            "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="
        } else {
            "another-secret"
        };
        assert_eq!(
            verify(
                scheme.as_ref(),
                &keys(scheme.as_ref(), other),
                &request,
                b"payload"
            ),
            Err(VerifyError::SignatureMismatch),
            "{}",
            scheme.name()
        );
    }
}

/// Replaces the signature header of a validly signed request.
fn with_signature(mut request: HeaderMap, name: &'static str, value: &str) -> HeaderMap {
    request.insert(name, value.parse().unwrap());
    request
}

#[test]
fn empty_and_truncated_signatures_never_pass() {
    let body = b"{}";
    let now = unix_now();
    let std_keys = keys(&StandardWebhooks, STANDARD_SECRET);
    let std_request = signed(&StandardWebhooks, STANDARD_SECRET, now, body);
    let good = std_request["webhook-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    for bad in [
        "v1,",
        "v1, ",
        &good[..good.len() - 4],
        &good[..10],
        "v1,====",
    ] {
        let request = with_signature(std_request.clone(), "webhook-signature", bad);
        assert_eq!(
            verify(&StandardWebhooks, &std_keys, &request, body),
            Err(VerifyError::SignatureMismatch),
            "{bad:?}"
        );
    }
    for bad in ["", " ", "v1a,abc", "V1,abc"] {
        let request = with_signature(std_request.clone(), "webhook-signature", bad);
        assert!(
            matches!(
                verify(&StandardWebhooks, &std_keys, &request, body),
                Err(VerifyError::NoSignature { .. })
            ),
            "{bad:?}"
        );
    }

    let hex_cases: [(&dyn Scheme, &str, &'static str); 3] = [
        (&GitHub, GITHUB_SECRET, "x-hub-signature-256"),
        (&Slack, SLACK_SECRET, "x-slack-signature"),
        (&Stripe, STRIPE_SECRET, "stripe-signature"),
    ];
    for (scheme, secret, header) in hex_cases {
        let request = signed(scheme, secret, now, body);
        let good = request[header].to_str().unwrap().to_owned();
        let cut = |n: usize| good[..good.len() - n].to_owned();
        // Odd and even truncations, an empty MAC and one byte too many.
        for bad in [cut(1), cut(2), cut(64), format!("{good}00")] {
            let request = with_signature(request.clone(), header, &bad);
            assert_eq!(
                verify(scheme, &keys(scheme, secret), &request, body),
                Err(VerifyError::SignatureMismatch),
                "{}: {bad:?}",
                scheme.name()
            );
        }
    }
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let body = b"{}";
    let now = unix_now();
    for (scheme, secret) in all().into_iter().filter(|(s, _)| s.name() != "github") {
        let keys = keys(scheme.as_ref(), secret);
        let at = |offset: i64| {
            let request = signed(scheme.as_ref(), secret, now + offset, body);
            scheme.verify(&keys, &request, body, Tolerance::default(), now)
        };
        assert!(at(-299).is_ok() && at(299).is_ok(), "{}", scheme.name());
        assert!(
            matches!(
                at(-301),
                Err(VerifyError::TimestampTooOld { age_secs: 301, .. })
            ),
            "{}",
            scheme.name()
        );
        assert!(
            matches!(
                at(301),
                Err(VerifyError::TimestampInFuture {
                    ahead_secs: 301,
                    ..
                })
            ),
            "{}",
            scheme.name()
        );
        assert!(at(-100_000_000).is_err() && at(100_000_000).is_err());
    }
}

#[test]
fn tolerance_is_configurable_each_way() {
    let body = b"{}";
    let now = unix_now();
    let keys = keys(&Slack, SLACK_SECRET);
    let lenient_past = Tolerance::new(Duration::from_secs(900), Duration::from_secs(10));
    let ten_minutes_old = signed(&Slack, SLACK_SECRET, now - 600, body);
    assert!(
        Slack
            .verify(&keys, &ten_minutes_old, body, lenient_past, now)
            .is_ok()
    );
    assert!(
        Slack
            .verify(&keys, &ten_minutes_old, body, Tolerance::default(), now)
            .is_err()
    );
    let twenty_seconds_ahead = signed(&Slack, SLACK_SECRET, now + 20, body);
    assert!(matches!(
        Slack.verify(&keys, &twenty_seconds_ahead, body, lenient_past, now),
        Err(VerifyError::TimestampInFuture { .. })
    ));
}

#[test]
fn missing_headers_are_named() {
    let body = b"{}";
    let now = unix_now();
    let required: [(&dyn Scheme, &str, &[&str]); 4] = [
        (
            &StandardWebhooks,
            STANDARD_SECRET,
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        ),
        (&Stripe, STRIPE_SECRET, &["stripe-signature"]),
        (&GitHub, GITHUB_SECRET, &["x-hub-signature-256"]),
        (
            &Slack,
            SLACK_SECRET,
            &["x-slack-request-timestamp", "x-slack-signature"],
        ),
    ];
    for (scheme, secret, names) in required {
        let complete = signed(scheme, secret, now, body);
        for name in names {
            let mut request = complete.clone();
            request.remove(*name);
            assert_eq!(
                verify(scheme, &keys(scheme, secret), &request, body),
                Err(VerifyError::MissingHeader(name)),
            );
        }
        assert!(verify(scheme, &keys(scheme, secret), &HeaderMap::new(), body).is_err());
    }
}

#[test]
fn malformed_headers_are_typed_errors() {
    let body = b"{}";
    let now = unix_now();
    let std_keys = keys(&StandardWebhooks, STANDARD_SECRET);
    let request = signed(&StandardWebhooks, STANDARD_SECRET, now, body);
    for ts in ["abc", "-5", "0012", "1e9", " 1"] {
        let bad = with_signature(request.clone(), "webhook-timestamp", ts);
        assert!(
            matches!(
                verify(&StandardWebhooks, &std_keys, &bad, body),
                Err(VerifyError::MalformedHeader {
                    header: "webhook-timestamp",
                    ..
                })
            ),
            "{ts:?}"
        );
    }
    let mut non_ascii = request.clone();
    non_ascii.insert(
        "webhook-id",
        http::HeaderValue::from_bytes(b"msg_\xff").unwrap(),
    );
    assert!(matches!(
        verify(&StandardWebhooks, &std_keys, &non_ascii, body),
        Err(VerifyError::MalformedHeader {
            header: "webhook-id",
            ..
        })
    ));
    let many = ["v1,AAAA"; MAX_SIGNATURES + 1].join(" ");
    let too_many = with_signature(request.clone(), "webhook-signature", &many);
    assert!(matches!(
        verify(&StandardWebhooks, &std_keys, &too_many, body),
        Err(VerifyError::MalformedHeader {
            reason: "too many signatures",
            ..
        })
    ));

    let stripe_keys = keys(&Stripe, STRIPE_SECRET);
    let stripe = |value: &str| {
        let request = headers(&[("stripe-signature", value)]);
        verify(&Stripe, &stripe_keys, &request, body)
    };
    let mac = "0".repeat(64);
    assert!(matches!(
        stripe(&format!("v1={mac}")),
        Err(VerifyError::MalformedHeader {
            reason: "no t= timestamp",
            ..
        })
    ));
    assert!(matches!(
        stripe(&format!("t={now},t={now},v1={mac}")),
        Err(VerifyError::MalformedHeader {
            reason: "more than one timestamp",
            ..
        })
    ));
    assert!(matches!(
        stripe(&format!("t={now}")),
        Err(VerifyError::NoSignature { .. })
    ));
    assert!(matches!(
        stripe(&format!("t={now},v1=")),
        Err(VerifyError::SignatureMismatch)
    ));
}

#[test]
fn invalid_secrets_are_refused_when_making_keys() {
    assert!(matches!(
        StandardWebhooks.key("k", &Secret::from("whsec_not base64!")),
        Err(SecretError::InvalidKey { .. })
    ));
    assert!(matches!(
        StandardWebhooks.key("k", &Secret::from("whsec_")),
        Err(SecretError::InvalidKey { .. })
    ));
    assert!(matches!(
        GitHub.key("k", &Secret::from("")),
        Err(SecretError::InvalidKey { .. })
    ));
}

#[test]
fn signing_refuses_ids_that_cannot_be_headers() {
    let error = StandardWebhooks
        .sign(
            &standard_key(),
            &Outgoing {
                id: "bad\nid",
                timestamp: 1,
                body: b"",
            },
        )
        .unwrap_err();
    assert!(error.to_string().contains("webhook-id"), "{error}");
}

#[test]
fn keys_never_print_their_material() {
    let key = standard_key();
    let printed = format!("{key:?} {:?}", KeySet::single(key.clone()));
    assert!(
        printed.contains("current") && printed.contains("[redacted]"),
        "{printed}"
    );
    // Neither the secret text nor the decoded key bytes, in the renderings
    // a derived Debug would produce (a byte list) or a hex dump, appear.
    assert!(!printed.contains("MfKQ9r8"), "{printed}");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(STANDARD_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let as_list = format!("{}, {}, {}", raw[0], raw[1], raw[2]);
    assert!(!printed.contains(&as_list), "{printed}");
    assert!(!printed.contains(&hex::encode(&raw[..4])), "{printed}");
}
