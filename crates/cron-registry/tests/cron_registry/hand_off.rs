//! The request queue on PostgreSQL under concurrency: many workers taking
//! and completing at once each get every request exactly once (while
//! leases hold), and nothing is lost.

use std::collections::HashMap;
use std::sync::Arc;

use opsdeck_core::UserId;
use opsdeck_cron_registry::{CronRegistry, PgCronRegistry};
use sqlx::PgPool;
use tokio::sync::Mutex;

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_workers_each_get_every_request_once(pool: PgPool) {
    const REQUESTS: i64 = 300;
    let user = UserId::random();
    sqlx::query(
        "SELECT opsdeck.enqueue_cron_request('run_operation', $1, 'nightly', 'summarize',
                                             jsonb_build_object('n', n))
         FROM generate_series(1, $2) AS n",
    )
    .bind(user)
    .bind(REQUESTS)
    .execute(&pool)
    .await
    .unwrap();

    let registry = Arc::new(PgCronRegistry::with_runner(pool.clone()));
    let delivered: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (registry, delivered) = (Arc::clone(&registry), Arc::clone(&delivered));
        workers.push(tokio::spawn(async move {
            loop {
                let taken = registry.take_requests(7).await.unwrap();
                if taken.is_empty() {
                    break;
                }
                for request in taken {
                    *delivered
                        .lock()
                        .await
                        .entry(request.request_id)
                        .or_default() += 1;
                    assert_eq!(request.attempt, 1, "{request:?}");
                    assert!(registry.complete_request(&request).await.unwrap());
                }
            }
        }));
    }
    for worker in workers {
        tokio::time::timeout(std::time::Duration::from_secs(60), worker)
            .await
            .expect("workers finish")
            .unwrap();
    }
    let delivered = delivered.lock().await;
    assert_eq!(delivered.len() as i64, REQUESTS, "every request delivered");
    assert!(delivered.values().all(|&n| n == 1), "each exactly once");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM opsdeck.cron_job_requests")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "all completed");
}

/// A lease that ran out (moved back in time here rather than waited for)
/// makes the request deliverable again; the old delivery can no longer
/// complete it, the new one can.
#[sqlx::test(migrations = "../../migrations")]
async fn an_expired_lease_is_delivered_again(pool: PgPool) {
    let user = UserId::random();
    sqlx::query(
        "SELECT opsdeck.enqueue_cron_request('refresh_recommendations', $1, 'nightly', 'summarize', '{}')",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let registry = PgCronRegistry::with_runner(pool.clone());
    let first = registry.take_requests(10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        registry.take_requests(10).await.unwrap().is_empty(),
        "leased"
    );
    sqlx::query("UPDATE opsdeck.cron_job_requests SET leased_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let again = registry.take_requests(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].request_id, again[0].attempt),
        (first[0].request_id, 2)
    );
    assert!(!registry.complete_request(&first[0]).await.unwrap());
    assert!(registry.complete_request(&again[0]).await.unwrap());
    assert!(registry.take_requests(10).await.unwrap().is_empty());
}
