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

use opsdeck_cache::{InvalidationBus, PgNotifyBus, Tiers};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use opsdeck_cache as cache;
#[cfg(feature = "redis")]
pub use opsdeck_cache::RedisConfig;
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
    /// A cache tier could not be set up (e.g. an invalid Redis URL; an
    /// unreachable Redis is not an error: the cache degrades and retries).
    #[error("could not set up the cache tier")]
    Cache(#[source] opsdeck_cache::TierError),
}

/// How cache invalidations reach the other instances of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidationChannel {
    /// Redis pub/sub when a Redis URL is configured, otherwise PostgreSQL
    /// NOTIFY when running on PostgreSQL, otherwise none (in memory).
    #[default]
    Auto,
    /// PostgreSQL LISTEN/NOTIFY (one extra connection per instance).
    Postgres,
    /// Redis pub/sub (needs a Redis URL).
    Redis,
    /// None: each instance's L1 may serve a value up to the TTL old after
    /// another instance's write. Only for single-instance deployments.
    Disabled,
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

    /// Wraps an existing pool (the schema must be migrated), with L1 caches
    /// only; use [`OpsDeck::builder`] for cross-instance invalidation.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_pool_with(pool, PreferencesConfig::default(), Tiers::none())
    }

    fn from_pool_with(pool: PgPool, preferences: PreferencesConfig, tiers: Tiers) -> Self {
        OpsDeck {
            preferences: PreferencesService::with_tiers(
                Arc::new(opsdeck_preferences::PgPreferencesRepository::new(
                    pool.clone(),
                )),
                preferences,
                tiers,
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
    pool: Option<PgPool>,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    preferences: PreferencesConfig,
    #[cfg(feature = "redis")]
    redis: Option<opsdeck_cache::RedisConfig>,
    invalidation: InvalidationChannel,
}

impl Default for OpsDeckBuilder {
    fn default() -> Self {
        OpsDeckBuilder {
            database_url: None,
            pool: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            migrate: false,
            preferences: PreferencesConfig::default(),
            #[cfg(feature = "redis")]
            redis: None,
            invalidation: InvalidationChannel::Auto,
        }
    }
}

impl OpsDeckBuilder {
    /// The PostgreSQL URL; without one, [`OpsDeckBuilder::build`] runs in memory.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Uses an existing pool instead of connecting (pool options are then ignored).
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
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

    /// Adds the Redis tier (L2 + pub/sub invalidation) at `url`, with the
    /// default key prefix `opsdeck` and a 100 ms per-operation timeout.
    #[cfg(feature = "redis")]
    pub fn redis_url(self, url: impl Into<String>) -> Self {
        self.redis(opsdeck_cache::RedisConfig::new(url))
    }

    /// Adds the Redis tier with full settings (key prefix, timeout).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, config: opsdeck_cache::RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// How invalidations reach other instances (default
    /// [`InvalidationChannel::Auto`]).
    pub fn invalidation_channel(mut self, channel: InvalidationChannel) -> Self {
        self.invalidation = channel;
        self
    }

    /// The cache tiers this configuration asks for.
    fn tiers(&self, pool: &PgPool) -> Result<Tiers, Error> {
        #[allow(unused_mut)] // only mutated with the redis feature
        let mut tiers = Tiers::none();
        #[cfg(feature = "redis")]
        if let Some(config) = &self.redis {
            tiers = tiers.with_remote(Arc::new(
                opsdeck_cache::RedisStore::new(config).map_err(Error::Cache)?,
            ));
        }
        let postgres_bus = || {
            Arc::new(PgNotifyBus::start(
                pool.clone(),
                PgNotifyBus::DEFAULT_CHANNEL,
            )) as Arc<dyn InvalidationBus>
        };
        let bus = match self.invalidation {
            InvalidationChannel::Disabled => None,
            InvalidationChannel::Postgres => Some(postgres_bus()),
            InvalidationChannel::Redis | InvalidationChannel::Auto => match self.redis_bus()? {
                Some(bus) => Some(bus),
                None if self.invalidation == InvalidationChannel::Auto => Some(postgres_bus()),
                None => {
                    return Err(Error::Config(
                        "InvalidationChannel::Redis needs a Redis URL (OpsDeckBuilder::redis_url)"
                            .into(),
                    ));
                }
            },
        };
        Ok(match bus {
            Some(bus) => tiers.with_bus(bus),
            None => tiers,
        })
    }

    fn redis_bus(&self) -> Result<Option<Arc<dyn InvalidationBus>>, Error> {
        #[cfg(feature = "redis")]
        if let Some(config) = &self.redis {
            let bus = opsdeck_cache::RedisBus::start(config).map_err(Error::Cache)?;
            return Ok(Some(Arc::new(bus)));
        }
        Ok(None)
    }

    /// Connects (checking the database answers) and wires the services.
    /// Without a database URL or pool everything runs in memory (and the Redis and
    /// invalidation settings are ignored: one process has one cache).
    pub async fn build(self) -> Result<OpsDeck, Error> {
        let pool = match (self.pool.clone(), self.database_url.as_deref()) {
            (Some(pool), _) => pool,
            (None, None) => return Ok(OpsDeck::in_memory_with(self.preferences)),
            (None, Some(url)) => {
                if self.max_connections == 0 {
                    return Err(Error::Config("max_connections must be at least 1".into()));
                }
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.acquire_timeout)
                    .connect(url)
                    .await
                    .map_err(Error::Connect)?
            }
        };
        let tiers = self.tiers(&pool)?;
        let deck = OpsDeck::from_pool_with(pool, self.preferences, tiers);
        if self.migrate {
            deck.migrate().await?;
        }
        Ok(deck)
    }
}
