//! [`PgCronRegistryOptions`]: how [`super::PgCronRegistry::connect`] sets up
//! scheduling.

use std::time::Duration;

use sqlx::PgPool;

use crate::registry::DEFAULT_REQUEST_LEASE;
use crate::schedule::PgCronVersion;

/// How [`crate::PgCronRegistry::connect`] sets up scheduling.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgCronRegistryOptions {
    /// A pool on pg_cron's database (`cron.database_name`, often
    /// `postgres`); may be the application pool itself when the two are the
    /// same database (each write then holds two of its connections at once,
    /// so it needs at least two). `None`: no pg_cron, jobs fire through
    /// [`crate::CronRunner`].
    pub cron_pool: Option<PgPool>,
    /// Fail instead of falling back to the runner when pg_cron is absent.
    pub require_pg_cron: bool,
    /// Prefix of this registry's pg_cron job names (1–43 bytes of
    /// `[A-Za-z0-9_.:-]`). Default: `opsdeck:{database}:`, or a hash of the
    /// database name when that is long. Registries sharing one pg_cron must
    /// have distinct prefixes: `reconcile` removes unknown jobs named
    /// `{prefix}{digits}`, and `prune_history` prunes their runs (jobs that
    /// merely start with the prefix are left alone).
    pub job_prefix: Option<String>,
    /// The schedule syntax accepted in runner mode (default pg_cron 1.4, so
    /// schedules stay valid if pg_cron 1.4 is installed later).
    pub runner_syntax: PgCronVersion,
    /// How long a request taken with `take_requests` stays leased to its
    /// consumer before it is delivered again (default
    /// [`DEFAULT_REQUEST_LEASE`], 5 minutes).
    pub request_lease: Duration,
}

impl Default for PgCronRegistryOptions {
    fn default() -> Self {
        PgCronRegistryOptions {
            cron_pool: None,
            require_pg_cron: false,
            job_prefix: None,
            runner_syntax: PgCronVersion::V1_4,
            request_lease: DEFAULT_REQUEST_LEASE,
        }
    }
}

impl PgCronRegistryOptions {
    /// Default options: no pg_cron pool, runner mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses pg_cron through `pool` (connected to `cron.database_name`).
    pub fn cron_pool(mut self, pool: PgPool) -> Self {
        self.cron_pool = Some(pool);
        self
    }

    /// Fails if pg_cron is not usable instead of falling back to the runner.
    pub fn require_pg_cron(mut self, required: bool) -> Self {
        self.require_pg_cron = required;
        self
    }

    /// Sets the pg_cron job name prefix.
    pub fn job_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.job_prefix = Some(prefix.into());
        self
    }

    /// Sets the schedule syntax accepted in runner mode.
    pub fn runner_syntax(mut self, version: PgCronVersion) -> Self {
        self.runner_syntax = version;
        self
    }

    /// Sets how long a taken request stays leased to its consumer.
    pub fn request_lease(mut self, lease: Duration) -> Self {
        self.request_lease = lease;
        self
    }
}
