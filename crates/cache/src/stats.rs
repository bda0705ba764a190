use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups the cache could not answer.
    pub misses: u64,
    /// Loader calls made by [`crate::Cache::get_or_load`] (coalesced misses share one).
    pub loads: u64,
    /// Loader calls that returned an error (nothing was cached).
    pub load_errors: u64,
    /// Loads whose result was not stored because the key was invalidated meanwhile.
    pub stale_loads_discarded: u64,
    /// Invalidation calls (single key or whole user).
    pub invalidations: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0.0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) stale_loads_discarded: AtomicU64,
    pub(crate) invalidations: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            load_errors: self.load_errors.load(Ordering::Relaxed),
            stale_loads_discarded: self.stale_loads_discarded.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Add for CacheStats {
    type Output = CacheStats;

    /// Sums two snapshots (e.g. of several namespaces of one service).
    fn add(self, other: CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits + other.hits,
            misses: self.misses + other.misses,
            loads: self.loads + other.loads,
            load_errors: self.load_errors + other.load_errors,
            stale_loads_discarded: self.stale_loads_discarded + other.stale_loads_discarded,
            invalidations: self.invalidations + other.invalidations,
        }
    }
}
