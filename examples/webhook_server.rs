//! A webhook server on an [`opsdeck::OpsDeck`]: `POST /webhook-trigger/{endpoint}`
//! verifies, logs to `opsdeck.webhook_events` and answers 202; two workers
//! process the events with a handler that logs them.
//!
//! ```text
//! cargo run --example webhook_server
//! ```
//!
//! Settings (environment): `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the migrations are
//! applied), `PORT` (default 3000), and one endpoint per scheme:
//!
//! | endpoint | scheme | secret variable |
//! |---|---|---|
//! | `demo` | Standard Webhooks | `STANDARD_WEBHOOK_SECRET` (`whsec_…`; a demo secret otherwise) |
//! | `github` | GitHub | `GITHUB_WEBHOOK_SECRET` (GitHub's documented example secret otherwise) |
//! | `stripe` | Stripe | `STRIPE_WEBHOOK_SECRET` (`whsec_…`; endpoint off when unset) |
//! | `slack` | Slack | `SLACK_SIGNING_SECRET` (endpoint off when unset) |
//!
//! During a rotation, set `<VARIABLE>_PREVIOUS` to the old secret: requests
//! signed with either verify until you remove it. Variables are re-read
//! every 5 minutes, so rotating needs no restart. At start it prints a
//! `curl` command, signed just then, for the `demo` endpoint.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck::OpsDeck;
use opsdeck::webhooks::{
    Endpoint, EnvSecret, EventHandler, GitHub, HandlerError, KeyRing, Outgoing, Scheme, Secret,
    Slack, StandardWebhooks, Stripe, WebhookEvent, unix_now,
};
use tokio::sync::watch;

const DEMO_GITHUB_SECRET: &str = "It's a Secret to Everybody";
const DEMO_STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Logs each event; a real handler would act on it (idempotently, keyed by
/// the event id).
#[derive(Debug)]
struct LogHandler;

#[async_trait]
impl EventHandler for LogHandler {
    async fn handle(&self, event: &WebhookEvent) -> Result<(), HandlerError> {
        tracing::info!(
            event_id = %event.id,
            source = %event.source,
            external_id = %event.external_id,
            event_type = event.event_type.as_deref().unwrap_or("-"),
            attempt = event.attempts,
            "processing webhook"
        );
        Ok(())
    }
}

/// Keys from the environment variable `var` (and `var_PREVIOUS` during a
/// rotation), re-read every 5 minutes so rotating needs no restart; the
/// demo secret when `var` is unset, or `None` when there is no demo secret.
fn keys(scheme: impl Scheme + 'static, var: &str, demo: Option<&str>) -> Option<KeyRing> {
    let ring = KeyRing::new(scheme).ttl(Duration::from_secs(300));
    let ring = if std::env::var_os(var).is_some() {
        ring.source("current", EnvSecret::new(var))
    } else if let Some(demo) = demo {
        tracing::warn!("{var} is not set; using the demo secret");
        ring.source("current", Secret::from(demo))
    } else {
        tracing::info!("{var} is not set; its endpoint is off");
        return None;
    };
    let previous = format!("{var}_PREVIOUS");
    Some(if std::env::var_os(&previous).is_some() {
        tracing::info!("{previous} is set: accepting the previous secret too");
        ring.source("previous", EnvSecret::new(previous))
    } else {
        ring
    })
}

/// The endpoints whose secrets are configured (GitHub and Standard
/// Webhooks fall back to demo secrets).
fn endpoints() -> Result<Vec<Endpoint>, Box<dyn std::error::Error>> {
    let mut endpoints = Vec::new();
    let configured = [
        (
            "demo",
            keys(
                StandardWebhooks,
                "STANDARD_WEBHOOK_SECRET",
                Some(DEMO_STANDARD_SECRET),
            ),
        ),
        (
            "github",
            keys(GitHub, "GITHUB_WEBHOOK_SECRET", Some(DEMO_GITHUB_SECRET)),
        ),
        ("stripe", keys(Stripe, "STRIPE_WEBHOOK_SECRET", None)),
        ("slack", keys(Slack, "SLACK_SIGNING_SECRET", None)),
    ];
    for (name, keys) in configured {
        let Some(keys) = keys else { continue };
        let mut endpoint = Endpoint::new(name.parse()?, keys);
        if name == "github" {
            // GitHub payloads can be large.
            endpoint = endpoint.max_body_bytes(25 * 1024 * 1024);
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// A ready-to-run signed request for the `demo` endpoint.
fn demo_curl(port: u16) -> Result<String, Box<dyn std::error::Error>> {
    let secret = std::env::var("STANDARD_WEBHOOK_SECRET")
        .unwrap_or_else(|_| DEMO_STANDARD_SECRET.to_owned());
    let key = StandardWebhooks.key("current", &Secret::from(secret))?;
    let body = r#"{"type":"demo.ping","data":{"hello":"world"}}"#;
    let id = format!("msg_{}", unix_now());
    let headers = StandardWebhooks.sign(
        &key,
        &Outgoing {
            id: &id,
            timestamp: unix_now(),
            body: body.as_bytes(),
        },
    )?;
    let mut command = format!("curl -i -X POST http://127.0.0.1:{port}/webhook-trigger/demo");
    for (name, value) in &headers {
        command.push_str(&format!(" -H '{name}: {}'", value.to_str()?));
    }
    command.push_str(&format!(" --data-binary '{body}'"));
    Ok(command)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);

    let deck = endpoints()?
        .into_iter()
        .fold(OpsDeck::builder(), |builder, endpoint| {
            builder.webhook_endpoint(endpoint)
        })
        .database_url(url)
        .max_connections(8)
        .migrate(true)
        .build()
        .await?;
    let receiver = deck.webhook_receiver().clone();

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let worker = receiver.worker(Arc::new(LogHandler));
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            worker
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        }));
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!("listening on http://127.0.0.1:{port}/webhook-trigger/{{endpoint}}");
    println!(
        "Try (signed just now, valid for 5 minutes):\n  {}",
        demo_curl(port)?
    );
    println!(
        "Or GitHub's documented example:\n  curl -i -X POST http://127.0.0.1:{port}/webhook-trigger/github \
         -H 'X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17' \
         -H 'X-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958' -H 'X-GitHub-Event: ping' \
         --data-binary 'Hello, World!'"
    );
    axum::serve(listener, opsdeck::webhooks::axum::router(receiver))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    stop.send(true)?;
    for worker in workers {
        worker.await?;
    }
    Ok(())
}
