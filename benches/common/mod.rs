//! Helpers shared by the root benches.

use std::time::Duration;

use opsdeck::MIGRATOR;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// A freshly created and migrated scratch database `name` on the server of
/// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
/// or why there is none. Statement logging is off so it does not cost time.
pub(crate) async fn scratch_pool(name: &'static str) -> Result<PgPool, String> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut options: PgConnectOptions = url
        .parse()
        .map_err(|e| format!("DATABASE_URL is invalid ({e})"))?;
    // sqlx defaults to `sslmode=prefer`, which on a loopback server with a
    // certificate measures rustls (it doubles the N = 1000 bulk upsert here),
    // not opsdeck. Benches compare plaintext unless the URL asks for TLS.
    if !url.contains("sslmode=") {
        options = options.ssl_mode(sqlx::postgres::PgSslMode::Disable);
    }
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options.clone())
        .await
        .map_err(|e| format!("no database at {url} ({e})"))?;
    // `name` is a constant of the bench, never input.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .map_err(|e| format!("could not create {name} ({e})"))?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.database(name).disable_statement_logging())
        .await
        .map_err(|e| format!("could not connect to {name} ({e})"))?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| format!("could not migrate {name} ({e})"))?;
    Ok(pool)
}
