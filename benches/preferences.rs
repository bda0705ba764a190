//! Preferences benchmarks (`cargo bench --bench preferences`):
//!
//! - bulk upsert of N = 10 / 100 / 1000 in one statement vs a loop of N
//!   single autocommit upserts (what the seed's code did before its N+1 fix);
//! - a cached `get_operation_preference` vs the uncached repository read.
//!
//! The database benches use `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) to create a scratch database
//! `opsdeck_bench`; with no database they say so and are skipped, the cache
//! bench still runs. Besides criterion's lines, the bench prints the
//! bulk-vs-loop ratios measured in this run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use opsdeck::preferences::{
    InMemoryPreferencesRepository, PgPreferencesRepository, PreferencesRepository,
};
use opsdeck::{PreferencePatch, PreferenceUpdate, PreferencesService, UserId};
use sqlx::PgPool;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn scratch_pool() -> Option<PgPool> {
    common::scratch_pool("opsdeck_bench")
        .await
        .inspect_err(|reason| println!("database benches skipped: {reason}"))
        .ok()
}

fn batch(n: usize, round: u64) -> Vec<PreferencePatch> {
    (0..n)
        .map(|i| {
            PreferencePatch::new(format!("op-{i}").parse().unwrap())
                .enabled(round.is_multiple_of(2))
                .preferred_model(Some("anthropic/claude-sonnet-4".parse().unwrap()))
        })
        .collect()
}

async fn naive_loop(repo: &PgPreferencesRepository, user: UserId, patches: Vec<PreferencePatch>) {
    for patch in patches {
        repo.update_operation_preference(user, patch, None)
            .await
            .unwrap();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bulk_vs_loop(c: &mut Criterion) {
    let rt = runtime();
    let Some(pool) = rt.block_on(scratch_pool()) else {
        return;
    };
    let repo = PgPreferencesRepository::new(pool);
    let user = UserId::random();

    // Ratios measured in this run, same data, same database, medians.
    for (n, loop_runs) in [(10usize, 15), (100, 7), (1000, 3)] {
        let (bulk, naive) = rt.block_on(async {
            let mut bulk = Vec::new();
            let mut naive = Vec::new();
            for round in 0..loop_runs as u64 {
                let started = Instant::now();
                naive_loop(&repo, user, batch(n, round)).await;
                naive.push(started.elapsed());
                for _ in 0..3 {
                    let started = Instant::now();
                    repo.bulk_update_operation_preferences(user, batch(n, round))
                        .await
                        .unwrap();
                    bulk.push(started.elapsed());
                }
            }
            (median(bulk), median(naive))
        });
        println!(
            "ratio bulk_vs_loop N={n}: loop {naive:?} / bulk {bulk:?} = {:.1}x",
            naive.as_secs_f64() / bulk.as_secs_f64()
        );
    }

    let mut group = c.benchmark_group("preferences_bulk_upsert");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let mut round = 0u64;
    for n in [10usize, 100, 1000] {
        group.bench_with_input(BenchmarkId::new("bulk_one_statement", n), &n, |b, &n| {
            b.to_async(&rt).iter(|| {
                round += 1;
                let patches = batch(n, round);
                let repo = &repo;
                async move {
                    repo.bulk_update_operation_preferences(user, patches)
                        .await
                        .unwrap()
                }
            })
        });
        if n <= 100 {
            group.bench_with_input(
                BenchmarkId::new("loop_of_single_upserts", n),
                &n,
                |b, &n| {
                    b.to_async(&rt).iter(|| {
                        round += 1;
                        naive_loop(&repo, user, batch(n, round))
                    })
                },
            );
        }
    }
    group.finish();
}

fn cached_vs_uncached_get(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("preferences_get");
    let user = UserId::random();

    let memory: Arc<dyn PreferencesRepository> = Arc::new(InMemoryPreferencesRepository::new());
    let service = PreferencesService::new(memory.clone());
    rt.block_on(async {
        service
            .bulk_update_operation_preferences(
                user,
                vec![
                    PreferenceUpdate::new("summarize").preferred_model("anthropic/claude-sonnet-4"),
                ],
            )
            .await
            .unwrap();
        service
            .get_operation_preference(user, "summarize")
            .await
            .unwrap();
    });
    group.bench_function("cached_service_get", |b| {
        b.to_async(&rt).iter(|| async {
            service
                .get_operation_preference(user, "summarize")
                .await
                .unwrap()
        })
    });
    let op = "summarize".parse().unwrap();
    group.bench_function("uncached_in_memory_repository_get", |b| {
        b.to_async(&rt)
            .iter(|| async { memory.get_operation_preference(user, &op).await.unwrap() })
    });

    if let Some(pool) = rt.block_on(scratch_pool()) {
        let pg: Arc<dyn PreferencesRepository> = Arc::new(PgPreferencesRepository::new(pool));
        let pg_service = PreferencesService::new(pg.clone());
        rt.block_on(async {
            pg_service
                .bulk_update_operation_preferences(user, vec![PreferenceUpdate::new("summarize")])
                .await
                .unwrap();
        });
        group.bench_function("uncached_postgres_repository_get", |b| {
            b.to_async(&rt)
                .iter(|| async { pg.get_operation_preference(user, &op).await.unwrap() })
        });
        group.bench_function("cached_service_get_over_postgres", |b| {
            b.to_async(&rt).iter(|| async {
                pg_service
                    .get_operation_preference(user, "summarize")
                    .await
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bulk_vs_loop, cached_vs_uncached_get);
criterion_main!(benches);
