//! The fault suite: opsdeck as a user runs it — two instances on a private
//! PostgreSQL and a private Redis (never the shared 5432/6379 services),
//! each behind a loopback proxy the test controls — under a small
//! concurrent load, while PostgreSQL is restarted, stopped, frozen or cut
//! off and Redis is stopped, frozen or cut off from one instance.
//!
//! Every scenario asserts: analytics totals exact (each acknowledged batch
//! counted once, retries included), 0 acknowledged preference writes lost
//! (read back from the database past the proxy), writes succeed again
//! within 5 s of the service being back; with a Redis fault also 0 failed
//! reads (they degrade to the database) and the coherence property — once
//! the faults heal, every instance serves a value at least as new as every
//! acknowledged write within 1 s. `replica` runs the analytics read pool
//! against a real streaming replica. Figures are printed with `eprintln!`
//! (`cargo test --test faults -- --nocapture`).
//!
//! Needs `initdb`/`pg_ctl`/`pg_basebackup` (PostgreSQL 15) and
//! `redis-server`; without them a scenario is skipped, under `CI=true` it
//! fails. Each scenario ends within 60 s; every service is removed when
//! the scenario ends, also when it fails.

mod replica;
mod scenarios;
mod support;
