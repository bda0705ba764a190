//! Shared building blocks of opsdeck.
//!
//! Every other opsdeck crate depends on this one and on nothing else of the
//! workspace (the facade excepted). It holds the values that cross crate
//! boundaries, each of which can only be built by parsing, so that a value
//! which exists is valid:
//!
//! - [`UserId`]: the owner of every piece of user data;
//! - [`OperationId`]: an operation name such as `summarize` (1–64 characters
//!   of `[a-z0-9_.-]`);
//! - [`ModelRef`]: a model reference such as `anthropic/claude-sonnet-4`;
//! - [`ParseError`]: why a string was refused;
//! - [`Validation`]: the one shape of "this input was refused" in every crate;
//! - [`Secret`] and [`SecretUrl`]: values that never print;
//! - [`text_id!`] and [`uuid_id!`]: the impls every id repeats, with sqlx
//!   `Type`/`Encode`/`Decode` under the `postgres` feature, and
//!   [`db::constraint_violation`], the one constraint → [`Validation`] mapper;
//! - [`StatementCounter`]: counts the SQL statements sqlx sends, so tests and
//!   examples can prove "one statement" promises instead of asserting them;
//! - `testing` (feature `testing`): private PostgreSQL clusters and Redis
//!   servers the tests can stop, restart, freeze and cut off, for fault
//!   experiments.
//!
//! ```
//! use opsdeck_core::{ModelRef, OperationId};
//!
//! let op: OperationId = "summarize".parse().unwrap();
//! let model: ModelRef = "anthropic/claude-sonnet-4".parse().unwrap();
//! assert_eq!(model.provider(), "anthropic");
//! assert!("Summarize!".parse::<OperationId>().is_err());
//! # let _ = op;
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "postgres")]
pub mod db;
mod error;
mod ids;
mod model;
mod newtype;
mod secret;
mod statements;
#[cfg(feature = "testing")]
pub mod testing;
mod validation;

pub use error::{ParseError, Snippet};
pub use ids::{OperationId, UserId};
pub use model::ModelRef;
pub use secret::{Secret, SecretUrl};
pub use statements::StatementCounter;
pub use validation::Validation;

/// What the id macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "postgres")]
    pub use sqlx;
    pub use uuid::Uuid;
}
