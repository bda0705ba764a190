//! The axum endpoint `POST /webhook-trigger/{endpoint}`: 202 for new and
//! duplicate events, 400, 401, 404 and 413 for refusals.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http::HeaderMap;
use opsdeck_webhook_verify::{
    Endpoint, EventRepository, GitHub, InMemoryEventRepository, KeyRing, Outgoing, Receiver,
    Scheme, Secret, StandardWebhooks, unix_now,
};
use serde_json::Value;
use tower::ServiceExt;

use crate::{STANDARD_SECRET, standard_key};

const LIMIT: usize = 2048;

fn app(repo: Arc<dyn EventRepository>) -> (axum::Router, Arc<Receiver>) {
    let receiver = Arc::new(
        Receiver::new(repo)
            .endpoint(
                Endpoint::new(
                    "billing".parse().unwrap(),
                    KeyRing::new(StandardWebhooks).source("current", Secret::from(STANDARD_SECRET)),
                )
                .max_body_bytes(LIMIT),
            )
            .endpoint(Endpoint::new(
                "github".parse().unwrap(),
                KeyRing::new(GitHub).source("current", Secret::from("It's a Secret to Everybody")),
            )),
    );
    (
        opsdeck_webhook_verify::axum::router(Arc::clone(&receiver)),
        receiver,
    )
}

async fn post(
    app: &axum::Router,
    endpoint: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = Request::post(format!("/webhook-trigger/{endpoint}"))
        .body(Body::from(body))
        .unwrap();
    request.headers_mut().extend(headers.clone());
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn signed(id: &str, body: &[u8]) -> HeaderMap {
    StandardWebhooks
        .sign(
            &standard_key(),
            &Outgoing {
                id,
                timestamp: unix_now(),
                body,
            },
        )
        .unwrap()
}

#[tokio::test]
async fn answers_202_then_202_duplicate() {
    let repo = Arc::new(InMemoryEventRepository::new());
    let (app, _) = app(repo.clone());
    let body = br#"{"type":"invoice.paid"}"#.to_vec();
    let headers = signed("msg_http", &body);
    let (status, json) = post(&app, "billing", &headers, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["duplicate"], false);
    let id: uuid::Uuid = json["event_id"].as_str().unwrap().parse().unwrap();
    assert!(repo.get(id.into()).await.unwrap().is_some());

    let (status, json) = post(&app, "billing", &headers, body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(json["duplicate"], true);
    assert_eq!(json["event_id"].as_str().unwrap(), id.to_string());
}

#[tokio::test]
async fn the_documented_github_request_is_accepted() {
    let (app, _) = app(Arc::new(InMemoryEventRepository::new()));
    let headers = crate::headers(&[
        (
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-github-event", "ping"),
    ]);
    let (status, json) = post(&app, "github", &headers, b"Hello, World!".to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
}

#[tokio::test]
async fn refusals_have_their_status_codes() {
    let repo = Arc::new(InMemoryEventRepository::new());
    let (app, receiver) = app(repo.clone());
    let body = br#"{"type":"x"}"#.to_vec();
    let headers = signed("msg_refused", &body);

    let (status, json) = post(&app, "billing", &headers, b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["error"], "webhook refused: signature does not match");

    let mut missing = headers.clone();
    missing.remove("webhook-timestamp");
    let (status, _) = post(&app, "billing", &missing, body.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = post(&app, "unknown", &headers, body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let big = vec![b' '; LIMIT + 1];
    let big_headers = signed("msg_big", &big);
    let (status, _) = post(&app, "billing", &big_headers, big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Without a Content-Length the limit is enforced while reading.
    let stream = chunked_body(big);
    let mut request = Request::post("/webhook-trigger/billing")
        .body(stream)
        .unwrap();
    request.headers_mut().extend(big_headers);
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A declared Content-Length over the limit is refused before reading:
    // the body here is tiny, so only the header can cause the 413.
    let mut request = Request::post("/webhook-trigger/billing")
        .header("content-length", (LIMIT + 1).to_string())
        .body(Body::from(b"{}".to_vec()))
        .unwrap();
    request.headers_mut().extend(signed("msg_declared", b"{}"));
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let stats = receiver.stats();
    assert_eq!(
        (
            stats.rejected_signature,
            stats.rejected_malformed,
            stats.unknown_endpoint,
            stats.rejected_too_large,
            stats.accepted
        ),
        (1, 1, 1, 3, 0)
    );
    assert_eq!(
        repo.counts(&"billing".parse().unwrap())
            .await
            .unwrap()
            .total(),
        0
    );
}

/// A body of unknown length (no Content-Length), sent in chunks.
fn chunked_body(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(512).map(|c| Ok(c.to_vec())).collect();
    Body::from_stream(tokio_stream::iter(chunks))
}
