//! opsdeck: the backend of "AI operations" for Rust services — per-user
//! operation preferences, a read cache, and (as the workspace grows)
//! execution analytics, a pg_cron job registry and verified webhooks, all on
//! PostgreSQL.
//!
//! This facade is the one dependency most services add. It wires the domain
//! crates onto one connection pool, owns the schema ([`MIGRATOR`]) and
//! re-exports what callers need.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use opsdeck::{OpsDeck, PreferenceUpdate, UserId};
//!
//! let deck = OpsDeck::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
//! deck.migrate().await?;
//! let user = UserId::random();
//! deck.preferences()
//!     .bulk_update_operation_preferences(user, vec![
//!         PreferenceUpdate::new("summarize").preferred_model("anthropic/claude-sonnet-4"),
//!     ])
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Without a database, [`OpsDeck::in_memory`] gives the same API over the
//! in-memory backends.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use opsdeck_cache::{Cache, CacheConfig, CacheKey, CacheStats};
pub use opsdeck_core::{ModelRef, OperationId, ParseError, StatementCounter, UserId};
pub use opsdeck_preferences as preferences;
pub use opsdeck_preferences::{
    OperationPreference, PreferencePatch, PreferenceUpdate, PreferencesConfig, PreferencesService,
    Theme, UserPreferences, UserPreferencesPatch,
};

/// The schema of every opsdeck crate, applied in order by [`OpsDeck::migrate`]
/// (or by your own migration step: `opsdeck::MIGRATOR.run(&pool)`). Applies
/// on a database without pg_cron.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What can fail while setting opsdeck up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached or refused the connection.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("could not apply the opsdeck migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Which storage an [`OpsDeck`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL through sqlx.
    Postgres,
    /// Process memory (nothing survives a restart).
    InMemory,
}

/// The wired services on one pool (or in memory). Cheap to clone.
#[derive(Debug, Clone)]
pub struct OpsDeck {
    pool: Option<PgPool>,
    preferences: PreferencesService,
}

impl OpsDeck {
    /// Connects with default settings. Does not migrate; call
    /// [`OpsDeck::migrate`] or use [`OpsDeck::builder`] with `.migrate(true)`.
    pub async fn connect(database_url: &str) -> Result<Self, Error> {
        Self::builder().database_url(database_url).build().await
    }

    /// Everything in process memory: for examples, tests and embedded use.
    pub fn in_memory() -> Self {
        Self::in_memory_with(PreferencesConfig::default())
    }

    fn in_memory_with(preferences: PreferencesConfig) -> Self {
        OpsDeck {
            pool: None,
            preferences: PreferencesService::with_config(
                Arc::new(opsdeck_preferences::InMemoryPreferencesRepository::new()),
                preferences,
            ),
        }
    }

    /// A builder for pool options, cache TTLs and migration.
    pub fn builder() -> OpsDeckBuilder {
        OpsDeckBuilder::default()
    }

    /// Wraps an existing pool (the schema must be migrated).
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_pool_with(pool, PreferencesConfig::default())
    }

    fn from_pool_with(pool: PgPool, preferences: PreferencesConfig) -> Self {
        OpsDeck {
            preferences: PreferencesService::with_config(
                Arc::new(opsdeck_preferences::PgPreferencesRepository::new(
                    pool.clone(),
                )),
                preferences,
            ),
            pool: Some(pool),
        }
    }

    /// Applies [`MIGRATOR`]; a no-op in memory. Safe to call on every start:
    /// applied migrations are skipped.
    pub async fn migrate(&self) -> Result<(), Error> {
        match &self.pool {
            Some(pool) => MIGRATOR.run(pool).await.map_err(Error::Migrate),
            None => Ok(()),
        }
    }

    /// The storage in use.
    pub fn backend(&self) -> Backend {
        if self.pool.is_some() {
            Backend::Postgres
        } else {
            Backend::InMemory
        }
    }

    /// The pool, when running on PostgreSQL.
    pub fn pool(&self) -> Option<&PgPool> {
        self.pool.as_ref()
    }

    /// Per-user operation preferences.
    pub fn preferences(&self) -> &PreferencesService {
        &self.preferences
    }
}

/// Configures an [`OpsDeck`]; see [`OpsDeck::builder`].
#[derive(Debug, Clone)]
pub struct OpsDeckBuilder {
    database_url: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    preferences: PreferencesConfig,
}

impl Default for OpsDeckBuilder {
    fn default() -> Self {
        OpsDeckBuilder {
            database_url: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            migrate: false,
            preferences: PreferencesConfig::default(),
        }
    }
}

impl OpsDeckBuilder {
    /// The PostgreSQL URL; without one, [`OpsDeckBuilder::build`] runs in memory.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Pool size (default 10).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// How long to wait for a connection, including the first one (default 5 s).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Apply [`MIGRATOR`] while building (default off).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Cache settings of the preferences service (TTL defaults to 15 minutes).
    pub fn preferences(mut self, config: PreferencesConfig) -> Self {
        self.preferences = config;
        self
    }

    /// Connects (checking the database answers) and wires the services.
    pub async fn build(self) -> Result<OpsDeck, Error> {
        let Some(url) = self.database_url else {
            return Ok(OpsDeck::in_memory_with(self.preferences));
        };
        if self.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .connect(&url)
            .await
            .map_err(Error::Connect)?;
        let deck = OpsDeck::from_pool_with(pool, self.preferences);
        if self.migrate {
            deck.migrate().await?;
        }
        Ok(deck)
    }
}
