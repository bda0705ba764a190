//! Reports from a read replica without reading behind a write: which pool
//! an analytics report runs on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::error::Result;

/// How long a report waits for the replica to replay the primary's WAL
/// position before it is served by the primary instead.
pub(super) const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(50);
/// The longest a replica probe may take (a frozen or unreachable replica
/// must not hold a report for long).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// After a replica error, reports go to the primary for this long.
const COOLDOWN: Duration = Duration::from_secs(1);

/// Where [`crate::PgAnalyticsRepository`]'s reports went, summed since it
/// was built (clones share the counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// Reports served by the read replica.
    pub replica_reads: u64,
    /// Reports served by the primary because the replica had not replayed
    /// the primary's position within the wait.
    pub lagging_fallbacks: u64,
    /// Reports served by the primary because the replica failed or was
    /// cooling down after a failure.
    pub error_fallbacks: u64,
}

/// The read pool, its health and its counters.
#[derive(Debug)]
pub(super) struct ReadReplica {
    pool: PgPool,
    down_until: Mutex<Option<Instant>>,
    replica_reads: AtomicU64,
    lagging_fallbacks: AtomicU64,
    error_fallbacks: AtomicU64,
}

/// `true` when the replica has replayed the primary's WAL up to `$1`; a
/// server that is not in recovery is a primary, whose reads are current.
const CAUGHT_UP: &str = "
    SELECT CASE WHEN pg_is_in_recovery()
                THEN pg_last_wal_replay_lsn() >= $1::pg_lsn
                ELSE true END";

impl ReadReplica {
    pub(super) fn new(pool: PgPool) -> Self {
        ReadReplica {
            pool,
            down_until: Mutex::new(None),
            replica_reads: AtomicU64::new(0),
            lagging_fallbacks: AtomicU64::new(0),
            error_fallbacks: AtomicU64::new(0),
        }
    }

    pub(super) fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            replica_reads: self.replica_reads.load(Ordering::Relaxed),
            lagging_fallbacks: self.lagging_fallbacks.load(Ordering::Relaxed),
            error_fallbacks: self.error_fallbacks.load(Ordering::Relaxed),
        }
    }

    fn cooling_down(&self) -> bool {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn mark_down(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + COOLDOWN);
    }

    /// The pool a report runs on: the replica once it has replayed the
    /// primary's WAL up to where it was when the report began, so the
    /// report reflects every write committed before it (on any instance);
    /// the primary when the replica lags past `max_wait`, fails, or cools
    /// down after a failure. Only an error of the primary is an error.
    pub(super) async fn route<'a>(
        &'a self,
        primary: &'a PgPool,
        max_wait: Duration,
        map_db_error: fn(sqlx::Error) -> crate::Error,
    ) -> Result<&'a PgPool> {
        if self.cooling_down() {
            self.error_fallbacks.fetch_add(1, Ordering::Relaxed);
            return Ok(primary);
        }
        // Flushed, not inserted: a commit is acknowledged only once flushed
        // (synchronous_commit on), and only flushed WAL reaches a replica.
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(primary)
            .await
            .map_err(map_db_error)?;
        let deadline = Instant::now() + max_wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let probe = sqlx::query_scalar::<_, Option<bool>>(CAUGHT_UP)
                .bind(&target)
                .fetch_one(&self.pool);
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(Some(true))) => {
                    self.replica_reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(&self.pool);
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "analytics read replica failed; reading from the primary");
                    return Ok(self.fall_back(primary));
                }
                Err(_) => {
                    tracing::warn!("analytics read replica timed out; reading from the primary");
                    return Ok(self.fall_back(primary));
                }
            }
            if Instant::now() + pause > deadline {
                tracing::debug!(%target, "analytics read replica lags; reading from the primary");
                self.lagging_fallbacks.fetch_add(1, Ordering::Relaxed);
                return Ok(primary);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    fn fall_back<'a>(&self, primary: &'a PgPool) -> &'a PgPool {
        self.mark_down();
        self.error_fallbacks.fetch_add(1, Ordering::Relaxed);
        primary
    }
}
