//! `Cached<R>`: the read cache of preferences as a policy wrapper over any
//! [`PreferencesRepository`]. It owns invalidation, so no write can reach
//! the backend without dropping what the cache holds of it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_cache::{Cache, CacheConfig, CacheKey, CacheStats, CacheValue, Propagation, Tiers};
use opsdeck_core::{OperationId, UserId};

use crate::error::Result;
use crate::{
    OperationPreference, PreferencePatch, PreferencesRepository, UserPreferences,
    UserPreferencesPatch,
};

/// How [`Cached`] (and so [`crate::PreferencesService`]) caches.
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

/// A [`PreferencesRepository`] that serves reads from a cache (moka L1,
/// optionally a shared L2 and an invalidation bus, see [`Tiers`]) and drops
/// the affected entries on every write — also when the write failed, since
/// a database error can hide a commit. After a failed write the local
/// entries are dropped at once and the other tiers are told in the
/// background ([`Propagation::Background`]), so the error is not delayed.
///
/// ```
/// use std::sync::Arc;
/// use opsdeck_cache::Tiers;
/// use opsdeck_preferences::{Cached, InMemoryPreferencesRepository, PreferencesConfig};
///
/// let cached = Cached::new(InMemoryPreferencesRepository::new(), &PreferencesConfig::default(), Tiers::none());
/// # let _ = cached;
/// ```
#[derive(Debug)]
pub struct Cached<R> {
    inner: R,
    /// One entry per (user, operation); `None` caches "no preference".
    operations: Cache<Option<OperationPreference>>,
    /// One entry per user: the whole list.
    lists: Cache<Arc<Vec<OperationPreference>>>,
    /// One entry per user: user-level preferences.
    users: Cache<Option<UserPreferences>>,
    refresh_after_write: bool,
}

impl<R: PreferencesRepository> Cached<R> {
    /// Caches `inner` as `config` says, over `tiers`. With a bus this spawns
    /// listener tasks: call it inside a tokio runtime.
    pub fn new(inner: R, config: &PreferencesConfig, tiers: Tiers) -> Self {
        fn namespace<V: CacheValue>(
            name: &'static str,
            config: &PreferencesConfig,
            tiers: &Tiers,
        ) -> Cache<V> {
            let config =
                CacheConfig::new(name, config.cache_ttl).with_max_capacity(config.cache_capacity);
            Cache::with_tiers(config, tiers.clone())
        }
        Cached {
            inner,
            operations: namespace("preferences.operation", config, &tiers),
            lists: namespace("preferences.list", config, &tiers),
            users: namespace("preferences.user", config, &tiers),
            refresh_after_write: config.refresh_after_write,
        }
    }

    /// Cache counters summed over the three namespaces.
    pub fn cache_stats(&self) -> CacheStats {
        self.operations.stats() + self.lists.stats() + self.users.stats()
    }

    /// See [`PreferencesRepository`]; inherent so that a cached hit
    /// through the service costs no boxed future.
    pub async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Option<OperationPreference>> {
        let key = CacheKey::new(user, operation.as_str());
        self.operations
            .get_or_load(&key, || async {
                tracing::Span::current().record("cache", "miss");
                self.inner.get_operation_preference(user, operation).await
            })
            .await
    }

    /// See [`PreferencesRepository`]; inherent so that a cached hit
    /// through the service costs no boxed future.
    pub async fn list_operation_preferences(
        &self,
        user: UserId,
    ) -> Result<Vec<OperationPreference>> {
        let key = CacheKey::new(user, "");
        let list = self
            .lists
            .get_or_load(&key, || async {
                tracing::Span::current().record("cache", "miss");
                self.inner
                    .list_operation_preferences(user)
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok(list.as_ref().clone())
    }

    /// See [`PreferencesRepository`]; inherent so that a cached hit
    /// through the service costs no boxed future.
    pub async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        self.users
            .get_or_load(&CacheKey::new(user, ""), || async {
                tracing::Span::current().record("cache", "miss");
                self.inner.get_user_preferences(user).await
            })
            .await
    }

    /// Drops everything cached for `user` (e.g. after an out-of-band change).
    pub async fn invalidate_user(&self, user: UserId) {
        self.operations.invalidate_user(user).await;
        self.lists.invalidate_user(user).await;
        self.users.invalidate_user(user).await;
    }
}

#[async_trait]
impl<R: PreferencesRepository> PreferencesRepository for Cached<R> {
    async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Option<OperationPreference>> {
        Cached::get_operation_preference(self, user, operation).await
    }

    async fn list_operation_preferences(&self, user: UserId) -> Result<Vec<OperationPreference>> {
        Cached::list_operation_preferences(self, user).await
    }

    async fn update_operation_preference(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        let key = CacheKey::new(user, patch.operation_id.as_str());
        let operation = patch.operation_id.clone();
        let result = self
            .inner
            .update_operation_preference(user, patch, expected_version)
            .await;
        let propagation = Propagation::after(&result);
        self.operations.invalidate_with(&key, propagation).await;
        self.lists.invalidate_user_with(user, propagation).await;
        if result.is_ok() && self.refresh_after_write {
            let refreshed = self
                .operations
                .refresh(&key, || {
                    self.inner.get_operation_preference(user, &operation)
                })
                .await;
            if let Err(error) = refreshed {
                // The write succeeded; a failed warm-up only costs a later miss.
                tracing::warn!(%user, %operation, %error, "could not refresh the cache after a write");
            }
        }
        result
    }

    async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>> {
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let result = self
            .inner
            .bulk_update_operation_preferences(user, patches)
            .await;
        let propagation = Propagation::after(&result);
        self.operations
            .invalidate_user_with(user, propagation)
            .await;
        self.lists.invalidate_user_with(user, propagation).await;
        result
    }

    async fn delete_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<bool> {
        let result = self
            .inner
            .delete_operation_preference(user, operation)
            .await;
        let propagation = Propagation::after(&result);
        self.operations
            .invalidate_with(&CacheKey::new(user, operation.as_str()), propagation)
            .await;
        self.lists.invalidate_user_with(user, propagation).await;
        result
    }

    async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        Cached::get_user_preferences(self, user).await
    }

    async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences> {
        let result = self
            .inner
            .set_user_preferences(user, patch, expected_version)
            .await;
        self.users
            .invalidate_with(&CacheKey::new(user, ""), Propagation::after(&result))
            .await;
        result
    }
}
