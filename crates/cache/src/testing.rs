//! The contract suite every [`RemoteStore`] must pass (run on
//! [`crate::InMemoryRemoteStore`] and [`crate::RedisRemoteStore`]). Each check uses fresh
//! random users, so checks can share one backend.

use std::time::Duration;

use opsdeck_core::UserId;

use crate::key::CacheKey;
use crate::remote::RemoteStore;

/// Runs every check against `store` in namespace `namespace`.
pub async fn run_all(store: &dyn RemoteStore, namespace: &str) {
    put_then_get_round_trips(store, namespace).await;
    entries_expire_after_their_ttl(store, namespace).await;
    invalidation_moves_the_generation(store, namespace).await;
    stale_generation_cannot_store(store, namespace).await;
    invalidate_user_drops_only_that_partition(store, namespace).await;
}

/// Bytes come back as stored, including non-UTF-8 ones.
pub async fn put_then_get_round_trips(store: &dyn RemoteStore, ns: &str) {
    let key = CacheKey::new(UserId::random(), "item");
    let read = store.get(ns, &key).await.unwrap();
    assert_eq!(read.value, None);
    let bytes = [0u8, 159, 146, 150, b'{', b'}'];
    store
        .put(ns, &key, &bytes, Duration::from_secs(60))
        .await
        .unwrap();
    let read = store.get(ns, &key).await.unwrap();
    assert_eq!(read.value.as_deref(), Some(&bytes[..]));
    let empty_item = CacheKey::new(key.user(), "");
    store
        .put(ns, &empty_item, b"list", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get(ns, &empty_item).await.unwrap().value.as_deref(),
        Some(&b"list"[..])
    );
    assert_eq!(
        store.get(ns, &key).await.unwrap().value.as_deref(),
        Some(&bytes[..])
    );
}

/// An entry is gone once its TTL has passed, although its partition lives on.
pub async fn entries_expire_after_their_ttl(store: &dyn RemoteStore, ns: &str) {
    let user = UserId::random();
    let short = CacheKey::new(user, "short");
    let long = CacheKey::new(user, "long");
    store
        .put(ns, &long, b"l", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .put(ns, &short, b"s", Duration::from_millis(150))
        .await
        .unwrap();
    assert!(store.get(ns, &short).await.unwrap().value.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get(ns, &short).await.unwrap().value, None, "expired");
    assert!(
        store.get(ns, &long).await.unwrap().value.is_some(),
        "others stay"
    );
}

/// Invalidation removes the entry and increases the partition generation.
pub async fn invalidation_moves_the_generation(store: &dyn RemoteStore, ns: &str) {
    let key = CacheKey::new(UserId::random(), "k");
    store
        .put(ns, &key, b"v", Duration::from_secs(60))
        .await
        .unwrap();
    let before = store.get(ns, &key).await.unwrap().generation;
    store.invalidate(ns, &key).await.unwrap();
    let after = store.get(ns, &key).await.unwrap();
    assert_eq!(after.value, None);
    assert!(after.generation > before);
    // Invalidating what is not there is fine.
    store
        .invalidate(ns, &CacheKey::new(UserId::random(), "none"))
        .await
        .unwrap();
    store.invalidate_user(ns, UserId::random()).await.unwrap();
}

/// A load that read the generation before an invalidation cannot store.
pub async fn stale_generation_cannot_store(store: &dyn RemoteStore, ns: &str) {
    let key = CacheKey::new(UserId::random(), "k");
    let read = store.get(ns, &key).await.unwrap();
    store
        .invalidate(ns, &CacheKey::new(key.user(), "other"))
        .await
        .unwrap();
    let stored = store
        .put_if_generation(ns, &key, b"stale", Duration::from_secs(60), read.generation)
        .await
        .unwrap();
    assert!(!stored);
    assert_eq!(store.get(ns, &key).await.unwrap().value, None);
    let fresh = store.get(ns, &key).await.unwrap();
    assert!(
        store
            .put_if_generation(
                ns,
                &key,
                b"fresh",
                Duration::from_secs(60),
                fresh.generation
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(ns, &key).await.unwrap().value.as_deref(),
        Some(&b"fresh"[..])
    );
}

/// `invalidate_user` drops the user's entries in that namespace only.
pub async fn invalidate_user_drops_only_that_partition(store: &dyn RemoteStore, ns: &str) {
    let (a, b) = (UserId::random(), UserId::random());
    let other_ns = format!("{ns}.other");
    for item in ["x", "y"] {
        store
            .put(ns, &CacheKey::new(a, item), b"a", Duration::from_secs(60))
            .await
            .unwrap();
        store
            .put(ns, &CacheKey::new(b, item), b"b", Duration::from_secs(60))
            .await
            .unwrap();
    }
    store
        .put(
            &other_ns,
            &CacheKey::new(a, "x"),
            b"o",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    store.invalidate_user(ns, a).await.unwrap();
    for item in ["x", "y"] {
        assert_eq!(
            store.get(ns, &CacheKey::new(a, item)).await.unwrap().value,
            None
        );
        assert!(
            store
                .get(ns, &CacheKey::new(b, item))
                .await
                .unwrap()
                .value
                .is_some()
        );
    }
    assert!(
        store
            .get(&other_ns, &CacheKey::new(a, "x"))
            .await
            .unwrap()
            .value
            .is_some()
    );
}
