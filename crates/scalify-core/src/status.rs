//! What a node and a persister report about themselves to the rest of the cluster (the
//! registry the admin page reads), typed on both sides of the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One node as the admin dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// Start time, ms since the epoch.
    pub started_at: i64,
    pub uptime_secs: u64,
    pub connections: usize,
    /// Distinct users connected.
    pub users: usize,
    /// Rooms with local members.
    pub rooms: usize,
    /// Messages committed through this node per second, over the last 10 s.
    pub messages_per_sec: f64,
    pub busiest: Vec<RoomActivity>,
}

/// A room's recent traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoomActivity {
    pub room: String,
    /// Messages in the last one to two minutes (this minute and the previous one).
    pub messages: u64,
}

/// What the admin page and `/metrics` show of a persister.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersisterStatus {
    pub id: String,
    /// Paused because the database fails.
    pub paused: bool,
    pub partitions: Vec<i32>,
    /// Messages not yet written, per partition (from the client's statistics).
    pub lag: BTreeMap<i32, i64>,
    pub persisted: u64,
    pub dead_lettered: u64,
    pub retries: u64,
    pub restarts: u64,
    /// Last update, ms since the epoch.
    pub updated_at: i64,
}
