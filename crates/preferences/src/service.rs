use std::sync::Arc;
use std::time::Duration;

use opsdeck_cache::{Cache, CacheConfig, CacheKey, CacheStats, CacheValue, Tiers};
use opsdeck_core::{OperationId, UserId};

use crate::error::{Error, Result};
use crate::{
    MAX_BATCH, OperationPreference, PreferencePatch, PreferenceUpdate, PreferencesRepository,
    Theme, UserPreferences, UserPreferencesPatch,
};

/// How [`PreferencesService`] caches.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PreferencesConfig {
    /// How long a cached read lives (default 15 minutes, as in the seed).
    pub cache_ttl: Duration,
    /// Most entries per cache namespace.
    pub cache_capacity: u64,
    /// After a single-preference write, re-read the row into the cache so
    /// the next read (typically the writer's own) is a hit (default on; one
    /// extra primary-key read per write).
    pub refresh_after_write: bool,
}

impl Default for PreferencesConfig {
    fn default() -> Self {
        PreferencesConfig {
            cache_ttl: Duration::from_secs(15 * 60),
            cache_capacity: 100_000,
            refresh_after_write: true,
        }
    }
}

impl PreferencesConfig {
    /// Sets the cache TTL.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }
}

/// What applications call: parses raw input, reads through a cache, writes
/// through the repository and invalidates the cache on every write path.
///
/// Cloning is cheap and clones share the cache.
#[derive(Debug, Clone)]
pub struct PreferencesService {
    repository: Arc<dyn PreferencesRepository>,
    /// One entry per (user, operation); `None` caches "no preference".
    operations: Cache<Option<OperationPreference>>,
    refresh_after_write: bool,
    /// One entry per user: the whole list.
    lists: Cache<Arc<Vec<OperationPreference>>>,
    /// One entry per user: user-level preferences.
    users: Cache<Option<UserPreferences>>,
}

impl PreferencesService {
    /// A service over `repository` with the default configuration.
    pub fn new(repository: Arc<dyn PreferencesRepository>) -> Self {
        Self::with_config(repository, PreferencesConfig::default())
    }

    /// A service over `repository` with `config`.
    pub fn with_config(
        repository: Arc<dyn PreferencesRepository>,
        config: PreferencesConfig,
    ) -> Self {
        Self::with_tiers(repository, config, Tiers::none())
    }

    /// A service whose caches also use a shared L2 and/or an invalidation bus
    /// (see `opsdeck_cache::Tiers`), so that several instances stay coherent.
    /// With a bus this spawns listener tasks: call it inside a tokio runtime.
    pub fn with_tiers(
        repository: Arc<dyn PreferencesRepository>,
        config: PreferencesConfig,
        tiers: Tiers,
    ) -> Self {
        fn namespace<V: CacheValue>(
            name: &'static str,
            config: &PreferencesConfig,
            tiers: &Tiers,
        ) -> Cache<V> {
            let config =
                CacheConfig::new(name, config.cache_ttl).with_max_capacity(config.cache_capacity);
            Cache::with_tiers(config, tiers.clone())
        }
        PreferencesService {
            repository,
            operations: namespace("preferences.operation", &config, &tiers),
            refresh_after_write: config.refresh_after_write,
            lists: namespace("preferences.list", &config, &tiers),
            users: namespace("preferences.user", &config, &tiers),
        }
    }

    /// The repository behind the cache.
    pub fn repository(&self) -> &Arc<dyn PreferencesRepository> {
        &self.repository
    }

    /// Cache counters summed over the service's namespaces.
    pub fn cache_stats(&self) -> CacheStats {
        self.operations.stats() + self.lists.stats() + self.users.stats()
    }

    /// One preference (cached; "none" is cached too).
    #[tracing::instrument(name = "preferences.get", skip(self), fields(%user, cache = "hit"))]
    pub async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &str,
    ) -> Result<Option<OperationPreference>> {
        let operation = OperationId::parse(operation).map_err(|e| Error::parse(operation, e))?;
        let key = CacheKey::new(user, operation.as_str());
        self.operations
            .get_or_load(&key, || async {
                tracing::Span::current().record("cache", "miss");
                self.repository.get(user, &operation).await
            })
            .await
    }

    /// All of the user's preferences, ordered by operation id (cached).
    #[tracing::instrument(name = "preferences.list", skip(self), fields(%user, cache = "hit"))]
    pub async fn list_operation_preferences(
        &self,
        user: UserId,
    ) -> Result<Vec<OperationPreference>> {
        let key = CacheKey::new(user, "");
        let list = self
            .lists
            .get_or_load(&key, || async {
                tracing::Span::current().record("cache", "miss");
                self.repository.list(user).await.map(Arc::new)
            })
            .await?;
        Ok(list.as_ref().clone())
    }

    /// Applies one raw update; `expected_version` guards against lost updates
    /// (see [`PreferencesRepository`]'s contract).
    #[tracing::instrument(name = "preferences.update", skip(self, update), fields(%user))]
    pub async fn update_operation_preference(
        &self,
        user: UserId,
        update: PreferenceUpdate,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        let patch = update.parse()?;
        self.upsert(user, patch, expected_version).await
    }

    /// Applies one typed patch.
    pub async fn upsert(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        let key = CacheKey::new(user, patch.operation_id.as_str());
        let operation = patch.operation_id.clone();
        let result = self.repository.upsert(user, patch, expected_version).await;
        self.operations.invalidate(&key).await;
        self.lists.invalidate_user(user).await;
        if result.is_ok() && self.refresh_after_write {
            let refreshed = self
                .operations
                .refresh(&key, || self.repository.get(user, &operation))
                .await;
            if let Err(error) = refreshed {
                // The write succeeded; a failed warm-up only costs a later miss.
                tracing::warn!(%user, %operation, %error, "could not refresh the cache after a write");
            }
        }
        result
    }

    /// Applies many raw updates in one statement (the seed's
    /// `bulkUpdateOperationPreferences`). All items are parsed first; the
    /// first bad one is reported with its position and nothing is written.
    #[tracing::instrument(
        name = "preferences.bulk_update",
        skip(self, updates),
        fields(%user, items = updates.len())
    )]
    pub async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        updates: Vec<PreferenceUpdate>,
    ) -> Result<Vec<OperationPreference>> {
        if updates.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                len: updates.len(),
                max: MAX_BATCH,
            });
        }
        let patches = updates
            .into_iter()
            .enumerate()
            .map(|(index, update)| update.parse().map_err(|e| e.at_item(index)))
            .collect::<Result<Vec<_>>>()?;
        self.bulk_upsert(user, patches).await
    }

    /// Applies many typed patches in one statement.
    pub async fn bulk_upsert(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>> {
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.repository.bulk_upsert(user, patches).await;
        // Invalidate even on error: a database error can hide a commit.
        self.invalidate_user(user).await;
        result
    }

    /// Removes one preference; `Ok(false)` if there was none.
    #[tracing::instrument(name = "preferences.delete", skip(self), fields(%user))]
    pub async fn delete_operation_preference(&self, user: UserId, operation: &str) -> Result<bool> {
        let operation = OperationId::parse(operation).map_err(|e| Error::parse(operation, e))?;
        let result = self.repository.delete(user, &operation).await;
        self.operations
            .invalidate(&CacheKey::new(user, operation.as_str()))
            .await;
        self.lists.invalidate_user(user).await;
        result
    }

    /// User-level preferences (cached), if ever set.
    #[tracing::instrument(name = "preferences.get_user", skip(self), fields(%user, cache = "hit"))]
    pub async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        self.users
            .get_or_load(&CacheKey::new(user, ""), || async {
                tracing::Span::current().record("cache", "miss");
                self.repository.get_user_preferences(user).await
            })
            .await
    }

    /// Patches user-level preferences, optionally guarded by `expected_version`.
    #[tracing::instrument(name = "preferences.set_user", skip(self, patch), fields(%user))]
    pub async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences> {
        let result = self
            .repository
            .set_user_preferences(user, patch, expected_version)
            .await;
        self.users.invalidate(&CacheKey::new(user, "")).await;
        result
    }

    /// Sets the theme (no version check).
    pub async fn set_theme(&self, user: UserId, theme: Theme) -> Result<UserPreferences> {
        self.set_user_preferences(user, UserPreferencesPatch::default().theme(theme), None)
            .await
    }

    /// Drops everything cached for `user` (e.g. after an out-of-band change).
    pub async fn invalidate_user(&self, user: UserId) {
        self.operations.invalidate_user(user).await;
        self.lists.invalidate_user(user).await;
        self.users.invalidate_user(user).await;
    }
}
