use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use scalify_core::{
    ChatError, ClientId, HistoryQuery, Id, Message, MessageText, NewMessage, Password, Room,
    RoomKind, RoomName, SyncRequest, UserRef, Username,
};
use scalify_fanout::{ClusterPresence, EventKind, Fanout, RoomEvent};
use scalify_store::{RoomListing, Store, StoreError};
use serde::Serialize;
use tokio_util::task::TaskTracker;

use crate::activity::{merge_busiest, Activity, RoomActivity};
use crate::auth::Auth;
use crate::presence::Presence;

/// Limits the service enforces. Field docs are the user-facing documentation.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Largest message `text`, in bytes (UTF-8).
    pub max_text_bytes: usize,
    /// Most messages `sync` returns for one room before answering `truncated: true`.
    pub sync_per_room: u32,
    /// Most messages one `sync` returns across all its rooms (bounds one response).
    pub sync_total: u32,
    /// Usernames with the admin role (besides those granted with `scalify admin grant`).
    pub admins: Vec<String>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_text_bytes: 4096,
            sync_per_room: 500,
            sync_total: 5000,
            admins: Vec::new(),
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
    cluster: Option<Arc<dyn ClusterPresence>>,
    /// Subscribing and unsubscribing a room is decided under its shard's lock, from the
    /// presence counts at that moment, so a join racing a leave cannot end unsubscribed.
    interest: Vec<tokio::sync::Mutex<()>>,
    /// Rooms by name. Safe to cache: rooms are never renamed, deleted or change kind.
    rooms: Mutex<HashMap<RoomName, Room>>,
    /// (room, user) pairs known to be members. Safe to cache: membership is never revoked.
    members: Mutex<HashSet<(Id, Id)>>,
    /// Password hashes running at once. Each argon2id hash takes 19 MiB and tens of ms of CPU;
    /// bounding them bounds memory and keeps a burst of sign-ups from starving chat traffic.
    hashing: tokio::sync::Semaphore,
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
}

/// A dependency `/readyz` and the admin page check besides the store and the fan-out (the
/// Kafka brokers in durable mode).
#[async_trait::async_trait]
pub trait Dependency: Send + Sync {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

/// A client request admitted by [`Chat::admit`]: graceful shutdown waits until it is dropped.
pub struct InFlight(#[allow(dead_code)] tokio_util::task::task_tracker::TaskTrackerToken);

/// One node as the admin dashboard shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    pub persisters: Vec<serde_json::Value>,
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
        cluster: Option<Arc<dyn ClusterPresence>>,
        auth: Auth,
        config: ChatConfig,
    ) -> Arc<Self> {
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
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            ),
            in_flight: TaskTracker::new(),
            closing: AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new(),
            activity: Activity::default(),
            started: std::time::Instant::now(),
            started_at: scalify_core::now_ms(),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// This process's id in its cluster (reported by `/healthz`).
    pub fn node(&self) -> &str {
        &self.node
    }

    // ---- accounts -------------------------------------------------------------------------

    pub async fn register(&self, username: &str, password: &str) -> Result<Session, ChatError> {
        let username = Username::parse(username)?;
        let password = Password::parse(password)?;
        let auth = self.auth.clone();
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ChatError::internal())?;
        let hash = tokio::task::spawn_blocking(move || auth.hash_password(password.expose()))
            .await
            .map_err(|_| ChatError::internal())??;
        let user = self
            .store
            .create_user(&username, &hash)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ChatError::conflict("username is taken"),
                other => store_error(other),
            })?;
        let user = UserRef {
            id: user.id,
            username: user.username.to_string(),
        };
        Ok(Session {
            token: self.auth.issue(&user)?,
            user,
        })
    }

    /// Bad credentials answer `unauthorized` with one message, whether or not the user exists,
    /// and take the same time either way.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session, ChatError> {
        let bad = || {
            ChatError::new(
                scalify_core::ErrorCode::Unauthorized,
                "invalid username or password",
            )
        };
        let creds = match Username::parse(username) {
            Ok(name) => self.store.credentials(&name).await.map_err(store_error)?,
            Err(_) => None,
        };
        let auth = self.auth.clone();
        let password = password.to_owned();
        let stored = creds.as_ref().map(|c| c.password_hash.clone());
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ChatError::internal())?;
        let ok =
            tokio::task::spawn_blocking(move || auth.verify_password(&password, stored.as_deref()))
                .await
                .map_err(|_| ChatError::internal())?;
        match creds {
            Some(c) if ok => {
                let user = UserRef {
                    id: c.user.id,
                    username: c.user.username.to_string(),
                };
                Ok(Session {
                    token: self.auth.issue(&user)?,
                    user,
                })
            }
            _ => Err(bad()),
        }
    }

    /// The user a bearer token names.
    pub fn authenticate(&self, token: &str) -> Result<UserRef, ChatError> {
        self.auth.verify(token)
    }

    // ---- rooms ----------------------------------------------------------------------------

    async fn find_room(&self, name: &RoomName) -> Result<Option<Room>, ChatError> {
        if let Some(room) = self.rooms.lock().ok().and_then(|r| r.get(name).cloned()) {
            return Ok(Some(room));
        }
        let room = self.store.room(name).await.map_err(store_error)?;
        if let (Some(room), Ok(mut cache)) = (&room, self.rooms.lock()) {
            insert_bounded(&mut cache, room.name.clone(), room.clone());
        }
        Ok(room)
    }

    async fn is_member(&self, room: Id, user: Id) -> Result<bool, ChatError> {
        if self
            .members
            .lock()
            .map(|m| m.contains(&(room, user)))
            .unwrap_or(false)
        {
            return Ok(true);
        }
        let member = self
            .store
            .is_member(room, user)
            .await
            .map_err(store_error)?;
        if member {
            self.remember_member(room, user);
        }
        Ok(member)
    }

    fn remember_member(&self, room: Id, user: Id) {
        if let Ok(mut m) = self.members.lock() {
            if m.len() >= CACHE_CAP {
                m.clear();
            }
            m.insert((room, user));
        }
    }

    /// The room, if it exists and `user` is a member; `not_found` / `forbidden` otherwise.
    pub async fn member_room(&self, user: &UserRef, room: &str) -> Result<Room, ChatError> {
        let name = RoomName::parse(room)?;
        let room = self
            .find_room(&name)
            .await?
            .ok_or_else(|| ChatError::not_found(format!("no room named '{name}'")))?;
        if !self.is_member(room.id, user.id).await? {
            return Err(ChatError::forbidden(format!(
                "you are not a member of '{name}'"
            )));
        }
        Ok(room)
    }

    async fn fresh_room(&self, room: &Room) -> Result<Room, ChatError> {
        // Cached rooms carry a stale last_seq; answers that report it read it fresh.
        self.store
            .room(&room.name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ChatError::not_found(format!("no room named '{}'", room.name)))
    }

    /// Makes `user` a member of a public room (created on first join), or checks they are a
    /// member of a private room or DM. The room's `last_seq` may be stale (rooms are cached);
    /// read it with [`Chat::last_seq`] when it matters.
    pub async fn join(&self, user: &UserRef, room: &str) -> Result<Room, ChatError> {
        let name = RoomName::parse(room)?;
        let room = match self.find_room(&name).await? {
            Some(room) => room,
            None => {
                let name = RoomName::parse_creatable(room)?;
                let room = self
                    .store
                    .ensure_room(&name, RoomKind::Public, &[user.id])
                    .await
                    .map_err(store_error)?;
                self.remember_member(room.id, user.id);
                return Ok(room);
            }
        };
        if !self.is_member(room.id, user.id).await? {
            if !room.kind.is_open() {
                return Err(ChatError::forbidden(format!("'{name}' is private")));
            }
            self.store
                .add_member(room.id, user.id)
                .await
                .map_err(store_error)?;
            self.remember_member(room.id, user.id);
        }
        Ok(room)
    }

    pub async fn list_rooms(&self, user: &UserRef) -> Result<Vec<RoomListing>, ChatError> {
        self.store.list_rooms(user.id).await.map_err(store_error)
    }

    async fn user_named(&self, username: &str) -> Result<UserRef, ChatError> {
        let name = Username::parse(username)?;
        let user = self
            .store
            .user_by_name(&name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ChatError::not_found(format!("no user named '{name}'")))?;
        Ok(UserRef {
            id: user.id,
            username: user.username.to_string(),
        })
    }

    /// Creates a public or private room with the creator and `members` (usernames) in it.
    pub async fn create_room(
        &self,
        creator: &UserRef,
        name: &str,
        kind: &str,
        members: &[String],
    ) -> Result<Room, ChatError> {
        let name = RoomName::parse_creatable(name)?;
        let kind = match RoomKind::parse(kind) {
            Some(k @ (RoomKind::Public | RoomKind::Private)) => k,
            _ => return Err(ChatError::bad_request("kind must be 'public' or 'private'")),
        };
        if members.len() > 1000 {
            return Err(ChatError::bad_request("at most 1000 members at creation"));
        }
        let mut ids = vec![creator.id];
        for m in members {
            ids.push(self.user_named(m).await?.id);
        }
        ids.sort();
        ids.dedup();
        let room = self
            .store
            .create_room(&name, kind, &ids)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    ChatError::conflict(format!("room '{name}' already exists"))
                }
                other => store_error(other),
            })?;
        for id in ids.into_iter().filter(|id| *id != creator.id) {
            self.notify_added(id, &room).await;
        }
        Ok(room)
    }

    /// Adds `username` to a room. Anyone may add to a public room; only members may add to a
    /// private room; DMs stay between their two users.
    pub async fn add_member(
        &self,
        actor: &UserRef,
        room: &str,
        username: &str,
    ) -> Result<(Room, UserRef), ChatError> {
        let name = RoomName::parse(room)?;
        let room = self
            .find_room(&name)
            .await?
            .ok_or_else(|| ChatError::not_found(format!("no room named '{name}'")))?;
        match room.kind {
            RoomKind::Dm => {
                return Err(ChatError::forbidden(
                    "direct-message rooms have fixed members",
                ))
            }
            RoomKind::Private if !self.is_member(room.id, actor.id).await? => {
                return Err(ChatError::forbidden(format!(
                    "you are not a member of '{name}'"
                )))
            }
            _ => {}
        }
        let user = self.user_named(username).await?;
        let added = self
            .store
            .add_member(room.id, user.id)
            .await
            .map_err(store_error)?;
        self.remember_member(room.id, user.id);
        let room = self.fresh_room(&room).await?;
        if added {
            self.notify_added(user.id, &room).await;
        }
        Ok((room, user))
    }

    /// The members of a room `user` belongs to (at most 1,000: `MEMBERS_LIMIT`), by username.
    pub async fn members(&self, user: &UserRef, room: &str) -> Result<Vec<UserRef>, ChatError> {
        let room = self.member_room(user, room).await?;
        let members = self
            .store
            .members(room.id, MEMBERS_LIMIT)
            .await
            .map_err(store_error)?;
        Ok(members
            .into_iter()
            .map(|u| UserRef {
                id: u.id,
                username: u.username.to_string(),
            })
            .collect())
    }

    /// The DM room between `actor` and `username`: the same room whichever of them asks.
    pub async fn dm(&self, actor: &UserRef, username: &str) -> Result<Room, ChatError> {
        let other = self.user_named(username).await?;
        if other.id == actor.id {
            return Err(ChatError::bad_request(
                "cannot open a direct-message room with yourself",
            ));
        }
        let name = RoomName::for_dm(actor.id, other.id);
        let room = self
            .store
            .ensure_room(&name, RoomKind::Dm, &[actor.id, other.id])
            .await
            .map_err(store_error)?;
        self.remember_member(room.id, actor.id);
        self.remember_member(room.id, other.id);
        // Both sides: the other user's sidebar, and the asker's other connections.
        self.notify_added(other.id, &room).await;
        self.notify_added(actor.id, &room).await;
        Ok(room)
    }

    // ---- messages -------------------------------------------------------------------------

    /// Sends a message: validates it, commits it, publishes it to the room, and returns it.
    /// Returns only after the commit. A repeat of (sender, room, client_id) returns the first
    /// message and publishes nothing.
    ///
    /// Runs in the caller's task, so the caller must not drop it half-way: a message
    /// committed but then not published would reach no member until they sync. A Socket.IO
    /// event runs as a task of its own that nothing cancels (socketioxide spawns it, inside
    /// [`Chat::track`]); an HTTP handler, which axum drops when its client hangs up, runs the
    /// send with [`Chat::spawn`].
    pub async fn send(
        &self,
        sender: &UserRef,
        room: &str,
        text: &str,
        client_id: &str,
    ) -> Result<Message, ChatError> {
        let new = self.accept(sender, room, text, client_id).await?;
        self.commit_and_publish(new).await
    }

    /// Everything a send checks before its commit: the server is not closing, the text and
    /// client id are valid, the sender is a member.
    async fn accept(
        &self,
        sender: &UserRef,
        room: &str,
        text: &str,
        client_id: &str,
    ) -> Result<NewMessage, ChatError> {
        if self.is_closing() {
            return Err(ChatError::shutting_down());
        }
        let text = MessageText::parse(text, self.config.max_text_bytes)?;
        let client_id = ClientId::parse(client_id)?;
        let room = self.member_room(sender, room).await?;
        Ok(NewMessage {
            room_id: room.id,
            room: room.name,
            sender: sender.clone(),
            text,
            client_id,
        })
    }

    async fn commit_and_publish(&self, new: NewMessage) -> Result<Message, ChatError> {
        let appended = self.store.append(new).await.map_err(store_error)?;
        if appended.duplicate {
            metrics::counter!("scalify_messages_accepted_total", "outcome" => "duplicate")
                .increment(1);
        } else {
            self.broadcast_stored(&appended.message, "stored").await;
        }
        Ok(appended.message)
    }

    /// Older messages of a room, ascending, and whether there are more before them.
    pub async fn history(
        &self,
        user: &UserRef,
        room: &str,
        query: HistoryQuery,
    ) -> Result<(Vec<Message>, bool), ChatError> {
        let room = self.member_room(user, room).await?;
        let messages = self
            .store
            .history(&room, query.before_seq, query.limit)
            .await
            .map_err(store_error)?;
        // seq is gap-free from 1, so anything older exists exactly when the oldest message
        // returned is above 1; an empty page means nothing lies below before_seq.
        let has_more = messages.first().is_some_and(|m| m.seq > 1);
        Ok((messages, has_more))
    }

    /// Everything after each room's `last_seq`, capped per room and in total.
    pub async fn sync(
        &self,
        user: &UserRef,
        request: SyncRequest,
    ) -> Result<BTreeMap<RoomName, SyncedRoom>, ChatError> {
        let mut budget = self.config.sync_total;
        let mut out = BTreeMap::new();
        for (name, last_seq) in request.rooms {
            let room = self.member_room(user, name.as_str()).await?;
            let cap = self.config.sync_per_room.min(budget);
            let mut messages = if cap == 0 {
                Vec::new()
            } else {
                self.store
                    .after(&room, last_seq, cap + 1)
                    .await
                    .map_err(store_error)?
            };
            let truncated = messages.len() as u64 > u64::from(cap) || {
                // With no budget left we could not look: say truncated if anything is newer.
                cap == 0 && self.fresh_room(&room).await?.last_seq > last_seq
            };
            messages.truncate(cap as usize);
            budget -= messages.len() as u32;
            out.insert(
                name,
                SyncedRoom {
                    messages,
                    truncated,
                },
            );
        }
        Ok(out)
    }

    // ---- typing and presence --------------------------------------------------------------

    pub async fn typing(&self, user: &UserRef, room: &str) -> Result<(), ChatError> {
        let room = self.member_room(user, room).await?;
        let payload = serde_json::json!({ "room": room.name, "user": user });
        self.publish(room.name, EventKind::Typing, &payload, Some(user.id))
            .await;
        Ok(())
    }

    /// Publishes an event to the room. A failure is logged, not returned: the event's cause
    /// (a commit, a presence change) already happened, and members recover messages with
    /// `sync`.
    async fn publish<T: Serialize>(
        &self,
        room: RoomName,
        kind: EventKind,
        payload: &T,
        except: Option<Id>,
    ) {
        match RoomEvent::new(room, kind, payload, except) {
            Ok(event) => {
                let room = event.room.clone();
                if let Err(e) = self.fanout.publish(event).await {
                    tracing::warn!(error = %e, %room, "publish failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize event"),
        }
    }

    /// A connection of `user` entered `room` (after a successful `join`). Subscribes this node
    /// to the room if it is its first local connection there (so when this returns, every
    /// message committed from now on reaches the connection), announces the user online if
    /// they were not online anywhere, and returns who is online now.
    pub async fn connection_joined(&self, room: &Room, user: &UserRef) -> Vec<UserRef> {
        let t = self.presence.join(&room.name, user);
        if t.room_changed {
            self.update_interest(&room.name).await;
        }
        if t.user_changed {
            let announce = match &self.cluster {
                Some(c) => c.arrive(&room.name, user).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, room = %room.name, "cluster presence unavailable");
                    true
                }),
                None => true,
            };
            if announce {
                self.announce(&room.name, user, true).await;
            }
        }
        self.online(&room.name).await
    }

    /// The users online in `room` now, on every node (this node's alone if the cluster
    /// registry is unreachable).
    pub async fn online(&self, room: &RoomName) -> Vec<UserRef> {
        let mut users = self.presence.online(room);
        if let Some(c) = &self.cluster {
            match c.online(room).await {
                Ok(remote) => {
                    users.extend(remote);
                    users.sort_by(|a, b| a.username.cmp(&b.username).then(a.id.cmp(&b.id)));
                    users.dedup_by(|a, b| a.id == b.id);
                }
                Err(e) => tracing::warn!(error = %e, %room, "cluster presence unavailable"),
            }
        }
        users
    }

    /// The room's newest committed seq, read from the store.
    pub async fn last_seq(&self, room: &Room) -> Result<u64, ChatError> {
        Ok(self.fresh_room(room).await?.last_seq)
    }

    /// A connection of `user` left `room` (by `leave` or by disconnecting).
    pub async fn connection_left(&self, room: &RoomName, user: &UserRef) {
        let t = self.presence.leave(room, user.id);
        if t.user_changed {
            let announce = match &self.cluster {
                Some(c) => c.depart(room, user).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, %room, "cluster presence unavailable");
                    true
                }),
                None => true,
            };
            if announce {
                self.announce(room, user, false).await;
            }
        }
        if t.room_changed {
            self.update_interest(room).await;
        }
    }

    async fn announce(&self, room: &RoomName, user: &UserRef, online: bool) {
        let payload = serde_json::json!({ "room": room, "user": user, "online": online });
        self.publish(room.clone(), EventKind::Presence, &payload, None)
            .await;
    }

    /// Subscribes to or unsubscribes from `room`, whichever its local connections call for
    /// now (decided under the room's shard lock: the last decision sees the latest counts).
    async fn update_interest(&self, room: &RoomName) {
        let _guard = self.interest[crate::presence::bucket_of(room, INTEREST_SHARDS)]
            .lock()
            .await;
        metrics::gauge!("scalify_rooms_local").set(self.presence.room_count() as f64);
        let counts = if room.is_inbox() {
            &self.inboxes
        } else {
            &self.presence
        };
        let wanted = counts.has_room(room);
        let r = if wanted {
            self.fanout.watch(room).await
        } else {
            self.fanout.unwatch(room).await
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, %room, "fan-out subscription change failed; it is retried on reconnect");
        }
    }

    /// A connection of `user` opened: their inbox reaches this node while any is open.
    pub async fn connection_opened(&self, user: &UserRef) {
        let inbox = RoomName::inbox(user.id);
        if self.inboxes.join(&inbox, user).room_changed {
            self.update_interest(&inbox).await;
        }
    }

    pub async fn connection_closed(&self, user: &UserRef) {
        let inbox = RoomName::inbox(user.id);
        if self.inboxes.leave(&inbox, user.id).room_changed {
            self.update_interest(&inbox).await;
        }
    }

    /// Tells every connection of `user`, on any node, that they are now in `room`.
    async fn notify_added(&self, user: Id, room: &Room) {
        let payload = serde_json::json!({ "room": room });
        self.publish(RoomName::inbox(user), EventKind::RoomAdded, &payload, None)
            .await;
    }

    /// Keeps this node's presence entries alive in the cluster registry and announces users
    /// whose nodes died, until shutdown. A no-op for an embedded node.
    ///
    /// Each refresh interval is split into ticks of about [`crate::presence::TICK`], and each tick
    /// renews and sweeps one slice of the entries and rooms: the same work per interval, but
    /// in small steps. Renewing every entry at once put a burst of thousands of Redis scripts
    /// ahead of the sends' scripts every interval (a jump in the ack tail every 5 s, see
    /// docs/performance.md).
    pub async fn keep_presence(self: Arc<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let interval = cluster.refresh_interval();
        let slices = crate::presence::slices_for(interval);
        let mut tick = tokio::time::interval(interval / slices as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for slice in (0..slices).cycle() {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Taken afresh each tick: a user who left since the last tick is not renewed.
            match cluster
                .refresh(&self.presence.entries_in(slice, slices))
                .await
            {
                Ok(revived) => {
                    for (room, user) in revived {
                        self.announce(&room, &user, true).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
            }
            if slice == 0 {
                match serde_json::to_string(&self.node_status()) {
                    Ok(status) => {
                        if let Err(e) = cluster.announce_node(&status).await {
                            tracing::warn!(error = %e, "cannot announce this node to the cluster");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot serialize node status"),
                }
            }
            match cluster.sweep(&self.presence.rooms_in(slice, slices)).await {
                Ok(gone) => {
                    for (room, user) in gone {
                        tracing::info!(%room, user = %user.username, "presence expired (its node stopped refreshing)");
                        self.announce(&room, &user, false).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
            }
        }
    }

    // ---- administration --------------------------------------------------------------------

    /// Admins are named in the configuration or granted in the store.
    pub async fn is_admin(&self, user: &UserRef) -> Result<bool, ChatError> {
        if self.config.admins.iter().any(|a| a == &user.username) {
            return Ok(true);
        }
        self.store.is_admin(user.id).await.map_err(store_error)
    }

    pub fn node_status(&self) -> NodeStatus {
        let now = unix_secs();
        NodeStatus {
            node: self.node.clone(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            connections: self.inboxes.connection_count(),
            users: self.inboxes.room_count(),
            rooms: self.presence.room_count(),
            messages_per_sec: self.activity.rate(now, 10),
            busiest: self.activity.busiest(now, 10),
        }
    }

    /// The admin dashboard's data; `forbidden` unless `user` is an admin.
    pub async fn overview(&self, user: &UserRef) -> Result<Overview, ChatError> {
        if !self.is_admin(user).await? {
            return Err(ChatError::forbidden(
                "the admin dashboard is for admins only",
            ));
        }
        let me = self.node_status();
        let mut nodes = vec![me.clone()];
        if let Some(cluster) = &self.cluster {
            match cluster.nodes().await {
                Ok(statuses) => {
                    for s in statuses {
                        match serde_json::from_str::<NodeStatus>(&s) {
                            Ok(n) if n.node != me.node => nodes.push(n),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "undecodable node status"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the cluster's nodes"),
            }
        }
        nodes.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.node.cmp(&b.node)));
        let mut persisters = Vec::new();
        if let Some(cluster) = &self.cluster {
            match cluster.persisters().await {
                Ok(statuses) => {
                    for s in statuses {
                        match serde_json::from_str::<serde_json::Value>(&s) {
                            Ok(v) => persisters.push(v),
                            Err(e) => tracing::warn!(error = %e, "undecodable persister status"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the persisters"),
            }
        }
        persisters.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(Overview {
            node: me.node,
            messages_per_sec: nodes.iter().map(|n| n.messages_per_sec).sum(),
            busiest: merge_busiest(nodes.iter().map(|n| n.busiest.clone()), 10),
            nodes,
            checks: self.readiness().await,
            persisters,
        })
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
    async fn broadcast_stored(&self, m: &Message, outcome: &'static str) {
        self.activity.record(&m.room, unix_secs());
        metrics::counter!("scalify_messages_accepted_total", "outcome" => outcome).increment(1);
        let kind = EventKind::Message {
            seq: m.seq,
            ts: m.ts,
        };
        self.publish(m.room.clone(), kind, m, None).await;
    }
}
