//! The roll of live nodes and persisters: a hash of statuses plus a last-seen sorted set per list,
//! so an entry that is not announced again within the presence TTL drops out.

use scalify_core::{NodeStatus, PersisterStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::Registry;

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

/// The cluster's roll of nodes and persisters in Redis. Statuses travel as JSON; one that does
/// not decode (a node of another version, say) is logged and left out.
pub struct RedisRegistry {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    announce: redis::Script,
    list: redis::Script,
}

impl RedisRegistry {
    pub fn new(config: &RedisConfig, conn: ConnectionManager) -> Self {
        RedisRegistry {
            conn,
            prefix: config.prefix.clone(),
            ttl_ms: config.ttl_ms(),
            announce: script(ANNOUNCE),
            list: script(NODES),
        }
    }

    /// Puts `member`'s status into registry `list`.
    async fn announce_in<T: Serialize>(
        &self,
        list: &str,
        member: &str,
        status: &T,
    ) -> Result<(), FanoutError> {
        let status = serde_json::to_string(status).map_err(unavailable)?;
        let mut conn = self.conn.clone();
        self.announce
            .key(format!("{}:{{{list}}}", self.prefix))
            .key(format!("{}:{{{list}}}:seen", self.prefix))
            .arg(member)
            .arg(status)
            .arg(self.ttl_ms)
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn list_of<T: DeserializeOwned>(&self, list: &str) -> Result<Vec<T>, FanoutError> {
        let mut conn = self.conn.clone();
        let statuses: Vec<Option<String>> = self
            .list
            .key(format!("{}:{{{list}}}", self.prefix))
            .key(format!("{}:{{{list}}}:seen", self.prefix))
            .arg(self.ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(statuses
            .into_iter()
            .flatten()
            .filter_map(|s| match serde_json::from_str(&s) {
                Ok(status) => Some(status),
                Err(e) => {
                    tracing::warn!(error = %e, list, "undecodable status in the registry");
                    None
                }
            })
            .collect())
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn announce_node(&self, status: &NodeStatus) -> Result<(), FanoutError> {
        self.announce_in("nodes", &status.node, status).await
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, FanoutError> {
        self.list_of("nodes").await
    }

    async fn announce_persister(&self, status: &PersisterStatus) -> Result<(), FanoutError> {
        self.announce_in("persisters", &status.id, status).await
    }

    async fn persisters(&self) -> Result<Vec<PersisterStatus>, FanoutError> {
        self.list_of("persisters").await
    }
}
