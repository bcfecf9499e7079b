//! Each user's request budget: one token bucket per user, charged by every request whatever its
//! transport (REST and Socket.IO draw from the same budget), each request by what it costs the
//! server.
//!
//! In a cluster the budget is the user's across every node without a round trip on the
//! request path: each node charges its own bucket for the user at once, and every
//! [`SHARE_EVERY`] tells the other nodes what its users spent (one control-room event,
//! [`EventKind::BudgetSpent`]), which they debit from their buckets for those users. A user
//! spreading requests over k nodes therefore gets one budget, give or take what they spend
//! while an exchange travels (at most one burst per node, paid back as debt).

use std::time::Instant;

use scalify_core::TokenBucket;
use serde::Deserialize;

use super::*;

/// What a request costs from its user's budget, in sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// `send`, `typing`, `join`.
    One = 1,
    /// `history`, listing rooms or members, adding a member.
    Read = 2,
    /// `sync` (up to 1 MiB of messages), a search.
    Sync = 5,
    /// Creating a room or opening a DM.
    Create = 10,
}

const SHARDS: usize = 64;

/// How often a node tells the others what its users spent.
pub const SHARE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Most users named in one [`EventKind::BudgetSpent`] event.
const SHARE_CHUNK: usize = 2_000;

/// A user's bucket here and what they spent here since the last exchange.
struct Entry {
    bucket: TokenBucket,
    unshared: u32,
}

/// One shard's buckets, and the users of it who spent since the last exchange (so an
/// exchange visits only them, not every bucket).
#[derive(Default)]
struct Shard {
    entries: HashMap<Id, Entry>,
    spenders: Vec<Id>,
}

/// The buckets, sharded by user so concurrent senders rarely share a lock.
pub(super) struct Budgets {
    shards: Vec<Mutex<Shard>>,
    rate: u32,
    burst: u32,
}

/// What one node's users spent since its last exchange: `[[user, cost], …]`.
#[derive(Serialize, Deserialize)]
struct Spent {
    node: String,
    spent: Vec<(Id, u32)>,
}

impl Budgets {
    pub(super) fn new(rate: u32, burst: u32) -> Self {
        Budgets {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
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
        let cost = (cost as u32).min(self.burst.max(1));
        self.with_entry(user, now, |e, spenders| {
            let taken = e.bucket.try_take_n(cost, now);
            if taken {
                if e.unshared == 0 {
                    spenders.push(user);
                }
                e.unshared = e.unshared.saturating_add(cost);
            }
            taken
        })
    }

    /// Debits what `user` spent on another node.
    fn debit(&self, user: Id, spent: u32) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        self.with_entry(user, now, |e, _| e.bucket.debit(spent, now));
    }

    fn with_entry<T>(
        &self,
        user: Id,
        now: Instant,
        f: impl FnOnce(&mut Entry, &mut Vec<Id>) -> T,
    ) -> T {
        let shard = crate::presence::bucket_of(&user, SHARDS);
        let mut shard = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let Shard { entries, spenders } = &mut *shard;
        if entries.len() >= CACHE_CAP / SHARDS && !entries.contains_key(&user) {
            // Full buckets with nothing to share are users idle long enough to be forgotten
            // at no cost.
            entries.retain(|_, e| e.unshared > 0 || !e.bucket.is_full(now));
        }
        let entry = entries.entry(user).or_insert_with(|| Entry {
            bucket: TokenBucket::new(self.rate, self.burst, now),
            unshared: 0,
        });
        f(entry, spenders)
    }

    /// What each user spent since the last call.
    fn take_unshared(&self) -> Vec<(Id, u32)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let Shard { entries, spenders } = &mut *shard;
            for user in spenders.drain(..) {
                if let Some(e) = entries.get_mut(&user) {
                    out.push((user, std::mem::take(&mut e.unshared)));
                }
            }
        }
        out
    }
}

impl Chat {
    /// Tells the other nodes of the cluster what this node's users spent since the last
    /// call; run every [`SHARE_EVERY`] by the node. Nothing to do on an embedded node.
    pub async fn share_budget_spending(&self) {
        if self.cluster.is_none() {
            return;
        }
        let spent = self.budgets.take_unshared();
        for chunk in spent.chunks(SHARE_CHUNK) {
            let payload = Spent {
                node: self.node.clone(),
                spent: chunk.to_vec(),
            };
            self.publish(RoomName::control(), EventKind::BudgetSpent, &payload, None)
                .await;
        }
    }

    /// Debits what another node's users spent there (an [`EventKind::BudgetSpent`] event);
    /// this node's own events are ignored, their spending is already charged here.
    pub fn spent_elsewhere(&self, payload: &str) {
        let Ok(spent) = serde_json::from_str::<Spent>(payload) else {
            tracing::warn!("undecodable budget_spent event");
            return;
        };
        if spent.node == self.node {
            return;
        }
        for (user, cost) in spent.spent {
            self.budgets.debit(user, cost);
        }
    }

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
