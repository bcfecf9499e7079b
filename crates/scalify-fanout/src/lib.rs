//! # scalify-fanout — getting a room's events to every connection that should see them
//!
//! [`Fanout`] is the narrow trait between the service and whatever carries events between
//! nodes. An engine receives [`RoomEvent`]s from `publish` and hands each one, exactly once per
//! node that needs it, to that node's [`LocalDelivery`] (the Socket.IO transport), which
//! writes it to the local connections in the room.
//!
//! - [`LocalFanout`]: the embedded engine — one process, so publish is a direct call.
//! - [`redis::RedisFanout`]: nodes of a cluster exchange events over Redis pub/sub, one
//!   channel per room; `watch`/`unwatch` keep a node subscribed only to the rooms it has local
//!   members in.
//!
//! [`ClusterPresence`] is the matching narrow trait for who is online across nodes
//! ([`redis::RedisPresence`]), and [`Registry`] the roll of live nodes and persisters the
//! admin page reads ([`redis::RedisRegistry`]); an embedded node needs neither (its own counts
//! are the truth). [`AttemptLog`] counts repeated logins and registrations for throttling, in
//! the process ([`LocalAttempts`]) or for a whole cluster ([`redis::RedisAttempts`]).
//!
//! [`Sequencer`] sits in front of delivery and hands a room's messages over in `seq` order,
//! whatever order concurrent senders' commits reached `publish` in.

mod attempts;
pub mod redis;
mod sequencer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scalify_core::{Id, NodeStatus, PersisterStatus, RoomName, UserRef};
use serde_json::value::RawValue;

pub use attempts::{Admission, AttemptLog, LocalAttempts};
pub use sequencer::Sequencer;

/// The kinds of events that flow to room members; each is one Socket.IO event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A committed message; carries its `seq`, which delivery keeps in order, and its commit
    /// time (`ts`, ms since the epoch), from which delivery measures fan-out latency.
    Message {
        seq: u64,
        ts: i64,
    },
    Typing,
    Presence,
    /// To a user's inbox: they were added to a room.
    RoomAdded,
    /// To the control room: sessions ended (`{"sessions": [id, …]}`); each node closes their
    /// connections instead of writing the event to anyone.
    SessionsEnded,
    /// To the control room: a member left or was removed (`{"room", "room_id", "user"}`);
    /// each node takes the user's connections out of the room and tells them (`room_removed`).
    MemberRemoved,
    /// To the control room: what a node's users spent of their request budgets
    /// (`{"node", "spent": [[user, cost], …]}`); each other node debits it.
    BudgetSpent,
    /// To the control room: a public room was created (`{"room"}`); each node tells all its
    /// connections, so everyone's list of rooms to join is current.
    RoomCreated,
    /// To a user's inbox: they marked a room read up to a seq (`{"room", "seq"}`); their
    /// other connections clear what they count as unread.
    Read,
    /// To a room: a member read it up to a seq (`{"room", "user", "seq"}`); delivered to the
    /// connections of users who see read receipts, the reader's own left out.
    Receipt,
    /// To a user's inbox: they set a room's notification level (`{"room", "level"}`).
    Notifications,
    /// To a user's inbox: they changed their settings (`{"read_receipts", "previews"}`); each
    /// node also notes whether their connections see read receipts.
    Settings,
}

impl EventKind {
    pub fn event_name(self) -> &'static str {
        match self {
            EventKind::Message { .. } => "message",
            EventKind::Typing => "typing",
            EventKind::Presence => "presence",
            EventKind::RoomAdded => "room_added",
            EventKind::SessionsEnded => "sessions_ended",
            EventKind::MemberRemoved => "room_removed",
            EventKind::BudgetSpent => "budget_spent",
            EventKind::RoomCreated => "room_created",
            EventKind::Read => "read",
            EventKind::Receipt => "receipt",
            EventKind::Notifications => "notifications",
            EventKind::Settings => "settings",
        }
    }
}

/// One event for one room. The payload is serialized once, by the node that produced it, and
/// then written as-is to every recipient.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    pub room: RoomName,
    pub kind: EventKind,
    pub payload: Arc<RawValue>,
    /// The connections of this user do not receive the event (a typist does not see their own
    /// `typing`).
    pub except_user: Option<Id>,
}

impl RoomEvent {
    pub fn new<T: serde::Serialize>(
        room: RoomName,
        kind: EventKind,
        payload: &T,
        except_user: Option<Id>,
    ) -> Result<Self, serde_json::Error> {
        let raw = serde_json::value::to_raw_value(payload)?;
        Ok(RoomEvent {
            room,
            kind,
            payload: Arc::from(raw),
            except_user,
        })
    }
}

/// Writes an event to this node's connections in its room. Implemented by the transport.
pub trait LocalDelivery: Send + Sync + 'static {
    fn deliver(&self, event: &RoomEvent);
    /// This node no longer delivers `room` (no local members): forget any state kept for it.
    fn room_released(&self, _room: &RoomName) {}
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("fan-out unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Fanout: Send + Sync + 'static {
    /// Sends the event to every node with members in its room, this one included.
    async fn publish(&self, event: RoomEvent) -> Result<(), FanoutError>;
    /// This node now has local connections in `room`.
    async fn watch(&self, room: &RoomName) -> Result<(), FanoutError>;
    /// This node no longer has local connections in `room`.
    async fn unwatch(&self, room: &RoomName) -> Result<(), FanoutError>;
    /// Of `rooms`, which some node — this one or another — has local connections in.
    async fn watched_anywhere(&self, rooms: &[RoomName]) -> Result<Vec<bool>, FanoutError>;
    /// Readiness: can events reach other nodes right now?
    async fn ready(&self) -> Result<(), FanoutError>;
    /// Stops background work (graceful shutdown, after connections are closed).
    async fn shutdown(&self) {}
}

/// Who is online in a room across all nodes. Each node keeps its own connection counts and
/// calls this only when a user's first local connection joins a room or their last leaves.
#[async_trait]
pub trait ClusterPresence: Send + Sync + 'static {
    /// The user is now online in `room` on this node. True if they were not online on any
    /// node before: the caller announces them.
    async fn arrive(&self, room: &RoomName, user: &UserRef) -> Result<bool, FanoutError>;
    /// The user left `room` on this node. True if no node keeps them online: the caller
    /// announces them offline.
    async fn depart(&self, room: &RoomName, user: &UserRef) -> Result<bool, FanoutError>;
    /// Everyone online in `room`, on any node.
    async fn online(&self, room: &RoomName) -> Result<Vec<UserRef>, FanoutError>;
    /// Renews this node's entries (called every [`ClusterPresence::refresh_interval`]).
    /// Returns entries that had expired meanwhile, now online again: announce them.
    async fn refresh(
        &self,
        entries: &[(RoomName, UserRef)],
    ) -> Result<Vec<(RoomName, UserRef)>, FanoutError>;
    /// Removes users of `rooms` whose nodes all stopped refreshing them (a node died) and
    /// returns them: the caller announces them offline. Each expiry is returned to one node.
    async fn sweep(&self, rooms: &[RoomName]) -> Result<Vec<(RoomName, UserRef)>, FanoutError>;
    fn refresh_interval(&self) -> Duration;
}

/// The cluster's roll of live nodes and persisters, each with its latest status, for the admin
/// page. An entry stays while its owner announces it again within the presence TTL; an owner
/// that stops (or dies) drops out by itself.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Publishes this node's status.
    async fn announce_node(&self, status: &NodeStatus) -> Result<(), FanoutError>;
    /// The nodes that announced themselves recently.
    async fn nodes(&self) -> Result<Vec<NodeStatus>, FanoutError>;
    /// Publishes a persister's status.
    async fn announce_persister(&self, status: &PersisterStatus) -> Result<(), FanoutError>;
    /// The persisters that announced themselves recently.
    async fn persisters(&self) -> Result<Vec<PersisterStatus>, FanoutError>;
}

/// The rooms a node has local connections in. Engines deliver only these rooms' events: a
/// room nobody here reads (a bot posting over REST, say) costs local delivery nothing.
#[derive(Default)]
pub struct Watched(std::sync::Mutex<std::collections::HashSet<RoomName>>);

impl Watched {
    pub fn add(&self, room: &RoomName) {
        if let Ok(mut w) = self.0.lock() {
            w.insert(room.clone());
        }
    }
    pub fn remove(&self, room: &RoomName) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(room);
        }
    }
    pub fn contains(&self, room: &RoomName) -> bool {
        self.0.lock().map(|w| w.contains(room)).unwrap_or(false)
    }
    pub fn all(&self) -> Vec<RoomName> {
        self.0
            .lock()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The embedded engine: one node, so every event goes straight to local delivery.
pub struct LocalFanout {
    delivery: Arc<dyn LocalDelivery>,
    watched: Watched,
}

impl LocalFanout {
    pub fn new(delivery: Arc<dyn LocalDelivery>) -> Self {
        LocalFanout {
            delivery,
            watched: Watched::default(),
        }
    }
}

#[async_trait]
impl Fanout for LocalFanout {
    async fn publish(&self, event: RoomEvent) -> Result<(), FanoutError> {
        if self.watched.contains(&event.room) {
            self.delivery.deliver(&event);
        }
        Ok(())
    }
    async fn watch(&self, room: &RoomName) -> Result<(), FanoutError> {
        self.watched.add(room);
        Ok(())
    }
    async fn unwatch(&self, room: &RoomName) -> Result<(), FanoutError> {
        self.watched.remove(room);
        self.delivery.room_released(room);
        Ok(())
    }
    async fn watched_anywhere(&self, rooms: &[RoomName]) -> Result<Vec<bool>, FanoutError> {
        Ok(rooms.iter().map(|r| self.watched.contains(r)).collect())
    }
    async fn ready(&self) -> Result<(), FanoutError> {
        Ok(())
    }
}
