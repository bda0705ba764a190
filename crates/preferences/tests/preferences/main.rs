//! Integration tests of opsdeck-preferences: the conformance suite on
//! PostgreSQL and in memory, the one-statement proof, and the cached service.
//!
//! PostgreSQL tests use `#[sqlx::test]`, which gives each test a fresh,
//! migrated database and needs `DATABASE_URL` (see the README).

mod conformance;
mod service;
mod statements;
