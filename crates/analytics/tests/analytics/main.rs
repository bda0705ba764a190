//! Integration tests of opsdeck-analytics: the conformance suite on
//! PostgreSQL and in memory, exactness under concurrency, percentiles
//! against raw rows, the one-statement proof, partitions and retention, and
//! the cached service.
//!
//! PostgreSQL tests use `#[sqlx::test]`, which gives each test a fresh,
//! migrated database and needs `DATABASE_URL` (see the README).

mod conformance;
mod exactness;
mod partitions;
mod percentiles;
mod service;
mod statements;
