use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered without the loader (`l1_hits + l2_hits`).
    pub hits: u64,
    /// Lookups answered from the in-process L1.
    pub l1_hits: u64,
    /// Lookups answered from the shared L2 (which then filled L1).
    pub l2_hits: u64,
    /// Lookups neither tier could answer.
    pub misses: u64,
    /// Loader calls (coalesced misses share one).
    pub loads: u64,
    /// Loader calls that returned an error (nothing was cached).
    pub load_errors: u64,
    /// Loads whose result was not stored because the key was invalidated meanwhile.
    pub stale_loads_discarded: u64,
    /// Invalidations made by this instance (single key, user, or all).
    pub invalidations: u64,
    /// Invalidations received from other instances and applied to L1.
    pub remote_invalidations: u64,
    /// Times L1 was flushed because the invalidation channel may have lost messages.
    pub resyncs: u64,
    /// L2 failures (timeouts, connection errors, undecodable values); each
    /// degraded one operation to L1 + loader.
    pub remote_errors: u64,
    /// Invalidation messages that could not be published.
    pub bus_errors: u64,
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

impl std::ops::Add for CacheStats {
    type Output = CacheStats;

    /// Sums two snapshots (e.g. of several namespaces of one service).
    fn add(self, other: CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits + other.hits,
            l1_hits: self.l1_hits + other.l1_hits,
            l2_hits: self.l2_hits + other.l2_hits,
            misses: self.misses + other.misses,
            loads: self.loads + other.loads,
            load_errors: self.load_errors + other.load_errors,
            stale_loads_discarded: self.stale_loads_discarded + other.stale_loads_discarded,
            invalidations: self.invalidations + other.invalidations,
            remote_invalidations: self.remote_invalidations + other.remote_invalidations,
            resyncs: self.resyncs + other.resyncs,
            remote_errors: self.remote_errors + other.remote_errors,
            bus_errors: self.bus_errors + other.bus_errors,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) stale_loads_discarded: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) remote_invalidations: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) remote_errors: AtomicU64,
    pub(crate) bus_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (l1_hits, l2_hits) = (load(&self.l1_hits), load(&self.l2_hits));
        CacheStats {
            hits: l1_hits + l2_hits,
            l1_hits,
            l2_hits,
            misses: load(&self.misses),
            loads: load(&self.loads),
            load_errors: load(&self.load_errors),
            stale_loads_discarded: load(&self.stale_loads_discarded),
            invalidations: load(&self.invalidations),
            remote_invalidations: load(&self.remote_invalidations),
            resyncs: load(&self.resyncs),
            remote_errors: load(&self.remote_errors),
            bus_errors: load(&self.bus_errors),
        }
    }
}
