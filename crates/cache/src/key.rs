use std::fmt;
use std::sync::Arc;

use opsdeck_core::UserId;

/// A cache key: the owning user plus an item name within the namespace.
///
/// Every key names its user so that a bulk write can drop all of one user's
/// entries ([`crate::Cache::invalidate_user`]) and so that a future shared
/// tier can shard keys by user.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    user: UserId,
    item: Arc<str>,
}

impl CacheKey {
    /// A key for `item` of `user`. `item` may be empty for "the user's one
    /// value in this namespace" (e.g. a list).
    pub fn new(user: UserId, item: impl Into<Arc<str>>) -> Self {
        CacheKey {
            user,
            item: item.into(),
        }
    }

    /// The owning user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The item within the namespace.
    pub fn item(&self) -> &str {
        &self.item
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.user, self.item)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.user, self.item)
    }
}
