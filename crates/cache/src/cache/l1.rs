//! The L1 guard: per-user generation stripes that keep a load which raced
//! an invalidation from storing its (possibly stale) value.

use std::sync::atomic::{AtomicU64, Ordering};

use opsdeck_core::UserId;

use super::{CacheValue, Inner};
use crate::bus::Scope;
use crate::key::CacheKey;
use crate::stats::Counters;

/// Generation counters are striped by user: an invalidation of any key of a
/// user bumps that user's stripe, and a load stores its value only if the
/// stripe did not move while it ran. Collisions between users sharing a
/// stripe can only make a load skip storing (a later miss), never keep a
/// stale value; a fixed array keeps memory bounded however many users exist.
pub(super) const GENERATION_STRIPES: usize = 4096;

impl<V: CacheValue> Inner<V> {
    pub(super) fn stripe(&self, user: UserId) -> &AtomicU64 {
        let bits = user.as_uuid().as_u128();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        &self.generations[(folded % GENERATION_STRIPES as u64) as usize]
    }

    pub(super) fn generation(&self, user: UserId) -> u64 {
        self.stripe(user).load(Ordering::SeqCst)
    }

    /// Drops `scope` from L1, making running loads of it discard their result.
    /// Bump before removing: a loader that stores after our removal then
    /// sees the new generation on its re-check and removes its own value.
    pub(super) async fn invalidate_local(&self, scope: &Scope) {
        match scope {
            Scope::Key { user, item } => {
                self.stripe(*user).fetch_add(1, Ordering::SeqCst);
                self.l1
                    .invalidate(&CacheKey::new(*user, item.as_str()))
                    .await;
            }
            Scope::User { user } => {
                let user = *user;
                self.stripe(user).fetch_add(1, Ordering::SeqCst);
                if let Err(error) = self
                    .l1
                    .invalidate_entries_if(move |key, _| key.user() == user)
                {
                    // Only possible if closures were not enabled at build time,
                    // which `with_tiers` always does; clearing is the safe fallback.
                    tracing::error!(cache = self.config.name, %error, "predicate invalidation failed; clearing L1");
                    self.l1.invalidate_all();
                }
            }
            Scope::All => {
                for generation in self.generations.iter() {
                    generation.fetch_add(1, Ordering::SeqCst);
                }
                self.l1.invalidate_all();
            }
        }
    }

    /// Stores into L1 unless the user's generation moved since `generation`;
    /// returns whether the value stayed stored.
    pub(super) async fn store_l1_if_current(
        &self,
        key: &CacheKey,
        generation: u64,
        value: V,
    ) -> bool {
        if self.generation(key.user()) != generation {
            Counters::bump(&self.counters.stale_loads_discarded);
            return false;
        }
        self.l1.insert(key.clone(), value).await;
        // An invalidation may have slipped in between the check and the insert;
        // its removal may have run before our insert, so undo the insert.
        if self.generation(key.user()) != generation {
            Counters::bump(&self.counters.stale_loads_discarded);
            self.l1.invalidate(key).await;
            return false;
        }
        true
    }
}
