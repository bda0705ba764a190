//! Quickstart: connect (or fall back to memory), migrate, bulk-update a
//! user's preferences in one statement, read them twice (the second read is
//! a cache hit), and print what happened.
//!
//! ```sh
//! cargo run --example quickstart                       # Postgres on 127.0.0.1, else in memory
//! DATABASE_URL=postgres://me@db/app cargo run --example quickstart   # must be reachable
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use opsdeck::{
    Backend, InvalidationChannel, OpsDeck, PreferenceUpdate, StatementCounter, Theme, UserId,
};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[tokio::main]
async fn main() -> ExitCode {
    // Count every statement sqlx sends; print logs only when RUST_LOG asks.
    let statements = StatementCounter::new();
    tracing_subscriber::registry()
        .with(statements.layer())
        .with(
            tracing_subscriber::fmt::layer()
                .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())),
        )
        .init();

    let deck = match open().await {
        Ok(deck) => deck,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match run(&deck, &statements).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&*error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// An explicitly configured database must work; the default one is optional.
async fn open() -> Result<OpsDeck, String> {
    let builder = OpsDeck::builder()
        .acquire_timeout(Duration::from_secs(3))
        // One process, so no other instance to tell about invalidations; a
        // fleet keeps the default (Redis pub/sub, or PostgreSQL NOTIFY, whose
        // messages the statement count below would include).
        .invalidation_channel(InvalidationChannel::Disabled)
        .migrate(true);
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let deck =
                builder.database_url(&url).build().await.map_err(|e| {
                    format!("DATABASE_URL is set but unusable: {e} ({})", cause(&e))
                })?;
            println!("connected to DATABASE_URL and migrated");
            Ok(deck)
        }
        Err(_) => match builder.database_url(DEFAULT_URL).build().await {
            Ok(deck) => {
                println!("connected to {DEFAULT_URL} and migrated");
                Ok(deck)
            }
            Err(e) => {
                println!(
                    "no database at {DEFAULT_URL} ({}); running in memory",
                    cause(&e)
                );
                Ok(OpsDeck::in_memory())
            }
        },
    }
}

fn cause(error: &opsdeck::Error) -> String {
    std::error::Error::source(error)
        .map(|s| s.to_string())
        .unwrap_or_else(|| error.to_string())
}

async fn run(
    deck: &OpsDeck,
    statements: &StatementCounter,
) -> Result<(), Box<dyn std::error::Error>> {
    let prefs = deck.preferences();
    let user = UserId::random();
    println!("backend: {:?}; user {user}", deck.backend());

    let updates: Vec<_> = [
        ("summarize", "anthropic/claude-sonnet-4"),
        ("translate", "deepseek/deepseek-chat"),
        ("classify", "anthropic/claude-haiku-4"),
        ("extract", "openai/gpt-4.1-mini"),
        ("rewrite", "anthropic/claude-sonnet-4"),
        ("outline", "deepseek/deepseek-chat"),
        ("tag", "anthropic/claude-haiku-4"),
        ("moderate", "openai/gpt-4.1-mini"),
        ("sentiment", "deepseek/deepseek-chat"),
        ("title", "anthropic/claude-haiku-4"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (op, model))| {
        PreferenceUpdate::new(op)
            .enabled(i % 4 != 3)
            .preferred_model(model)
    })
    .collect();

    statements.reset();
    let saved = prefs
        .bulk_update_operation_preferences(user, updates)
        .await?;
    println!(
        "bulk update: {} preferences saved in {} SQL statement(s)",
        saved.len(),
        statements.reset()
    );
    prefs.set_theme(user, Theme::Dark).await?;
    statements.reset();

    for attempt in ["first", "second"] {
        let started = Instant::now();
        let listed = prefs.list_operation_preferences(user).await?;
        let one = prefs.get_operation_preference(user, "summarize").await?;
        println!(
            "{attempt} read: {} preferences, summarize -> {}, {} statement(s), {:?}",
            listed.len(),
            one.and_then(|p| p.preferred_model)
                .map(|m| m.to_string())
                .unwrap_or_else(|| "default".into()),
            statements.reset(),
            started.elapsed()
        );
    }

    let stats = prefs.cache_stats();
    println!(
        "cache: {} hits, {} misses, {} loads, hit ratio {:.0}%",
        stats.hits,
        stats.misses,
        stats.loads,
        stats.hit_ratio() * 100.0
    );
    if deck.backend() == Backend::InMemory {
        println!("(in memory: no SQL statements are sent; set DATABASE_URL to use PostgreSQL)");
    }
    Ok(())
}
