//! Cache benchmarks (`cargo bench --bench cache`):
//!
//! 1. Hit ratio of the preferences cache under a Zipf(1.0) read-mostly
//!    workload: repeat views of 10 000 users' operation preferences, 5 %
//!    writes, 15 min TTL (the seed reported ~80 % on repeat views).
//! 2. L1 hit, L2 (Redis) hit and uncached load (PostgreSQL primary-key read)
//!    latencies, and their ratios measured in this run.
//!
//! Uses `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`,
//! scratch database `opsdeck_bench_cache`) and `REDIS_URL` (default
//! `redis://127.0.0.1:6379`); without them the parts that need them say so
//! and the rest runs in memory.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use opsdeck::cache::{RedisConfig, RedisRemoteStore, RemoteStore, Tiers};
use opsdeck::preferences::{
    InMemoryPreferencesRepository, PgPreferencesRepository, PreferencesRepository,
};
use opsdeck::{
    Cache, CacheConfig, CacheKey, PreferenceUpdate, PreferencesConfig, PreferencesService, UserId,
};
use sqlx::PgPool;

const USERS: usize = 10_000;
const OPERATIONS: [&str; 5] = ["summarize", "translate", "classify", "extract", "rewrite"];
const REQUESTS: usize = 200_000;
const WRITE_SHARE: f64 = 0.05;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// xorshift64*: deterministic, dependency-free randomness for the workload.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s = 1.0) over `n` ranks by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

async fn scratch_pool() -> Option<PgPool> {
    common::scratch_pool("opsdeck_bench_cache")
        .await
        .inspect_err(|reason| println!("{reason}: the database parts run in memory"))
        .ok()
}

async fn redis_store() -> Option<Arc<dyn RemoteStore>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = RedisConfig::new(url.clone())
        .with_key_prefix(format!("opsdeck-bench-{}", std::process::id()));
    let store = RedisRemoteStore::new(&config).ok()?;
    let probe = CacheKey::new(UserId::random(), "probe");
    match store.get("probe", &probe).await {
        Ok(_) => Some(Arc::new(store)),
        Err(e) => {
            println!("no Redis at {url} ({e}): running without L2");
            None
        }
    }
}

fn hit_ratio_under_zipf(_: &mut Criterion) {
    let rt = runtime();
    rt.block_on(async {
        let (repository, backend): (Arc<dyn PreferencesRepository>, _) = match scratch_pool().await {
            Some(pool) => (Arc::new(PgPreferencesRepository::new(pool)), "postgres"),
            None => (Arc::new(InMemoryPreferencesRepository::new()), "memory"),
        };
        let remote = redis_store().await;
        let tier = if remote.is_some() { "L1+Redis" } else { "L1" };
        let tiers = remote.map_or_else(Tiers::none, |r| Tiers::none().with_remote(r));
        let service =
            PreferencesService::with_tiers(repository, PreferencesConfig::default(), tiers);
        let users: Vec<UserId> = (0..USERS).map(|_| UserId::random()).collect();
        let zipf = Zipf::new(USERS);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Two equal windows: the first starts cold, the second is the steady
        // state of a warm cache (the bench runs far inside the 15 min TTL, so
        // the second window's misses are writes and first-ever views).
        for window in ["cold start", "steady state"] {
            let before = service.cache_stats();
            let (mut reads, mut writes) = (0u64, 0u64);
            let started = Instant::now();
            for _ in 0..REQUESTS {
                let user = users[zipf.sample(&mut rng)];
                let operation = OPERATIONS[(rng.next_f64() * OPERATIONS.len() as f64) as usize];
                if rng.next_f64() < WRITE_SHARE {
                    let update = PreferenceUpdate::new(operation).enabled(rng.next_f64() < 0.5);
                    service.update_operation_preference(user, update, None).await.unwrap();
                    writes += 1;
                } else {
                    service.get_operation_preference(user, operation).await.unwrap();
                    reads += 1;
                }
            }
            let elapsed = started.elapsed();
            let after = service.cache_stats();
            let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
            println!(
                "zipf hit ratio, {window} ({backend}, {tier}): {:.2}% over {reads} reads + {writes} writes \
                 ({USERS} users x {} operations, 15 min TTL): {hits} hits, {misses} misses, {} loads, in {elapsed:.1?}",
                100.0 * hits as f64 / (hits + misses) as f64,
                OPERATIONS.len(),
                after.loads - before.loads,
            );
        }
    });
}

fn median_of(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn tier_latencies(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("cache_tiers");
    let key = CacheKey::new(UserId::random(), "summarize");
    let value = Some("anthropic/claude-sonnet-4".to_string());

    let l1: Cache<Option<String>> =
        Cache::new(CacheConfig::new("bench.l1", Duration::from_secs(900)));
    rt.block_on(l1.insert(key.clone(), value.clone()));
    group.bench_function("l1_hit", |b| {
        b.to_async(&rt).iter(|| async {
            l1.get_or_load(&key, || async { Ok::<_, ()>(None) })
                .await
                .unwrap()
        })
    });
    let l1_median = rt.block_on(async {
        let mut samples = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let t = Instant::now();
            l1.get(&key).await;
            samples.push(t.elapsed());
        }
        median_of(samples)
    });

    if let Some(remote) = rt.block_on(redis_store()) {
        // Capacity 0: L1 keeps nothing, so every read goes to Redis.
        let l2_only: Cache<Option<String>> = Cache::with_tiers(
            CacheConfig::new("bench.l2", Duration::from_secs(900)).with_max_capacity(0),
            Tiers::none().with_remote(remote),
        );
        rt.block_on(l2_only.insert(key.clone(), value.clone()));
        group.bench_function("l2_hit_redis", |b| {
            b.to_async(&rt)
                .iter(|| async { l2_only.get(&key).await.unwrap() })
        });
        let l2_median = rt.block_on(async {
            let mut samples = Vec::with_capacity(2_000);
            for _ in 0..2_000 {
                let t = Instant::now();
                assert!(l2_only.get(&key).await.is_some());
                samples.push(t.elapsed());
            }
            median_of(samples)
        });
        println!("latency medians: l1_hit {l1_median:?}, l2_hit {l2_median:?}");
    }

    if let Some(pool) = rt.block_on(scratch_pool()) {
        let repo = PgPreferencesRepository::new(pool);
        let user = UserId::random();
        let op = "summarize".parse().unwrap();
        rt.block_on(async {
            repo.bulk_update_operation_preferences(
                user,
                vec![opsdeck::PreferencePatch::new("summarize".parse().unwrap())],
            )
            .await
            .unwrap()
        });
        group.bench_function("uncached_load_postgres", |b| {
            b.to_async(&rt)
                .iter(|| async { repo.get_operation_preference(user, &op).await.unwrap() })
        });
        let load_median = rt.block_on(async {
            let mut samples = Vec::with_capacity(2_000);
            for _ in 0..2_000 {
                let t = Instant::now();
                repo.get_operation_preference(user, &op).await.unwrap();
                samples.push(t.elapsed());
            }
            median_of(samples)
        });
        println!(
            "ratio uncached_load / l1_hit: {load_median:?} / {l1_median:?} = {:.0}x",
            load_median.as_secs_f64() / l1_median.as_secs_f64()
        );
    }
    group.finish();
}

criterion_group!(benches, hit_ratio_under_zipf, tier_latencies);
criterion_main!(benches);
