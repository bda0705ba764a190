//! A webhook server on PostgreSQL: `POST /webhook-trigger/{endpoint}`
//! verifies, logs to `opsdeck.webhook_events` and answers 202; two workers
//! process the events with a handler that logs them.
//!
//! ```text
//! cargo run --example webhook_server
//! ```
//!
//! Settings (environment): `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; the migrations are
//! applied), `PORT` (default 3000), `GITHUB_WEBHOOK_SECRET` and
//! `STANDARD_WEBHOOK_SECRET` (demo secrets otherwise). Endpoints:
//! `github` (GitHub) and `demo` (Standard Webhooks). At start it prints a
//! `curl` command, signed just then, for each.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opsdeck::webhooks::{
    Endpoint, EnvSecret, EventHandler, GitHub, HandlerError, KeyRing, Outgoing, PgEventRepository,
    Receiver, Scheme, Secret, StandardWebhooks, WebhookEvent, Worker, unix_now,
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

/// Keys from the environment variable if it is set (re-read every 5
/// minutes, so rotating it needs no restart), else the demo secret.
fn keys(scheme: impl Scheme + 'static, var: &str, demo: &str) -> KeyRing {
    let ring = KeyRing::new(scheme).ttl(Duration::from_secs(300));
    if std::env::var_os(var).is_some() {
        ring.source("current", EnvSecret::new(var))
    } else {
        tracing::warn!("{var} is not set; using the demo secret");
        ring.source("current", Secret::from(demo))
    }
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

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await?;
    opsdeck::MIGRATOR.run(&pool).await?;

    let repository = Arc::new(PgEventRepository::new(pool));
    let receiver = Arc::new(
        Receiver::new(repository.clone())
            .endpoint(
                Endpoint::new(
                    "github".parse()?,
                    keys(GitHub, "GITHUB_WEBHOOK_SECRET", DEMO_GITHUB_SECRET),
                )
                // GitHub payloads can be large.
                .max_body_bytes(25 * 1024 * 1024),
            )
            .endpoint(Endpoint::new(
                "demo".parse()?,
                keys(
                    StandardWebhooks,
                    "STANDARD_WEBHOOK_SECRET",
                    DEMO_STANDARD_SECRET,
                ),
            )),
    );

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let worker =
            Worker::new(repository.clone(), Arc::new(LogHandler)).wakeup(receiver.wakeup());
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
