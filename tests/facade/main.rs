//! End-to-end tests of the facade: connecting, migrating, the services it
//! wires, and the flows that span domains.
//!
//! PostgreSQL tests use `#[sqlx::test]` (needs `DATABASE_URL`); the Redis
//! test needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).

mod cron_requests;
mod deck;
mod flows;
mod secrets;
