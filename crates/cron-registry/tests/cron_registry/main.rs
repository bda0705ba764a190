//! Integration tests of opsdeck-cron-registry: the conformance suite on
//! PostgreSQL (with pg_cron, and in runner mode) and in memory, pg_cron
//! consistency and reconcile, the fallback runner, injection safety and
//! the function allow-list.
//!
//! PostgreSQL tests use `#[sqlx::test]`, which gives each test a fresh,
//! migrated database and needs `DATABASE_URL`. pg_cron tests reach pg_cron
//! through `CRON_DATABASE_URL` (default: `DATABASE_URL`, whose database must
//! be `cron.database_name`); without pg_cron they are skipped with a
//! message, except under `CI=true`, where they fail.

mod allow_list;
mod conformance;
mod hand_off;
mod injection;
mod pg_cron;
mod runner;
mod sql_entry_points;
mod support;
