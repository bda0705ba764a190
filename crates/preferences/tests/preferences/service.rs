//! The cached service: invalidation on every write path, the load/invalidate
//! race, cache hits that never reach the repository, and bad input.

use std::sync::Arc;

use async_trait::async_trait;
use opsdeck_core::{OperationId, UserId};
use opsdeck_preferences::{
    Error, InMemoryPreferencesRepository, MAX_BATCH, MockPreferencesRepository,
    OperationPreference, PgPreferencesRepository, PreferencePatch, PreferenceUpdate,
    PreferencesRepository, PreferencesService, Result, Theme, UserPreferences,
    UserPreferencesPatch,
};
use sqlx::PgPool;
use tokio::sync::{Mutex, oneshot};

async fn reads_see_every_write(service: &PreferencesService) {
    let user = UserId::random();
    // Single write path.
    assert_eq!(
        service
            .get_operation_preference(user, "summarize")
            .await
            .unwrap(),
        None
    );
    service
        .update_operation_preference(
            user,
            PreferenceUpdate::new("summarize").enabled(false),
            None,
        )
        .await
        .unwrap();
    let one = service
        .get_operation_preference(user, "summarize")
        .await
        .unwrap()
        .unwrap();
    assert!(!one.enabled, "the cached 'none' was invalidated");

    // Bulk write path: both the per-operation and the list entries.
    assert_eq!(
        service
            .list_operation_preferences(user)
            .await
            .unwrap()
            .len(),
        1
    );
    service
        .bulk_update_operation_preferences(
            user,
            vec![
                PreferenceUpdate::new("summarize").enabled(true),
                PreferenceUpdate::new("translate").preferred_model("deepseek/deepseek-chat"),
            ],
        )
        .await
        .unwrap();
    assert!(
        service
            .get_operation_preference(user, "summarize")
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    assert_eq!(
        service
            .list_operation_preferences(user)
            .await
            .unwrap()
            .len(),
        2
    );

    // Delete path.
    assert!(
        service
            .delete_operation_preference(user, "translate")
            .await
            .unwrap()
    );
    assert_eq!(
        service
            .get_operation_preference(user, "translate")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        service
            .list_operation_preferences(user)
            .await
            .unwrap()
            .len(),
        1
    );

    // User-level preferences.
    assert_eq!(service.get_user_preferences(user).await.unwrap(), None);
    service.set_theme(user, Theme::Dark).await.unwrap();
    let prefs = service.get_user_preferences(user).await.unwrap().unwrap();
    assert_eq!(prefs.theme, Theme::Dark);

    // And the reads in between were served from the cache.
    let stats = service.cache_stats();
    assert!(stats.hits == 0 || stats.hit_ratio() > 0.0);
    let before = service.cache_stats();
    service
        .get_operation_preference(user, "summarize")
        .await
        .unwrap();
    service
        .get_operation_preference(user, "summarize")
        .await
        .unwrap();
    let after = service.cache_stats();
    assert_eq!(after.hits, before.hits + 2, "repeat reads are cache hits");
}

#[sqlx::test(migrations = "../../migrations")]
async fn postgres_reads_see_every_write(pool: PgPool) {
    reads_see_every_write(&PreferencesService::new(Arc::new(
        PgPreferencesRepository::new(pool),
    )))
    .await;
}

#[tokio::test]
async fn in_memory_reads_see_every_write() {
    reads_see_every_write(&PreferencesService::new(Arc::new(
        InMemoryPreferencesRepository::new(),
    )))
    .await;
}

#[tokio::test]
async fn cache_hits_and_not_found_never_reach_the_repository() {
    let mut mock = MockPreferencesRepository::new();
    mock.expect_get_operation_preference()
        .times(1)
        .returning(|_, _| Ok(None));
    mock.expect_list_operation_preferences()
        .times(1)
        .returning(|_| Ok(Vec::new()));
    let service = PreferencesService::new(Arc::new(mock));
    let user = UserId::random();
    for _ in 0..5 {
        assert_eq!(
            service
                .get_operation_preference(user, "summarize")
                .await
                .unwrap(),
            None
        );
        assert!(
            service
                .list_operation_preferences(user)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let stats = service.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.loads), (8, 2, 2));
    // The mock panics on drop if `get`/`list` were called more than once.
}

/// A repository whose next `get` blocks until released, to stage a read that
/// started before a write and finishes after it.
#[derive(Debug)]
struct GatedRepository {
    inner: InMemoryPreferencesRepository,
    gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

#[async_trait]
impl PreferencesRepository for GatedRepository {
    async fn get_operation_preference(
        &self,
        user: UserId,
        op: &OperationId,
    ) -> Result<Option<OperationPreference>> {
        let stale = self.inner.get_operation_preference(user, op).await;
        // Take the gate in its own statement: holding the lock while parked
        // would block the writer's own read-back.
        let gate = self.gate.lock().await.take();
        if let Some((started, release)) = gate {
            started.send(()).unwrap();
            release.await.unwrap();
        }
        stale
    }
    async fn list_operation_preferences(&self, user: UserId) -> Result<Vec<OperationPreference>> {
        self.inner.list_operation_preferences(user).await
    }
    async fn update_operation_preference(
        &self,
        user: UserId,
        patch: PreferencePatch,
        expected: Option<i64>,
    ) -> Result<OperationPreference> {
        self.inner
            .update_operation_preference(user, patch, expected)
            .await
    }
    async fn bulk_update_operation_preferences(
        &self,
        user: UserId,
        patches: Vec<PreferencePatch>,
    ) -> Result<Vec<OperationPreference>> {
        self.inner
            .bulk_update_operation_preferences(user, patches)
            .await
    }
    async fn delete_operation_preference(&self, user: UserId, op: &OperationId) -> Result<bool> {
        self.inner.delete_operation_preference(user, op).await
    }
    async fn get_user_preferences(&self, user: UserId) -> Result<Option<UserPreferences>> {
        self.inner.get_user_preferences(user).await
    }
    async fn set_user_preferences(
        &self,
        user: UserId,
        patch: UserPreferencesPatch,
        expected: Option<i64>,
    ) -> Result<UserPreferences> {
        self.inner.set_user_preferences(user, patch, expected).await
    }
}

#[tokio::test]
async fn a_read_racing_a_write_never_leaves_the_old_value_cached() {
    for bulk in [false, true] {
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let repo = Arc::new(GatedRepository {
            inner: InMemoryPreferencesRepository::new(),
            gate: Mutex::new(None),
        });
        let service = PreferencesService::new(repo.clone());
        let user = UserId::random();
        service
            .update_operation_preference(user, PreferenceUpdate::new("op").enabled(false), None)
            .await
            .unwrap();
        // The write above warmed the cache; start the race from a miss.
        service.invalidate_user(user).await;
        *repo.gate.lock().await = Some((started_tx, release_rx));

        // The read loads the old row, then stalls.
        let reader = {
            let service = service.clone();
            tokio::spawn(async move { service.get_operation_preference(user, "op").await })
        };
        started_rx.await.unwrap();
        // The write lands and invalidates while the read is in flight.
        let update = PreferenceUpdate::new("op").enabled(true);
        if bulk {
            service
                .bulk_update_operation_preferences(user, vec![update])
                .await
                .unwrap();
        } else {
            service
                .update_operation_preference(user, update, None)
                .await
                .unwrap();
        }
        release_tx.send(()).unwrap();
        let old = reader.await.unwrap().unwrap().unwrap();
        assert!(!old.enabled, "the racing read answers with what it read");

        let now = service
            .get_operation_preference(user, "op")
            .await
            .unwrap()
            .unwrap();
        assert!(
            now.enabled,
            "bulk={bulk}: the stale read must not have been cached"
        );
        assert!(service.cache_stats().stale_loads_discarded >= 1);
    }
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let repo = Arc::new(InMemoryPreferencesRepository::new());
    let service = PreferencesService::new(repo.clone());
    let user = UserId::random();
    let good = || PreferenceUpdate::new("good").enabled(true);

    let cases: Vec<(Vec<PreferenceUpdate>, usize, &str)> = vec![
        (vec![good(), PreferenceUpdate::new("")], 1, ""),
        (
            vec![good(), good(), PreferenceUpdate::new("Bad Id")],
            2,
            "Bad Id",
        ),
        (
            vec![
                PreferenceUpdate::new("m").preferred_model("not-a-model"),
                good(),
            ],
            0,
            "m",
        ),
        (
            vec![
                good(),
                PreferenceUpdate::new("s").settings(serde_json::json!("text")),
            ],
            1,
            "s",
        ),
    ];
    for (batch, bad_index, bad_op) in cases {
        let err = service
            .bulk_update_operation_preferences(user, batch)
            .await
            .unwrap_err();
        match &err {
            Error::Validation(v) => {
                assert_eq!(v.item, Some(bad_index), "{err}");
                assert!(
                    v.reason.starts_with(&format!("operation {bad_op:?}:")),
                    "{err}"
                );
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("item {bad_index}")),
            "{err}"
        );
    }

    let oversized = vec![good(); MAX_BATCH + 1];
    assert!(matches!(
        service
            .bulk_update_operation_preferences(user, oversized)
            .await,
        Err(Error::BatchTooLarge { .. })
    ));
    assert!(matches!(
        service.get_operation_preference(user, "NOPE").await,
        Err(Error::Validation(_))
    ));
    assert!(matches!(
        service
            .update_operation_preference(user, good(), Some(4))
            .await,
        Err(Error::Conflict {
            expected: 4,
            actual: None
        })
    ));
    assert!(
        repo.list_operation_preferences(user)
            .await
            .unwrap()
            .is_empty(),
        "nothing was written"
    );
}

/// A bus whose publish never returns, like a channel cut off mid-call.
#[derive(Debug)]
struct HangingBus(opsdeck_cache::InMemoryInvalidationBus);

#[async_trait]
impl opsdeck_cache::InvalidationBus for HangingBus {
    async fn publish(
        &self,
        _: &opsdeck_cache::Invalidation,
    ) -> std::result::Result<(), opsdeck_cache::TierError> {
        std::future::pending().await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<opsdeck_cache::BusEvent> {
        self.0.subscribe()
    }
}

/// A write that fails reports its error at once: telling the other
/// instances (needed, since a failed write may have committed) happens in
/// the background, so a slow or cut-off channel cannot delay the error.
#[tokio::test]
async fn a_failed_write_reports_its_error_without_waiting_on_the_bus() {
    let failure = || Error::Corrupt("the database went away".into());
    let mut mock = MockPreferencesRepository::new();
    mock.expect_update_operation_preference()
        .returning(move |_, _, _| Err(failure()));
    mock.expect_bulk_update_operation_preferences()
        .returning(move |_, _| Err(failure()));
    mock.expect_delete_operation_preference()
        .returning(move |_, _| Err(failure()));
    mock.expect_set_user_preferences()
        .returning(move |_, _, _| Err(failure()));
    let bus = Arc::new(HangingBus(opsdeck_cache::InMemoryInvalidationBus::new()));
    let service = PreferencesService::with_tiers(
        Arc::new(mock),
        opsdeck_preferences::PreferencesConfig::default(),
        opsdeck_cache::Tiers::none().with_bus(bus),
    );
    let user = UserId::random();
    let within = std::time::Duration::from_secs(2);
    let update = PreferenceUpdate::new("summarize").enabled(false);
    let results = [
        tokio::time::timeout(
            within,
            service.update_operation_preference(user, update.clone(), None),
        )
        .await
        .map(|r| r.map(drop)),
        tokio::time::timeout(
            within,
            service.bulk_update_operation_preferences(user, vec![update]),
        )
        .await
        .map(|r| r.map(drop)),
        tokio::time::timeout(
            within,
            service.delete_operation_preference(user, "summarize"),
        )
        .await
        .map(|r| r.map(drop)),
        tokio::time::timeout(within, service.set_theme(user, Theme::Dark))
            .await
            .map(|r| r.map(drop)),
    ];
    for (path, result) in ["update", "bulk", "delete", "theme"].iter().zip(results) {
        match result {
            Ok(Err(Error::Corrupt(_))) => {}
            Ok(other) => panic!("{path}: expected the repository's error, got {other:?}"),
            Err(_) => panic!("{path}: the error waited on the invalidation channel"),
        }
    }
}
