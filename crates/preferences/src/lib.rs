//! Per-user operation preferences: which operations a user has enabled, the
//! model each should run on, free-form settings, and user-level preferences
//! such as the theme.
//!
//! - [`PreferencesRepository`] is the storage contract. Two backends
//!   implement it: [`PgPreferencesRepository`] (feature `postgres`, default)
//!   and [`InMemoryPreferencesRepository`] (the embedded default and test
//!   double). Both pass the same conformance suite ([`testing`], feature
//!   `testing`).
//! - [`PreferencesService`] is what applications call: it parses raw input,
//!   caches reads for 15 minutes and invalidates on every write.
//!
//! Writes use *patch* semantics: a [`PreferencePatch`] changes only the
//! fields it sets. A bulk write is one SQL statement for any batch size up to
//! [`MAX_BATCH`], merges repeated operation ids (later items win, field by
//! field) and is all-or-nothing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), opsdeck_preferences::Error> {
//! use std::sync::Arc;
//! use opsdeck_core::UserId;
//! use opsdeck_preferences::{InMemoryPreferencesRepository, PreferenceUpdate, PreferencesService};
//!
//! let service = PreferencesService::new(Arc::new(InMemoryPreferencesRepository::new()));
//! let user = UserId::random();
//! let saved = service
//!     .bulk_update_operation_preferences(user, vec![
//!         PreferenceUpdate::new("summarize").enabled(true).preferred_model("anthropic/claude-sonnet-4"),
//!         PreferenceUpdate::new("translate").enabled(false),
//!     ])
//!     .await?;
//! assert_eq!(saved.len(), 2);
//! assert!(!service.get_operation_preference(user, "translate").await?.unwrap().enabled);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cached;
mod error;
mod memory;
mod model;
#[cfg(feature = "postgres")]
mod postgres;
mod service;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};

pub use cached::{Cached, PreferencesConfig};
pub use error::{Error, Result};
pub use memory::InMemoryPreferencesRepository;
pub use model::{
    OperationPreference, PreferencePatch, PreferenceUpdate, Settings, Theme, UserPreferences,
    UserPreferencesPatch,
};
#[cfg(feature = "postgres")]
pub use postgres::PgPreferencesRepository;
pub use service::PreferencesService;

/// Most items one bulk write accepts. Larger batches get
/// [`Error::BatchTooLarge`]; split them (each part is then atomic on its own).
pub const MAX_BATCH: usize = 1000;

/// Largest accepted `settings` object, in bytes of compact JSON.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;

/// Storage of preferences. Every method is scoped by user: no call can read
/// or change another user's rows.
///
/// # Contract (checked by [`testing`] for every backend)
/// - `list` returns the user's preferences ordered by operation id.
/// - `upsert`/`bulk_upsert` create missing rows with defaults (enabled,
///   no preferred model, empty settings, version 1) and change only the
///   fields a patch sets on existing rows, bumping their version by one.
/// - `bulk_upsert` validates the whole batch first (size, settings), merges
///   repeated operation ids (later wins per field), writes all or nothing,
///   and returns the resulting rows ordered by operation id. An empty batch
///   returns an empty list and writes nothing.
/// - An `expected_version` of `Some(0)` means "must not exist yet"; any other
///   `Some(v)` means "must exist with version v"; a mismatch is
///   [`Error::Conflict`] and writes nothing.
/// - `delete` of a missing row returns `Ok(false)`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PreferencesRepository: Send + Sync + std::fmt::Debug {
    /// One preference, if the user has one for `operation`.
    async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Option<OperationPreference>>;

    /// All of the user's preferences, ordered by operation id.
    async fn list_operation_preferences(&self, user: UserId) -> Result<Vec<OperationPreference>>;

    /// Applies one patch, optionally guarded by `expected_version`.
    async fn update_operation_preference(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference>;

    /// Applies many patches at once (one statement on PostgreSQL).
    async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>>;

    /// Removes one preference; `Ok(false)` if there was none.
    async fn delete_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<bool>;

    /// The user-level preferences, if ever set.
    async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>>;

    /// Applies a patch to the user-level preferences (creating them with
    /// defaults first if needed), optionally guarded by `expected_version`.
    async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences>;
}

/// A shared backend is a backend: lets [`Cached`] and services hold
/// `Arc<dyn PreferencesRepository>`.
#[async_trait]
impl<T: PreferencesRepository + ?Sized> PreferencesRepository for std::sync::Arc<T> {
    async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Option<OperationPreference>> {
        (**self).get_operation_preference(user, operation).await
    }

    async fn list_operation_preferences(&self, user: UserId) -> Result<Vec<OperationPreference>> {
        (**self).list_operation_preferences(user).await
    }

    async fn update_operation_preference(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        (**self)
            .update_operation_preference(user, patch, expected_version)
            .await
    }

    async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>> {
        (**self)
            .bulk_update_operation_preferences(user, patches)
            .await
    }

    async fn delete_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<bool> {
        (**self).delete_operation_preference(user, operation).await
    }

    async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        (**self).get_user_preferences(user).await
    }

    async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences> {
        (**self)
            .set_user_preferences(user, patch, expected_version)
            .await
    }
}

/// Validates a batch and merges repeated operation ids, returning the patches
/// sorted by operation id. Sorting gives every backend the same output order
/// and, on PostgreSQL, a fixed row-lock order so concurrent bulk writes of one
/// user cannot deadlock.
pub(crate) fn prepare_batch(patches: Vec<PreferencePatch>) -> Result<Vec<PreferencePatch>> {
    if patches.len() > MAX_BATCH {
        return Err(Error::BatchTooLarge {
            len: patches.len(),
            max: MAX_BATCH,
        });
    }
    let mut merged: std::collections::BTreeMap<OperationId, PreferencePatch> =
        std::collections::BTreeMap::new();
    for (index, patch) in patches.into_iter().enumerate() {
        patch.validate().map_err(|e| e.at_item(index))?;
        match merged.get_mut(&patch.operation_id) {
            Some(earlier) => earlier.merge(patch),
            None => {
                merged.insert(patch.operation_id.clone(), patch);
            }
        }
    }
    Ok(merged.into_values().collect())
}
