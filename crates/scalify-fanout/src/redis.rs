//! The Redis engine: fan-out between nodes over Redis pub/sub, and cluster-wide presence.
//!
//! **Fan-out.** Each room has its own channel, `<prefix>:room:<room>`. A node subscribes to the
//! channels of the rooms it has local members in ([`Fanout::watch`]) and to nothing else, so a
//! message reaches only the nodes that need it — unlike the Socket.IO Redis adapter, which
//! sends every message to every node. The node that accepted a message delivers it to its own
//! members directly and publishes it once; other nodes receive one copy each, whatever their
//! number of local recipients. (Redis also returns the publisher's own copy when it is
//! subscribed; it is recognised by its node id and dropped.)
//!
//! When Redis is unreachable, local delivery goes on; publishing fails (logged, counted in
//! readiness), the subscriber reconnects with backoff and resubscribes every watched room.
//! Members on other nodes see a jump in `seq` and recover the missed messages with `sync`.
//!
//! **Presence.** [`RedisPresence`] keeps, per room, a sorted set of online users scored by
//! expiry time, and per (room, user) a sorted set of the nodes where the user has connections.
//! Nodes refresh their entries every `ttl / 3`; a node that dies stops counting when its
//! entries expire, and the first live node to sweep the room announces the users it leaves
//! offline. Every change is one Lua script, so two nodes never both announce one transition.
//! Times come from the Redis server's clock (`TIME`), so node clocks need not agree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use scalify_core::{Id, RoomName, UserRef};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{ClusterPresence, EventKind, Fanout, FanoutError, LocalDelivery, RoomEvent, Watched};

/// Redis settings. Field docs are the user-facing documentation.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub prefix: String,
    /// How long a node's presence entries live without a refresh: a node that dies stops
    /// counting users as online within this time (plus one refresh interval).
    pub presence_ttl: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "scalify".into(),
            presence_ttl: Duration::from_secs(15),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> FanoutError {
    FanoutError::Unavailable(e.to_string())
}

/// Events waiting to be published. Beyond it (Redis stalled) new events are dropped for
/// other nodes — their members recover messages with `sync` — instead of growing memory.
const OUTBOX_DEPTH: usize = 16 * 1024;
/// Most PUBLISH commands sent as one pipeline.
const PUBLISH_BATCH: usize = 256;

/// Sends queued events to Redis, in order, as pipelines: one round trip for everything that
/// queued up while the previous one was in flight. Sends never wait for Redis — their ack
/// means committed, and local members already have the message.
async fn publisher_task(
    mut conn: ConnectionManager,
    mut queued: mpsc::Receiver<(String, Vec<u8>)>,
    stop: CancellationToken,
) {
    // Log once per outage, not once per message.
    let mut failing = false;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = queued.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        for (channel, envelope) in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(channel).arg(envelope).ignore();
        }
        match pipe.exec_async(&mut conn).await {
            Ok(()) => {
                metrics::counter!("scalify_redis_published_total").increment(n as u64);
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("publishing to Redis again");
                }
            }
            Err(e) => {
                metrics::counter!("scalify_redis_publish_failures_total").increment(n as u64);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, dropped = n, "cannot publish to Redis; members on other nodes will recover missed messages with sync");
                }
            }
        }
    }
}

/// Most presence scripts sent as one pipeline by the periodic refresh and sweep. Redis runs a
/// client's pipelined commands back to back, so every other client (a send's seq allocation,
/// its recent-window deposit) waits behind one chunk: with 500, 1,000 users online and
/// 5,000 sends/s, the send→ack p99 jumped to 21–44 ms at each refresh (every 5 s) against
/// ~12–14 ms between them; with 50 the jumps were smaller (p999 20–22 against 27–42 ms) but
/// not gone (docs/performance.md). The node's presence keeper also renews a slice
/// of its entries at a time (`Chat::keep_presence`), so a refresh is rarely more than one chunk.
const PIPELINE_CHUNK: usize = 50;

/// Most channels named in one SUBSCRIBE when (re)subscribing many rooms.
const SUBSCRIBE_CHUNK: usize = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects to Redis: the shared command connection (reconnects by itself) and a client for
/// the subscriber's dedicated connection. Fails if Redis cannot be reached now.
pub async fn connect(
    config: &RedisConfig,
) -> Result<(redis::Client, ConnectionManager), FanoutError> {
    let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
    let manager = ConnectionManager::new_with_config(
        client.clone(),
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2)),
    )
    .await
    .map_err(|e| FanoutError::Unavailable(format!("cannot connect to Redis: {e}")))?;
    Ok((client, manager))
}

pub struct RedisFanout {
    node: String,
    prefix: String,
    local: Arc<dyn LocalDelivery>,
    publisher: ConnectionManager,
    /// Events waiting for the publisher task, already encoded as (channel, envelope).
    outbox: mpsc::Sender<(String, Vec<u8>)>,
    /// Rooms with local members: the channels the subscriber must be on.
    watched: Watched,
    /// The live subscriber connection's command half, if connected.
    sink: Mutex<Option<PubSubSink>>,
    subscribed: AtomicBool,
    stop: CancellationToken,
}

impl RedisFanout {
    /// Starts the fan-out and its subscriber task (which runs until [`Fanout::shutdown`]).
    pub fn start(
        config: &RedisConfig,
        client: redis::Client,
        publisher: ConnectionManager,
        node: &str,
        local: Arc<dyn LocalDelivery>,
    ) -> Arc<Self> {
        let (outbox, queued) = mpsc::channel(OUTBOX_DEPTH);
        let stop = CancellationToken::new();
        tokio::spawn(publisher_task(publisher.clone(), queued, stop.clone()));
        let fanout = Arc::new(RedisFanout {
            node: node.to_owned(),
            prefix: config.prefix.clone(),
            local,
            publisher,
            outbox,
            watched: Watched::default(),
            sink: Mutex::new(None),
            subscribed: AtomicBool::new(false),
            stop,
        });
        tokio::spawn(fanout.clone().subscriber(client));
        fanout
    }

    fn channel(&self, room: &RoomName) -> String {
        format!("{}:room:{}", self.prefix, room)
    }

    fn current_sink(&self) -> Option<PubSubSink> {
        self.sink.lock().ok().and_then(|s| s.clone())
    }

    fn set_sink(&self, sink: Option<PubSubSink>) {
        if let Ok(mut s) = self.sink.lock() {
            *s = sink;
        }
    }

    /// The subscriber connection's life: connect, subscribe every watched room, hand each
    /// message to local delivery; on loss, reconnect with backoff.
    async fn subscriber(self: Arc<Self>, client: redis::Client) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe_session(&client).await {
                Ok(()) => return, // stopped
                Err(e) => {
                    metrics::counter!("scalify_redis_disconnects_total").increment(1);
                    self.subscribed.store(false, Ordering::Release);
                    self.set_sink(None);
                    tracing::warn!(error = %e, retry_in = ?backoff, "Redis subscriber connection lost; members on other nodes will recover missed messages with sync");
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscriber connection, until it fails (`Err`) or the fan-out stops (`Ok`).
    async fn subscribe_session(&self, client: &redis::Client) -> Result<(), FanoutError> {
        let pubsub = tokio::select! {
            () = self.stop.cancelled() => return Ok(()),
            r = client.get_async_pubsub() => r.map_err(unavailable)?,
        };
        let (mut sink, mut stream) = pubsub.split();
        // Publish the sink before reading the watched set: a room watched from now on is
        // subscribed by `watch` itself, one watched before is in the snapshot below.
        self.set_sink(Some(sink.clone()));
        let rooms: Vec<String> = self.watched.all().iter().map(|r| self.channel(r)).collect();
        for chunk in rooms.chunks(SUBSCRIBE_CHUNK) {
            sink.subscribe(chunk).await.map_err(unavailable)?;
        }
        self.subscribed.store(true, Ordering::Release);
        tracing::info!(rooms = rooms.len(), "Redis subscriber connected");
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                msg = stream.next() => match msg {
                    Some(msg) => self.on_message(msg.get_payload_bytes()),
                    None => return Err(FanoutError::Unavailable("connection closed".into())),
                },
            }
        }
    }

    fn on_message(&self, bytes: &[u8]) {
        // Our own message, already delivered locally: Redis echoes every PUBLISH to the
        // publisher's subscription too. Recognised by the envelope's first line alone, before
        // any decoding (the payload's JSON check is the costly part, and under load half of
        // what a node receives is its own).
        if origin(bytes) == Some(self.node.as_bytes()) {
            metrics::counter!("scalify_redis_received_total", "outcome" => "own").increment(1);
            return;
        }
        match decode(bytes) {
            Ok(event) if self.watched.contains(&event.room) => {
                metrics::counter!("scalify_redis_received_total", "outcome" => "delivered")
                    .increment(1);
                self.local.deliver(&event)
            }
            Ok(_) => {
                // A room this node has no member in: only a message racing an unsubscribe
                // should ever land here (the cluster tests require zero).
                metrics::counter!("scalify_redis_received_total", "outcome" => "unwatched")
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!("scalify_redis_received_total", "outcome" => "undecodable")
                    .increment(1);
                tracing::warn!(error = %e, "undecodable fan-out message dropped")
            }
        }
    }
}

/// Wire form of a [`RoomEvent`] on a channel: six header lines, then the JSON payload as-is
/// (it is never re-serialized): `node \n room \n kind \n seq \n ts \n except_user \n payload`.
fn encode(node: &str, event: &RoomEvent) -> Vec<u8> {
    let (kind, seq, ts) = match event.kind {
        EventKind::Message { seq, ts } => ("m", seq, ts),
        EventKind::Typing => ("t", 0, 0),
        EventKind::Presence => ("p", 0, 0),
        EventKind::RoomAdded => ("a", 0, 0),
    };
    let except = event.except_user.map(|u| u.to_string()).unwrap_or_default();
    let payload = event.payload.get();
    let mut out = Vec::with_capacity(node.len() + event.room.as_str().len() + payload.len() + 48);
    for part in [
        node,
        event.room.as_str(),
        kind,
        &seq.to_string(),
        &ts.to_string(),
        &except,
    ] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(payload.as_bytes());
    out
}

/// The node that published an envelope (its first line), without decoding the rest.
fn origin(bytes: &[u8]) -> Option<&[u8]> {
    bytes
        .iter()
        .position(|&b| b == b'\n')
        .map(|end| &bytes[..end])
}

/// The event an envelope carries; its first line, the publishing node, is read by [`origin`].
fn decode(bytes: &[u8]) -> Result<RoomEvent, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let mut parts = text.splitn(7, '\n').skip(1);
    let mut next = || parts.next().ok_or_else(|| "truncated envelope".to_owned());
    let room = RoomName::parse_internal(next()?).map_err(|e| e.message)?;
    let kind = next()?;
    let seq: u64 = next()?.parse().map_err(|_| "bad seq".to_owned())?;
    let ts: i64 = next()?.parse().map_err(|_| "bad ts".to_owned())?;
    let except = match next()? {
        "" => None,
        id => Some(id.parse::<Id>().map_err(|e| e.to_string())?),
    };
    let payload = RawValue::from_string(next()?.to_owned()).map_err(|e| e.to_string())?;
    let kind = match kind {
        "m" => EventKind::Message { seq, ts },
        "t" => EventKind::Typing,
        "p" => EventKind::Presence,
        "a" => EventKind::RoomAdded,
        other => return Err(format!("unknown kind '{other}'")),
    };
    Ok(RoomEvent {
        room,
        kind,
        payload: Arc::from(payload),
        except_user: except,
    })
}

#[async_trait]
impl Fanout for RedisFanout {
    async fn publish(&self, event: RoomEvent) -> Result<(), FanoutError> {
        // Local members first: they must not depend on Redis being up.
        if self.watched.contains(&event.room) {
            self.local.deliver(&event);
        }
        self.outbox
            .try_send((self.channel(&event.room), encode(&self.node, &event)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    FanoutError::Unavailable("Redis publish queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    FanoutError::Unavailable("fan-out is shut down".into())
                }
            })
    }

    async fn watch(&self, room: &RoomName) -> Result<(), FanoutError> {
        self.watched.add(room);
        // Without a connection the room is subscribed when the subscriber reconnects.
        let mut sink = self
            .current_sink()
            .ok_or_else(|| FanoutError::Unavailable("Redis subscriber not connected".into()))?;
        sink.subscribe(self.channel(room))
            .await
            .map_err(unavailable)
    }

    async fn unwatch(&self, room: &RoomName) -> Result<(), FanoutError> {
        // Unsubscribe first: messages Redis sent before confirming still find the room
        // watched (and no one to deliver to), instead of counting as misrouted.
        let result = match self.current_sink() {
            Some(mut sink) => sink
                .unsubscribe(self.channel(room))
                .await
                .map_err(unavailable),
            None => Ok(()),
        };
        self.watched.remove(room);
        self.local.room_released(room);
        result
    }

    async fn ready(&self) -> Result<(), FanoutError> {
        if !self.subscribed.load(Ordering::Acquire) {
            return Err(FanoutError::Unavailable(
                "Redis subscriber not connected".into(),
            ));
        }
        let mut conn = self.publisher.clone();
        tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| FanoutError::Unavailable("Redis did not answer PING within 1 s".into()))?
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn shutdown(&self) {
        self.stop.cancel();
    }
}

// ---- presence -------------------------------------------------------------------------------

/// The Lua scripts' shared preamble: the Redis server's time in ms.
const NOW: &str = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) ";

/// KEYS: user's node set, room's user set. ARGV: node, member, ttl ms.
/// Records the node's connection; returns 1 if the user was not online in the room before.
const ARRIVE: &str = "
local ttl = tonumber(ARGV[3])
local old = redis.call('ZSCORE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('ZADD', KEYS[2], 'GT', now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ttl * 2)
if old and tonumber(old) > now then return 0 end
return 1";

/// KEYS: user's node set, room's user set. ARGV: node, member.
/// Removes the node's entry; returns 1 if no other node keeps the user online (announce it).
const DEPART: &str = "
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCOUNT', KEYS[1], now, '+inf') > 0 then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[2])";

/// KEYS: room's user set. Returns the members online now.
const ONLINE: &str = "return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')";

/// KEYS: room's user set. Removes and returns members whose every node stopped refreshing
/// them; the node that gets a member back is the one that announces it offline.
const SWEEP: &str = "
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
return gone";

/// KEYS: node statuses (hash), last-seen times (sorted set). ARGV: node, status, ttl ms.
/// Records the status and drops nodes not seen for a TTL.
const ANNOUNCE: &str = "
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local cutoff = now - tonumber(ARGV[3])
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)) do
  redis.call('HDEL', KEYS[1], n)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)";

/// KEYS: node statuses, last-seen times. ARGV: ttl ms. The statuses of live nodes.
const NODES: &str = "
local live = redis.call('ZRANGEBYSCORE', KEYS[2], now - tonumber(ARGV[1]), '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(live))";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{NOW}{body}"))
}

pub struct RedisPresence {
    conn: ConnectionManager,
    prefix: String,
    node: String,
    ttl: Duration,
    arrive: redis::Script,
    depart: redis::Script,
    online: redis::Script,
    sweep: redis::Script,
    announce: redis::Script,
    nodes: redis::Script,
}

impl RedisPresence {
    pub fn new(config: &RedisConfig, conn: ConnectionManager, node: &str) -> Self {
        RedisPresence {
            conn,
            prefix: config.prefix.clone(),
            node: node.to_owned(),
            ttl: config.presence_ttl,
            arrive: script(ARRIVE),
            depart: script(DEPART),
            online: script(ONLINE),
            sweep: script(SWEEP),
            announce: script(ANNOUNCE),
            nodes: script(NODES),
        }
    }

    /// The room's key; `{room}` is a hash tag, so a room's keys share a Redis Cluster slot.
    fn room_key(&self, room: &RoomName) -> String {
        format!("{}:presence:{{{}}}", self.prefix, room)
    }

    fn user_key(&self, room: &RoomName, user: Id) -> String {
        format!("{}:presence:{{{}}}:{}", self.prefix, room, user)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1000) as u64
    }
}

fn member(user: &UserRef) -> String {
    format!("{}|{}", user.id, user.username)
}

fn parse_member(m: &str) -> Option<UserRef> {
    let (id, name) = m.split_once('|')?;
    Some(UserRef {
        id: id.parse().ok()?,
        username: name.to_owned(),
    })
}

#[async_trait]
impl ClusterPresence for RedisPresence {
    async fn arrive(&self, room: &RoomName, user: &UserRef) -> Result<bool, FanoutError> {
        let mut conn = self.conn.clone();
        let first: i64 = self
            .arrive
            .key(self.user_key(room, user.id))
            .key(self.room_key(room))
            .arg(&self.node)
            .arg(member(user))
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(first == 1)
    }

    async fn depart(&self, room: &RoomName, user: &UserRef) -> Result<bool, FanoutError> {
        let mut conn = self.conn.clone();
        let last: i64 = self
            .depart
            .key(self.user_key(room, user.id))
            .key(self.room_key(room))
            .arg(&self.node)
            .arg(member(user))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(last == 1)
    }

    async fn online(&self, room: &RoomName) -> Result<Vec<UserRef>, FanoutError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = self
            .online
            .key(self.room_key(room))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(members.iter().filter_map(|m| parse_member(m)).collect())
    }

    async fn refresh(
        &self,
        entries: &[(RoomName, UserRef)],
    ) -> Result<Vec<(RoomName, UserRef)>, FanoutError> {
        // One pipelined round trip per chunk, not one per entry. An entry that had expired
        // (Redis was unreachable for longer than the TTL, and another node announced the user
        // offline) comes back as 1: announce it again.
        let mut revived = Vec::new();
        for chunk in entries.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.load_script(&self.arrive).ignore();
            for (room, user) in chunk {
                pipe.invoke_script(
                    self.arrive
                        .key(self.user_key(room, user.id))
                        .key(self.room_key(room))
                        .arg(&self.node)
                        .arg(member(user))
                        .arg(self.ttl_ms()),
                );
            }
            let mut conn = self.conn.clone();
            let firsts: Vec<i64> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
            revived.extend(
                chunk
                    .iter()
                    .zip(firsts)
                    .filter(|(_, first)| *first == 1)
                    .map(|(entry, _)| entry.clone()),
            );
        }
        Ok(revived)
    }

    async fn sweep(&self, rooms: &[RoomName]) -> Result<Vec<(RoomName, UserRef)>, FanoutError> {
        let mut gone = Vec::new();
        for chunk in rooms.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.load_script(&self.sweep).ignore();
            for room in chunk {
                pipe.invoke_script(&self.sweep.key(self.room_key(room)));
            }
            let mut conn = self.conn.clone();
            let expired: Vec<Vec<String>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            for (room, members) in chunk.iter().zip(expired) {
                gone.extend(
                    members
                        .iter()
                        .filter_map(|m| parse_member(m))
                        .map(|u| (room.clone(), u)),
                );
            }
        }
        Ok(gone)
    }

    fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.ttl_ms() / 3)
    }

    async fn announce_node(&self, status: &str) -> Result<(), FanoutError> {
        self.announce_in("nodes", &self.node, status).await
    }

    async fn nodes(&self) -> Result<Vec<String>, FanoutError> {
        self.list_of("nodes").await
    }

    async fn announce_persister(&self, id: &str, status: &str) -> Result<(), FanoutError> {
        self.announce_in("persisters", id, status).await
    }

    async fn persisters(&self) -> Result<Vec<String>, FanoutError> {
        self.list_of("persisters").await
    }
}

impl RedisPresence {
    /// Puts `member`'s status into registry `list` (a hash plus a last-seen sorted set, so
    /// members that stop announcing drop out after the presence TTL).
    async fn announce_in(&self, list: &str, member: &str, status: &str) -> Result<(), FanoutError> {
        let mut conn = self.conn.clone();
        self.announce
            .key(format!("{}:{{{list}}}", self.prefix))
            .key(format!("{}:{{{list}}}:seen", self.prefix))
            .arg(member)
            .arg(status)
            .arg(self.ttl_ms())
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn list_of(&self, list: &str) -> Result<Vec<String>, FanoutError> {
        let mut conn = self.conn.clone();
        let statuses: Vec<Option<String>> = self
            .nodes
            .key(format!("{}:{{{list}}}", self.prefix))
            .key(format!("{}:{{{list}}}:seen", self.prefix))
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(statuses.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_keeps_payload_bytes() {
        let user = Id::new();
        let event = RoomEvent::new(
            RoomName::parse("general").unwrap(),
            EventKind::Message {
                seq: 42,
                ts: 1_764_300_000_000,
            },
            &serde_json::json!({"text": "line\nbreak", "n": 1}),
            Some(user),
        )
        .unwrap();
        let bytes = encode("node-a", &event);
        assert_eq!(origin(&bytes), Some(&b"node-a"[..]));
        assert_ne!(origin(&encode("node-ab", &event)), Some(&b"node-a"[..]));
        assert_eq!(origin(b"no envelope"), None);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.room.as_str(), "general");
        assert_eq!(
            back.kind,
            EventKind::Message {
                seq: 42,
                ts: 1_764_300_000_000
            }
        );
        assert_eq!(back.except_user, Some(user));
        assert_eq!(back.payload.get(), event.payload.get());
        assert!(decode(b"node\ngeneral\nx\n0\n0\n\n{}").is_err());
        assert!(decode(b"node\ngeneral").is_err());
    }

    /// More users than two pipelines hold, user `i` in room `room_of(i)`.
    fn users_in(room_of: impl Fn(usize) -> RoomName) -> Vec<(RoomName, UserRef)> {
        (0..PIPELINE_CHUNK * 2 + 20)
            .map(|i| {
                let user = UserRef {
                    id: Id::new(),
                    username: format!("u{i}"),
                };
                (room_of(i), user)
            })
            .collect()
    }

    /// Puts the entry's deadline in its room in the past, as when no refresh came within the
    /// TTL.
    async fn expire(
        presence: &RedisPresence,
        conn: &mut ConnectionManager,
        (room, user): &(RoomName, UserRef),
    ) {
        let _: i64 = redis::cmd("ZADD")
            .arg(presence.room_key(room))
            .arg("XX")
            .arg(0)
            .arg(member(user))
            .query_async(conn)
            .await
            .unwrap();
    }

    /// The refresh and the sweep send their scripts in pipelines of `PIPELINE_CHUNK`: with more
    /// entries than fit in one (a real Redis, `SCALIFY_TEST_REDIS_URL`), every entry is renewed
    /// and exactly those that had expired — one in each pipeline — come back, in order.
    #[tokio::test]
    async fn refresh_and_sweep_over_several_pipelines_return_exactly_the_expired_entries() {
        let url = std::env::var("SCALIFY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut config = RedisConfig::new(&url);
        config.prefix = format!("t-refresh-{}", Id::new());
        let conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let presence = RedisPresence::new(&config, conn.clone(), "node-a");
        let rooms: Vec<RoomName> = (0..3)
            .map(|r| RoomName::parse(&format!("room{r}")).unwrap())
            .collect();
        let entries = users_in(|i| rooms[i % rooms.len()].clone());
        for (room, user) in &entries {
            assert!(presence.arrive(room, user).await.unwrap());
        }
        // One entry of each pipeline expires: its room entry's deadline is in the past, as
        // when no refresh came within the TTL.
        let expired = [3, PIPELINE_CHUNK + 7, PIPELINE_CHUNK * 2 + 11];
        let mut c = conn.clone();
        for i in expired {
            expire(&presence, &mut c, &entries[i]).await;
        }

        let revived = presence.refresh(&entries).await.unwrap();
        let want: Vec<_> = expired.iter().map(|&i| entries[i].clone()).collect();
        assert_eq!(revived, want);
        let again = presence.refresh(&entries).await.unwrap();
        assert!(again.is_empty(), "{again:?}");
        for room in &rooms {
            let mut online = presence.online(room).await.unwrap();
            let mut expected: Vec<UserRef> = entries
                .iter()
                .filter(|(r, _)| r == room)
                .map(|(_, u)| u.clone())
                .collect();
            online.sort_by_key(|u| u.id);
            expected.sort_by_key(|u| u.id);
            assert_eq!(online, expected, "{room}");
        }

        // The sweep, over more rooms than fit in one pipeline: one room of each pipeline has
        // an expired member, and exactly those come back.
        let many = users_in(|i| RoomName::parse(&format!("sweep{i}")).unwrap());
        for (room, user) in &many {
            presence.arrive(room, user).await.unwrap();
        }
        for i in expired {
            expire(&presence, &mut c, &many[i]).await;
        }
        let rooms_swept: Vec<RoomName> = many.iter().map(|(r, _)| r.clone()).collect();
        let gone = presence.sweep(&rooms_swept).await.unwrap();
        let want: Vec<_> = expired.iter().map(|&i| many[i].clone()).collect();
        assert_eq!(gone, want);

        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", config.prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }

    #[test]
    fn presence_members_round_trip() {
        let u = UserRef {
            id: Id::new(),
            username: "alice".into(),
        };
        assert_eq!(parse_member(&member(&u)), Some(u));
        assert_eq!(parse_member("garbage"), None);
    }
}
