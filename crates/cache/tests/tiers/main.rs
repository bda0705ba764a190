//! Tiered cache tests against the real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`) and PostgreSQL (`DATABASE_URL`).
//!
//! Without Redis these tests fail when `CI=true` and are skipped (with a
//! message) otherwise.

mod coherence;
mod outage;
mod redis_store;

use std::time::Duration;

use opsdeck_cache::RedisConfig;

/// The Redis to test against, or `None` (skip) outside CI when it is down.
pub(crate) async fn redis_config() -> Option<RedisConfig> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), reachable).await {
        Ok(Some(_)) => {}
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("Redis at {url} is required under CI=true but is not reachable")
        }
        _ => {
            eprintln!("skipping: Redis at {url} is not reachable (set REDIS_URL)");
            return None;
        }
    }
    // A fresh prefix per test keeps tests (and parallel runs) apart.
    Some(RedisConfig::new(url).with_key_prefix(format!("opsdeck-test-{}", uuid::Uuid::new_v4())))
}
