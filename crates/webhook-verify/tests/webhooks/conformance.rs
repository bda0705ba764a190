//! The event log's conformance suite on PostgreSQL and in memory, the
//! statement counts the PostgreSQL backend promises, and its constraints.

use std::time::Duration;

use opsdeck_core::StatementCounter;
use opsdeck_webhook_verify::testing::{self, new_event, unique_source};
use opsdeck_webhook_verify::{
    Error, EventId, EventRepository, InMemoryEventRepository, Outcome, PgEventRepository,
};
use sqlx::PgPool;

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_passes_the_suite(pool: PgPool) {
    testing::run_all(&PgEventRepository::new(pool)).await;
}

#[tokio::test]
async fn in_memory_passes_the_suite() {
    testing::run_all(&InMemoryEventRepository::new()).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_purges_only_old_final_events(pool: PgPool) {
    let repo = PgEventRepository::new(pool.clone());
    testing::purge_deletes_only_old_final_events(&repo, |id, by| {
        let pool = pool.clone();
        async move {
            let moved = sqlx::query(
                "UPDATE opsdeck.webhook_events
                 SET received_at = received_at - $2::bigint * interval '1 second',
                     updated_at = updated_at - $2::bigint * interval '1 second',
                     processed_at = processed_at - $2::bigint * interval '1 second'
                 WHERE id = $1",
            )
            .bind(id)
            .bind(i64::try_from(by.as_secs()).unwrap())
            .execute(&pool)
            .await
            .unwrap();
            assert_eq!(moved.rows_affected(), 1);
        }
    })
    .await;
}

#[tokio::test]
async fn in_memory_purges_only_old_final_events() {
    let repo = InMemoryEventRepository::new();
    testing::purge_deletes_only_old_final_events(&repo, |id, by| {
        assert!(repo.backdate(id, by));
        std::future::ready(())
    })
    .await;
}

/// The purge's scan of old final events is an index range scan on
/// `webhook_events_finished_idx` (migration 0006), not a table scan.
#[sqlx::test(migrations = "../../migrations")]
async fn purge_scans_the_finished_index(pool: PgPool) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM opsdeck.webhook_events
         WHERE status IN ('processed', 'failed') AND updated_at < now() - interval '30 days'
         ORDER BY updated_at LIMIT 5000",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("webhook_events_finished_idx"), "{plan}");
}

// `#[sqlx::test]` runs on a current-thread runtime, so a thread-local
// subscriber sees every statement this test's futures execute.
#[sqlx::test(migrations = "../../migrations")]
async fn logging_claiming_and_completing_are_one_statement_each(pool: PgPool) {
    let counter = StatementCounter::for_current_thread();
    let repo = PgEventRepository::new(pool);
    let source = unique_source("stmt");

    repo.insert(new_event(&source, "a")).await.unwrap();
    assert_eq!(counter.reset(), 1, "a new event is one statement");
    let again = repo.insert(new_event(&source, "a")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(counter.reset(), 1, "a duplicate is one statement too");

    for i in 0..50 {
        repo.insert(new_event(&source, &format!("b{i}")))
            .await
            .unwrap();
    }
    counter.reset();
    let claimed = repo.claim(100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 51);
    assert_eq!(counter.reset(), 1, "claiming a batch is one statement");
    repo.complete(claimed[0].id, 1, Outcome::Processed)
        .await
        .unwrap();
    assert_eq!(counter.reset(), 1, "completing is one statement");
    repo.extend_lease(claimed[1].id, 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(counter.reset(), 1, "a heartbeat is one statement");
}

/// Rows written by other clients cannot break the types' rules.
#[sqlx::test(migrations = "../../migrations")]
async fn database_constraints_mirror_the_types(pool: PgPool) {
    let cases = [
        ("Bad Source", "standard", "x", "received", r#"{"a":1}"#),
        ("ok", "Bad Scheme", "x", "received", r#"{"a":1}"#),
        ("ok", "standard", "", "received", r#"{"a":1}"#),
        ("ok", "standard", "x", "done", r#"{"a":1}"#),
        ("ok", "standard", "x", "received", r#"[1]"#),
    ];
    for (source, scheme, external_id, status, headers) in cases {
        let result = sqlx::query(
            "INSERT INTO opsdeck.webhook_events
                 (id, source, scheme, external_id, key_id, status, headers, payload)
             VALUES (gen_random_uuid(), $1, $2, $3, 'k', $4, $5::jsonb, '{}'::jsonb)",
        )
        .bind(source)
        .bind(scheme)
        .bind(external_id)
        .bind(status)
        .bind(headers)
        .execute(&pool)
        .await;
        let error = result.expect_err("the constraint must refuse the row");
        assert!(
            error.as_database_error().unwrap().is_check_violation(),
            "{source}/{scheme}/{external_id}/{status}: {error}"
        );
    }
    // Exactly one of payload and payload_bytes.
    for payload in ["NULL, NULL", "'{}'::jsonb, '\\x00'::bytea"] {
        let sql = format!(
            "INSERT INTO opsdeck.webhook_events (id, source, scheme, external_id, key_id, payload, payload_bytes)
             VALUES (gen_random_uuid(), 'ok', 'standard', 'p', 'k', {payload})"
        );
        let error = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect_err("payload check");
        assert!(error.as_database_error().unwrap().is_check_violation());
    }
}

/// The ids parse while a row is decoded: a row the types refuse (here
/// written while its constraint was dropped) reads as a corrupt row, never
/// as a valid event and never as a panic.
#[sqlx::test(migrations = "../../migrations")]
async fn rows_the_types_refuse_read_as_corrupt(pool: PgPool) {
    sqlx::query("ALTER TABLE opsdeck.webhook_events DROP CONSTRAINT webhook_events_source_check")
        .execute(&pool)
        .await
        .unwrap();
    let id: String = sqlx::query_scalar(
        "INSERT INTO opsdeck.webhook_events (id, source, scheme, external_id, key_id, payload)
         VALUES (gen_random_uuid(), 'Bad Source', 'standard', 'x', 'k', '{}'::jsonb)
         RETURNING id::text",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let id: EventId = id.parse().unwrap();
    let repo = PgEventRepository::new(pool);
    let error = repo.get(id).await.unwrap_err();
    assert!(matches!(error, Error::Corrupt(_)), "{error:?}");
    assert_eq!(error.status_code(), 500);
    assert!(matches!(
        repo.claim(10, Duration::from_secs(60)).await,
        Err(Error::Corrupt(_))
    ));
}
