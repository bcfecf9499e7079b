//! Cluster-wide presence: per room a sorted set of online users scored by expiry, per (room, user)
//! the nodes holding their connections; every change one Lua script.

use super::*;

/// Most presence scripts sent as one pipeline by the periodic refresh and sweep. Redis runs a
/// client's pipelined commands back to back, so every other client (a send's seq allocation,
/// its recent-window deposit) waits behind one chunk: with 500, 1,000 users online and
/// 5,000 sends/s, the send→ack p99 jumped to 21–44 ms at each refresh (every 5 s) against
/// ~12–14 ms between them; with 50 the jumps were smaller (p999 20–22 against 27–42 ms) but
/// not gone (docs/performance.md). The node's presence keeper also renews a slice
/// of its entries at a time (`Chat::keep_presence`), so a refresh is rarely more than one chunk.
pub(super) const PIPELINE_CHUNK: usize = 50;

/// KEYS: user's node set, room's user set. ARGV: node, member, ttl ms.
/// Records the node's connection; returns 1 if the user was not online in the room before.
pub(super) const ARRIVE: &str = "
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
pub(super) const DEPART: &str = "
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCOUNT', KEYS[1], now, '+inf') > 0 then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[2])";

/// KEYS: room's user set. Returns the members online now.
pub(super) const ONLINE: &str = "return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')";

/// KEYS: room's user set. Removes and returns members whose every node stopped refreshing
/// them; the node that gets a member back is the one that announces it offline.
pub(super) const SWEEP: &str = "
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
return gone";

pub struct RedisPresence {
    pub(super) conn: ConnectionManager,
    pub(super) prefix: String,
    pub(super) node: String,
    /// Entry lifetime in ms ([`RedisConfig::ttl_ms`]).
    pub(super) ttl_ms: u64,
    pub(super) arrive: redis::Script,
    pub(super) depart: redis::Script,
    pub(super) online: redis::Script,
    pub(super) sweep: redis::Script,
}

impl RedisPresence {
    pub fn new(config: &RedisConfig, conn: ConnectionManager, node: &str) -> Self {
        RedisPresence {
            conn,
            prefix: config.prefix.clone(),
            node: node.to_owned(),
            ttl_ms: config.ttl_ms(),
            arrive: script(ARRIVE),
            depart: script(DEPART),
            online: script(ONLINE),
            sweep: script(SWEEP),
        }
    }

    /// The room's key; `{room}` is a hash tag, so a room's keys share a Redis Cluster slot.
    pub(super) fn room_key(&self, room: &RoomName) -> String {
        format!("{}:presence:{{{}}}", self.prefix, room)
    }

    pub(super) fn user_key(&self, room: &RoomName, user: Id) -> String {
        format!("{}:presence:{{{}}}:{}", self.prefix, room, user)
    }
}

pub(super) fn member(user: &UserRef) -> String {
    format!("{}|{}", user.id, user.username)
}

pub(super) fn parse_member(m: &str) -> Option<UserRef> {
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
            .arg(self.ttl_ms)
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
                        .arg(self.ttl_ms),
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
        Duration::from_millis(self.ttl_ms / 3)
    }
}
