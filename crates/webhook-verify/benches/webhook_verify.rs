//! Verifying a 1 KiB Standard Webhooks request, in one run against the
//! `standardwebhooks` crate and against a bare HMAC-SHA256 of the same
//! signed bytes (the floor any verifier pays).
//!
//! `cargo bench -p opsdeck-webhook-verify --bench webhook_verify` prints
//! criterion's lines and then the ratios, measured again in this process:
//! targets are verify/bare_hmac ≤ 1.5x and standardwebhooks/verify ≥ 5x.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use opsdeck_webhook_verify::{
    KeySet, Outgoing, Scheme, Secret, StandardWebhooks, Tolerance, unix_now,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";

struct Fixture {
    keys: KeySet,
    headers: HeaderMap,
    body: Vec<u8>,
    now: i64,
    theirs: standardwebhooks::Webhook,
    raw_key: Vec<u8>,
    signed_content: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        // A JSON-looking body of exactly 1 KiB (UTF-8, which the other crate requires).
        let mut body = br#"{"type":"invoice.paid","data":{"note":""#.to_vec();
        body.resize(1024 - 3, b'x');
        body.extend_from_slice(br#""}}"#);
        assert_eq!(body.len(), 1024);
        let now = unix_now();
        let key = StandardWebhooks
            .key("current", &Secret::from(SECRET))
            .unwrap();
        let headers = StandardWebhooks
            .sign(
                &key,
                &Outgoing {
                    id: ID,
                    timestamp: now,
                    body: &body,
                },
            )
            .unwrap();
        let raw_key = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            SECRET.trim_start_matches("whsec_"),
        )
        .unwrap();
        let mut signed_content = format!("{ID}.{now}.").into_bytes();
        signed_content.extend_from_slice(&body);
        Fixture {
            keys: KeySet::single(key),
            headers,
            body,
            now,
            theirs: standardwebhooks::Webhook::new(SECRET).unwrap(),
            raw_key,
            signed_content,
        }
    }

    fn opsdeck(&self) {
        StandardWebhooks
            .verify(
                &self.keys,
                black_box(&self.headers),
                black_box(&self.body),
                Tolerance::default(),
                self.now,
            )
            .unwrap();
    }

    fn standardwebhooks(&self) {
        self.theirs
            .verify(black_box(&self.body), black_box(&self.headers))
            .unwrap();
    }

    fn bare_hmac(&self) {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.raw_key).unwrap();
        mac.update(black_box(&self.signed_content));
        black_box(mac.finalize().into_bytes());
    }
}

/// Best-of-rounds time per call of each contender. Rounds alternate
/// between contenders so that load from other processes (a shared 2-core
/// machine) hits all of them alike, and the minimum filters out the rest.
fn per_call<const N: usize>(contenders: [&dyn Fn(); N]) -> [Duration; N] {
    const CALLS: u32 = 20_000;
    let mut best = [Duration::MAX; N];
    for _ in 0..15 {
        for (f, best) in contenders.iter().zip(&mut best) {
            let start = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            *best = (*best).min(start.elapsed() / CALLS);
        }
    }
    best
}

fn main() {
    let fixture = Fixture::new();
    // Every contender must accept the request, or the comparison is void.
    fixture.opsdeck();
    fixture.standardwebhooks();

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("verify_1k");
    group.bench_function("opsdeck", |b| b.iter(|| fixture.opsdeck()));
    group.bench_function("standardwebhooks", |b| {
        b.iter(|| fixture.standardwebhooks())
    });
    group.bench_function("bare_hmac", |b| b.iter(|| fixture.bare_hmac()));
    group.finish();
    criterion.final_summary();

    // `cargo test --benches` runs this once as a smoke test; ratios only
    // mean something in a real bench run.
    if std::env::args().any(|arg| arg == "--bench") {
        let [ours, theirs, bare] = per_call([
            &|| fixture.opsdeck(),
            &|| fixture.standardwebhooks(),
            &|| fixture.bare_hmac(),
        ]);
        println!("per call: opsdeck {ours:?}, standardwebhooks {theirs:?}, bare_hmac {bare:?}");
        println!(
            "ratio verify/bare_hmac = {:.2}x (target <= 1.5x)",
            ours.as_secs_f64() / bare.as_secs_f64()
        );
        println!(
            "ratio standardwebhooks/verify = {:.2}x (target >= 5x)",
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
