//! Secret sources (environment, file, 1Password CLI through stand-in
//! scripts) and the cached, reloadable key ring.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsdeck_webhook_verify::{
    EnvSecret, FileSecret, GitHub, KeyRing, OnePasswordSecret, Secret, SecretError, SecretSource,
    StandardWebhooks,
};

#[tokio::test]
async fn env_secrets_are_read_and_missing_ones_named() {
    // PATH is always set; setting variables would need `unsafe` in 2024.
    let path = std::env::var("PATH").unwrap();
    let loaded = EnvSecret::new("PATH").load().await.unwrap();
    assert_eq!(loaded.expose(), path.as_bytes());

    let missing = EnvSecret::new("OPSDECK_TEST_SURELY_UNSET_7f3a");
    let error = missing.load().await.unwrap_err();
    assert!(matches!(error, SecretError::MissingEnv { .. }));
    assert!(error.to_string().contains("OPSDECK_TEST_SURELY_UNSET_7f3a"));
    assert_eq!(missing.describe(), "env:OPSDECK_TEST_SURELY_UNSET_7f3a");
}

#[tokio::test]
async fn file_secrets_are_trimmed_reread_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhook-secret");
    std::fs::write(&path, "first-secret\n").unwrap();
    let source = FileSecret::new(&path);
    assert_eq!(source.load().await.unwrap().expose(), b"first-secret");
    std::fs::write(&path, "second-secret\r\n").unwrap();
    assert_eq!(source.load().await.unwrap().expose(), b"second-secret");

    std::fs::write(&path, "\n").unwrap();
    assert!(matches!(
        source.load().await,
        Err(SecretError::Empty { .. })
    ));
    let missing = FileSecret::new(dir.path().join("absent"));
    assert!(matches!(missing.load().await, Err(SecretError::Io { .. })));
}

#[tokio::test]
async fn inline_secrets_must_not_be_empty() {
    assert!(matches!(
        Secret::from("").load().await,
        Err(SecretError::Empty { .. })
    ));
    assert_eq!(Secret::from("x").load().await.unwrap().expose(), b"x");
}

/// Writes an executable stand-in for `op`.
fn fake_op(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// One test for all `op` cases: spawning processes from several test
/// threads while another writes a script can fail with "text file busy".
#[tokio::test]
async fn one_password_cli_success_failure_missing_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let reference = "op://Engineering/Stripe webhook/secret";
    let source = || OnePasswordSecret::new(reference).unwrap();

    // The CLI gets `read --no-newline <reference>`; its output is the secret.
    let echo = fake_op(
        dir.path(),
        "op-echo",
        r#"printf '%s|%s|%s\n' "$1" "$2" "$3""#,
    );
    let loaded = source().program(&echo).load().await.unwrap();
    assert_eq!(
        loaded.expose(),
        format!("read|--no-newline|{reference}").as_bytes()
    );

    let failing = fake_op(
        dir.path(),
        "op-fail",
        "echo '[ERROR] You are not currently signed in.' >&2; exit 1",
    );
    match source().program(&failing).load().await {
        Err(SecretError::OpFailed {
            stderr,
            reference: r,
            ..
        }) => {
            assert!(stderr.contains("not currently signed in"), "{stderr}");
            assert_eq!(r, reference);
        }
        other => panic!("expected OpFailed, got {other:?}"),
    }

    let missing = source().program(dir.path().join("no-such-op"));
    let error = missing.load().await.unwrap_err();
    assert!(matches!(error, SecretError::OpMissing { .. }), "{error:?}");
    assert!(error.to_string().contains("not found"), "{error}");
    // `op` is not installed on this machine, so the default finds nothing.
    if which_op().is_none() {
        assert!(matches!(
            source().load().await,
            Err(SecretError::OpMissing { .. })
        ));
    }

    let hanging = fake_op(dir.path(), "op-hang", "exec sleep 30");
    let started = Instant::now();
    let error = source()
        .program(&hanging)
        .timeout(Duration::from_millis(200))
        .load()
        .await
        .unwrap_err();
    assert!(matches!(error, SecretError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout must cut the wait"
    );
}

fn which_op() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("op"))
        .find(|candidate| candidate.is_file())
}

/// A source that counts its loads and can be switched to fail; clones
/// share the counter and the value.
#[derive(Debug, Clone, Default)]
struct Counting {
    loads: Arc<AtomicUsize>,
    value: Arc<std::sync::Mutex<Option<&'static str>>>,
}

impl Counting {
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn set(&self, value: Option<&'static str>) {
        *self.value.lock().unwrap() = value;
    }
}

#[async_trait]
impl SecretSource for Counting {
    async fn load(&self) -> Result<Secret, SecretError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        match *self.value.lock().unwrap() {
            Some(value) => Ok(Secret::from(value)),
            None => Err(SecretError::MissingEnv { var: "GONE".into() }),
        }
    }

    fn describe(&self) -> String {
        "counting".into()
    }
}

fn counting(value: &'static str) -> Counting {
    let source = Counting::default();
    source.set(Some(value));
    source
}

fn signature(ring_keys: &opsdeck_webhook_verify::KeySet) -> String {
    GitHub::signature(ring_keys.primary(), b"body")
}

#[tokio::test]
async fn key_ring_caches_until_ttl_then_reloads() {
    let source = counting("old");
    let ring = KeyRing::new(GitHub)
        .source("current", source.clone())
        .ttl(Duration::from_secs(1));
    let first = ring.keys().await.unwrap();
    assert!(Arc::ptr_eq(&first, &ring.keys().await.unwrap()), "cached");
    assert_eq!(source.loads(), 1);

    source.set(Some("new"));
    assert_eq!(
        signature(&ring.keys().await.unwrap()),
        signature(&first),
        "not yet"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = ring.keys().await.unwrap();
    assert_ne!(
        signature(&rotated),
        signature(&first),
        "rotated after the TTL"
    );
    assert_eq!(source.loads(), 2);
}

#[tokio::test]
async fn key_ring_reloads_on_demand_and_survives_source_outages() {
    let source = counting("old");
    let ring = KeyRing::new(GitHub)
        .source("current", source.clone())
        .ttl(Duration::from_millis(50));
    let old = ring.keys().await.unwrap();

    source.set(Some("new"));
    let reloaded = ring.reload().await.unwrap();
    assert_ne!(signature(&reloaded), signature(&old));

    // The source goes away: TTL reloads keep the last good keys, an
    // explicit reload reports the failure.
    source.set(None);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let kept = ring.keys().await.unwrap();
    assert_eq!(signature(&kept), signature(&reloaded));
    assert!(matches!(
        ring.reload().await,
        Err(SecretError::MissingEnv { .. })
    ));
    assert_eq!(signature(&ring.keys().await.unwrap()), signature(&reloaded));

    // With nothing cached, a failing source is an error.
    let empty = KeyRing::new(GitHub).source("current", Counting::default());
    assert!(empty.keys().await.is_err());
    assert!(matches!(
        KeyRing::new(GitHub).keys().await,
        Err(SecretError::NoKeys)
    ));
}

#[tokio::test]
async fn concurrent_callers_share_one_load() {
    let source = counting("shared");
    let ring = KeyRing::new(GitHub).source("current", source.clone());
    let (a, b, c, d) = tokio::join!(ring.keys(), ring.keys(), ring.keys(), ring.keys());
    for keys in [a, b, c, d] {
        keys.unwrap();
    }
    assert_eq!(source.loads(), 1);
}

#[tokio::test]
async fn key_ring_keys_follow_the_order_of_sources() {
    let ring = KeyRing::new(StandardWebhooks)
        .source("new", Secret::from("whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0"))
        .source("old", Secret::from(crate::STANDARD_SECRET));
    let keys = ring.keys().await.unwrap();
    let ids: Vec<&str> = keys.iter().map(|k| k.id()).collect();
    assert_eq!(ids, ["new", "old"]);
    let printed = format!("{ring:?}");
    assert!(printed.contains("[redacted]"), "{printed}");
    assert!(
        !printed.contains("bmV3LXNlY3JldC1uZXctc2VjcmV0") && !printed.contains("MfKQ9r8"),
        "a key ring must not print its secrets: {printed}"
    );
    let bad = KeyRing::new(StandardWebhooks).source("bad", Secret::from("whsec_%%%"));
    assert!(matches!(
        bad.keys().await,
        Err(SecretError::InvalidKey { .. })
    ));
}
