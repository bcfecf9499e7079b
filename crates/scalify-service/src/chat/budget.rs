//! Each user's request budget: one token bucket per user on this node, charged by every
//! request whatever its transport (REST and Socket.IO draw from the same budget), each request
//! by what it costs the server.

use std::time::Instant;

use scalify_core::TokenBucket;

use super::*;

/// What a request costs from its user's budget, in sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// `send`, `typing`, `join`.
    One = 1,
    /// `history`, listing rooms or members, adding a member.
    Read = 2,
    /// `sync` (up to 1 MiB of messages).
    Sync = 5,
    /// Creating a room or opening a DM.
    Create = 10,
}

const SHARDS: usize = 64;

/// The buckets, sharded by user so concurrent senders rarely share a lock.
pub(super) struct Budgets {
    shards: Vec<Mutex<HashMap<Id, TokenBucket>>>,
    rate: u32,
    burst: u32,
}

impl Budgets {
    pub(super) fn new(rate: u32, burst: u32) -> Self {
        Budgets {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            rate,
            burst,
        }
    }

    /// Takes `cost` from `user`'s budget, or says they are over it.
    pub(super) fn charge(&self, user: Id, cost: Cost) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let shard = crate::presence::bucket_of(&user, SHARDS);
        let mut buckets = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= CACHE_CAP / SHARDS && !buckets.contains_key(&user) {
            // Full buckets are users idle long enough to be forgotten at no cost.
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(user)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take_n((cost as u32).min(self.burst.max(1)), now)
    }
}

impl Chat {
    /// Charges a request to its user's budget: `rate_limited` when they are over it.
    pub(super) fn charge(&self, user: &UserRef, cost: Cost) -> Result<(), ChatError> {
        if self.budgets.charge(user.id, cost) {
            Ok(())
        } else {
            metrics::counter!("scalify_rate_limited_total").increment(1);
            Err(match cost {
                Cost::One => ChatError::rate_limited(),
                _ => ChatError::new(
                    scalify_core::ErrorCode::RateLimited,
                    "too many requests; slow down",
                ),
            })
        }
    }
}
