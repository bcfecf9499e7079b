//! The Redis engine: fan-out between nodes over Redis pub/sub, cluster-wide presence, and the
//! registry of live nodes and persisters.
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
//!
//! **Attempts.** [`RedisAttempts`] counts logins and registrations per account and per client
//! address for every node at once, so a throttle earned on one node holds on all of them.
//!
//! **Registry.** [`RedisRegistry`] keeps the latest status of every node and persister that
//! announced itself within the presence TTL, for the admin page.

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
use tokio_util::task::TaskTracker;

use crate::{ClusterPresence, EventKind, Fanout, FanoutError, LocalDelivery, RoomEvent, Watched};

mod attempts;
mod fanout;
mod presence;
mod registry;
mod wire;

pub use attempts::RedisAttempts;
pub use fanout::RedisFanout;
pub use presence::RedisPresence;
pub use registry::RedisRegistry;
use wire::*;

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
    /// The presence TTL in ms, as the scripts take it: at least a second, so entries outlive
    /// a refresh round.
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.presence_ttl.as_millis().max(1000) as u64
    }

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

/// The Lua scripts' shared preamble: the Redis server's time in ms.
const NOW: &str = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) ";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{NOW}{body}"))
}

#[cfg(test)]
mod tests {
    use super::presence::*;
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

    /// The attempt log keeps the same contract as the in-process one, on a real Redis.
    #[tokio::test]
    async fn redis_attempts_keep_the_contract() {
        use crate::attempts::contract;
        let url = std::env::var("SCALIFY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut config = RedisConfig::new(&url);
        config.prefix = format!("t-attempts-{}", Id::new());
        let conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let log = RedisAttempts::new(&config, conn);
        contract::free_attempts_then_a_wait(&log, "a").await;
        contract::a_success_is_taken_back(&log, "b").await;
        contract::parallel_attempts_admit_exactly_the_free_ones(&log, "c").await;
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
