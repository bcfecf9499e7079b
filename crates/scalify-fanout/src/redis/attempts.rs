//! Attempt counts shared by the nodes of a cluster: one hash per key, `count` and `last`,
//! expiring when [`Backoff`] would forget it. Each admission is one script, so parallel
//! attempts on several nodes are counted one by one, and times come from Redis's clock.

use scalify_core::Backoff;

use super::*;
use crate::attempts::{Admission, AttemptLog};

/// KEYS: the record. ARGV: free, base ms, max ms, forget ms. Mirrors `Backoff::admit`:
/// returns 0 (admitted and counted) or the ms to wait.
const ATTEMPT: &str = "
local free, base, max, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if free == 0 then return 0 end
local function wait(n)
  if n < free then return 0 end
  return math.min(base * 2 ^ math.min(n - free, 62), max)
end
local r = redis.call('HMGET', KEYS[1], 'count', 'last')
local count, last = tonumber(r[1]) or 0, tonumber(r[2]) or 0
if count > 0 and now - last >= wait(count) + forget then count, last = 0, 0 end
local w = wait(count)
if w > 0 and now < last + w then return math.floor(last + w - now) end
count = count + 1
redis.call('HSET', KEYS[1], 'count', count, 'last', now)
redis.call('PEXPIRE', KEYS[1], math.floor(wait(count) + forget))
return 0";

/// KEYS: the record. ARGV: 1 to forget it, 0 to take back one attempt.
const TAKE_BACK: &str = "
if ARGV[1] == '1' then return redis.call('DEL', KEYS[1]) end
local count = tonumber(redis.call('HGET', KEYS[1], 'count')) or 0
if count > 0 then redis.call('HINCRBY', KEYS[1], 'count', -1) end
return 0";

pub struct RedisAttempts {
    conn: ConnectionManager,
    prefix: String,
    attempt: redis::Script,
    take_back: redis::Script,
}

impl RedisAttempts {
    pub fn new(config: &RedisConfig, conn: ConnectionManager) -> Self {
        RedisAttempts {
            conn,
            prefix: config.prefix.clone(),
            attempt: script(ATTEMPT),
            take_back: script(TAKE_BACK),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:attempts:{key}", self.prefix)
    }
}

#[async_trait]
impl AttemptLog for RedisAttempts {
    async fn attempt(&self, key: &str, policy: &Backoff) -> Result<Admission, FanoutError> {
        let mut conn = self.conn.clone();
        let wait: u64 = self
            .attempt
            .key(self.key(key))
            .arg(policy.free)
            .arg(policy.base_ms)
            .arg(policy.max_ms)
            .arg(policy.forget_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(if wait == 0 { Ok(()) } else { Err(wait) })
    }

    async fn take_back(&self, key: &str, forget: bool) -> Result<(), FanoutError> {
        let mut conn = self.conn.clone();
        self.take_back
            .key(self.key(key))
            .arg(if forget { "1" } else { "0" })
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }
}
