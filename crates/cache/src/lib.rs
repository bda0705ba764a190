//! The read cache in front of opsdeck's repositories.
//!
//! A [`Cache<V>`] is one namespace (e.g. `preferences.op`) with its own TTL
//! and capacity, backed by moka's async cache. It adds what a cache in front
//! of a database needs beyond a map with expiry:
//!
//! - **coalesced loads**: [`Cache::get_or_load`] runs one loader per key at a
//!   time, whatever the number of concurrent misses;
//! - **"not found" is a value**: use `Cache<Option<T>>` and a missing row is
//!   cached like any other answer, so repeated lookups of absent rows do not
//!   reach the database;
//! - **generation guard**: an invalidation bumps a generation counter; a load
//!   that started before it never stores its (possibly stale) result;
//! - **per-user invalidation**: [`Cache::invalidate_user`] drops every key of
//!   one user, which is what bulk writes need;
//! - **[`CacheStats`]**: hits, misses, loads, load errors, hit ratio.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use opsdeck_cache::{Cache, CacheConfig, CacheKey};
//! use opsdeck_core::UserId;
//!
//! let cache: Cache<Option<String>> = Cache::new(CacheConfig::new("docs", Duration::from_secs(60)));
//! let key = CacheKey::new(UserId::random(), "theme");
//! let v = cache
//!     .get_or_load(&key, || async { Ok::<_, std::convert::Infallible>(Some("dark".to_string())) })
//!     .await
//!     .unwrap();
//! assert_eq!(v.as_deref(), Some("dark"));
//! assert_eq!(cache.stats().loads, 1);
//! # }
//! ```

mod bus;
mod cache;
mod error;
mod key;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod remote;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;

pub use bus::{BusEvent, InMemoryInvalidationBus, Invalidation, InvalidationBus, Scope};
pub use cache::{Cache, CacheConfig, CacheValue, Propagation, Tiers};
pub use error::TierError;
pub use key::CacheKey;
pub use memory::InMemoryRemoteStore;
#[cfg(feature = "postgres")]
pub use postgres::PgInvalidationBus;
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisInvalidationBus, RedisRemoteStore};
pub use remote::{RemoteRead, RemoteStore};
pub use stats::CacheStats;
