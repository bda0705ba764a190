//! The fixed log-scale latency histogram every rollup carries.

use std::fmt;

/// Number of latency buckets.
pub const LATENCY_BUCKETS: usize = 77;

/// Inclusive lower bound, in milliseconds, of each latency bucket; a bucket
/// ends where the next one begins and the last one is open-ended.
///
/// Exact (1 ms wide) below 8 ms, then four buckets per power of two — each at
/// most 25% of its lower bound wide — up to 2^20 ms (about 17.5 minutes):
/// `0, 1, …, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, …, 917504, 1048576`.
///
/// The database uses the same list (`opsdeck.latency_bucket_bounds()` in
/// `migrations/0002_analytics.sql`); a test fails if the two ever differ.
/// Changing it invalidates every stored histogram, so it never changes.
pub const LATENCY_BUCKET_BOUNDS: [u32; LATENCY_BUCKETS] = bucket_bounds();

const fn bucket_bounds() -> [u32; LATENCY_BUCKETS] {
    let mut bounds = [0u32; LATENCY_BUCKETS];
    let mut i = 0;
    while i < 8 {
        bounds[i] = i as u32;
        i += 1;
    }
    let mut power = 3;
    while power < 20 {
        let mut step = 0;
        while step < 4 {
            bounds[i] = (1 << power) + step * (1 << (power - 2));
            i += 1;
            step += 1;
        }
        power += 1;
    }
    bounds[i] = 1 << 20;
    bounds
}

/// Counts of latencies per bucket of [`LATENCY_BUCKET_BOUNDS`].
///
/// Histograms of different days, models or shards merge by adding counts,
/// which is why percentiles over any period come from the daily rollups and
/// never from raw executions.
///
/// ```
/// use opsdeck_analytics::LatencyHistogram;
/// let mut h = LatencyHistogram::new();
/// for ms in [3, 120, 130, 900, 5_000] {
///     h.record(ms);
/// }
/// assert_eq!(h.count(), 5);
/// // The 3rd smallest (130 ms) lies in bucket [128, 160): reported as 159.
/// assert_eq!(h.percentile(500), Some(159));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        LatencyHistogram {
            counts: [0; LATENCY_BUCKETS],
        }
    }

    /// The bucket index holding `latency_ms`.
    pub fn bucket_of(latency_ms: u32) -> usize {
        // Bound 0 is 0, so at least one bound is <= any latency.
        LATENCY_BUCKET_BOUNDS.partition_point(|&lower| lower <= latency_ms) - 1
    }

    /// The latencies of bucket `index`: `lower..upper`, `upper` being `None`
    /// for the last, open-ended bucket. `None` for an index out of range.
    pub fn bucket_range(index: usize) -> Option<(u32, Option<u32>)> {
        let lower = *LATENCY_BUCKET_BOUNDS.get(index)?;
        Some((lower, LATENCY_BUCKET_BOUNDS.get(index + 1).copied()))
    }

    /// Counts one latency.
    pub fn record(&mut self, latency_ms: u32) {
        let bucket = &mut self.counts[Self::bucket_of(latency_ms)];
        *bucket = bucket.saturating_add(1);
    }

    /// Adds `other`'s counts to this histogram.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The count of each bucket.
    pub fn counts(&self) -> &[u64; LATENCY_BUCKETS] {
        &self.counts
    }

    /// A histogram from stored counts (a rollup's `bigint[]`); refuses a
    /// wrong length or a negative count.
    pub fn from_counts(counts: &[i64]) -> Result<Self, String> {
        if counts.len() != LATENCY_BUCKETS {
            return Err(format!(
                "latency histogram has {} buckets, expected {LATENCY_BUCKETS}",
                counts.len()
            ));
        }
        let mut histogram = Self::new();
        for (slot, &count) in histogram.counts.iter_mut().zip(counts) {
            *slot = u64::try_from(count)
                .map_err(|_| format!("latency histogram has a negative count ({count})"))?;
        }
        Ok(histogram)
    }

    /// The counts as stored (`bigint[]`).
    pub fn to_counts(&self) -> Vec<i64> {
        self.counts
            .iter()
            .map(|&c| i64::try_from(c).unwrap_or(i64::MAX))
            .collect()
    }

    /// The `per_mille`‰ percentile (500 = median, 950 = p95, 990 = p99),
    /// or `None` for an empty histogram.
    ///
    /// # Contract
    /// The nearest-rank percentile — the `⌈n·per_mille/1000⌉`-th smallest
    /// latency — lies in some bucket; the result is that bucket's largest
    /// latency (`upper − 1`), or its lower bound for the open last bucket.
    /// So the result is in the same bucket as the exact percentile, never
    /// below it (except in the last bucket), and at most 25% above it.
    /// `per_mille` is clamped to 1..=1000.
    pub fn percentile(&self, per_mille: u32) -> Option<u32> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let per_mille = u64::from(per_mille.clamp(1, 1000));
        // Integer ceiling: exact for any count.
        let rank = (u128::from(total) * u128::from(per_mille)).div_ceil(1000);
        let rank = u64::try_from(rank).unwrap_or(total).max(1);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::bucket_range(index)
                    .map(|(lower, upper)| upper.map_or(lower, |upper| upper - 1));
            }
        }
        None
    }

    /// p50, p95 and p99.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.percentile(500),
            p95: self.percentile(950),
            p99: self.percentile(990),
        }
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the non-empty buckets, as `lower_ms: count`.
        let mut map = f.debug_map();
        for (index, &count) in self.counts.iter().enumerate() {
            if count > 0 {
                map.entry(&LATENCY_BUCKET_BOUNDS[index], &count);
            }
        }
        map.finish()
    }
}

/// Latency percentiles in milliseconds, from merged histograms (see
/// [`LatencyHistogram::percentile`] for the precision); `None` without data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<u32>,
    /// 95th percentile.
    pub p95: Option<u32>,
    /// 99th percentile.
    pub p99: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounds_follow_the_documented_rule() {
        assert_eq!(
            &LATENCY_BUCKET_BOUNDS[..12],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14]
        );
        assert_eq!(LATENCY_BUCKET_BOUNDS[LATENCY_BUCKETS - 1], 1 << 20);
        for pair in LATENCY_BUCKET_BOUNDS.windows(2) {
            let (lower, upper) = (pair[0], pair[1]);
            assert!(upper > lower);
            assert!(
                lower < 8 || (upper - lower) * 4 <= lower,
                "{lower}..{upper} is over 25% wide"
            );
        }
    }

    #[test]
    fn buckets_cover_every_latency() {
        assert_eq!(LatencyHistogram::bucket_of(0), 0);
        assert_eq!(LatencyHistogram::bucket_of(7), 7);
        assert_eq!(LatencyHistogram::bucket_of(8), 8);
        assert_eq!(LatencyHistogram::bucket_of(9), 8);
        assert_eq!(LatencyHistogram::bucket_of(10), 9);
        assert_eq!(LatencyHistogram::bucket_of(u32::MAX), LATENCY_BUCKETS - 1);
        assert_eq!(
            LatencyHistogram::bucket_range(LATENCY_BUCKETS - 1),
            Some((1 << 20, None))
        );
        assert_eq!(LatencyHistogram::bucket_range(LATENCY_BUCKETS), None);
    }

    #[test]
    fn empty_and_stored_forms() {
        assert_eq!(
            LatencyHistogram::new().percentiles(),
            Percentiles::default()
        );
        let mut h = LatencyHistogram::new();
        h.record(42);
        let stored = h.to_counts();
        assert_eq!(LatencyHistogram::from_counts(&stored), Ok(h));
        assert!(LatencyHistogram::from_counts(&stored[1..]).is_err());
        let mut negative = stored;
        negative[0] = -1;
        assert!(LatencyHistogram::from_counts(&negative).is_err());
    }

    fn exact_nearest_rank(sorted: &[u32], per_mille: u32) -> u32 {
        let rank = (sorted.len() as u64 * u64::from(per_mille))
            .div_ceil(1000)
            .max(1);
        sorted[rank as usize - 1]
    }

    proptest! {
        /// The estimate is in the exact percentile's bucket, merged or not.
        #[test]
        fn percentile_is_in_the_exact_bucket(
            first in prop::collection::vec(0u32..2_000_000, 1..300),
            second in prop::collection::vec(0u32..5_000, 0..300),
            per_mille in 1u32..=1000,
        ) {
            let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
            first.iter().for_each(|&ms| a.record(ms));
            second.iter().for_each(|&ms| b.record(ms));
            a.merge(&b);
            let mut all: Vec<u32> = first.iter().chain(second.iter()).copied().collect();
            all.sort_unstable();
            let exact = exact_nearest_rank(&all, per_mille);
            let estimate = a.percentile(per_mille).unwrap();
            prop_assert_eq!(LatencyHistogram::bucket_of(estimate), LatencyHistogram::bucket_of(exact));
            prop_assert!(estimate >= exact || LatencyHistogram::bucket_of(exact) == LATENCY_BUCKETS - 1);
        }
    }
}
