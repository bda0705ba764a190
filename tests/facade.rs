//! End-to-end tests of the facade: connecting, migrating, and the services it wires.

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
    let deck = OpsDeck::from_pool(pool.clone());
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
    let deck = OpsDeck::from_pool(pool);
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
