//! Cross-domain flows, on PostgreSQL and in memory: applying a
//! recommendation changes a preference; a webhook records executions once,
//! and only for the users its endpoint is bound to.

use std::sync::Arc;

use opsdeck::analytics::{DateRange, RecommendedAction};
use opsdeck::webhooks::{Endpoint, GitHub, KeyRing, Outgoing, Scheme, Secret};
use opsdeck::{ExecutionRecord, OpsDeck, RecordExecutionsFromWebhooks, UserId};
use sqlx::PgPool;
use time::OffsetDateTime;

fn execution(user: UserId, model: &str, cost_micros: i64, days_ago: i64) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: uuid::Uuid::new_v4(),
        user_id: user,
        operation_id: "summarize".into(),
        model: model.into(),
        input_tokens: 1000,
        output_tokens: 200,
        cost_micros,
        latency_ms: 800,
        success: true,
        error_kind: None,
        executed_at: OffsetDateTime::now_utc() - time::Duration::days(days_ago),
    }
}

/// Two weeks of a user's executions on two models with the same success
/// rate, the second at a tenth of the cost: enough samples of both for a
/// cheaper-model recommendation.
pub(crate) fn cheaper_model_history(user: UserId) -> Vec<ExecutionRecord> {
    (0..300)
        .map(|i| {
            let (model, cost) = if i % 2 == 0 {
                ("anthropic/claude-sonnet-4", 9_000)
            } else {
                ("deepseek/deepseek-chat", 900)
            };
            execution(user, model, cost, i % 14 + 1)
        })
        .collect()
}

async fn applying_a_recommendation_switches_the_preferred_model(deck: &OpsDeck) {
    let user = UserId::random();
    deck.analytics()
        .record_many(cheaper_model_history(user))
        .await
        .unwrap();
    let recommendations = deck
        .analytics()
        .generate_recommendations(user)
        .await
        .unwrap();
    let switch = recommendations
        .iter()
        .find(|r| matches!(r.action(), Some(RecommendedAction::SwitchModel { .. })))
        .expect("a cheaper-model recommendation");

    let applied = deck.apply_recommendation(user, switch.id).await.unwrap();
    assert_eq!(applied.id, switch.id);
    let preference = deck
        .preferences()
        .get_operation_preference(user, "summarize")
        .await
        .unwrap()
        .expect("the flow wrote the preference");
    assert_eq!(
        preference.preferred_model.unwrap().as_str(),
        "deepseek/deepseek-chat"
    );
    // Retrying the flow is safe.
    deck.apply_recommendation(user, switch.id).await.unwrap();
    let active = deck
        .analytics()
        .recommendations(user, Some(opsdeck::analytics::RecommendationStatus::Active))
        .await
        .unwrap();
    assert!(active.iter().all(|r| r.id != switch.id), "no longer active");
}

/// The endpoint the usage-reporting tests configure on their deck.
fn usage_endpoint() -> Endpoint {
    Endpoint::new(
        "usage".parse().unwrap(),
        KeyRing::new(GitHub).source("current", Secret::from("usage-secret")),
    )
}

/// The handler the usage tests run: records what `usage` reports for
/// `user`.
fn usage_handler(deck: &OpsDeck, user: UserId) -> RecordExecutionsFromWebhooks {
    RecordExecutionsFromWebhooks::for_endpoint(
        deck.analytics().clone(),
        "usage".parse().unwrap(),
        [user],
    )
}

async fn webhooks_record_executions_exactly_once(deck: &OpsDeck) {
    let user = UserId::random();
    let receiver = deck.webhook_receiver();
    let worker = receiver.worker(Arc::new(usage_handler(deck, user)));
    let record = execution(user, "anthropic/claude-sonnet-4", 4_500, 0);
    // The sender's retry of a report is a new webhook (new body), carrying
    // the same execution: it is processed, and the execution counts once.
    let report = |attempt: u32| {
        serde_json::to_vec(&serde_json::json!({ "attempt": attempt, "executions": [record] }))
            .unwrap()
    };
    let deliver = |delivery: &'static str, body: Vec<u8>| {
        let key = GitHub
            .key("current", &Secret::from("usage-secret"))
            .unwrap();
        let mut headers = GitHub
            .sign(
                &key,
                &Outgoing {
                    id: delivery,
                    timestamp: 0,
                    body: &body,
                },
            )
            .unwrap();
        headers.insert("x-github-event", "usage".parse().unwrap());
        async move { receiver.accept("usage", &headers, &body).await.unwrap() }
    };

    assert!(!deliver("delivery-1", report(1)).await.duplicate);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert!(
        deliver("delivery-1", report(1)).await.duplicate,
        "a redelivery is not logged twice"
    );
    assert!(!deliver("delivery-2", report(2)).await.duplicate);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(worker.run_once().await.unwrap(), 0);

    let today = OffsetDateTime::now_utc().date();
    let summary = deck
        .analytics()
        .period_summary(user, DateRange::days_ending(today, 1).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(summary.totals.executions, 1);
    assert_eq!(summary.totals.cost.micros(), 4_500);
}

/// Signs a GitHub delivery to the `usage` endpoint and logs it.
async fn deliver_usage(deck: &OpsDeck, delivery: &str, body: &[u8]) -> opsdeck::webhooks::EventId {
    let key = GitHub
        .key("current", &Secret::from("usage-secret"))
        .unwrap();
    let mut headers = GitHub
        .sign(
            &key,
            &Outgoing {
                id: delivery,
                timestamp: 0,
                body,
            },
        )
        .unwrap();
    headers.insert("x-github-event", "usage".parse().unwrap());
    let accepted = deck
        .webhook_receiver()
        .accept("usage", &headers, body)
        .await
        .unwrap();
    assert!(!accepted.duplicate);
    accepted.event_id
}

async fn executions_today(deck: &OpsDeck, user: UserId) -> i64 {
    let today = OffsetDateTime::now_utc().date();
    let summary = deck
        .analytics()
        .period_summary(user, DateRange::days_ending(today, 1).unwrap(), None)
        .await
        .unwrap();
    summary.totals.executions
}

/// Defect 5: one endpoint's secret must not let its sender write executions
/// for users the endpoint is not bound to. A payload naming a stranger is
/// refused whole (its allowed records too) and fails at once, not retried.
async fn webhooks_cannot_record_for_users_the_endpoint_is_not_bound_to(deck: &OpsDeck) {
    let (tenant, stranger) = (UserId::random(), UserId::random());
    let worker = deck
        .webhook_receiver()
        .worker(Arc::new(usage_handler(deck, tenant)));

    let alone = serde_json::to_vec(&serde_json::json!({
        "executions": [execution(stranger, "anthropic/claude-sonnet-4", 4_500, 0)]
    }))
    .unwrap();
    let mixed = serde_json::to_vec(&serde_json::json!({
        "executions": [
            execution(tenant, "anthropic/claude-sonnet-4", 1_000, 0),
            execution(stranger, "anthropic/claude-sonnet-4", 2_000, 0),
        ]
    }))
    .unwrap();
    let alone = deliver_usage(deck, "stranger-1", &alone).await;
    let mixed = deliver_usage(deck, "stranger-2", &mixed).await;
    assert_eq!(worker.run_once().await.unwrap(), 2);
    assert_eq!(worker.run_once().await.unwrap(), 0, "not retried");

    assert_eq!(
        executions_today(deck, stranger).await,
        0,
        "nothing for the stranger"
    );
    assert_eq!(
        executions_today(deck, tenant).await,
        0,
        "a refused event records nothing"
    );
    for id in [alone, mixed] {
        let event = deck.webhook_receiver().get(id).await.unwrap().unwrap();
        assert_eq!(
            event.status,
            opsdeck::webhooks::EventStatus::Failed,
            "{event:?}"
        );
        assert_eq!(event.attempts, 1, "refused for good, not retried");
        let error = event.last_error.unwrap_or_default();
        assert!(
            error.contains(&stranger.to_string()) && error.contains("usage"),
            "{error}"
        );
    }

    // The bound user's own report is recorded.
    let own = serde_json::to_vec(&serde_json::json!([execution(
        tenant,
        "anthropic/claude-sonnet-4",
        3_000,
        0
    )]))
    .unwrap();
    deliver_usage(deck, "tenant-1", &own).await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(executions_today(deck, tenant).await, 1);
}

/// A deck with the `usage` endpoint, on a migrated `pool` or in memory.
async fn usage_deck(pool: Option<PgPool>) -> OpsDeck {
    let mut builder = OpsDeck::builder().webhook_endpoint(usage_endpoint());
    if let Some(pool) = pool {
        opsdeck::MIGRATOR.run(&pool).await.unwrap();
        builder = builder.pool(pool);
    }
    builder.build().await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn flows_on_postgres(pool: PgPool) {
    let deck = usage_deck(Some(pool)).await;
    applying_a_recommendation_switches_the_preferred_model(&deck).await;
    webhooks_record_executions_exactly_once(&deck).await;
}

#[tokio::test]
async fn flows_in_memory() {
    let deck = usage_deck(None).await;
    applying_a_recommendation_switches_the_preferred_model(&deck).await;
    webhooks_record_executions_exactly_once(&deck).await;
}

#[sqlx::test(migrations = false)]
async fn webhooks_record_only_bound_users_on_postgres(pool: PgPool) {
    let deck = usage_deck(Some(pool)).await;
    webhooks_cannot_record_for_users_the_endpoint_is_not_bound_to(&deck).await;
}

#[tokio::test]
async fn webhooks_record_only_bound_users_in_memory() {
    let deck = usage_deck(None).await;
    webhooks_cannot_record_for_users_the_endpoint_is_not_bound_to(&deck).await;
}

#[sqlx::test(migrations = false)]
async fn cron_jobs_through_the_facade(pool: PgPool) {
    opsdeck::MIGRATOR.run(&pool).await.unwrap();
    let deck = OpsDeck::from_pool(pool).await.unwrap();
    let user = UserId::random();
    let command =
        opsdeck::JobCommand::run_operation(serde_json::json!({"length": "short"})).unwrap();
    for _ in 0..2 {
        deck.cron()
            .register_cron_job(
                user,
                "nightly-summary",
                "summarize",
                "30 2 * * *",
                command.clone(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        deck.cron().list_for_user(user).await.unwrap().len(),
        1,
        "register is an upsert"
    );
    assert!(
        deck.cron_runner().is_some(),
        "no pg_cron configured: the runner fires jobs"
    );
    assert!(
        !deck
            .cron()
            .check_cron_job_exists(UserId::random(), "nightly-summary")
            .await
            .unwrap()
    );
    assert!(
        deck.cron()
            .unregister_cron_job(user, "nightly-summary")
            .await
            .unwrap()
    );
    assert!(
        !deck
            .cron()
            .unregister_cron_job(user, "nightly-summary")
            .await
            .unwrap()
    );
}
