//! The seed's N+1 fix, proven by counting what sqlx sends: `bulk_upsert` is
//! one statement whatever the batch size.

use opsdeck_core::{StatementCounter, UserId};
use opsdeck_preferences::{PgPreferencesRepository, PreferencePatch, PreferencesRepository};
use sqlx::PgPool;

fn batch(n: usize, round: usize) -> Vec<PreferencePatch> {
    (0..n)
        .map(|i| {
            PreferencePatch::new(format!("op-{i}").parse().unwrap())
                .enabled(round.is_multiple_of(2))
                .preferred_model(Some("anthropic/claude-sonnet-4".parse().unwrap()))
        })
        .collect()
}

// `#[sqlx::test]` runs each test on its own thread with a current-thread
// runtime, so the thread's count is exactly this test's statements.
#[sqlx::test(migrations = "../../migrations")]
async fn bulk_upsert_is_one_statement_for_any_n(pool: PgPool) {
    let counter = StatementCounter::for_current_thread();
    let repo = PgPreferencesRepository::new(pool);
    let user = UserId::random();

    // Prove the counter counts: a known two-statement sequence reads as two.
    repo.list_operation_preferences(user).await.unwrap();
    repo.list_operation_preferences(user).await.unwrap();
    assert_eq!(counter.reset(), 2, "the counter must see sqlx's statements");

    for n in [1, 10, 100, 1000] {
        // First round inserts n rows, second updates them: both paths of the statement.
        for round in 0..2 {
            counter.reset();
            let saved = repo
                .bulk_update_operation_preferences(user, batch(n, round))
                .await
                .unwrap();
            assert_eq!(saved.len(), n);
            assert_eq!(
                counter.count(),
                1,
                "bulk_upsert of {n} items (round {round}) must send exactly one statement"
            );
        }
    }
    let rows = repo.list_operation_preferences(user).await.unwrap();
    assert_eq!(rows.len(), 1000);
    assert!(
        rows.iter()
            .filter(|r| r.operation_id.as_str() == "op-0")
            .all(|r| r.version == 8)
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn refused_batches_send_no_statement(pool: PgPool) {
    let counter = StatementCounter::for_current_thread();
    let repo = PgPreferencesRepository::new(pool);
    let user = UserId::random();
    assert!(
        repo.bulk_update_operation_preferences(user, batch(1001, 0))
            .await
            .is_err()
    );
    assert!(
        repo.bulk_update_operation_preferences(user, Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(counter.count(), 0);
}
