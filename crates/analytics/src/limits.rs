//! The limits every backend enforces, in one leaf module so the modules
//! that check them do not import the crate root.

use std::time::Duration;

use crate::money::Money;

/// Most executions one [`crate::AnalyticsRepository::record_many`] call
/// accepts (the SQL function enforces the same number). Larger batches get
/// [`crate::Error::BatchTooLarge`]; split them, each part is atomic on its
/// own.
pub const MAX_BATCH: usize = 10_000;

/// Most input or output tokens one execution may report.
pub const MAX_TOKENS: i64 = 1_000_000_000;

/// Most one execution may cost: 10 000 dollars. With it, no sum of a
/// realistic history comes near `i64` overflow.
pub const MAX_COST: Money = Money::from_micros(10_000 * Money::MICROS_PER_DOLLAR);

/// Longest latency one execution may report: 24 hours.
pub const MAX_LATENCY_MS: i64 = 86_400_000;

/// How far in the future `executed_at` may be (clock skew between the
/// caller and the recorder) by default: 5 minutes.
pub const DEFAULT_FUTURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Most executions one [`crate::AnalyticsRepository::executions`] call returns.
pub const MAX_LIST: usize = 10_000;
