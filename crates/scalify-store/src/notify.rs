//! What missed-message notifications keep in the database: which rooms have messages their
//! notifier has not looked at, the notifications waiting for delivery (an outbox), and the
//! users' Web Push subscriptions.
//!
//! Everything a notifier decides is committed before anything is sent, and every claim is a
//! lease, so any node may do the work, a node that dies mid-way gives it back, and nothing is
//! decided twice: a room's messages are looked at once ([`NotifyStore::finish_room`] moves the
//! room's `notify_seq` in the transaction that queues the notifications), and a queued
//! notification is delivered until a target accepts it or gives up.

use async_trait::async_trait;
use scalify_core::{Id, NotifyLevel, Room, UserRef};

use crate::StoreResult;

/// Most Web Push subscriptions one user keeps: subscribing beyond it drops their oldest.
pub const PUSH_SUBSCRIPTIONS_PER_USER: u32 = 10;

/// A room claimed by a notifier: the messages after `seen` are its to look at, while its
/// lease (`lease`, ms on the store's clock) holds.
#[derive(Debug, Clone)]
pub struct DueRoom {
    pub room: Room,
    pub seen: u64,
    pub lease: i64,
}

/// A member a room may notify: their level, how far they read, and whether their
/// notifications may quote messages.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user: UserRef,
    pub level: NotifyLevel,
    pub last_read: u64,
    pub previews: bool,
}

/// A Web Push subscription (the browser's `PushSubscription`): where to post, and the keys
/// the payload is encrypted to (RFC 8291), base64url as the browser gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// The target of a webhook delivery.
pub const WEBHOOK_TARGET: &str = "webhook";
/// The prefix of a Web Push delivery's target; the endpoint follows.
pub const PUSH_TARGET: &str = "push ";

/// A notification for one target, queued or being delivered. `id` is the notification's
/// (its idempotency id, the same for every target); `body` its JSON summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub id: String,
    pub target: String,
    pub user: Id,
    pub room: Id,
    /// The first message it tells of: a user who read that far needs no notification.
    pub first_seq: u64,
    pub body: String,
}

/// A notification taken for delivery, and how many times it has been taken (this one
/// included).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub outgoing: Outgoing,
    pub attempts: u32,
}

#[async_trait]
pub trait NotifyStore: Send + Sync + 'static {
    /// Claims up to `limit` rooms whose first message not yet looked at was stored at least
    /// `delay_ms` ago and that no live lease holds, each for `lease_ms`.
    async fn claim_due_rooms(
        &self,
        delay_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueRoom>>;
    /// The members of `room` whose level is not `none` and who have not read up to `seq`:
    /// up to `limit` of them, by user id, after `after` (pages through a large room).
    async fn recipients(
        &self,
        room: Id,
        seq: u64,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Recipient>>;
    /// How far `user` read `room`, if they are a member.
    async fn last_read(&self, room: Id, user: Id) -> StoreResult<Option<u64>>;
    /// Ends a claim: the room's messages up to `seen` are looked at, `out` is queued, and the
    /// room waits for its next message — or, when messages after `seen` exist, from
    /// `next_from` (when the first of them was stored; now if unknown). All or nothing, and
    /// nothing when the claim's lease was lost (another notifier took the room): false.
    async fn finish_room(
        &self,
        due: &DueRoom,
        seen: u64,
        next_from: Option<i64>,
        out: &[Outgoing],
    ) -> StoreResult<bool>;

    /// Takes up to `limit` queued notifications that are due, each for `lease_ms` (a node
    /// that dies while delivering gives them back when it runs out).
    async fn claim_deliveries(&self, lease_ms: i64, limit: u32) -> StoreResult<Vec<Delivery>>;
    /// A delivery taken at `attempts` is done (sent, or given up): forgets it — unless it was
    /// taken again since (its lease ran out), which makes it the new taker's.
    async fn delivered(&self, id: &str, target: &str, attempts: u32) -> StoreResult<()>;
    /// A delivery taken at `attempts` failed: tried again in `delay_ms` (unless taken again
    /// since).
    async fn retry_delivery(
        &self,
        id: &str,
        target: &str,
        attempts: u32,
        delay_ms: i64,
    ) -> StoreResult<()>;

    /// Subscribes `user` (the endpoint moves to them if another user had it); beyond
    /// [`PUSH_SUBSCRIPTIONS_PER_USER`] their oldest subscription goes.
    async fn subscribe_push(&self, user: Id, sub: &PushSubscription) -> StoreResult<()>;
    /// Removes a subscription — `user`'s only, or whoever's (a push service said it is
    /// gone); false if there was none.
    async fn unsubscribe_push(&self, user: Option<Id>, endpoint: &str) -> StoreResult<bool>;
    /// The subscriptions of `users`, each with its user.
    async fn push_subscriptions(&self, users: &[Id]) -> StoreResult<Vec<(Id, PushSubscription)>>;
    /// `user`'s subscription at `endpoint`, if they have it (still: an endpoint moves to
    /// whoever subscribes it last).
    async fn push_subscription(
        &self,
        user: Id,
        endpoint: &str,
    ) -> StoreResult<Option<PushSubscription>>;
}
