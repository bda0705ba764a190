//! Exactness under concurrency: 32 writers × 1000 executions on the same
//! rollup keys, every execution recorded three times through the single and
//! batch paths. Rollups must equal the log, and the log the input, exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use opsdeck_analytics::testing::{execution, histogram_of, last_days, totals_of};
use opsdeck_analytics::{
    AnalyticsRepository, ErrorKind, Execution, LatencyHistogram, PgAnalyticsRepository,
    RollupFilter, Totals,
};
use opsdeck_core::UserId;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use time::Date;

const TASKS: usize = 32;
const PER_TASK: usize = 1000;
/// Executions of each task's third pass sent one by one (the rest batched),
/// so every path meets every other concurrently without making the test slow.
const SINGLE: usize = 50;

/// Task `t`'s executions: 2 operations × 2 models × 2 days, the same eight
/// keys for every task; one in ten fails.
fn chunk(user: UserId, t: usize) -> Vec<Execution> {
    (0..PER_TASK)
        .map(|i| {
            let n = (t * PER_TASK + i) as i64;
            let run = execution(
                user,
                ["summarize", "translate"][i % 2],
                ["anthropic/claude", "deepseek/chat"][(i / 2) % 2],
                ((i / 4) % 2) as i64,
                1 + n % 997,
                (n * 7919) % 60_000,
            );
            if i % 10 == 0 {
                run.failed(ErrorKind::parse("timeout").unwrap())
            } else {
                run
            }
        })
        .collect()
}

type Key = (String, String, Date);

/// Sums of the log per rollup key, computed by PostgreSQL.
#[derive(sqlx::FromRow)]
struct LogSums {
    operation_id: String,
    model: String,
    day: Date,
    executions: i64,
    successes: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    latency_ms_sum: i64,
}

fn key(e: &Execution) -> Key {
    (e.operation_id.to_string(), e.model.to_string(), e.day())
}

/// Records `runs` through `path`: returns how many were new.
async fn record(
    repo: &PgAnalyticsRepository,
    runs: Vec<Execution>,
    single: bool,
) -> Result<u64, String> {
    if single {
        let mut new = 0;
        for run in runs {
            new += u64::from(
                repo.record_operation_execution(run)
                    .await
                    .map_err(|e| format!("{e:?}"))?,
            );
        }
        Ok(new)
    } else {
        let summary = repo.record_many(runs).await.map_err(|e| format!("{e:?}"))?;
        Ok(summary.recorded)
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn thirty_two_writers_on_the_same_keys_are_exact(pool: PgPool) {
    // The test pool has 5 connections; give the writers more so that many
    // transactions really overlap in the database.
    let options = pool.connect_options().as_ref().clone();
    let wide = PgPoolOptions::new()
        .max_connections(12)
        .connect_with(options)
        .await
        .unwrap();
    let repo = Arc::new(PgAnalyticsRepository::new(wide.clone()));
    let user = UserId::random();
    let chunks: Arc<Vec<Vec<Execution>>> = Arc::new((0..TASKS).map(|t| chunk(user, t)).collect());

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (repo, chunks) = (Arc::clone(&repo), Arc::clone(&chunks));
        tasks.push(tokio::spawn(async move {
            let mut new = 0;
            // Pass 1: own chunk, batches of 100 in order.
            for part in chunks[t].chunks(100) {
                new += record(&repo, part.to_vec(), false).await?;
            }
            // Pass 2: the next task's chunk, batches of 250, last first.
            for part in chunks[(t + 1) % TASKS].chunks(250).rev() {
                new += record(&repo, part.to_vec(), false).await?;
            }
            // Pass 3: the one after: some singly, the rest as one batch.
            let third = &chunks[(t + 2) % TASKS];
            new += record(&repo, third[..SINGLE].to_vec(), true).await?;
            new += record(&repo, third[SINGLE..].to_vec(), false).await?;
            Ok::<u64, String>(new)
        }));
    }
    let mut recorded = 0;
    let mut errors = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(new) => recorded += new,
            Err(error) => errors.push(error),
        }
    }
    assert!(
        errors.is_empty(),
        "no error (deadlock or other) may surface: {errors:#?}"
    );
    assert_eq!(
        recorded,
        (TASKS * PER_TASK) as u64,
        "each execution was new exactly once"
    );

    // Ground truth from the input.
    let all: Vec<&Execution> = chunks.iter().flatten().collect();
    let mut expected: BTreeMap<Key, Vec<&Execution>> = BTreeMap::new();
    for e in &all {
        expected.entry(key(e)).or_default().push(e);
    }
    assert_eq!(expected.len(), 8);

    // The rollups equal the input, key by key, histograms included.
    let rollups = repo
        .daily_rollups(user, &RollupFilter::new(last_days(5)))
        .await
        .unwrap();
    let stored: BTreeMap<Key, (Totals, LatencyHistogram)> = rollups
        .into_iter()
        .map(|r| {
            (
                (r.operation_id.to_string(), r.model.to_string(), r.day),
                (r.totals, r.histogram),
            )
        })
        .collect();
    let want: BTreeMap<Key, (Totals, LatencyHistogram)> = expected
        .iter()
        .map(|(k, runs)| {
            (
                k.clone(),
                (
                    totals_of(runs.iter().copied()),
                    histogram_of(runs.iter().copied()),
                ),
            )
        })
        .collect();
    assert_eq!(stored, want);

    // And the log equals the input too: rollups = sum of the log, exactly.
    let logged: Vec<LogSums> = sqlx::query_as(
        "SELECT operation_id, model, (executed_at AT TIME ZONE 'UTC')::date AS day,
                count(*) AS executions, count(*) FILTER (WHERE success) AS successes,
                sum(input_tokens)::bigint AS input_tokens,
                sum(output_tokens)::bigint AS output_tokens,
                sum(cost_micros)::bigint AS cost_micros,
                sum(latency_ms)::bigint AS latency_ms_sum
         FROM opsdeck.operation_executions WHERE user_id = $1
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(user)
    .fetch_all(&wide)
    .await
    .unwrap();
    assert_eq!(logged.len(), 8);
    for log in logged {
        let (totals, _) = &stored[&(log.operation_id, log.model, log.day)];
        assert_eq!(
            (
                log.executions,
                log.successes,
                log.input_tokens,
                log.output_tokens,
                log.cost_micros,
                log.latency_ms_sum
            ),
            (
                totals.executions,
                totals.successes,
                totals.input_tokens,
                totals.output_tokens,
                totals.cost.micros(),
                totals.latency_ms_sum
            )
        );
    }
    let ledger: i64 =
        sqlx::query_scalar("SELECT count(*) FROM opsdeck.execution_ids WHERE user_id = $1")
            .bind(user)
            .fetch_one(&wide)
            .await
            .unwrap();
    assert_eq!(ledger, (TASKS * PER_TASK) as i64);
    wide.close().await;
}
