//! [`Chat`], the service, split by what it does: accounts, rooms, messages, typing and presence
//! (`online`), administration; the struct, its construction and its lifecycle (admission of
//! requests, graceful drain) are here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use scalify_core::Backoff;
use scalify_core::{
    ChatError, ClientId, HistoryQuery, Id, Message, MessageText, NewMessage, Password, Room,
    RoomKind, RoomName, SyncRequest, UserRef, Username,
};
use scalify_fanout::{
    AttemptLog, ClusterPresence, EventKind, Fanout, LocalAttempts, Registry, RoomEvent,
};
use scalify_store::{ReadState, RoomListing, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use crate::activity::{merge_busiest, Activity};
use crate::auth::{Auth, HashGate};
use crate::presence::Presence;
pub use scalify_core::{NodeStatus, PersisterStatus, RoomActivity};

mod accounts;
mod budget;
pub use accounts::Authenticated;
pub use budget::{Cost, SHARE_EVERY};
mod admin;
mod messages;
pub use messages::{Change, SearchHit, SearchResults};
mod notify;
mod online;
mod push;
mod read;
mod rooms;
mod uploads;
pub use notify::{NotifyChoice, Receipt, SettingsPatch, RECEIPTS_LIMIT, RECEIPT_EVERY};
pub use push::{PushConfig, PushKeys};
pub use read::ReadMarker;
pub use uploads::{Download, UploadConfig};

/// Limits the service enforces. Field docs are the user-facing documentation.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Largest message `text`, in bytes (UTF-8).
    pub max_text_bytes: usize,
    /// Most messages `sync` returns for one room before answering `truncated: true`.
    pub sync_per_room: u32,
    /// Most messages one `sync` returns across all its rooms (bounds one response).
    pub sync_total: u32,
    /// Usernames given the admin role by the configuration (`--admins`). Each is bound to its
    /// account, by user id, when the node starts ([`Chat::resolve_admins`]); a name with no
    /// account stops the start, so nobody can claim the role by registering the name.
    pub admins: Vec<String>,
    /// How logins and registrations are throttled.
    pub throttle: ThrottleConfig,
    /// Each user's budget, per second and as a burst, in sends: every request of theirs,
    /// whatever its transport, draws on it by its [`Cost`]. A rate of 0 disables it.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Most connections one user may hold open on this node.
    pub max_connections_per_user: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_text_bytes: 4096,
            sync_per_room: 500,
            sync_total: 5000,
            admins: Vec::new(),
            throttle: ThrottleConfig::default(),
            rate_limit_per_sec: 20,
            rate_limit_burst: 40,
            max_connections_per_user: 20,
        }
    }
}

/// Throttling of password guessing and mass registration. Counts are per node in embedded
/// mode and shared by every node of a cluster (Redis). A `free` of 0 disables a rule.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Logins per account: after `free` failed ones, each further attempt waits 1 s, 2 s,
    /// 4 s, … up to 15 minutes after the one before; a success clears the account's count.
    pub login_per_account: Backoff,
    /// Failed logins per client address, whatever the accounts, by the same backoff.
    pub login_per_address: Backoff,
    /// Registrations per client address: `free` of them, then one an hour; an address that
    /// registers nothing for an hour starts over.
    pub registrations_per_address: Backoff,
    /// How long a login or registration waits for a password-hashing slot before it is
    /// refused with `rate_limited`.
    pub hash_queue_wait: std::time::Duration,
}

impl ThrottleConfig {
    /// The login backoff with `free` attempts (0: no throttle).
    pub fn login(free: u32) -> Backoff {
        Backoff {
            free,
            base_ms: 1000,
            max_ms: 15 * 60 * 1000,
            forget_ms: 15 * 60 * 1000,
        }
    }

    /// The registration rule with `free` registrations (0: no limit).
    pub fn registrations(free: u32) -> Backoff {
        Backoff {
            free,
            base_ms: 3600 * 1000,
            max_ms: 3600 * 1000,
            forget_ms: 3600 * 1000,
        }
    }

    /// No throttling at all (tests that register and log in many users from one address).
    pub fn off() -> Self {
        ThrottleConfig {
            login_per_account: Self::login(0),
            login_per_address: Self::login(0),
            registrations_per_address: Self::registrations(0),
            ..Self::default()
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            login_per_account: Self::login(5),
            login_per_address: Self::login(20),
            registrations_per_address: Self::registrations(20),
            hash_queue_wait: std::time::Duration::from_millis(500),
        }
    }
}

/// A signed-in user and their token.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub token: String,
    pub user: UserRef,
}

/// One room's part of a `sync` answer.
#[derive(Debug, Clone, Serialize)]
pub struct SyncedRoom {
    pub messages: Vec<Message>,
    pub truncated: bool,
}

/// Caches are bounded: past this many entries they start over (they only save lookups).
const CACHE_CAP: usize = 100_000;

/// While the store cannot be reached, how long a session verified before still lets its token
/// in (a sign-out needs the store, so none can happen meanwhile; docs/security.md says what
/// this leaves open).
pub(crate) const SESSION_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

pub struct Chat {
    /// This process's id in its cluster (a ULID, new at every start).
    node: String,
    store: Arc<dyn Store>,
    fanout: Arc<dyn Fanout>,
    auth: Arc<Auth>,
    config: ChatConfig,
    /// This node's connections per room and user.
    presence: Presence,
    /// This node's connections per user, counted in each user's inbox (`RoomName::inbox`): the
    /// inbox is watched while any is open. Same counting as room presence, kept apart so
    /// inboxes never show up as rooms.
    inboxes: Presence,
    /// Who is online on any node; `None` for an embedded node, whose own counts are the truth.
    cluster: Option<ClusterLinks>,
    /// Subscribing and unsubscribing a room is decided under its shard's lock, from the
    /// presence counts at that moment, so a join racing a leave cannot end unsubscribed.
    interest: Vec<tokio::sync::Mutex<()>>,
    /// Rooms by name. Safe to cache: rooms are never renamed, deleted or change kind.
    rooms: Mutex<HashMap<RoomName, Room>>,
    /// (room, user) pairs known to be members. Safe to cache: membership is never revoked.
    members: Mutex<HashSet<(Id, Id)>>,
    /// Password hashes running at once (one per core), and how long a request may wait for
    /// one: bounds memory, and keeps a flood of logins from starving chat traffic or making a
    /// real login wait behind it.
    hashing: HashGate,
    /// Attempts to log in and register, per account and per client address: shared by the
    /// cluster when there is one, else this node's.
    attempts: Arc<dyn AttemptLog>,
    /// Counts attempts while the cluster's log cannot be reached, so each node still throttles
    /// on its own.
    local_attempts: LocalAttempts,
    /// Each user's request budget (shared with the cluster's other nodes, when there are any).
    budgets: budget::Budgets,
    /// Sessions this node found open in the store, and when: while the store cannot be
    /// reached, a token whose session was verified within [`SESSION_GRACE`] is accepted.
    verified_sessions: Mutex<HashMap<String, (Id, std::time::Instant)>>,
    /// Users' settings, as last read or changed (every node hears of a change).
    settings: Mutex<HashMap<Id, scalify_core::Settings>>,
    /// Receipts of read marks made here, waiting to be sent (coalesced per member and room).
    receipts: Mutex<HashMap<(Id, Id), notify::PendingReceipt>>,
    /// The accounts `--admins` named when the node started, by user id.
    config_admins: std::sync::RwLock<HashSet<Id>>,
    /// Sends between validation and their ack; graceful shutdown waits for them.
    in_flight: TaskTracker,
    closing: AtomicBool,
    /// Stops background workers (the presence keeper) at shutdown.
    stop: tokio_util::sync::CancellationToken,
    activity: Activity,
    started: std::time::Instant,
    started_at: i64,
    /// More dependencies to check (see [`Dependency`]).
    checks: Mutex<Vec<Arc<dyn Dependency>>>,
    /// Web Push, when the node offers it ([`Chat::enable_push`]).
    push: std::sync::OnceLock<PushConfig>,
    /// Attachments, when the node takes them ([`Chat::enable_uploads`]).
    uploads: std::sync::OnceLock<uploads::Uploads>,
}

/// A dependency `/readyz` and the admin page check besides the store and the fan-out (the
/// Kafka brokers in durable mode).
#[async_trait::async_trait]
pub trait Dependency: Send + Sync {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

/// What a node of a cluster shares with the others; an embedded node has none.
#[derive(Clone)]
pub struct ClusterLinks {
    /// Who is online in each room, on any node.
    pub presence: Arc<dyn ClusterPresence>,
    /// The live nodes and persisters, for the admin page.
    pub registry: Arc<dyn Registry>,
    /// Login and registration attempts, so a throttle holds on every node.
    pub attempts: Arc<dyn AttemptLog>,
}

/// A client request admitted by [`Chat::admit`]: graceful shutdown waits until it is dropped.
pub struct InFlight(#[allow(dead_code)] tokio_util::task::task_tracker::TaskTrackerToken);

/// The admin dashboard's data: the cluster at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The node answering.
    pub node: String,
    pub nodes: Vec<NodeStatus>,
    /// Messages per second, all nodes.
    pub messages_per_sec: f64,
    /// Busiest rooms of the last one to two minutes, all nodes.
    pub busiest: Vec<RoomActivity>,
    /// This node's dependencies: name and error, if failing.
    pub checks: Vec<(&'static str, Option<String>)>,
    /// The persisters that announced themselves recently (durable mode): id, paused, lag per
    /// partition, totals. Empty when there are none.
    pub persisters: Vec<PersisterStatus>,
}

const INTEREST_SHARDS: usize = 64;
/// Most members one `members` answer lists (bounds the response).
pub const MEMBERS_LIMIT: u32 = 1000;

fn store_error(e: StoreError) -> ChatError {
    match e {
        StoreError::Conflict => ChatError::conflict("already exists"),
        StoreError::NotFound => ChatError::not_found("not found"),
        StoreError::Retry(why) => {
            tracing::warn!(%why, "send not completed; the client may retry");
            ChatError::new(scalify_core::ErrorCode::Internal, why)
        }
        other => {
            tracing::error!(error = %other, "store failure");
            ChatError::internal()
        }
    }
}

fn unix_secs() -> u64 {
    (scalify_core::now_ms() / 1000).max(0) as u64
}

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: V) {
    if map.len() >= CACHE_CAP {
        map.clear();
    }
    map.insert(k, v);
}

impl Chat {
    pub fn new(
        node: String,
        store: Arc<dyn Store>,
        fanout: Arc<dyn Fanout>,
        cluster: Option<ClusterLinks>,
        auth: Auth,
        config: ChatConfig,
    ) -> Arc<Self> {
        let hashing = HashGate::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            config.throttle.hash_queue_wait,
        );
        let budgets = budget::Budgets::new(config.rate_limit_per_sec, config.rate_limit_burst);
        let attempts: Arc<dyn AttemptLog> = match &cluster {
            Some(links) => links.attempts.clone(),
            None => Arc::new(LocalAttempts::new()),
        };
        Arc::new(Chat {
            node,
            store,
            fanout,
            auth: Arc::new(auth),
            config,
            presence: Presence::default(),
            inboxes: Presence::default(),
            cluster,
            interest: (0..INTEREST_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            rooms: Mutex::new(HashMap::new()),
            members: Mutex::new(HashSet::new()),
            hashing,
            attempts,
            local_attempts: LocalAttempts::new(),
            verified_sessions: Mutex::new(HashMap::new()),
            budgets,
            settings: Mutex::new(HashMap::new()),
            receipts: Mutex::new(HashMap::new()),
            config_admins: std::sync::RwLock::new(HashSet::new()),
            in_flight: TaskTracker::new(),
            closing: AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new(),
            activity: Activity::default(),
            started: std::time::Instant::now(),
            started_at: scalify_core::now_ms(),
            checks: Mutex::new(Vec::new()),
            push: std::sync::OnceLock::new(),
            uploads: std::sync::OnceLock::new(),
        })
    }

    /// This process's id in its cluster (reported by `/healthz`).
    pub fn node(&self) -> &str {
        &self.node
    }

    // ---- lifecycle ------------------------------------------------------------------------

    /// Runs `work` as a task of its own, which completes whatever its caller does (a caller
    /// dropped half-way does not cut it short), and which graceful shutdown waits for.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.in_flight.spawn(work)
    }

    /// Admits one request of a client as in flight — graceful shutdown waits for it and its
    /// answer — or, once shutdown has begun, refuses it (`None`).
    ///
    /// The request is counted before the check, and [`Chat::drain`] sets the flag before it
    /// waits for the count: a request either is waited for or sees the flag.
    pub fn admit(&self) -> Option<InFlight> {
        let token = self.in_flight.token();
        std::sync::atomic::fence(Ordering::SeqCst);
        (!self.is_closing()).then_some(InFlight(token))
    }

    /// Whether graceful shutdown has begun: new sends and connections are refused.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Graceful shutdown, step one: refuse new sends, wait for in-flight ones (their acks go
    /// out), and flush the store.
    pub async fn drain(&self) {
        self.closing.store(true, Ordering::Release);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.stop.cancel();
        self.in_flight.close();
        self.in_flight.wait().await;
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "store flush failed during shutdown");
        }
    }

    /// Stops the engines' background work; the last step of shutdown, once connections are
    /// closed (their departures have been announced).
    pub async fn close(&self) {
        self.fanout.shutdown().await;
    }

    /// The longest message text accepted, in UTF-8 bytes (`--max-message-bytes`): clients
    /// count against it before sending.
    pub fn max_text_bytes(&self) -> usize {
        self.config.max_text_bytes
    }

    /// Adds a dependency to `/readyz` and the admin page.
    pub fn add_check(&self, check: Arc<dyn Dependency>) {
        if let Ok(mut c) = self.checks.lock() {
            c.push(check);
        }
    }

    /// Readiness of every engine, as (name, error) for the failing ones.
    pub async fn readiness(&self) -> Vec<(&'static str, Option<String>)> {
        if self.is_closing() {
            // Draining: a load balancer should send new clients elsewhere while this node
            // still serves its own (their last acks, a polling client's last request).
            return vec![("node", Some("shutting down".into()))];
        }
        let store = self.store.ping().await.err().map(|e| e.to_string());
        let fanout = self.fanout.ready().await.err().map(|e| e.to_string());
        let mut out = vec![("store", store), ("fanout", fanout)];
        let extra: Vec<Arc<dyn Dependency>> =
            self.checks.lock().map(|c| c.clone()).unwrap_or_default();
        for dep in extra {
            out.push((dep.name(), dep.check().await.err()));
        }
        out
    }

    /// Broadcasts a message whose commit finished after its sender stopped waiting (durable
    /// mode: the broker confirmed it late). Without this its room would only learn of it
    /// from the next message's seq.
    pub async fn publish_late(&self, m: Message) {
        self.broadcast_stored(&m, "stored_late").await;
    }

    /// Counts a newly stored message (metrics, activity) and broadcasts it to its room.
    pub(super) async fn broadcast_stored(&self, m: &Message, outcome: &'static str) {
        self.activity.record(&m.room, unix_secs());
        metrics::counter!("scalify_messages_accepted_total", "outcome" => outcome).increment(1);
        let kind = EventKind::Message {
            seq: m.seq,
            ts: m.ts,
        };
        self.publish(m.room.clone(), kind, m, None).await;
    }
}
