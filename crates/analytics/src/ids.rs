//! The crate's ids and the recommendation status: a leaf module, so the
//! error type and the domain modules can all name them without importing
//! each other.

use std::fmt;
use std::str::FromStr;

use opsdeck_core::{Snippet, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one execution, chosen by the caller; recording the same id
/// again (a retry) is counted once.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(Uuid);

opsdeck_core::uuid_id!(ExecutionId, "execution id");

/// The id of a stored recommendation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecommendationId(Uuid);

opsdeck_core::uuid_id!(RecommendationId, "recommendation id");

/// Where a recommendation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecommendationStatus {
    /// Shown to the user; refreshed by each generation while it still holds.
    Active,
    /// The user declined it.
    Dismissed,
    /// The user acted on it.
    Applied,
    /// The rules stopped producing it (a generation no longer found it, or
    /// it was not refreshed since an expiry cutoff): it no longer holds, so
    /// it is not shown, and — not being the user's decision — it does not
    /// suppress the same finding when it holds again.
    Expired,
}

impl RecommendationStatus {
    /// The stored text.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecommendationStatus::Active => "active",
            RecommendationStatus::Dismissed => "dismissed",
            RecommendationStatus::Applied => "applied",
            RecommendationStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for RecommendationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecommendationStatus {
    type Err = Validation;
    fn from_str(s: &str) -> Result<Self, Validation> {
        match s {
            "active" => Ok(RecommendationStatus::Active),
            "dismissed" => Ok(RecommendationStatus::Dismissed),
            "applied" => Ok(RecommendationStatus::Applied),
            "expired" => Ok(RecommendationStatus::Expired),
            other => Err(Validation::new(
                "status",
                format!(
                    "expected active, dismissed, applied or expired, got {:?}",
                    Snippet::new(other)
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_statuses_round_trip_through_text() {
        let id = ExecutionId::random();
        assert_eq!(id.to_string().parse::<ExecutionId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), format!("ExecutionId({})", id.as_uuid()));
        assert!("not-a-uuid".parse::<RecommendationId>().is_err());
        for status in [
            RecommendationStatus::Active,
            RecommendationStatus::Dismissed,
            RecommendationStatus::Applied,
            RecommendationStatus::Expired,
        ] {
            assert_eq!(status.as_str().parse::<RecommendationStatus>(), Ok(status));
        }
        let refused = "x".repeat(200).parse::<RecommendationStatus>().unwrap_err();
        assert_eq!(refused.field, "status");
        assert!(refused.reason.len() < 200, "{refused}");
    }
}
