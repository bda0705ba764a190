use opsdeck_cache::Tiers;
use opsdeck_preferences::testing;
use opsdeck_preferences::{
    Cached, InMemoryPreferencesRepository, PgPreferencesRepository, PreferencesConfig,
};
use sqlx::PgPool;

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_passes_the_suite(pool: PgPool) {
    testing::run_all(&PgPreferencesRepository::new(pool)).await;
}

#[tokio::test]
async fn in_memory_passes_the_suite() {
    testing::run_all(&InMemoryPreferencesRepository::new()).await;
}

/// The cache is a policy over any backend: it must keep the backend's contract.
#[sqlx::test(migrations = "../../migrations")]
async fn cached_postgres_passes_the_suite(pool: PgPool) {
    let config = PreferencesConfig::default();
    testing::run_all(&Cached::new(
        PgPreferencesRepository::new(pool),
        &config,
        Tiers::none(),
    ))
    .await;
}

#[tokio::test]
async fn cached_in_memory_passes_the_suite() {
    let config = PreferencesConfig::default();
    testing::run_all(&Cached::new(
        InMemoryPreferencesRepository::new(),
        &config,
        Tiers::none(),
    ))
    .await;
}

/// Rows written by another client that break the Rust types' rules are
/// refused by the database's CHECK constraints, so reads never meet them.
#[sqlx::test(migrations = "../../migrations")]
async fn database_constraints_mirror_the_types(pool: PgPool) {
    for (op, model) in [
        ("Bad Op", None),
        ("x'; drop table t; --", None),
        ("ok", Some("no-slash")),
        ("ok", Some("Upper/model")),
    ] {
        let result = sqlx::query(
            "INSERT INTO opsdeck.user_operation_preferences (user_id, operation_id, preferred_model)
             VALUES (gen_random_uuid(), $1, $2)",
        )
        .bind(op)
        .bind(model)
        .execute(&pool)
        .await;
        let err = result.expect_err("constraint must refuse the row");
        assert!(
            err.as_database_error().unwrap().is_check_violation(),
            "{op:?}/{model:?}: {err}"
        );
    }
}

/// Concurrent bulk writes of one user's overlapping operations neither
/// deadlock nor lose a version bump.
#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_bulk_writes_of_one_user_serialize(pool: PgPool) {
    use opsdeck_core::UserId;
    use opsdeck_preferences::{PreferencePatch, PreferencesRepository};
    use std::sync::Arc;

    let repo = Arc::new(PgPreferencesRepository::new(pool));
    let user = UserId::random();
    let ops: Vec<String> = (0..20).map(|i| format!("op{i:02}")).collect();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let (repo, ops) = (Arc::clone(&repo), ops.clone());
        tasks.push(tokio::spawn(async move {
            // Each writer sends the batch in a different order; the
            // repository sorts it, so lock order is the same for all.
            let mut batch: Vec<_> = ops
                .iter()
                .map(|o| PreferencePatch::new(o.parse().unwrap()).enabled(writer % 2 == 0))
                .collect();
            batch.rotate_left(writer * 3 % ops.len());
            for _ in 0..5 {
                repo.bulk_update_operation_preferences(user, batch.clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rows = repo.list_operation_preferences(user).await.unwrap();
    assert_eq!(rows.len(), 20);
    assert!(
        rows.iter().all(|r| r.version == 8 * 5),
        "every write bumped every row once: {:?}",
        rows.iter().map(|r| r.version).collect::<Vec<_>>()
    );
}

/// A bulk patch that meets a row another writer created after its snapshot
/// (the `ON CONFLICT` branch) still changes only the fields it gives.
#[sqlx::test(migrations = "../../migrations")]
async fn a_patch_racing_a_concurrent_create_keeps_the_fields_it_does_not_give(pool: PgPool) {
    use opsdeck_core::UserId;
    use opsdeck_preferences::{PreferencePatch, PreferencesRepository};

    let repo = PgPreferencesRepository::new(pool.clone());
    let user = UserId::random();
    // Another writer creates the row and holds its transaction open.
    let mut other = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO opsdeck.user_operation_preferences
             (user_id, operation_id, enabled, preferred_model, settings)
         VALUES ($1, 'summarize', true, 'anthropic/claude-sonnet-4', '{\"length\": \"short\"}')",
    )
    .bind(user)
    .execute(&mut *other)
    .await
    .unwrap();
    // Our bulk patch starts before that row commits: it does not see it,
    // tries to insert, and waits on the other writer's row.
    let patch = tokio::spawn(async move {
        repo.bulk_update_operation_preferences(
            user,
            vec![PreferencePatch::new("summarize".parse().unwrap()).enabled(false)],
        )
        .await
        .unwrap()
    });
    // Commit once the patch is waiting on the row lock.
    for _ in 0..500 {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE wait_event_type = 'Lock' AND datname = current_database())",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    other.commit().await.unwrap();
    let rows = patch.await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(!row.enabled, "the patch applied");
    assert_eq!(
        row.preferred_model.as_ref().map(|m| m.as_str()),
        Some("anthropic/claude-sonnet-4"),
        "a field the patch did not give is kept"
    );
    assert_eq!(
        row.settings.get("length"),
        Some(&serde_json::json!("short"))
    );
    assert_eq!(row.version, 2);
}
