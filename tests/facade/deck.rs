//! The facade: connecting, migrating, and cache coherence across instances.

use opsdeck::{Backend, OpsDeck, PreferenceUpdate, Theme, UserId};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn migrations_apply_and_reapply_on_a_database_without_pg_cron(pool: PgPool) {
    let has_cron: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!has_cron, "a fresh test database has no pg_cron");
    let deck = OpsDeck::from_pool(pool.clone()).await.unwrap();
    deck.migrate().await.unwrap();
    deck.migrate().await.unwrap(); // idempotent
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'opsdeck' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        tables.contains(&"user_operation_preferences".to_string()),
        "{tables:?}"
    );
    assert!(
        tables.contains(&"user_preferences".to_string()),
        "{tables:?}"
    );
}

async fn round_trip(deck: &OpsDeck) {
    let user = UserId::random();
    let saved = deck
        .preferences()
        .bulk_update_operation_preferences(
            user,
            vec![
                PreferenceUpdate::new("summarize").preferred_model("anthropic/claude-sonnet-4"),
                PreferenceUpdate::new("translate").enabled(false),
            ],
        )
        .await
        .unwrap();
    assert_eq!(saved.len(), 2);
    deck.preferences()
        .set_theme(user, Theme::Dark)
        .await
        .unwrap();
    let listed = deck
        .preferences()
        .list_operation_preferences(user)
        .await
        .unwrap();
    assert_eq!(listed, saved);
    let theme = deck
        .preferences()
        .get_user_preferences(user)
        .await
        .unwrap()
        .unwrap()
        .theme;
    assert_eq!(theme, Theme::Dark);
}

#[sqlx::test(migrations = false)]
async fn postgres_round_trip(pool: PgPool) {
    let deck = OpsDeck::from_pool(pool).await.unwrap();
    deck.migrate().await.unwrap();
    assert_eq!(deck.backend(), Backend::Postgres);
    round_trip(&deck).await;
}

#[tokio::test]
async fn in_memory_round_trip() {
    let deck = OpsDeck::in_memory();
    assert_eq!(deck.backend(), Backend::InMemory);
    deck.migrate().await.unwrap();
    round_trip(&deck).await;
}

#[tokio::test]
async fn unreachable_database_is_a_connect_error() {
    let err = OpsDeck::builder()
        .database_url("postgres://postgres@127.0.0.1:1/postgres")
        .acquire_timeout(std::time::Duration::from_secs(2))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, opsdeck::Error::Connect(_)), "{err:?}");
}

/// Two service instances on one database: a write through A is seen by B
/// (whose cache held the old value) within the bound, over each channel.
async fn two_instances_stay_coherent(a: &OpsDeck, b: &OpsDeck) -> std::time::Duration {
    let user = UserId::random();
    let update = |enabled| PreferenceUpdate::new("summarize").enabled(enabled);
    a.preferences()
        .bulk_update_operation_preferences(user, vec![update(true)])
        .await
        .unwrap();
    // A's own invalidation reaches B asynchronously and may drop what B's
    // first read cached; read until B answers from its cache.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let hits = b.preferences().cache_stats().hits;
        let seen = b
            .preferences()
            .get_operation_preference(user, "summarize")
            .await
            .unwrap();
        assert!(seen.unwrap().enabled);
        if b.preferences().cache_stats().hits > hits {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never serves from its cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    a.preferences()
        .bulk_update_operation_preferences(user, vec![update(false)])
        .await
        .unwrap();
    let written = std::time::Instant::now();
    loop {
        let seen = b
            .preferences()
            .get_operation_preference(user, "summarize")
            .await
            .unwrap();
        if !seen.unwrap().enabled {
            return written.elapsed();
        }
        assert!(
            written.elapsed() < std::time::Duration::from_secs(2),
            "B never saw A's write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

async fn wait_for_listeners(decks: &[&OpsDeck]) {
    for deck in decks {
        assert!(
            deck.wait_for_invalidation_channel(std::time::Duration::from_secs(5))
                .await
        );
    }
    // A fresh subscription starts with a resync (flush L1); let the caches
    // apply it before the test fills them.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

#[sqlx::test(migrations = false)]
async fn instances_without_redis_stay_coherent_through_postgres_notify(pool: PgPool) {
    opsdeck::MIGRATOR.run(&pool).await.unwrap();
    let a = OpsDeck::builder().pool(pool.clone()).build().await.unwrap();
    let b = OpsDeck::builder().pool(pool).build().await.unwrap();
    wait_for_listeners(&[&a, &b]).await;
    let delay = two_instances_stay_coherent(&a, &b).await;
    assert!(
        delay <= std::time::Duration::from_millis(100),
        "took {delay:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn instances_with_redis_share_l2_and_stay_coherent(pool: PgPool) {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    opsdeck::MIGRATOR.run(&pool).await.unwrap();
    let prefix = format!("opsdeck-facade-test-{}", uuid::Uuid::new_v4());
    let build = || {
        OpsDeck::builder()
            .pool(pool.clone())
            .redis(opsdeck::RedisConfig::new(redis_url.clone()).with_key_prefix(prefix.clone()))
            .build()
    };
    let (a, b) = (build().await.unwrap(), build().await.unwrap());
    wait_for_listeners(&[&a, &b]).await;
    let delay = two_instances_stay_coherent(&a, &b).await;
    assert!(
        delay <= std::time::Duration::from_millis(100),
        "took {delay:?}"
    );
    // A fresh instance is served from Redis, not from PostgreSQL.
    let user = UserId::random();
    a.preferences().set_theme(user, Theme::Light).await.unwrap();
    a.preferences().get_user_preferences(user).await.unwrap();
    let c = build().await.unwrap();
    c.preferences().get_user_preferences(user).await.unwrap();
    let stats = c.preferences().cache_stats();
    assert_eq!((stats.l2_hits, stats.loads), (1, 0), "{stats:?}");
    assert_eq!(
        stats.remote_errors, 0,
        "Redis must be up for this test: {stats:?}"
    );
}
