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

/// The same rows' update without opsdeck's guarantees: the floor the bulk
/// statement is compared with.
const PLAIN_UPDATE: &str = "UPDATE opsdeck.user_operation_preferences AS p
    SET enabled = i.enabled, preferred_model = 'anthropic/claude-sonnet-4',
        version = p.version + 1, updated_at = now()
    FROM UNNEST($2::text[], $3::bool[]) AS i(operation_id, enabled)
    WHERE p.user_id = $1 AND p.operation_id = i.operation_id";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bulk_vs_loop(c: &mut Criterion) {
    let rt = runtime();
    let Some(pool) = rt.block_on(scratch_pool()) else {
        return;
    };
    let repo = PgPreferencesRepository::new(pool.clone());
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
        // The floor of the bulk statement: a plain UPDATE … FROM UNNEST of the
        // same rows (no patch semantics, no insert branch, no lock order).
        let plain = rt.block_on(async {
            let mut plain = Vec::new();
            for round in 0..(loop_runs * 3) as u64 {
                let patches = batch(n, round);
                let ops: Vec<&str> = patches.iter().map(|p| p.operation_id.as_str()).collect();
                let enabled: Vec<bool> =
                    patches.iter().map(|p| p.enabled.unwrap_or(true)).collect();
                let started = Instant::now();
                sqlx::query(PLAIN_UPDATE)
                    .bind(user)
                    .bind(&ops)
                    .bind(&enabled)
                    .execute(&pool)
                    .await
                    .unwrap();
                plain.push(started.elapsed());
            }
            median(plain)
        });
        println!(
            "ratio bulk_vs_plain_update N={n}: bulk {bulk:?} / plain UPDATE FROM UNNEST {plain:?} = {:.2}x",
            bulk.as_secs_f64() / plain.as_secs_f64()
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
    // The baseline a cached hit is compared with: a bare moka get of the
    // same key and value.
    let bare: moka::future::Cache<opsdeck::CacheKey, Option<opsdeck::OperationPreference>> =
        moka::future::Cache::new(1000);
    let key = opsdeck::CacheKey::new(user, "summarize");
    rt.block_on(async {
        let value = service
            .get_operation_preference(user, "summarize")
            .await
            .unwrap();
        bare.insert(key.clone(), value).await;
    });
    let per_get = |rounds: u32, f: &dyn Fn() -> Duration| {
        let mut samples: Vec<Duration> = (0..rounds).map(|_| f()).collect();
        samples.sort();
        samples[samples.len() / 2]
    };
    let cached = per_get(31, &|| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..10_000 {
                std::hint::black_box(
                    service
                        .get_operation_preference(user, "summarize")
                        .await
                        .unwrap(),
                );
            }
            started.elapsed() / 10_000
        })
    });
    let moka_get = per_get(31, &|| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..10_000 {
                std::hint::black_box(bare.get(&key).await);
            }
            started.elapsed() / 10_000
        })
    });
    println!(
        "ratio cached_service_get / bare_moka_get: {cached:?} / {moka_get:?} = {:.2}x",
        cached.as_secs_f64() / moka_get.as_secs_f64()
    );
    group.bench_function("bare_moka_get", |b| {
        b.to_async(&rt).iter(|| async { bare.get(&key).await })
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
