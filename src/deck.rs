use std::sync::Arc;
use std::time::Duration;

use opsdeck_analytics::{
    AnalyticsConfig, AnalyticsService, InMemoryAnalyticsRepository, PgAnalyticsRepository,
};
use opsdeck_cache::{InvalidationBus, PgInvalidationBus, Tiers};
use opsdeck_cron_registry::{
    CronRegistry, CronRunner, CronService, InMemoryCronRegistry, PgCronRegistry,
    PgCronRegistryOptions,
};
use opsdeck_preferences::{
    InMemoryPreferencesRepository, PgPreferencesRepository, PreferencesConfig, PreferencesService,
};
use opsdeck_webhook_verify::{
    Endpoint, EventRepository, InMemoryEventRepository, PgEventRepository, Receiver,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use opsdeck_core::SecretUrl;

use crate::{Error, MIGRATOR};

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
    analytics: AnalyticsService,
    cron: CronService,
    runner_source: Option<RunnerSource>,
    webhooks: Arc<Receiver>,
    invalidation_bus: Option<Arc<dyn InvalidationBus>>,
}

/// Where [`OpsDeck::cron_runner`] builds runners from (runners are not
/// shared: each `spawn` consumes one).
#[derive(Debug, Clone)]
enum RunnerSource {
    Postgres(PgCronRegistry),
    Memory(Arc<InMemoryCronRegistry>),
}

impl OpsDeck {
    /// Connects with default settings. Does not migrate; call
    /// [`OpsDeck::migrate`] or use [`OpsDeck::builder`] with `.migrate(true)`.
    pub async fn connect(database_url: &str) -> Result<Self, Error> {
        Self::builder().database_url(database_url).build().await
    }

    /// Everything in process memory: for examples, tests and embedded use.
    /// The same as `OpsDeck::builder().build()` without a database URL.
    pub fn in_memory() -> Self {
        let jobs = Arc::new(InMemoryCronRegistry::new());
        let cron = CronService::new(jobs.clone());
        Self::in_memory_with(OpsDeckBuilder::default(), cron, jobs)
    }

    fn in_memory_with(
        config: OpsDeckBuilder,
        cron: CronService,
        jobs: Arc<InMemoryCronRegistry>,
    ) -> Self {
        OpsDeck {
            pool: None,
            preferences: PreferencesService::with_config(
                Arc::new(InMemoryPreferencesRepository::new()),
                config.preferences,
            ),
            analytics: AnalyticsService::with_config(
                Arc::new(InMemoryAnalyticsRepository::new()),
                config.analytics,
            ),
            cron,
            runner_source: Some(RunnerSource::Memory(jobs)),
            webhooks: receiver(
                Arc::new(InMemoryEventRepository::new()),
                config.webhook_endpoints,
            ),
            invalidation_bus: None,
        }
    }

    /// A builder for pool options, Redis, cache TTLs, pg_cron, the cron
    /// function allow-list, webhook endpoints and migration.
    pub fn builder() -> OpsDeckBuilder {
        OpsDeckBuilder::default()
    }

    /// Wraps an existing pool with the default configuration: exactly
    /// `OpsDeck::builder().pool(pool).build()` (PostgreSQL NOTIFY
    /// invalidation between instances, pg_cron when the database has it,
    /// otherwise the in-process runner). The schema must be migrated, or
    /// call [`OpsDeck::migrate`].
    pub async fn from_pool(pool: PgPool) -> Result<Self, Error> {
        Self::builder().pool(pool).build().await
    }

    fn wire(
        pool: PgPool,
        analytics_read_pool: Option<PgPool>,
        config: OpsDeckBuilder,
        tiers: Tiers,
        registry: PgCronRegistry,
        cron: CronService,
    ) -> Self {
        let mut analytics = PgAnalyticsRepository::new(pool.clone());
        if let Some(read_pool) = analytics_read_pool {
            analytics = analytics.with_read_pool(read_pool);
        }
        let invalidation_bus = tiers.bus.clone();
        let runner_source = registry
            .pg_cron_version()
            .is_none()
            .then(|| RunnerSource::Postgres(registry));
        OpsDeck {
            preferences: PreferencesService::with_tiers(
                Arc::new(PgPreferencesRepository::new(pool.clone())),
                config.preferences,
                tiers.clone(),
            ),
            analytics: AnalyticsService::with_tiers(Arc::new(analytics), config.analytics, tiers),
            cron,
            runner_source,
            webhooks: receiver(
                Arc::new(PgEventRepository::new(pool.clone())),
                config.webhook_endpoints,
            ),
            invalidation_bus,
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

    /// Waits until the cross-instance invalidation channel listens (or
    /// `timeout` passes) and returns whether it does; `true` when there is
    /// no channel (in memory, or disabled). Until it listens, other
    /// instances' writes may be missed, so a readiness probe can use this.
    pub async fn wait_for_invalidation_channel(&self, timeout: Duration) -> bool {
        match &self.invalidation_bus {
            Some(bus) => bus.wait_until_subscribed(timeout).await,
            None => true,
        }
    }

    /// Per-user operation preferences.
    pub fn preferences(&self) -> &PreferencesService {
        &self.preferences
    }

    /// Execution analytics: recording, trends, model comparison, SLA,
    /// recommendations.
    pub fn analytics(&self) -> &AnalyticsService {
        &self.analytics
    }

    /// Named scheduled jobs per user (pg_cron, or the in-process runner).
    pub fn cron(&self) -> &CronService {
        &self.cron
    }

    /// The in-process job runner, when jobs are not run by pg_cron (in
    /// memory, or on a database without pg_cron). Start it once per
    /// instance with `spawn(interval)` and keep the handle; several
    /// instances never fire one slot twice.
    pub fn cron_runner(&self) -> Option<CronRunner> {
        self.runner_source.as_ref().map(|source| match source {
            RunnerSource::Postgres(registry) => registry.runner(),
            RunnerSource::Memory(jobs) => CronRunner::new(jobs.clone(), jobs.clone()),
        })
    }

    /// The deck's one webhook receiver, on its `webhook_events` log, with
    /// the endpoints given to [`OpsDeckBuilder::webhook_endpoint`]. Clones of
    /// the deck share it (its statistics and its worker wake-up), so mount
    /// it with `opsdeck::webhooks::axum::router(deck.webhook_receiver().clone())`
    /// and build workers with [`Receiver::worker`].
    pub fn webhook_receiver(&self) -> &Arc<Receiver> {
        &self.webhooks
    }
}

fn receiver(log: Arc<dyn EventRepository>, endpoints: Vec<Endpoint>) -> Arc<Receiver> {
    Arc::new(
        endpoints
            .into_iter()
            .fold(Receiver::new(log), Receiver::endpoint),
    )
}

/// Configures an [`OpsDeck`]; see [`OpsDeck::builder`].
///
/// Its `Debug` output shows URLs with their passwords replaced by `***`.
#[derive(Debug)]
pub struct OpsDeckBuilder {
    database_url: Option<SecretUrl>,
    pool: Option<PgPool>,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    preferences: PreferencesConfig,
    analytics: AnalyticsConfig,
    #[cfg(feature = "redis")]
    redis: Option<opsdeck_cache::RedisConfig>,
    invalidation: InvalidationChannel,
    cron_database_url: Option<SecretUrl>,
    require_pg_cron: bool,
    cron_allowed_functions: Vec<String>,
    webhook_endpoints: Vec<Endpoint>,
    analytics_read_url: Option<SecretUrl>,
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
            analytics: AnalyticsConfig::default(),
            #[cfg(feature = "redis")]
            redis: None,
            invalidation: InvalidationChannel::Auto,
            cron_database_url: None,
            require_pg_cron: false,
            cron_allowed_functions: Vec::new(),
            webhook_endpoints: Vec::new(),
            analytics_read_url: None,
        }
    }
}

impl OpsDeckBuilder {
    /// The PostgreSQL URL; without one (or a pool), [`OpsDeckBuilder::build`]
    /// runs in memory.
    pub fn database_url(mut self, url: impl Into<SecretUrl>) -> Self {
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

    /// Settings of the analytics service (metrics cache TTL defaults to 5
    /// minutes; recommendation thresholds).
    pub fn analytics(mut self, config: AnalyticsConfig) -> Self {
        self.analytics = config;
        self
    }

    /// The database pg_cron runs in (`cron.database_name`, usually
    /// `postgres`). Jobs are then scheduled with `cron.schedule_in_database`
    /// into the application database; without it (or without pg_cron
    /// there) jobs fire through [`OpsDeck::cron_runner`].
    pub fn cron_database_url(mut self, url: impl Into<SecretUrl>) -> Self {
        self.cron_database_url = Some(url.into());
        self
    }

    /// A read replica (a streaming standby of the database) for the
    /// analytics reports: cost trends, period summaries, model comparisons
    /// and SLA reports run there; writes, recommendations and everything
    /// else stay on the primary. A report runs on the replica only once the
    /// replica has replayed the primary's WAL up to where it was when the
    /// report began (waiting up to 50 ms, else the primary serves it), so it
    /// never misses a write acknowledged before it, on any instance; see
    /// `PgAnalyticsRepository::with_read_pool`. The replica's pool (same
    /// size as the primary's, `application_name` `opsdeck-analytics-read`
    /// unless the URL sets one) connects lazily: a replica that is down
    /// when building, or later, only sends the reports to the primary.
    /// Ignored in memory.
    pub fn analytics_read_url(mut self, url: impl Into<SecretUrl>) -> Self {
        self.analytics_read_url = Some(url.into());
        self
    }

    /// Fail [`OpsDeckBuilder::build`] instead of falling back to the
    /// in-process runner when pg_cron is not reachable (default off).
    pub fn require_pg_cron(mut self, required: bool) -> Self {
        self.require_pg_cron = required;
        self
    }

    /// Adds the Redis tier (L2 + pub/sub invalidation) at `url`, with the
    /// default key prefix `opsdeck` and a 100 ms per-operation timeout.
    #[cfg(feature = "redis")]
    pub fn redis_url(self, url: impl Into<SecretUrl>) -> Self {
        self.redis(opsdeck_cache::RedisConfig::new(url))
    }

    /// Adds the Redis tier with full settings (key prefix, timeout).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, config: opsdeck_cache::RedisConfig) -> Self {
        self.redis = Some(config);
        self
    }

    /// Allows cron jobs to call the SQL function `name` (as written, e.g.
    /// `public.refresh_stats`; checked when building). Without any, jobs
    /// may run operations and refresh recommendations but call no function.
    pub fn cron_allow_function(mut self, name: impl Into<String>) -> Self {
        self.cron_allowed_functions.push(name.into());
        self
    }

    /// Adds a webhook endpoint to the deck's receiver
    /// ([`OpsDeck::webhook_receiver`]); call once per endpoint.
    pub fn webhook_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.webhook_endpoints.push(endpoint);
        self
    }

    /// How invalidations reach other instances (default
    /// [`InvalidationChannel::Auto`]).
    pub fn invalidation_channel(mut self, channel: InvalidationChannel) -> Self {
        self.invalidation = channel;
        self
    }

    /// Connects (checking the database answers) and wires the services.
    /// Without a database URL or pool everything runs in memory (and the
    /// Redis, invalidation and pg_cron settings are ignored: one process has
    /// one cache and runs its own jobs).
    pub async fn build(self) -> Result<OpsDeck, Error> {
        let pool = match (self.pool.clone(), self.database_url.as_ref()) {
            (Some(pool), _) => pool,
            (None, None) => {
                let jobs = Arc::new(InMemoryCronRegistry::new());
                let cron = self.cron_service(jobs.clone())?;
                return Ok(OpsDeck::in_memory_with(self, cron, jobs));
            }
            (None, Some(url)) => {
                if self.max_connections == 0 {
                    return Err(Error::Config("max_connections must be at least 1".into()));
                }
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.acquire_timeout)
                    .connect(url.expose())
                    .await
                    .map_err(Error::Connect)?
            }
        };
        let analytics_read_pool = self.analytics_read_pool()?;
        let tiers = self.tiers(&pool)?;
        let registry = self.cron_registry(&pool).await?;
        let cron = self.cron_service(Arc::new(registry.clone()))?;
        let migrate = self.migrate;
        let deck = OpsDeck::wire(pool, analytics_read_pool, self, tiers, registry, cron);
        if migrate {
            deck.migrate().await?;
        }
        Ok(deck)
    }

    /// The lazily connecting pool of [`Self::analytics_read_url`], if set.
    fn analytics_read_pool(&self) -> Result<Option<PgPool>, Error> {
        let Some(url) = &self.analytics_read_url else {
            return Ok(None);
        };
        let mut options: PgConnectOptions = url.expose().parse().map_err(Error::Connect)?;
        if options.get_application_name().is_none() {
            // So operators can tell the report connections on the replica.
            options = options.application_name("opsdeck-analytics-read");
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections.max(1))
            // A replica that does not answer must not hold reports long:
            // they fall back to the primary.
            .acquire_timeout(self.acquire_timeout.min(Duration::from_secs(1)))
            .connect_lazy_with(options);
        Ok(Some(pool))
    }

    /// The cron service over `registry`, behind the configured allow-list.
    fn cron_service(&self, registry: Arc<dyn CronRegistry>) -> Result<CronService, Error> {
        CronService::builder(registry)
            .allow_functions(&self.cron_allowed_functions)
            .build()
            .map_err(Error::Cron)
    }

    async fn cron_registry(&self, pool: &PgPool) -> Result<PgCronRegistry, Error> {
        let mut options = PgCronRegistryOptions::new().require_pg_cron(self.require_pg_cron);
        if let Some(url) = &self.cron_database_url {
            let cron_pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(self.acquire_timeout)
                .connect(url.expose())
                .await
                .map_err(Error::Connect)?;
            options = options.cron_pool(cron_pool);
        }
        PgCronRegistry::connect(pool.clone(), options)
            .await
            .map_err(Error::Cron)
    }

    /// The cache tiers this configuration asks for.
    fn tiers(&self, pool: &PgPool) -> Result<Tiers, Error> {
        #[allow(unused_mut)] // only mutated with the redis feature
        let mut tiers = Tiers::none();
        #[cfg(feature = "redis")]
        if let Some(config) = &self.redis {
            tiers = tiers.with_remote(Arc::new(
                opsdeck_cache::RedisRemoteStore::new(config).map_err(Error::Cache)?,
            ));
        }
        let postgres_bus = || {
            Arc::new(PgInvalidationBus::start(
                pool.clone(),
                PgInvalidationBus::DEFAULT_CHANNEL,
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
            let bus = opsdeck_cache::RedisInvalidationBus::start(config).map_err(Error::Cache)?;
            return Ok(Some(Arc::new(bus)));
        }
        Ok(None)
    }
}
