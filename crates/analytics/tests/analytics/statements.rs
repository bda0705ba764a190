//! "One statement per batch", proven by counting what sqlx sends.

use opsdeck_analytics::testing::execution;
use opsdeck_analytics::testing::last_days;
use opsdeck_analytics::{
    AnalyticsRepository, MAX_BATCH, Money, PgAnalyticsRepository, RollupFilter,
};
use opsdeck_core::{StatementCounter, UserId};
use sqlx::PgPool;

fn batch(user: UserId, n: usize) -> Vec<opsdeck_analytics::Execution> {
    (0..n)
        .map(|i| {
            execution(
                user,
                ["a", "b", "c"][i % 3],
                "m/one",
                (i % 4) as i64,
                10,
                i as i64,
            )
        })
        .collect()
}

/// A statement counter on this thread. `#[sqlx::test]` runs each test on
/// its own thread with a current-thread runtime, so the thread's count is
/// exactly this test's statements.
fn counting() -> (StatementCounter, ()) {
    (StatementCounter::for_current_thread(), ())
}

#[sqlx::test(migrations = "../../migrations")]
async fn record_many_is_one_statement_for_any_n(pool: PgPool) {
    let (counter, _guard) = counting();
    let repo = PgAnalyticsRepository::new(pool);
    let user = UserId::random();

    // The counter counts: a known two-statement sequence reads as two.
    let filter = RollupFilter::new(last_days(3));
    repo.daily_rollups(user, &filter).await.unwrap();
    repo.daily_rollups(user, &filter).await.unwrap();
    assert_eq!(counter.reset(), 2, "the counter must see sqlx's statements");

    for n in [1, 10, 100, 1000, MAX_BATCH] {
        let runs = batch(user, n);
        // New executions, then the same again (the replay path).
        for round in 0..2 {
            counter.reset();
            let summary = repo.record_many(runs.clone()).await.unwrap();
            assert_eq!(summary.recorded, if round == 0 { n as u64 } else { 0 });
            assert_eq!(
                counter.count(),
                1,
                "record_many of {n} (round {round}) must send one statement"
            );
        }
    }
    counter.reset();
    assert!(
        repo.record_operation_execution(batch(user, 1).remove(0))
            .await
            .unwrap()
    );
    assert_eq!(counter.count(), 1, "record is one round trip");
}

#[sqlx::test(migrations = "../../migrations")]
async fn refused_batches_send_no_statement(pool: PgPool) {
    let (counter, _guard) = counting();
    let repo = PgAnalyticsRepository::new(pool);
    let user = UserId::random();
    assert!(repo.record_many(batch(user, MAX_BATCH + 1)).await.is_err());
    let mut bad = batch(user, 100);
    bad[99] = bad[99].clone().cost(Money::from_micros(-1));
    assert!(repo.record_many(bad).await.is_err());
    assert_eq!(repo.record_many(Vec::new()).await.unwrap().recorded, 0);
    assert_eq!(counter.count(), 0);
}
