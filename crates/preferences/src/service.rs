use std::sync::Arc;

use opsdeck_cache::{CacheStats, Tiers};
use opsdeck_core::{OperationId, UserId};

use crate::cached::{Cached, PreferencesConfig};
use crate::error::{Error, Result};
use crate::{
    MAX_BATCH, OperationPreference, PreferencePatch, PreferencesRepository, Theme, UserPreferences,
    UserPreferencesPatch,
};

/// What applications call: parses raw input at the edge and goes through a
/// [`Cached`] stack over the repository, so every read is cached and every
/// write invalidates. Each method has the name of the
/// [`PreferencesRepository`] method it calls and accepts raw input
/// ([`crate::PreferenceUpdate`], `&str`) or the typed value.
///
/// Cloning is cheap and clones share the cache. There is deliberately no
/// accessor of the repository underneath: a write through it would skip
/// the cache invalidation.
#[derive(Debug, Clone)]
pub struct PreferencesService {
    stack: Arc<Cached<Arc<dyn PreferencesRepository>>>,
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
        PreferencesService {
            stack: Arc::new(Cached::new(repository, &config, tiers)),
        }
    }

    /// Cache counters summed over the service's namespaces.
    pub fn cache_stats(&self) -> CacheStats {
        self.stack.cache_stats()
    }

    /// One preference (cached; "none" is cached too).
    #[tracing::instrument(name = "preferences.get", skip_all, fields(%user, cache = "hit"))]
    pub async fn get_operation_preference(
        &self,
        user: UserId,
        operation: impl TryInto<OperationId, Error: Into<Error>>,
    ) -> Result<Option<OperationPreference>> {
        let operation = operation.try_into().map_err(Into::into)?;
        // The inherent method: a hit then costs no boxed future.
        Cached::get_operation_preference(&self.stack, user, &operation).await
    }

    /// All of the user's preferences, ordered by operation id (cached).
    #[tracing::instrument(name = "preferences.list", skip(self), fields(%user, cache = "hit"))]
    pub async fn list_operation_preferences(
        &self,
        user: UserId,
    ) -> Result<Vec<OperationPreference>> {
        Cached::list_operation_preferences(&self.stack, user).await
    }

    /// Applies one update (raw [`crate::PreferenceUpdate`] or typed
    /// [`PreferencePatch`]); `expected_version` guards against lost updates
    /// (see [`PreferencesRepository`]'s contract).
    #[tracing::instrument(name = "preferences.update", skip(self, update), fields(%user))]
    pub async fn update_operation_preference(
        &self,
        user: UserId,
        update: impl TryInto<PreferencePatch, Error: Into<Error>>,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        let patch = update.try_into().map_err(Into::into)?;
        self.stack
            .update_operation_preference(user, patch, expected_version)
            .await
    }

    /// Applies many updates in one statement (the seed's
    /// `bulkUpdateOperationPreferences`). All items are parsed first; the
    /// first bad one is reported with its position and nothing is written.
    #[tracing::instrument(
        name = "preferences.bulk_update",
        skip(self, updates),
        fields(%user, items = updates.len())
    )]
    pub async fn bulk_update_operation_preferences<P>(
        &self,
        user: UserId,
        updates: Vec<P>,
    ) -> Result<Vec<OperationPreference>>
    where
        P: TryInto<PreferencePatch, Error: Into<Error>>,
    {
        if updates.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                len: updates.len(),
                max: MAX_BATCH,
            });
        }
        let patches = updates
            .into_iter()
            .enumerate()
            .map(|(index, update)| {
                update
                    .try_into()
                    .map_err(|e| Into::<Error>::into(e).at_item(index))
            })
            .collect::<Result<Vec<_>>>()?;
        self.stack
            .bulk_update_operation_preferences(user, patches)
            .await
    }

    /// Removes one preference; `Ok(false)` if there was none.
    #[tracing::instrument(name = "preferences.delete", skip_all, fields(%user))]
    pub async fn delete_operation_preference(
        &self,
        user: UserId,
        operation: impl TryInto<OperationId, Error: Into<Error>>,
    ) -> Result<bool> {
        let operation = operation.try_into().map_err(Into::into)?;
        self.stack
            .delete_operation_preference(user, &operation)
            .await
    }

    /// User-level preferences (cached), if ever set.
    #[tracing::instrument(name = "preferences.get_user", skip(self), fields(%user, cache = "hit"))]
    pub async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        Cached::get_user_preferences(&self.stack, user).await
    }

    /// Patches user-level preferences, optionally guarded by `expected_version`.
    #[tracing::instrument(name = "preferences.set_user", skip(self, patch), fields(%user))]
    pub async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences> {
        self.stack
            .set_user_preferences(user, patch, expected_version)
            .await
    }

    /// Sets the theme (no version check).
    pub async fn set_theme(&self, user: UserId, theme: Theme) -> Result<UserPreferences> {
        self.set_user_preferences(user, UserPreferencesPatch::default().theme(theme), None)
            .await
    }

    /// Drops everything cached for `user` (e.g. after an out-of-band change).
    pub async fn invalidate_user(&self, user: UserId) {
        self.stack.invalidate_user(user).await;
    }
}
