use async_trait::async_trait;
use opsdeck_core::db::constraint_violation;
use opsdeck_core::{ModelRef, OperationId, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::{
    OperationPreference, PreferencePatch, PreferencesRepository, Settings, Theme, UserPreferences,
    UserPreferencesPatch, prepare_batch,
};

/// Preferences in PostgreSQL (tables `opsdeck.user_operation_preferences` and
/// `opsdeck.user_preferences`, created by the workspace migrations).
///
/// Every statement filters on `user_id`, the leading column of every key.
#[derive(Debug, Clone)]
pub struct PgPreferencesRepository {
    pool: PgPool,
}

impl PgPreferencesRepository {
    /// A repository on `pool`; the schema must be migrated
    /// (`opsdeck::MIGRATOR`).
    pub fn new(pool: PgPool) -> Self {
        PgPreferencesRepository { pool }
    }

    /// The pool this repository uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn current_version(&self, user: UserId, operation: &OperationId) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT version FROM opsdeck.user_operation_preferences
             WHERE user_id = $1 AND operation_id = $2",
        )
        .bind(user)
        .bind(operation)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_db_error)
    }

    async fn current_user_version(&self, user: UserId) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT version FROM opsdeck.user_preferences WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)
    }
}

const GET_ONE: &str = "
    SELECT user_id, operation_id, enabled, preferred_model, settings, version, created_at, updated_at
    FROM opsdeck.user_operation_preferences
    WHERE user_id = $1 AND operation_id = $2";

const BULK_UPSERT: &str = include_str!("../queries/bulk_upsert.sql");

/// Creates the row or patches it; `$7 = false` refuses to touch an existing
/// row (expected version 0), in which case nothing is returned.
const UPSERT_ONE: &str = "
    INSERT INTO opsdeck.user_operation_preferences AS p
        (user_id, operation_id, enabled, preferred_model, settings)
    VALUES ($1, $2, COALESCE($3, true), CASE WHEN $4 THEN $5 END, COALESCE($6::jsonb, '{}'::jsonb))
    ON CONFLICT (user_id, operation_id) DO UPDATE
    SET enabled         = COALESCE($3, p.enabled),
        preferred_model = CASE WHEN $4 THEN $5 ELSE p.preferred_model END,
        settings        = COALESCE($6::jsonb, p.settings),
        version         = p.version + 1,
        updated_at      = now()
    WHERE $7
    RETURNING user_id, operation_id, enabled, preferred_model, settings, version, created_at, updated_at";

/// Patches the row only if it has version `$7`.
const UPDATE_ONE_IF_VERSION: &str = "
    UPDATE opsdeck.user_operation_preferences AS p
    SET enabled         = COALESCE($3, p.enabled),
        preferred_model = CASE WHEN $4 THEN $5 ELSE p.preferred_model END,
        settings        = COALESCE($6::jsonb, p.settings),
        version         = p.version + 1,
        updated_at      = now()
    WHERE p.user_id = $1 AND p.operation_id = $2 AND p.version = $7
    RETURNING user_id, operation_id, enabled, preferred_model, settings, version, created_at, updated_at";

const UPSERT_USER: &str = "
    INSERT INTO opsdeck.user_preferences AS p (user_id, theme, settings)
    VALUES ($1, COALESCE($2, 'system'), COALESCE($3::jsonb, '{}'::jsonb))
    ON CONFLICT (user_id) DO UPDATE
    SET theme      = COALESCE($2, p.theme),
        settings   = COALESCE($3::jsonb, p.settings),
        version    = p.version + 1,
        updated_at = now()
    WHERE $4
    RETURNING user_id, theme, settings, version, created_at, updated_at";

const UPDATE_USER_IF_VERSION: &str = "
    UPDATE opsdeck.user_preferences AS p
    SET theme      = COALESCE($2, p.theme),
        settings   = COALESCE($3::jsonb, p.settings),
        version    = p.version + 1,
        updated_at = now()
    WHERE p.user_id = $1 AND p.version = $4
    RETURNING user_id, theme, settings, version, created_at, updated_at";

#[async_trait]
impl PreferencesRepository for PgPreferencesRepository {
    #[tracing::instrument(name = "preferences.pg.get", skip(self), fields(%user, %operation))]
    async fn get_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<Option<OperationPreference>> {
        sqlx::query_as::<_, OperationRow>(GET_ONE)
            .bind(user)
            .bind(operation)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?
            .map(OperationRow::into_domain)
            .transpose()
    }

    #[tracing::instrument(name = "preferences.pg.list", skip(self), fields(%user, rows))]
    async fn list_operation_preferences(&self, user: UserId) -> Result<Vec<OperationPreference>> {
        let rows = sqlx::query_as::<_, OperationRow>(
            "SELECT user_id, operation_id, enabled, preferred_model, settings, version, created_at, updated_at
             FROM opsdeck.user_operation_preferences
             WHERE user_id = $1
             ORDER BY operation_id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        rows.into_iter().map(OperationRow::into_domain).collect()
    }

    #[tracing::instrument(
        name = "preferences.pg.upsert",
        skip(self, patch),
        fields(%user, operation = %patch.operation_id, ?expected_version)
    )]
    async fn update_operation_preference(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected_version: Option<i64>,
    ) -> Result<OperationPreference> {
        patch.validate()?;
        let (sql, guard) = match expected_version {
            None => (UPSERT_ONE, Guard::Flag(true)),
            Some(0) => (UPSERT_ONE, Guard::Flag(false)),
            Some(v) => (UPDATE_ONE_IF_VERSION, Guard::Version(v)),
        };
        let columns = PatchColumns::from(&patch);
        let query = sqlx::query_as::<_, OperationRow>(sql)
            .bind(user)
            .bind(&patch.operation_id)
            .bind(columns.enabled)
            .bind(columns.model_given)
            .bind(columns.preferred_model)
            .bind(columns.settings);
        let query = match guard {
            Guard::Flag(flag) => query.bind(flag),
            Guard::Version(v) => query.bind(v),
        };
        match query
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?
        {
            Some(row) => row.into_domain(),
            None => Err(Error::Conflict {
                expected: expected_version.unwrap_or_default(),
                actual: self.current_version(user, &patch.operation_id).await?,
            }),
        }
    }

    #[tracing::instrument(
        name = "preferences.pg.bulk_upsert",
        skip(self, patches),
        fields(%user, items = patches.len(), rows)
    )]
    async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>> {
        let patches = prepare_batch(patches)?;
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        let n = patches.len();
        let (mut ops, mut enabled, mut model_given, mut models, mut settings) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for patch in &patches {
            let columns = PatchColumns::from(patch);
            ops.push(patch.operation_id.as_str());
            enabled.push(columns.enabled);
            model_given.push(columns.model_given);
            models.push(columns.preferred_model);
            settings.push(columns.settings);
        }
        let rows = sqlx::query_as::<_, OperationRow>(BULK_UPSERT)
            .bind(user)
            .bind(ops)
            .bind(enabled)
            .bind(model_given)
            .bind(models)
            .bind(settings)
            .fetch_all(&self.pool)
            .await
            .map_err(map_db_error)?;
        tracing::Span::current().record("rows", rows.len());
        rows.into_iter().map(OperationRow::into_domain).collect()
    }

    #[tracing::instrument(name = "preferences.pg.delete", skip(self), fields(%user, %operation))]
    async fn delete_operation_preference(
        &self,
        user: UserId,
        operation: &OperationId,
    ) -> Result<bool> {
        let result = sqlx::query(
            "DELETE FROM opsdeck.user_operation_preferences WHERE user_id = $1 AND operation_id = $2",
        )
        .bind(user)
        .bind(operation)
        .execute(&self.pool)
        .await
        .map_err(map_db_error)?;
        Ok(result.rows_affected() > 0)
    }

    #[tracing::instrument(name = "preferences.pg.get_user_preferences", skip(self), fields(%user))]
    async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        sqlx::query_as::<_, UserRow>(
            "SELECT user_id, theme, settings, version, created_at, updated_at
             FROM opsdeck.user_preferences WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_db_error)?
        .map(UserRow::into_domain)
        .transpose()
    }

    #[tracing::instrument(
        name = "preferences.pg.set_user_preferences",
        skip(self, patch),
        fields(%user, ?expected_version)
    )]
    async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected_version: Option<i64>,
    ) -> Result<UserPreferences> {
        patch.validate()?;
        let theme = patch.theme.map(|t| t.as_str());
        let settings = patch.settings.as_ref().map(settings_text);
        let query = match expected_version {
            None | Some(0) => sqlx::query_as::<_, UserRow>(UPSERT_USER)
                .bind(user)
                .bind(theme)
                .bind(settings)
                .bind(expected_version.is_none()),
            Some(v) => sqlx::query_as::<_, UserRow>(UPDATE_USER_IF_VERSION)
                .bind(user)
                .bind(theme)
                .bind(settings)
                .bind(v),
        };
        match query
            .fetch_optional(&self.pool)
            .await
            .map_err(map_db_error)?
        {
            Some(row) => row.into_domain(),
            None => Err(Error::Conflict {
                expected: expected_version.unwrap_or_default(),
                actual: self.current_user_version(user).await?,
            }),
        }
    }
}

enum Guard {
    Flag(bool),
    Version(i64),
}

/// A patch as the nullable columns the SQL above expects.
struct PatchColumns<'a> {
    enabled: Option<bool>,
    model_given: bool,
    preferred_model: Option<&'a str>,
    settings: Option<String>,
}

impl<'a> From<&'a PreferencePatch> for PatchColumns<'a> {
    fn from(patch: &'a PreferencePatch) -> Self {
        PatchColumns {
            enabled: patch.enabled,
            model_given: patch.preferred_model.is_some(),
            preferred_model: patch
                .preferred_model
                .as_ref()
                .and_then(|m| m.as_ref().map(ModelRef::as_str)),
            settings: patch.settings.as_ref().map(settings_text),
        }
    }
}

fn settings_text(settings: &Settings) -> String {
    // Serializing a Map<String, Value> cannot fail.
    serde_json::to_string(settings).unwrap_or_else(|_| "{}".to_string())
}

#[derive(sqlx::FromRow)]
struct OperationRow {
    user_id: UserId,
    operation_id: String,
    enabled: bool,
    preferred_model: Option<String>,
    settings: serde_json::Value,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl OperationRow {
    fn into_domain(self) -> Result<OperationPreference> {
        let corrupt = |what: String| Error::Corrupt(format!("user {}: {what}", self.user_id));
        Ok(OperationPreference {
            user_id: self.user_id,
            operation_id: OperationId::parse(&self.operation_id)
                .map_err(|e| corrupt(e.to_string()))?,
            enabled: self.enabled,
            preferred_model: self
                .preferred_model
                .as_deref()
                .map(ModelRef::parse)
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?,
            settings: into_settings(self.settings).map_err(corrupt)?,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: UserId,
    theme: String,
    settings: serde_json::Value,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl UserRow {
    fn into_domain(self) -> Result<UserPreferences> {
        let corrupt = |what: String| Error::Corrupt(format!("user {}: {what}", self.user_id));
        Ok(UserPreferences {
            user_id: self.user_id,
            theme: self
                .theme
                .parse::<Theme>()
                .map_err(|e| corrupt(e.to_string()))?,
            settings: into_settings(self.settings).map_err(corrupt)?,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn into_settings(value: serde_json::Value) -> std::result::Result<Settings, String> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err("settings is not a JSON object".to_string()),
    }
}

/// The CHECK constraints of the preferences tables and the field each guards.
/// The Rust types already enforce them, so a violation means input bypassed
/// the types; anything else is a database error.
const CONSTRAINTS: &[(&str, &str)] = &[
    (
        "user_operation_preferences_operation_id_check",
        "operation_id",
    ),
    (
        "user_operation_preferences_preferred_model_check",
        "preferred_model",
    ),
    ("user_operation_preferences_settings_check", "settings"),
    ("user_operation_preferences_version_check", "version"),
    ("user_preferences_theme_check", "theme"),
    ("user_preferences_settings_check", "settings"),
    ("user_preferences_version_check", "version"),
];

fn map_db_error(error: sqlx::Error) -> Error {
    match constraint_violation(&error, CONSTRAINTS) {
        Some(refusal) => Error::Validation(refusal),
        None => Error::Database(error),
    }
}
