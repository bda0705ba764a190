use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use time::OffsetDateTime;

use crate::model::check_version;
use crate::{
    OperationPreference, PreferencePatch, PreferencesRepository, Result, UserPreferences,
    UserPreferencesPatch, prepare_batch,
};

/// Preferences kept in process memory: the embedded default when no database
/// is configured, and a test double that behaves exactly like
/// [`crate::PgPreferencesRepository`] (both pass [`crate::testing`]).
///
/// One mutex guards everything, which makes each call atomic like a single
/// SQL statement; calls never await while holding it.
#[derive(Debug, Default)]
pub struct InMemoryPreferencesRepository {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    operations: HashMap<UserId, BTreeMap<OperationId, OperationPreference>>,
    users: HashMap<UserId, UserPreferences>,
}

impl InMemoryPreferencesRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write:
        // every write is computed first and applied without panicking paths.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl PreferencesRepository for InMemoryPreferencesRepository {
    async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Option<OperationPreference>> {
        Ok(self
            .state()
            .operations
            .get(&user)
            .and_then(|ops| ops.get(operation))
            .cloned())
    }

    async fn list_operation_preferences(&self, user: UserId) -> Result<Vec<OperationPreference>> {
        Ok(self
            .state()
            .operations
            .get(&user)
            .map(|ops| ops.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn update_operation_preference(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        patch.validate()?;
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let ops = state.operations.entry(user).or_default();
        check_version(
            expected_version,
            ops.get(&patch.operation_id).map(|row| row.version),
        )?;
        Ok(apply_patch(ops, user, &patch, now))
    }

    async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>> {
        let patches = prepare_batch(patches)?;
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let ops = state.operations.entry(user).or_default();
        Ok(patches
            .iter()
            .map(|patch| apply_patch(ops, user, patch, now))
            .collect())
    }

    async fn delete_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<bool> {
        Ok(self
            .state()
            .operations
            .get_mut(&user)
            .and_then(|ops| ops.remove(operation))
            .is_some())
    }

    async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        Ok(self.state().users.get(&user).cloned())
    }

    async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences> {
        patch.validate()?;
        let now = OffsetDateTime::now_utc();
        let mut state = self.state();
        let existing = state.users.get_mut(&user);
        check_version(expected_version, existing.as_ref().map(|row| row.version))?;
        Ok(match existing {
            Some(row) => {
                patch.apply_to(row, now);
                row.clone()
            }
            None => {
                let row = patch.to_new_row(user, now);
                state.users.insert(user, row.clone());
                row
            }
        })
    }
}

/// Applies one validated patch to the user's rows, creating the row if needed.
fn apply_patch(
    ops: &mut BTreeMap<OperationId, OperationPreference>,
    user: UserId,
    patch: &PreferencePatch,
    now: OffsetDateTime,
) -> OperationPreference {
    match ops.get_mut(&patch.operation_id) {
        Some(row) => {
            patch.apply_to(row, now);
            row.clone()
        }
        None => {
            let row = patch.to_new_row(user, now);
            ops.insert(row.operation_id.clone(), row.clone());
            row
        }
    }
}
