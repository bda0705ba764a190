//! Axum integration (feature `axum`): `POST /webhook-trigger/{endpoint}`.
//!
//! ```no_run
//! # async fn run(receiver: opsdeck_webhook_verify::Receiver) -> std::io::Result<()> {
//! use std::sync::Arc;
//!
//! let app = opsdeck_webhook_verify::axum::router(Arc::new(receiver));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! Answers: `202 Accepted` with `{"event_id": "…", "duplicate": false}`
//! (a duplicate is 202 too, with `"duplicate": true`); `400` for missing
//! or malformed headers; `401` for a bad or stale signature; `404` for an
//! unknown endpoint; `413` for a body over the endpoint's limit (refused
//! while reading, before it is buffered whole); `503` when the keys cannot
//! be loaded; `500` when the log cannot be written. Error bodies are
//! `{"error": "…"}` and never describe keys or expected signatures.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opsdeck_core::{Snippet, Validation};
use serde_json::json;

use crate::error::Error;
use crate::receiver::Receiver;

/// The route [`router`] serves.
pub const ROUTE: &str = "/webhook-trigger/{endpoint}";

/// A router serving [`ROUTE`] with [`webhook_trigger`]; merge or nest it
/// into the application's router.
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route(ROUTE, post(webhook_trigger))
        .with_state(receiver)
}

/// The handler behind [`ROUTE`]: reads the body up to the endpoint's limit
/// and hands it to [`Receiver::accept`].
pub async fn webhook_trigger(
    State(receiver): State<Arc<Receiver>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match read_body(&receiver, &endpoint, &headers, body).await {
        Ok(bytes) => receiver.accept(&endpoint, &headers, &bytes).await,
        Err(refused) => receiver.refuse(&endpoint, refused),
    };
    match result {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "event_id": accepted.event_id.to_string(),
                "duplicate": accepted.duplicate,
            })),
        )
            .into_response(),
        Err(error) => {
            let status = error.status_code();
            let message = match &error {
                Error::Secret(_) => "webhook keys unavailable".to_owned(),
                _ if status.is_server_error() => "internal error".to_owned(),
                _ => error.to_string(),
            };
            (status, Json(json!({ "error": message }))).into_response()
        }
    }
}

/// The body, or why it was refused before verification.
async fn read_body(
    receiver: &Receiver,
    endpoint: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Error> {
    let Some(limit) = receiver.get_endpoint(endpoint).map(|e| e.body_limit()) else {
        return Err(Error::UnknownEndpoint {
            endpoint: Snippet::new(endpoint),
        });
    };
    // An honest Content-Length lets us refuse without reading at all.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > limit) {
        return Err(Error::BodyTooLarge { len, limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            Error::BodyTooLarge {
                len: limit.saturating_add(1),
                limit,
            }
        } else {
            Validation::new("body", format!("cannot be read: {error}")).into()
        }
    })
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}
