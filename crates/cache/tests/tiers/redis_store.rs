use std::sync::Arc;
use std::time::Duration;

use opsdeck_cache::{
    Cache, CacheConfig, CacheKey, InMemoryRemoteStore, RedisRemoteStore, RemoteStore, Tiers,
    testing,
};
use opsdeck_core::UserId;

use crate::redis_config;

#[tokio::test]
async fn redis_store_passes_the_remote_store_contract() {
    let Some(config) = redis_config().await else {
        return;
    };
    testing::run_all(&RedisRemoteStore::new(&config).unwrap(), "contract").await;
}

#[tokio::test]
async fn memory_store_passes_the_remote_store_contract() {
    testing::run_all(&InMemoryRemoteStore::new(), "contract").await;
}

#[tokio::test]
async fn values_round_trip_through_redis_and_expire() {
    let Some(config) = redis_config().await else {
        return;
    };
    let store: Arc<dyn RemoteStore> = Arc::new(RedisRemoteStore::new(&config).unwrap());
    let make = || {
        Cache::<Option<Vec<String>>>::with_tiers(
            CacheConfig::new("roundtrip", Duration::from_millis(700)),
            Tiers::none().with_remote(store.clone()),
        )
    };
    let (writer, reader) = (make(), make());
    let key = CacheKey::new(UserId::random(), "list");
    let value = Some(vec!["a".to_string(), "ü".to_string()]);
    let loaded = writer
        .get_or_load(&key, || async { Ok::<_, ()>(value.clone()) })
        .await
        .unwrap();
    assert_eq!(loaded, value);
    // A second instance (empty L1) is served from Redis.
    assert_eq!(reader.get(&key).await, Some(value.clone()));
    assert_eq!(reader.stats().l2_hits, 1);
    // Redis holds the entry under the namespaced partition key.
    let redis_key = RedisRemoteStore::new(&config)
        .unwrap()
        .partition_key("roundtrip", key.user());
    assert!(redis_key.starts_with(&format!("{}:roundtrip:", config.key_prefix)));
    // After the TTL neither tier has it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let fresh = make();
    assert_eq!(fresh.get(&key).await, None, "expired in Redis");
    assert_eq!(writer.get(&key).await, None, "expired in L1");
}
