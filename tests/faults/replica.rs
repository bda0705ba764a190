//! Analytics reports on a real streaming replica: a private primary, a
//! `pg_basebackup -R` copy of it started as a hot standby on another port,
//! and `OpsDeck::builder().analytics_read_url(..)`.

use std::time::{Duration, Instant};

use opsdeck::analytics::{
    AnalyticsRepository, DateRange, Execution, Money, PgAnalyticsRepository, RollupFilter,
};
use opsdeck::{AnalyticsConfig, OpsDeck, UserId};
use opsdeck_core::testing::{PrivatePostgres, or_skip};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::bounded;

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connect")
}

fn executions(user: UserId, n: usize, cost_micros: i64) -> Vec<Execution> {
    let now = time::OffsetDateTime::now_utc();
    (0..n)
        .map(|_| {
            Execution::new(
                user,
                "summarize".parse().unwrap(),
                "vendor/model".parse().unwrap(),
                now,
            )
            .tokens(10, 5)
            .cost(Money::from_micros(cost_micros))
            .latency_ms(120)
        })
        .collect()
}

/// Lag of the replica: after a commit on the primary, how long until the
/// replica has replayed it (the primary's flushed position).
async fn replay_lag(primary: &PgPool, replica: &PgPool) -> Duration {
    sqlx::query("CREATE TABLE IF NOT EXISTS public.lag_probe (n int)")
        .execute(primary)
        .await
        .unwrap();
    sqlx::query("INSERT INTO public.lag_probe VALUES (1)")
        .execute(primary)
        .await
        .unwrap();
    let committed = Instant::now();
    let target: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(primary)
        .await
        .unwrap();
    loop {
        let replayed: bool = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&target)
            .fetch_one(replica)
            .await
            .unwrap();
        if replayed {
            return committed.elapsed();
        }
        assert!(
            committed.elapsed() < Duration::from_secs(10),
            "replica never caught up"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_reports_run_on_a_streaming_replica_without_lagging_writes() {
    bounded("replica", async {
        let Some(primary) = or_skip(
            tokio::task::spawn_blocking(PrivatePostgres::create)
                .await
                .unwrap(),
        ) else {
            return;
        };
        let primary_pool = pool(&primary.url()).await;
        opsdeck::MIGRATOR.run(&primary_pool).await.unwrap();
        let primary = std::sync::Arc::new(primary);
        let replica = {
            let primary = primary.clone();
            tokio::task::spawn_blocking(move || PrivatePostgres::replica_of(&primary))
                .await
                .unwrap()
                .expect("pg_basebackup -R replica")
        };
        let replica_pool = pool(&replica.url()).await;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&replica_pool)
            .await
            .unwrap();
        assert!(in_recovery, "the replica is a hot standby");

        // Replica lag, measured.
        let mut lags = Vec::new();
        for _ in 0..50 {
            lags.push(replay_lag(&primary_pool, &replica_pool).await);
        }
        lags.sort();
        eprintln!(
            "FAULTS replica: replay lag after a commit: median {:?}, p90 {:?}, max {:?} (50 samples)",
            lags[lags.len() / 2],
            lags[lags.len() * 9 / 10],
            lags[lags.len() - 1]
        );

        let refused = OpsDeck::builder()
            .database_url(primary.url())
            .analytics_read_url("postgres://[not a url")
            .build()
            .await;
        assert!(matches!(refused, Err(opsdeck::Error::Connect(_))), "{refused:?}");

        // The facade: reports on the replica, writes on the primary.
        let deck = OpsDeck::builder()
            .database_url(primary.url())
            .analytics_read_url(replica.url())
            .analytics(AnalyticsConfig::default().with_metrics_ttl(Duration::from_secs(300)))
            .build()
            .await
            .unwrap();
        let user = UserId::random();
        let today = DateRange::days_ending(time::OffsetDateTime::now_utc().date(), 1).unwrap();
        let mut expected = 0;
        for round in 1..=20 {
            deck.analytics()
                .record_many(executions(user, 5, round))
                .await
                .unwrap();
            expected += 5;
            // Right after the write: never behind it.
            let summary = deck
                .analytics()
                .period_summary(user, today, None)
                .await
                .unwrap();
            assert_eq!(summary.totals.executions, expected, "round {round}");
        }
        let on_replica: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'opsdeck-analytics-read'",
        )
        .fetch_all(&replica_pool)
        .await
        .unwrap();
        assert!(
            on_replica.iter().any(|q| q.contains("cost_trends")),
            "the reports ran on the replica: {on_replica:?}"
        );
        let writes_on_replica: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'opsdeck-analytics-read' AND query ILIKE '%record_operation%'",
        )
        .fetch_one(&replica_pool)
        .await
        .unwrap();
        assert_eq!(writes_on_replica, 0);

        // The repository itself: where the reports went, and what a paused
        // replay (a replica far behind) does.
        let repo = PgAnalyticsRepository::new(primary_pool.clone()).with_read_pool(replica_pool.clone());
        let filter = RollupFilter::new(today);
        let started = Instant::now();
        for _ in 0..20 {
            repo.record_many(executions(user, 1, 3)).await.unwrap();
            expected += 1;
            let summary = repo.period_summary(user, &filter)
                .await
                .unwrap();
            assert_eq!(summary.totals.executions, expected);
        }
        let caught_up = repo.replica_stats();
        eprintln!(
            "FAULTS replica: 20 write-then-report rounds in {:?}: {caught_up:?}",
            started.elapsed()
        );
        assert!(caught_up.replica_reads > 0, "{caught_up:?}");
        assert_eq!(caught_up.error_fallbacks, 0, "{caught_up:?}");

        sqlx::query("SELECT pg_wal_replay_pause()")
            .execute(&replica_pool)
            .await
            .unwrap();
        repo.record_many(executions(user, 7, 3)).await.unwrap();
        expected += 7;
        let paused_at = Instant::now();
        let summary = repo.period_summary(user, &filter)
            .await
            .unwrap();
        let waited = paused_at.elapsed();
        assert_eq!(
            summary.totals.executions, expected,
            "a lagging replica does not serve a report behind a write"
        );
        let paused = repo.replica_stats();
        assert_eq!(paused.lagging_fallbacks, caught_up.lagging_fallbacks + 1, "{paused:?}");
        eprintln!("FAULTS replica: report with replay paused served by the primary after {waited:?}");
        sqlx::query("SELECT pg_wal_replay_resume()")
            .execute(&replica_pool)
            .await
            .unwrap();
        replica_pool.close().await;
        drop(replica);
    })
    .await;
}
