//! Flows that span domains. Domain crates never depend on each other, so
//! whatever needs two of them lives here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use opsdeck_analytics::{
    AnalyticsService, ExecutionRecord, Recommendation, RecommendationId, RecommendedAction,
};
use opsdeck_core::UserId;
use opsdeck_cron_registry::{CronRequest, RequestKind};
use opsdeck_preferences::PreferencePatch;
use opsdeck_webhook_verify::{EndpointName, EventHandler, HandlerError, Payload, WebhookEvent};

use crate::OpsDeck;

/// Why a cross-domain flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The analytics step failed.
    #[error(transparent)]
    Analytics(#[from] opsdeck_analytics::Error),
    /// The preferences step failed.
    #[error(transparent)]
    Preferences(#[from] opsdeck_preferences::Error),
    /// The cron step failed.
    #[error(transparent)]
    Cron(#[from] opsdeck_cron_registry::Error),
}

/// What one pass of [`OpsDeck::process_cron_requests`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CronRequestsReport {
    /// Requests taken from `cron_job_requests`.
    pub taken: usize,
    /// `RefreshRecommendations` requests whose user's recommendations were
    /// generated again.
    pub recommendations_refreshed: usize,
    /// `RunOperation` requests, oldest first. opsdeck does not know how to
    /// run an application's operation: the caller runs each and then calls
    /// `deck.cron().complete_request(&request)`; one it does not complete
    /// is delivered again when its lease ends.
    pub run_operation: Vec<CronRequest>,
    /// Requests whose step failed, with the error. They were released: the
    /// next pass takes them again (`request.attempt` counts deliveries).
    pub failed: Vec<(CronRequest, FlowError)>,
}

impl OpsDeck {
    /// Applies a recommendation: marks it applied and, when it stands for a
    /// setting (a cheaper model with at least equal success rate), makes that
    /// model the user's preferred model for the operation.
    ///
    /// Safe to retry: applying an applied recommendation returns it
    /// unchanged, and setting the same preferred model again changes only
    /// the version. The recommendation is marked first so that a failed
    /// preference write is repaired by calling this again.
    pub async fn apply_recommendation(
        &self,
        user: UserId,
        id: RecommendationId,
    ) -> Result<Recommendation, FlowError> {
        let recommendation = self
            .analytics()
            .mark_recommendation_applied(user, id)
            .await?;
        if let Some(RecommendedAction::SwitchModel { operation, model }) = recommendation.action() {
            let patch = PreferencePatch::new(operation).preferred_model(Some(model));
            self.preferences()
                .update_operation_preference(user, patch, None)
                .await?;
        }
        Ok(recommendation)
    }

    /// Consumes up to `limit` queued cron requests (the rows pg_cron or the
    /// in-process runner append to `cron_job_requests` when a
    /// `RunOperation` or `RefreshRecommendations` job fires), oldest first.
    /// `RefreshRecommendations` runs
    /// [`generate_recommendations`](opsdeck_analytics::AnalyticsService::generate_recommendations)
    /// for the job's user; `RunOperation` requests are handed back in the
    /// report for the application to run.
    ///
    /// Call it from one loop per instance (e.g. every few seconds);
    /// concurrent callers never receive the same request. Delivery is at
    /// least once: requests are leased, deleted only when completed, and a
    /// request whose consumer crashed is delivered again after its lease
    /// (refreshing recommendations twice is harmless). A request whose step
    /// fails is released for the next pass.
    pub async fn process_cron_requests(
        &self,
        limit: usize,
    ) -> Result<CronRequestsReport, FlowError> {
        let requests = self.cron().take_requests(limit).await?;
        let mut report = CronRequestsReport {
            taken: requests.len(),
            ..CronRequestsReport::default()
        };
        for request in requests {
            match request.kind {
                RequestKind::RefreshRecommendations => {
                    match self
                        .analytics()
                        .generate_recommendations(request.user_id)
                        .await
                    {
                        Ok(_) => {
                            // `false`: the lease ran out and another consumer
                            // took it again; it refreshes once more, harmlessly.
                            self.cron().complete_request(&request).await?;
                            report.recommendations_refreshed += 1;
                        }
                        Err(error) => {
                            tracing::warn!(user = %request.user_id, job = %request.job_name, %error,
                                "refreshing recommendations for a cron job failed");
                            self.cron().release_request(&request).await?;
                            report.failed.push((request, error.into()));
                        }
                    }
                }
                RequestKind::RunOperation => report.run_operation.push(request),
                // A kind added by a newer cron registry: hand it to the caller too.
                _ => report.run_operation.push(request),
            }
        }
        Ok(report)
    }
}

/// A webhook [`EventHandler`] that records the executions a webhook
/// reports: the payload is one [`ExecutionRecord`], an array of them, or an
/// object `{"executions": [...]}`. Recording is idempotent by
/// `execution_id`, so a redelivered or retried event counts once.
///
/// **Each endpoint is bound to the users it may report for.** Holding an
/// endpoint's secret proves only who sent the event, not that the sender
/// may write a given user's analytics, so an event is recorded only when
/// every record's `user_id` is bound to the endpoint that received it
/// ([`WebhookEvent::source`]); one worker serves every endpoint of a log,
/// and each endpoint keeps its own users. An event from an endpoint that is
/// not bound, naming a user the endpoint is not bound to, or that is not a
/// valid report, is refused whole — nothing of it is recorded — and fails
/// at once with a message saying why ([`HandlerError::permanent`]): no
/// retry could make it acceptable. Database failures are retried.
///
/// ```
/// # fn wire(deck: &opsdeck::OpsDeck, alice: opsdeck::UserId, bob: opsdeck::UserId)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use opsdeck::RecordExecutionsFromWebhooks;
///
/// let handler = RecordExecutionsFromWebhooks::for_endpoint(
///     deck.analytics().clone(),
///     "usage-alice".parse()?,
///     [alice],
/// )
/// .endpoint("usage-team".parse()?, [alice, bob]);
/// let worker = deck.webhook_receiver().worker(Arc::new(handler));
/// # drop(worker); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RecordExecutionsFromWebhooks {
    analytics: AnalyticsService,
    /// Endpoint → the users it may report for. Shared, so cloning the
    /// handler (one per worker) does not copy large user sets.
    allowed: Arc<HashMap<EndpointName, HashSet<UserId>>>,
}

impl RecordExecutionsFromWebhooks {
    /// A handler recording into `analytics` what endpoint `endpoint`
    /// reports for `users`; bind more endpoints with
    /// [`endpoint`](Self::endpoint). Events of endpoints not bound are
    /// refused.
    pub fn for_endpoint(
        analytics: AnalyticsService,
        endpoint: EndpointName,
        users: impl IntoIterator<Item = UserId>,
    ) -> Self {
        RecordExecutionsFromWebhooks {
            analytics,
            allowed: Arc::default(),
        }
        .endpoint(endpoint, users)
    }

    /// Lets endpoint `endpoint` also report for `users` (added to the
    /// users it is already bound to).
    pub fn endpoint(
        mut self,
        endpoint: EndpointName,
        users: impl IntoIterator<Item = UserId>,
    ) -> Self {
        Arc::make_mut(&mut self.allowed)
            .entry(endpoint)
            .or_default()
            .extend(users);
        self
    }

    /// Whether endpoint `endpoint` may report executions of `user`.
    pub fn allows(&self, endpoint: &EndpointName, user: UserId) -> bool {
        self.allowed
            .get(endpoint)
            .is_some_and(|users| users.contains(&user))
    }

    fn records(event: &WebhookEvent) -> Result<Vec<ExecutionRecord>, HandlerError> {
        let Payload::Json(body) = &event.payload else {
            return Err(HandlerError::permanent("payload is not JSON"));
        };
        let body = match body {
            serde_json::Value::Object(map) if map.contains_key("executions") => {
                map["executions"].clone()
            }
            other => other.clone(),
        };
        let records = match body {
            serde_json::Value::Array(_) => serde_json::from_value(body),
            single => serde_json::from_value(single).map(|record| vec![record]),
        };
        records.map_err(|e| {
            HandlerError::permanent(format!("payload is not an execution record: {e}"))
        })
    }

    /// Refuses the whole event unless its endpoint is bound to every user
    /// it names.
    fn check_users(
        &self,
        event: &WebhookEvent,
        records: &[ExecutionRecord],
    ) -> Result<(), HandlerError> {
        let Some(users) = self.allowed.get(&event.source) else {
            return Err(HandlerError::permanent(format!(
                "endpoint {} is not bound to any user: nothing recorded",
                event.source
            )));
        };
        match records
            .iter()
            .position(|record| !users.contains(&record.user_id))
        {
            Some(item) => Err(HandlerError::permanent(format!(
                "endpoint {} may not report executions of user {} (execution {item}): \
                 nothing recorded",
                event.source, records[item].user_id
            ))),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl EventHandler for RecordExecutionsFromWebhooks {
    async fn handle(&self, event: &WebhookEvent) -> Result<(), HandlerError> {
        let records = Self::records(event)?;
        self.check_users(event, &records)?;
        self.analytics
            .record_many(records)
            .await
            .map(drop)
            .map_err(|e| {
                let error = HandlerError::from_error(&e);
                match e {
                    // Refused input stays refused however often it is tried.
                    opsdeck_analytics::Error::Validation(_)
                    | opsdeck_analytics::Error::BatchTooLarge { .. } => error.into_permanent(),
                    _ => error,
                }
            })
    }
}
