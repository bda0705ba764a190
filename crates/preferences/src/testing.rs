//! The conformance suite every [`PreferencesRepository`] backend must pass.
//!
//! Each check creates its own random users, so checks can share one
//! database and run in any order. Backends call [`run_all`] (or single
//! checks) from their integration tests; see `tests/preferences/` for the
//! PostgreSQL and in-memory runs.
//!
//! The checks panic with a message on failure, like assertions in a test.

use opsdeck_core::{OperationId, UserId};
use serde_json::json;

use crate::{
    Error, MAX_BATCH, MAX_SETTINGS_BYTES, PreferencePatch, PreferencesRepository, Settings, Theme,
    UserPreferencesPatch,
};

fn op(s: &str) -> OperationId {
    OperationId::parse(s).expect("valid operation id in test")
}

fn settings(value: serde_json::Value) -> Settings {
    match value {
        serde_json::Value::Object(map) => map,
        _ => panic!("test settings must be an object"),
    }
}

/// Runs every check of the suite against `repo`.
pub async fn run_all(repo: &dyn PreferencesRepository) {
    missing_rows_read_as_none(repo).await;
    upsert_creates_with_defaults_then_patches(repo).await;
    bulk_upsert_creates_and_returns_sorted_rows(repo).await;
    bulk_upsert_changes_only_given_fields(repo).await;
    bulk_upsert_merges_repeated_operations(repo).await;
    bulk_upsert_refuses_oversized_batch(repo).await;
    bulk_upsert_with_one_bad_item_writes_nothing(repo).await;
    bulk_upsert_of_nothing_is_a_no_op(repo).await;
    users_are_isolated(repo).await;
    delete_reports_whether_a_row_existed(repo).await;
    expected_version_guards_operation_preferences(repo).await;
    user_preferences_patch_and_version(repo).await;
}

/// Reads of absent rows are `None`/empty, not errors.
pub async fn missing_rows_read_as_none(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    assert_eq!(
        repo.get_operation_preference(user, &op("summarize"))
            .await
            .unwrap(),
        None
    );
    assert!(
        repo.list_operation_preferences(user)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(repo.get_user_preferences(user).await.unwrap(), None);
}

/// `upsert` creates with defaults, then changes only what the patch sets.
pub async fn upsert_creates_with_defaults_then_patches(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let created = repo
        .update_operation_preference(user, PreferencePatch::new(op("summarize")), None)
        .await
        .unwrap();
    assert!(created.enabled, "enabled defaults to true");
    assert_eq!(created.preferred_model, None);
    assert!(created.settings.is_empty());
    assert_eq!(created.version, 1);
    assert_eq!(created.user_id, user);

    let model = "anthropic/claude-sonnet-4".parse().unwrap();
    let patched = repo
        .update_operation_preference(
            user,
            PreferencePatch::new(op("summarize")).preferred_model(Some(model)),
            None,
        )
        .await
        .unwrap();
    assert!(patched.enabled, "enabled was not in the patch");
    assert_eq!(
        patched.preferred_model.as_ref().map(|m| m.as_str()),
        Some("anthropic/claude-sonnet-4")
    );
    assert_eq!(patched.version, 2);
    assert_eq!(patched.created_at, created.created_at);
    assert!(patched.updated_at >= created.updated_at);

    let cleared = repo
        .update_operation_preference(
            user,
            PreferencePatch::new(op("summarize")).preferred_model(None),
            None,
        )
        .await
        .unwrap();
    assert_eq!(cleared.preferred_model, None, "Some(None) clears the model");
    assert_eq!(
        repo.get_operation_preference(user, &op("summarize"))
            .await
            .unwrap(),
        Some(cleared)
    );
}

/// A bulk write creates rows and returns them ordered by operation id.
pub async fn bulk_upsert_creates_and_returns_sorted_rows(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let saved = repo
        .bulk_update_operation_preferences(
            user,
            vec![
                PreferencePatch::new(op("translate")).enabled(false),
                PreferencePatch::new(op("classify")).settings(settings(json!({"labels": 3}))),
                PreferencePatch::new(op("summarize"))
                    .preferred_model(Some("deepseek/deepseek-chat".parse().unwrap())),
            ],
        )
        .await
        .unwrap();
    let names: Vec<_> = saved.iter().map(|p| p.operation_id.as_str()).collect();
    assert_eq!(names, ["classify", "summarize", "translate"]);
    assert!(!saved[2].enabled);
    assert_eq!(saved[0].settings.get("labels"), Some(&json!(3)));
    assert!(saved.iter().all(|p| p.version == 1 && p.user_id == user));
    assert_eq!(repo.list_operation_preferences(user).await.unwrap(), saved);
}

/// Patch semantics: fields a patch leaves out keep their values.
pub async fn bulk_upsert_changes_only_given_fields(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let model = "anthropic/claude-sonnet-4".parse().unwrap();
    repo.bulk_update_operation_preferences(
        user,
        vec![
            PreferencePatch::new(op("a"))
                .enabled(false)
                .preferred_model(Some(model))
                .settings(settings(json!({"k": 1}))),
            PreferencePatch::new(op("b")).enabled(false),
        ],
    )
    .await
    .unwrap();
    let saved = repo
        .bulk_update_operation_preferences(
            user,
            vec![
                PreferencePatch::new(op("a")).enabled(true),
                PreferencePatch::new(op("b")).settings(settings(json!({"x": true}))),
            ],
        )
        .await
        .unwrap();
    let (a, b) = (&saved[0], &saved[1]);
    assert!(a.enabled);
    assert_eq!(
        a.preferred_model.as_ref().map(|m| m.as_str()),
        Some("anthropic/claude-sonnet-4"),
        "model kept"
    );
    assert_eq!(a.settings.get("k"), Some(&json!(1)), "settings kept");
    assert!(!b.enabled, "enabled kept");
    assert_eq!(b.settings.get("x"), Some(&json!(true)));
    assert_eq!((a.version, b.version), (2, 2));
}

/// Repeated operation ids in one batch are merged, later items winning field by field.
pub async fn bulk_upsert_merges_repeated_operations(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let saved = repo
        .bulk_update_operation_preferences(
            user,
            vec![
                PreferencePatch::new(op("a"))
                    .enabled(false)
                    .preferred_model(Some("x/one".parse().unwrap())),
                PreferencePatch::new(op("b")),
                PreferencePatch::new(op("a")).enabled(true),
                PreferencePatch::new(op("a")).preferred_model(Some("x/two".parse().unwrap())),
            ],
        )
        .await
        .unwrap();
    assert_eq!(saved.len(), 2, "one row per operation");
    assert!(saved[0].enabled);
    assert_eq!(saved[0].preferred_model.as_ref().unwrap().as_str(), "x/two");
    assert_eq!(
        saved[0].version, 1,
        "merged before writing: one write per row"
    );
}

/// A batch over [`MAX_BATCH`] is refused whole.
pub async fn bulk_upsert_refuses_oversized_batch(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let batch: Vec<_> = (0..=MAX_BATCH)
        .map(|i| PreferencePatch::new(op(&format!("op{i}"))))
        .collect();
    let err = repo
        .bulk_update_operation_preferences(user, batch)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { len, max } if len == MAX_BATCH + 1 && max == MAX_BATCH),
        "{err:?}"
    );
    assert!(
        repo.list_operation_preferences(user)
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
}

/// One invalid item fails the batch, names the item, and nothing is written.
pub async fn bulk_upsert_with_one_bad_item_writes_nothing(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    repo.update_operation_preference(user, PreferencePatch::new(op("keep")).enabled(true), None)
        .await
        .unwrap();
    let huge = "x".repeat(MAX_SETTINGS_BYTES);
    let err = repo
        .bulk_update_operation_preferences(
            user,
            vec![
                PreferencePatch::new(op("keep")).enabled(false),
                PreferencePatch::new(op("new")),
                PreferencePatch::new(op("bad")).settings(settings(json!({ "blob": huge }))),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v)
            if v.item == Some(2) && v.field == "settings" && v.reason.starts_with("operation \"bad\":")),
        "{err:?}"
    );
    let rows = repo.list_operation_preferences(user).await.unwrap();
    assert_eq!(rows.len(), 1, "the new row was not written");
    assert!(
        rows[0].enabled && rows[0].version == 1,
        "the existing row is unchanged"
    );

    let err = repo
        .bulk_update_operation_preferences(
            user,
            vec![PreferencePatch::new(op("nul")).settings(settings(json!({"k": "a\u{0}"})))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v) if v.item == Some(0)),
        "{err:?}"
    );
    assert_eq!(
        repo.list_operation_preferences(user).await.unwrap().len(),
        1
    );
}

/// An empty batch writes nothing and returns nothing.
pub async fn bulk_upsert_of_nothing_is_a_no_op(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    assert!(
        repo.bulk_update_operation_preferences(user, Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        repo.list_operation_preferences(user)
            .await
            .unwrap()
            .is_empty()
    );
}

/// No call for user A reads or changes user B's rows.
pub async fn users_are_isolated(repo: &dyn PreferencesRepository) {
    let (a, b) = (UserId::random(), UserId::random());
    let before = repo
        .bulk_update_operation_preferences(
            b,
            vec![
                PreferencePatch::new(op("shared")).enabled(true),
                PreferencePatch::new(op("only-b")).enabled(true),
            ],
        )
        .await
        .unwrap();
    repo.bulk_update_operation_preferences(
        a,
        vec![
            PreferencePatch::new(op("shared")).enabled(false),
            PreferencePatch::new(op("only-a")),
        ],
    )
    .await
    .unwrap();
    repo.update_operation_preference(a, PreferencePatch::new(op("shared")).enabled(false), None)
        .await
        .unwrap();
    assert_eq!(
        repo.list_operation_preferences(b).await.unwrap(),
        before,
        "B's rows are untouched"
    );
    assert_eq!(
        repo.get_operation_preference(a, &op("only-b"))
            .await
            .unwrap(),
        None
    );
    assert!(
        !repo
            .delete_operation_preference(a, &op("only-b"))
            .await
            .unwrap()
    );
    assert_eq!(repo.list_operation_preferences(b).await.unwrap().len(), 2);
    let a_ops: Vec<_> = repo
        .list_operation_preferences(a)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.operation_id.to_string())
        .collect();
    assert_eq!(a_ops, ["only-a", "shared"]);
}

/// `delete` says whether it removed something; deleting twice is fine.
pub async fn delete_reports_whether_a_row_existed(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    repo.update_operation_preference(user, PreferencePatch::new(op("gone")), None)
        .await
        .unwrap();
    assert!(
        repo.delete_operation_preference(user, &op("gone"))
            .await
            .unwrap()
    );
    assert!(
        !repo
            .delete_operation_preference(user, &op("gone"))
            .await
            .unwrap()
    );
    assert_eq!(
        repo.get_operation_preference(user, &op("gone"))
            .await
            .unwrap(),
        None
    );
}

/// A wrong `expected_version` is a conflict and writes nothing.
pub async fn expected_version_guards_operation_preferences(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let err = repo
        .update_operation_preference(user, PreferencePatch::new(op("a")), Some(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 3,
                actual: None
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        repo.get_operation_preference(user, &op("a")).await.unwrap(),
        None,
        "not created"
    );

    let created = repo
        .update_operation_preference(user, PreferencePatch::new(op("a")).enabled(false), Some(0))
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    let err = repo
        .update_operation_preference(user, PreferencePatch::new(op("a")).enabled(true), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 0,
                actual: Some(1)
            }
        ),
        "{err:?}"
    );
    let err = repo
        .update_operation_preference(user, PreferencePatch::new(op("a")).enabled(true), Some(7))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 7,
                actual: Some(1)
            }
        ),
        "{err:?}"
    );
    assert!(
        !repo
            .get_operation_preference(user, &op("a"))
            .await
            .unwrap()
            .unwrap()
            .enabled,
        "unchanged"
    );

    let updated = repo
        .update_operation_preference(user, PreferencePatch::new(op("a")).enabled(true), Some(1))
        .await
        .unwrap();
    assert!(updated.enabled);
    assert_eq!(updated.version, 2);
}

/// User-level preferences: defaults, patches, versions and conflicts.
pub async fn user_preferences_patch_and_version(repo: &dyn PreferencesRepository) {
    let user = UserId::random();
    let created = repo
        .set_user_preferences(user, UserPreferencesPatch::default(), None)
        .await
        .unwrap();
    assert_eq!(created.theme, Theme::System);
    assert_eq!(created.version, 1);

    let dark = repo
        .set_user_preferences(
            user,
            UserPreferencesPatch::default().theme(Theme::Dark),
            Some(1),
        )
        .await
        .unwrap();
    assert_eq!((dark.theme, dark.version), (Theme::Dark, 2));

    let with_settings = repo
        .set_user_preferences(
            user,
            UserPreferencesPatch::default().settings(settings(json!({"density": "compact"}))),
            None,
        )
        .await
        .unwrap();
    assert_eq!(with_settings.theme, Theme::Dark, "theme kept");
    assert_eq!(with_settings.version, 3);

    let err = repo
        .set_user_preferences(
            user,
            UserPreferencesPatch::default().theme(Theme::Light),
            Some(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 2,
                actual: Some(3)
            }
        ),
        "{err:?}"
    );
    let err = repo
        .set_user_preferences(UserId::random(), UserPreferencesPatch::default(), Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 1,
                actual: None
            }
        ),
        "{err:?}"
    );
    let stored = repo.get_user_preferences(user).await.unwrap().unwrap();
    assert_eq!(stored, with_settings, "conflicts wrote nothing");

    let err = repo
        .set_user_preferences(
            user,
            UserPreferencesPatch::default().settings(settings(json!({"k": "\u{0}"}))),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)), "{err:?}");
    assert_eq!(
        repo.get_user_preferences(user)
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
}
