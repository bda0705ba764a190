use opsdeck_core::{ModelRef, OperationId, Snippet, UserId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::MAX_SETTINGS_BYTES;
use crate::error::{Error, Result};

/// Free-form settings of an operation or a user: always a JSON object.
pub type Settings = serde_json::Map<String, Value>;

/// A user's preference for one operation, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationPreference {
    /// The owner.
    pub user_id: UserId,
    /// The operation.
    pub operation_id: OperationId,
    /// Whether the user runs this operation at all.
    pub enabled: bool,
    /// The model to run it on; `None` means the application's default.
    pub preferred_model: Option<ModelRef>,
    /// Operation-specific settings.
    pub settings: Settings,
    /// Starts at 1, grows by one on every change; use it for optimistic concurrency.
    pub version: i64,
    /// When the row was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the row last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A typed change to one operation preference: `None` fields stay as they are.
///
/// ```
/// use opsdeck_preferences::PreferencePatch;
/// let patch = PreferencePatch::new("summarize".parse().unwrap())
///     .enabled(true)
///     .preferred_model(Some("anthropic/claude-sonnet-4".parse().unwrap()));
/// assert_eq!(patch.enabled, Some(true));
/// assert!(patch.settings.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePatch {
    /// The operation the patch applies to.
    pub operation_id: OperationId,
    /// New `enabled`, if it changes.
    pub enabled: Option<bool>,
    /// New preferred model, if it changes (`Some(None)` clears it).
    pub preferred_model: Option<Option<ModelRef>>,
    /// New settings object (replaces the old one whole), if it changes.
    pub settings: Option<Settings>,
}

impl PreferencePatch {
    /// A patch that changes nothing yet (applied to a missing row it creates
    /// one with defaults).
    pub fn new(operation_id: OperationId) -> Self {
        PreferencePatch {
            operation_id,
            enabled: None,
            preferred_model: None,
            settings: None,
        }
    }

    /// Sets `enabled`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Sets (or, with `None`, clears) the preferred model.
    pub fn preferred_model(mut self, model: Option<ModelRef>) -> Self {
        self.preferred_model = Some(model);
        self
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Folds a later patch of the same operation into this one: fields the
    /// later patch sets win.
    pub(crate) fn merge(&mut self, later: PreferencePatch) {
        debug_assert_eq!(self.operation_id, later.operation_id);
        if later.enabled.is_some() {
            self.enabled = later.enabled;
        }
        if later.preferred_model.is_some() {
            self.preferred_model = later.preferred_model;
        }
        if later.settings.is_some() {
            self.settings = later.settings;
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(settings) = &self.settings {
            validate_settings(settings).map_err(|reason| {
                Error::of_operation("settings", self.operation_id.as_str(), reason)
            })?;
        }
        Ok(())
    }

    /// The row this patch produces when no row exists yet.
    pub(crate) fn to_new_row(&self, user: UserId, now: OffsetDateTime) -> OperationPreference {
        OperationPreference {
            user_id: user,
            operation_id: self.operation_id.clone(),
            enabled: self.enabled.unwrap_or(true),
            preferred_model: self.preferred_model.clone().flatten(),
            settings: self.settings.clone().unwrap_or_default(),
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// Applies this patch to an existing row.
    pub(crate) fn apply_to(&self, row: &mut OperationPreference, now: OffsetDateTime) {
        if let Some(enabled) = self.enabled {
            row.enabled = enabled;
        }
        if let Some(model) = &self.preferred_model {
            row.preferred_model = model.clone();
        }
        if let Some(settings) = &self.settings {
            row.settings = settings.clone();
        }
        row.version += 1;
        row.updated_at = now;
    }
}

/// An untyped change to one operation preference, as a settings UI sends it
/// (JSON). [`crate::PreferencesService`] parses it into a [`PreferencePatch`];
/// an invalid one is refused with an error naming it.
///
/// ```
/// use opsdeck_preferences::PreferenceUpdate;
/// let raw: PreferenceUpdate = serde_json::from_str(
///     r#"{"operation_id": "summarize", "enabled": false, "preferred_model": null}"#,
/// ).unwrap();
/// let patch = raw.parse().unwrap();
/// assert_eq!(patch.preferred_model, Some(None)); // null clears the model
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreferenceUpdate {
    /// The operation id as given.
    pub operation_id: String,
    /// New `enabled`, if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Absent: unchanged; `null`: cleared; a string: `provider/model`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_model: Option<Option<String>>,
    /// New settings; must be a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
}

/// Distinguishes a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl TryFrom<PreferenceUpdate> for PreferencePatch {
    type Error = Error;

    /// Parses raw input; see [`PreferenceUpdate::parse`].
    fn try_from(update: PreferenceUpdate) -> Result<Self> {
        update.parse()
    }
}

impl PreferenceUpdate {
    /// An update of `operation_id` that changes nothing yet.
    pub fn new(operation_id: impl Into<String>) -> Self {
        PreferenceUpdate {
            operation_id: operation_id.into(),
            ..Self::default()
        }
    }

    /// Sets `enabled`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Sets the preferred model (`provider/model`).
    pub fn preferred_model(mut self, model: impl Into<String>) -> Self {
        self.preferred_model = Some(Some(model.into()));
        self
    }

    /// Clears the preferred model.
    pub fn clear_preferred_model(mut self) -> Self {
        self.preferred_model = Some(None);
        self
    }

    /// Sets the settings object.
    pub fn settings(mut self, settings: Value) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Parses into a typed patch.
    pub fn parse(self) -> Result<PreferencePatch> {
        let raw_op = self.operation_id;
        let operation_id = OperationId::parse(&raw_op)
            .map_err(|e| Error::of_operation("operation_id", &raw_op, e))?;
        let preferred_model = match self.preferred_model {
            None => None,
            Some(None) => Some(None),
            Some(Some(text)) => {
                Some(Some(ModelRef::parse(&text).map_err(|e| {
                    Error::of_operation("preferred_model", &raw_op, e)
                })?))
            }
        };
        let settings = match self.settings {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(Error::of_operation(
                    "settings",
                    &raw_op,
                    format!("settings must be a JSON object, got {}", json_kind(&other)),
                ));
            }
        };
        let patch = PreferencePatch {
            operation_id,
            enabled: self.enabled,
            preferred_model,
            settings,
        };
        patch.validate()?;
        Ok(patch)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Settings must fit in [`MAX_SETTINGS_BYTES`] and must not contain NUL
/// characters, which PostgreSQL's `jsonb` cannot store (refusing them here
/// keeps the in-memory and PostgreSQL backends in agreement).
pub(crate) fn validate_settings(settings: &Settings) -> std::result::Result<(), String> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    let size = serde_json::to_vec(settings)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_SETTINGS_BYTES {
        return Err(format!(
            "settings are {size} bytes of JSON; the maximum is {MAX_SETTINGS_BYTES}"
        ));
    }
    if settings.iter().any(|(k, v)| k.contains('\0') || has_nul(v)) {
        return Err("settings must not contain NUL characters".to_string());
    }
    Ok(())
}

/// The user's colour theme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Light theme.
    Light,
    /// Dark theme.
    Dark,
    /// Follow the operating system.
    #[default]
    System,
}

impl Theme {
    /// The stored text: `light`, `dark` or `system`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Theme::Light => "light",
            Theme::Dark => "dark",
            Theme::System => "system",
        }
    }
}

impl std::str::FromStr for Theme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "light" => Ok(Theme::Light),
            "dark" => Ok(Theme::Dark),
            "system" => Ok(Theme::System),
            other => Err(Error::invalid(
                "theme",
                format!(
                    "theme must be light, dark or system, got {:?}",
                    Snippet::new(other).as_str()
                ),
            )),
        }
    }
}

/// User-level preferences, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserPreferences {
    /// The owner.
    pub user_id: UserId,
    /// Colour theme.
    pub theme: Theme,
    /// Other user-level settings.
    pub settings: Settings,
    /// Starts at 1, grows by one on every change.
    pub version: i64,
    /// When the row was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the row last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A change to user-level preferences: `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPreferencesPatch {
    /// New theme, if it changes.
    #[serde(default)]
    pub theme: Option<Theme>,
    /// New settings object (replaces the old one whole), if it changes.
    #[serde(default)]
    pub settings: Option<Settings>,
}

impl UserPreferencesPatch {
    /// Sets the theme.
    pub fn theme(mut self, theme: Theme) -> Self {
        self.theme = Some(theme);
        self
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(settings) = &self.settings {
            validate_settings(settings).map_err(|reason| Error::invalid("settings", reason))?;
        }
        Ok(())
    }

    pub(crate) fn to_new_row(&self, user: UserId, now: OffsetDateTime) -> UserPreferences {
        UserPreferences {
            user_id: user,
            theme: self.theme.unwrap_or_default(),
            settings: self.settings.clone().unwrap_or_default(),
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    pub(crate) fn apply_to(&self, row: &mut UserPreferences, now: OffsetDateTime) {
        if let Some(theme) = self.theme {
            row.theme = theme;
        }
        if let Some(settings) = &self.settings {
            row.settings = settings.clone();
        }
        row.version += 1;
        row.updated_at = now;
    }
}

/// Checks an `expected_version` against what is stored (`None`: no row).
pub(crate) fn check_version(expected: Option<i64>, actual: Option<i64>) -> Result<()> {
    match (expected, actual) {
        (None, _) | (Some(0), None) => Ok(()),
        (Some(e), Some(a)) if e == a => Ok(()),
        (Some(expected), actual) => Err(Error::Conflict { expected, actual }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_value_models_are_distinct() {
        let absent: PreferenceUpdate = serde_json::from_str(r#"{"operation_id":"a"}"#).unwrap();
        let null: PreferenceUpdate =
            serde_json::from_str(r#"{"operation_id":"a","preferred_model":null}"#).unwrap();
        let set: PreferenceUpdate =
            serde_json::from_str(r#"{"operation_id":"a","preferred_model":"x/y"}"#).unwrap();
        assert_eq!(absent.parse().unwrap().preferred_model, None);
        assert_eq!(null.parse().unwrap().preferred_model, Some(None));
        assert_eq!(
            set.parse().unwrap().preferred_model,
            Some(Some("x/y".parse().unwrap()))
        );
    }

    #[test]
    fn bad_fields_name_the_operation() {
        let err = PreferenceUpdate::new("summarize")
            .preferred_model("no-slash")
            .parse()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Validation(v)
                if v.field == "preferred_model" && v.reason.starts_with("operation \"summarize\":")),
            "{err:?}"
        );
        let err = PreferenceUpdate::new("x")
            .settings(serde_json::json!([1]))
            .parse()
            .unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
        let err = PreferenceUpdate::new("x")
            .settings(serde_json::json!({"k": "a\u{0}b"}))
            .parse()
            .unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn later_patches_win_field_by_field() {
        let op: OperationId = "a".parse().unwrap();
        let mut first = PreferencePatch::new(op.clone())
            .enabled(false)
            .preferred_model(Some("x/y".parse().unwrap()));
        first.merge(PreferencePatch::new(op).enabled(true));
        assert_eq!(first.enabled, Some(true));
        assert_eq!(first.preferred_model, Some(Some("x/y".parse().unwrap())));
    }

    #[test]
    fn version_rules() {
        assert!(check_version(None, Some(3)).is_ok());
        assert!(check_version(Some(0), None).is_ok());
        assert!(check_version(Some(3), Some(3)).is_ok());
        assert!(matches!(
            check_version(Some(0), Some(1)),
            Err(Error::Conflict {
                expected: 0,
                actual: Some(1)
            })
        ));
        assert!(matches!(
            check_version(Some(2), None),
            Err(Error::Conflict {
                expected: 2,
                actual: None
            })
        ));
    }
}
