//! The Redis side of the durable pipeline: per-room seq counters, idempotency keys, and the
//! recent window.
//!
//! Keys (all of one room share the hash tag `{room_id}`, so the per-send scripts touch one
//! slot; only the seed also reads the cluster's epoch):
//! - `<prefix>:seq:{room}` — the room's newest allocated seq;
//! - `<prefix>:idem:{room}:<sender>:<client_id>` — the seq a (sender, client_id) was given,
//!   kept for [`LedgerConfig::idempotency_ttl`]. Until the broker confirms the message it
//!   holds `<seq>:<record>`, the whole record: a retry that finds the message neither
//!   confirmed by this node nor readable anywhere (its node died, stopped, or lost Redis's
//!   answer) produces that same record again instead of waiting for a producer that may be
//!   gone. A second copy in the topic is harmless: the persister stores a message once by id.
//!   The deposit shortens the value to `<seq>`, so a confirmed message costs its key only;
//! - `<prefix>:recent:{room}` — sorted set, score = seq, member = record JSON: every message
//!   the broker has confirmed and the persister has not yet written to PostgreSQL. Reads
//!   merge it with the database, so a client never misses a message because the persister
//!   lags. The persister trims it after each commit;
//! - `<prefix>:seqepoch:{room}` — the seq epoch the room's counter was seeded in; every record
//!   carries the epoch its seq was given in, and a deposit is refused unless the room is still
//!   in that epoch (a counter lost with Redis's data and seeded again is a new epoch);
//! - `<prefix>:seqepoch` — the cluster's current seq epoch and the topic's high watermarks when
//!   it began ([`crate::fence`]). Its absence means Redis lost its data (or never had any).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use scalify_core::{ClientId, Id, Message};
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

use crate::record::{self, Draft, RoomMessage};
use crate::DurableError;

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Key prefix (the same as the fan-out's, so one cluster's keys sit together).
    pub prefix: String,
    /// How long a retry with the same client_id is recognised.
    pub idempotency_ttl: Duration,
    /// Most messages a room may have waiting for the persister. At this size sends to the
    /// room are refused (`internal`, "the persister is behind") rather than letting Redis
    /// memory grow without bound.
    pub window_max: u64,
}

impl LedgerConfig {
    pub fn new(prefix: impl Into<String>) -> Self {
        LedgerConfig {
            prefix: prefix.into(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            window_max: 100_000,
        }
    }
}

/// Messages read from a recent window, and the cluster's seq epoch key right after.
#[derive(Debug)]
pub struct WindowRead {
    pub messages: Vec<Message>,
    pub epoch: Option<String>,
}

/// What allocating a seq for a send found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    /// A new seq, given in the seq epoch that follows it: the caller must now produce the
    /// draft with both.
    Fresh(u64, u64),
    /// This (sender, client_id) was already given this seq, and its message was confirmed.
    Repeat(u64),
    /// This (sender, client_id) was already given this seq and its message is not confirmed
    /// yet: the record to produce again if nobody is producing it any more.
    Unconfirmed(u64, Vec<u8>),
}

/// Allocation outcome codes shared with the script.
const FRESH: i64 = 0;
const REPEAT: i64 = 1;
const UNSEEDED: i64 = 2;
const BACKLOG_FULL: i64 = 3;

/// KEYS: seq counter, idempotency key, window, room epoch. ARGV: ttl, window max, draft head,
/// draft tail. Answers {code, value, epoch}: the idempotency key's value for a repeat, else
/// the seq. The record kept with the key is the one [`Draft::with_seq`] builds. A counter
/// without an epoch (seeded before epochs existed) is unseeded: the seed stamps it.
const ALLOCATE: &str = r#"
local prior = redis.call('GET', KEYS[2])
if prior then return {1, prior, '0'} end
local epoch = redis.call('GET', KEYS[4])
if not epoch or redis.call('EXISTS', KEYS[1]) == 0 then return {2, '0', '0'} end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[2]) then return {3, '0', '0'} end
local seq = tostring(redis.call('INCR', KEYS[1]))
local record = ARGV[3] .. seq
if epoch ~= '0' then record = record .. ',"epoch":' .. epoch end
redis.call('SET', KEYS[2], seq .. ':' .. record .. ARGV[4], 'EX', ARGV[1])
return {0, seq, epoch}
"#;

/// KEYS: window, idempotency key, room epoch, seq counter. ARGV: seq, record, epoch. Puts a
/// confirmed message in the window and shortens its idempotency key to the seq (`XX KEEPTTL`:
/// only while the key lives), unless the room's counter is gone or in another epoch: then
/// Redis lost its data since the allocation, and the message must not be acked (answers 0).
/// Epoch 0 is a record of a node that predates epochs (produced again for a retry): checked
/// for its counter only.
const DEPOSIT: &str = r"
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if ARGV[3] ~= '0' and redis.call('GET', KEYS[3]) ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'XX', 'KEEPTTL')
return 1
";

/// KEYS: seq counter, room epoch, cluster epoch. ARGV: seq, epoch. Seeds a room's counter and
/// its epoch together, unless another node seeded it first (answers 0), and only while the
/// cluster is still in that epoch (answers -1: Redis lost its data since the seed was read).
/// A counter without an epoch (seeded before epochs existed, and not lost since) is kept,
/// raised to the seed if lower, and stamped; an epoch without its counter (one key lost) is
/// seeded again.
const SEED: &str = r"
local cluster = redis.call('GET', KEYS[3])
if not cluster or string.match(cluster, '^(%d+):') ~= ARGV[2] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = tonumber(redis.call('GET', KEYS[1]))
if not now or now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('SET', KEYS[2], ARGV[2])
return 1
";

/// The ALLOCATE script's answer: code, value, epoch.
type Allocated = (i64, Vec<u8>, Vec<u8>);

/// One command waiting for the next pipeline.
enum Op {
    /// The ALLOCATE script: keys and args, answered with (code, value, epoch).
    Allocate {
        keys: [String; 4],
        ttl: u64,
        max: u64,
        draft: Arc<Draft>,
        reply: oneshot::Sender<Result<Allocated, DurableError>>,
    },
    /// A confirmed message: the DEPOSIT script (nothing else writes the idempotency key
    /// meanwhile; a key is only written again after it expired).
    Deposit {
        keys: [String; 4],
        seq: u64,
        epoch: u64,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<bool, DurableError>>,
    },
}

/// Most commands sent in one pipeline.
const PIPELINE_MAX: usize = 512;
/// Pipelines in flight at once: one fills while the other is on the wire.
const PIPELINERS: usize = 2;

#[derive(Clone)]
pub struct Ledger {
    conn: ConnectionManager,
    config: LedgerConfig,
    /// The per-send commands (allocate, deposit) go through here: whatever accumulates while
    /// a pipeline is on the wire goes out in the next one, so under load a send costs Redis
    /// (and this process) a fraction of a round trip instead of two. The multiplexed
    /// connection alone (one `invoke_async` per command) measured 12.1k–14.2k acked sends/s
    /// against 16.6k–17.3k with these pipelines (`scripts/bench.sh kafka-durable`).
    ops: mpsc::Sender<Op>,
}

fn unavailable(e: impl std::fmt::Display) -> DurableError {
    DurableError::Unavailable(format!("Redis: {e}"))
}

impl Ledger {
    /// Starts the pipeline tasks (they end when the last clone of the ledger is dropped).
    pub fn new(conn: ConnectionManager, config: LedgerConfig) -> Self {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let rx = Arc::new(AsyncMutex::new(rx));
        let scripts = Arc::new(Scripts {
            allocate: redis::Script::new(ALLOCATE),
            deposit: redis::Script::new(DEPOSIT),
        });
        for _ in 0..PIPELINERS {
            tokio::spawn(pipeliner(conn.clone(), rx.clone(), scripts.clone()));
        }
        Ledger {
            conn,
            config,
            ops: tx,
        }
    }

    fn seq_key(&self, room: Id) -> String {
        format!("{}:seq:{{{room}}}", self.config.prefix)
    }
    fn idem_key(&self, room: Id, sender: Id, client_id: &ClientId) -> String {
        format!(
            "{}:idem:{{{room}}}:{sender}:{}",
            self.config.prefix,
            client_id.as_str()
        )
    }
    fn window_key(&self, room: Id) -> String {
        format!("{}:recent:{{{room}}}", self.config.prefix)
    }
    fn epoch_key(&self, room: Id) -> String {
        format!("{}:seqepoch:{{{room}}}", self.config.prefix)
    }
    fn cluster_epoch_key(&self) -> String {
        format!("{}:seqepoch", self.config.prefix)
    }

    /// Refuses a Redis that evicts any key under memory pressure (`maxmemory-policy
    /// allkeys-*`): a seq counter or a recent window evicted is data lost without the loss
    /// being seen (the seq epoch stays). Returns a warning for `volatile-*` policies, which
    /// may evict idempotency keys (a retry then becomes a new message). Read from `INFO
    /// memory`, which managed services that disable `CONFIG` still answer.
    pub async fn check_eviction(&self) -> Result<Option<String>, DurableError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let policy = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(str::trim)
            .unwrap_or("noeviction");
        eviction_verdict(policy)
    }

    /// The cluster's seq epoch as [`crate::fence`] wrote it, if Redis has one.
    pub async fn cluster_epoch(&self) -> Result<Option<String>, DurableError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(self.cluster_epoch_key())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Sets the cluster's seq epoch unless one is set, and returns the one that is.
    pub async fn begin_cluster_epoch(&self, value: &str) -> Result<String, DurableError> {
        let mut conn = self.conn.clone();
        let (_, now): (Option<String>, Option<String>) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.cluster_epoch_key())
            .arg(value)
            .arg("NX")
            .cmd("GET")
            .arg(self.cluster_epoch_key())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        now.ok_or_else(|| DurableError::Unavailable("Redis lost the seq epoch just set".into()))
    }

    /// Gives (room, sender, client_id) the room's next seq, or the seq it was given before.
    /// `draft` is the new message's record; the ledger keeps it with the seq until the
    /// message is deposited. `seed` is called when the room has no counter yet (first durable
    /// send, or Redis lost it): it must return the newest seq stored anywhere else (the
    /// database) and the seq epoch the counter starts in.
    pub async fn allocate<F, Fut>(
        &self,
        room: Id,
        sender: Id,
        client_id: &ClientId,
        draft: Arc<Draft>,
        seed: F,
    ) -> Result<Allocation, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(u64, u64), DurableError>>,
    {
        let mut seed = Some(seed);
        loop {
            let started = std::time::Instant::now();
            let (reply, answer) = oneshot::channel();
            self.submit(Op::Allocate {
                keys: [
                    self.seq_key(room),
                    self.idem_key(room, sender, client_id),
                    self.window_key(room),
                    self.epoch_key(room),
                ],
                ttl: self.config.idempotency_ttl.as_secs().max(1),
                max: self.config.window_max,
                draft: draft.clone(),
                reply,
            })
            .await?;
            let (code, value, epoch) = answer
                .await
                .map_err(|_| DurableError::Unavailable("Redis pipeline stopped".into()))??;
            metrics::histogram!("scalify_ledger_seconds", "op" => "allocate")
                .record(started.elapsed().as_secs_f64());
            match code {
                FRESH => return Ok(Allocation::Fresh(parse_seq(&value)?, parse_seq(&epoch)?)),
                REPEAT => return parse_prior(value),
                BACKLOG_FULL => {
                    return Err(DurableError::Backlog(format!(
                        "{} messages of this room are waiting for the persister",
                        self.config.window_max
                    )))
                }
                UNSEEDED => {
                    let Some(seed) = seed.take() else {
                        return Err(DurableError::Unavailable(
                            "the room's seq counter vanished while seeding it".into(),
                        ));
                    };
                    let (stored, epoch) = seed().await?;
                    let windowed = self.window_max_seq(room).await?.unwrap_or(0);
                    // When several nodes seed at once, the first one wins and the others'
                    // values (read at about the same time) are dropped.
                    let mut conn = self.conn.clone();
                    let seeded: i64 = redis::Script::new(SEED)
                        .key(self.seq_key(room))
                        .key(self.epoch_key(room))
                        .key(self.cluster_epoch_key())
                        .arg(stored.max(windowed))
                        .arg(epoch)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    if seeded < 0 {
                        return Err(DurableError::Unavailable(
                            "Redis lost its data while this room was seeded; retry".into(),
                        ));
                    }
                }
                other => {
                    return Err(DurableError::Unavailable(format!(
                        "unexpected allocation answer {other}"
                    )))
                }
            }
        }
    }

    /// Sets the idempotency keys of messages the database holds (sender, client_id, seq), as
    /// confirmed, unless a key is there: after Redis lost its keys, a retry of a message that
    /// was in flight then and is stored now returns it instead of sending it again.
    pub async fn remember(
        &self,
        room: Id,
        sends: &[(Id, String, u64)],
    ) -> Result<(), DurableError> {
        let ttl = self.config.idempotency_ttl.as_secs().max(1);
        for chunk in sends.chunks(500) {
            let mut pipe = redis::pipe();
            for (sender, client_id, seq) in chunk {
                let Ok(client_id) = ClientId::parse(client_id) else {
                    continue;
                };
                pipe.cmd("SET")
                    .arg(self.idem_key(room, *sender, &client_id))
                    .arg(*seq)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
            }
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Records a broker-confirmed message in the room's window (before its sender's ack, so
    /// anyone told of it can read it), and marks its idempotency key confirmed.
    /// `record` is the message as [`record::encode_in`] wrote it (the bytes produced to
    /// Kafka), `epoch` the seq epoch its seq was given in. [`DurableError::Fenced`] when the
    /// room's counter is gone or in another epoch (Redis lost its data since the allocation):
    /// nothing is written, and the message must not be acked.
    pub async fn deposit(
        &self,
        room: Id,
        message: &Message,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<(), DurableError> {
        let started = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        self.submit(Op::Deposit {
            keys: [
                self.window_key(room),
                self.idem_key(room, message.sender.id, &message.client_id),
                self.epoch_key(room),
                self.seq_key(room),
            ],
            seq: message.seq,
            epoch,
            bytes: record,
            reply,
        })
        .await?;
        let deposited = answer
            .await
            .map_err(|_| DurableError::Unavailable("Redis pipeline stopped".into()))??;
        metrics::histogram!("scalify_ledger_seconds", "op" => "deposit")
            .record(started.elapsed().as_secs_f64());
        if deposited {
            Ok(())
        } else {
            Err(DurableError::Fenced(format!(
                "Redis lost this room's seq counter after seq {} was given (epoch {epoch}); send again",
                message.seq
            )))
        }
    }

    async fn submit(&self, op: Op) -> Result<(), DurableError> {
        self.ops
            .send(op)
            .await
            .map_err(|_| DurableError::Unavailable("Redis pipeline stopped".into()))
    }

    /// Drops from the rooms' windows exactly these (room, seq) messages (they are in the
    /// database now). Never a range beyond them: records of one room reach the topic out of
    /// seq order (each send is produced on its own, several nodes write one room), so a lower
    /// seq may still be on its way to the database.
    pub async fn trim(&self, persisted: &[(Id, u64)]) -> Result<(), DurableError> {
        if persisted.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (room, from, to) in runs(persisted) {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(self.window_key(room))
                .arg(from)
                .arg(to)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    /// The newest seq in the room's window.
    pub async fn window_max_seq(&self, room: Id) -> Result<Option<u64>, DurableError> {
        Ok(self.window_max_seqs(&[room]).await?.pop().flatten())
    }

    /// The newest seq in each room's window, in the order given.
    pub async fn window_max_seqs(&self, rooms: &[Id]) -> Result<Vec<Option<u64>>, DurableError> {
        let mut out = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(500) {
            let mut pipe = redis::pipe();
            for room in chunk {
                pipe.cmd("ZRANGE")
                    .arg(self.window_key(*room))
                    .arg(0)
                    .arg(0)
                    .arg("REV")
                    .arg("WITHSCORES");
            }
            let mut conn = self.conn.clone();
            let tops: Vec<Vec<(Vec<u8>, f64)>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            out.extend(tops.into_iter().map(|t| t.first().map(|(_, s)| *s as u64)));
        }
        Ok(out)
    }

    /// The rooms that have a recent window: messages confirmed by the broker that may not be
    /// in the database yet. SCAN in steps, so Redis is never blocked for long; a window
    /// created meanwhile may be missed (its messages came after the call started).
    pub async fn windowed_rooms(&self) -> Result<Vec<Id>, DurableError> {
        let head = format!("{}:recent:{{", self.config.prefix);
        // Redis glob: the prefix is matched literally.
        let mut pattern: String = head
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '\\');
                escape.then_some('\\').into_iter().chain(std::iter::once(c))
            })
            .collect();
        pattern.push_str("*}");
        let mut conn = self.conn.clone();
        let (mut cursor, mut rooms) = (0u64, Vec::new());
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            rooms.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(&head)?.strip_suffix('}')?.parse::<Id>().ok()),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        rooms.sort_unstable();
        rooms.dedup();
        Ok(rooms)
    }

    /// Window messages with `after < seq`, ascending, at most `limit`.
    pub async fn after(
        &self,
        room: Id,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Message>, DurableError> {
        Ok(self.read_after(room, after, limit).await?.messages)
    }

    /// [`Ledger::after`], with the cluster's seq epoch as it stood right after the read.
    pub async fn read_after(
        &self,
        room: Id,
        after: u64,
        limit: u32,
    ) -> Result<WindowRead, DurableError> {
        self.range(room, &format!("({after}"), "+inf", false, limit)
            .await
    }

    /// Window messages with `seq < before` (all if `None`), the newest `limit`, ascending.
    pub async fn before(
        &self,
        room: Id,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, DurableError> {
        Ok(self.read_before(room, before, limit).await?.messages)
    }

    /// [`Ledger::before`], with the cluster's seq epoch as it stood right after the read.
    pub async fn read_before(
        &self,
        room: Id,
        before: Option<u64>,
        limit: u32,
    ) -> Result<WindowRead, DurableError> {
        let top = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let mut read = self.range(room, &top, "-inf", true, limit).await?;
        read.messages.reverse();
        Ok(read)
    }

    /// `ZRANGE window from to BYSCORE [REV] LIMIT 0 limit`, decoded, and the cluster's epoch
    /// in the same round trip, read after it: if Redis lost its data before the range was
    /// read, that epoch is gone or another one.
    async fn range(
        &self,
        room: Id,
        from: &str,
        to: &str,
        rev: bool,
        limit: u32,
    ) -> Result<WindowRead, DurableError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        let cmd = pipe
            .cmd("ZRANGE")
            .arg(self.window_key(room))
            .arg(from)
            .arg(to)
            .arg("BYSCORE");
        if rev {
            cmd.arg("REV");
        }
        cmd.arg("LIMIT").arg(0).arg(limit);
        pipe.cmd("GET").arg(self.cluster_epoch_key());
        let (raw, epoch): (Vec<Vec<u8>>, Option<String>) =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(WindowRead {
            messages: decode_all(room, raw)?,
            epoch,
        })
    }

    /// The window's message with this seq, if there.
    pub async fn at(&self, room: Id, seq: u64) -> Result<Option<Message>, DurableError> {
        Ok(self
            .after(room, seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|m| m.seq == seq))
    }
}

/// What a `maxmemory-policy` means for durable mode (see [`Ledger::check_eviction`]).
pub fn eviction_verdict(policy: &str) -> Result<Option<String>, DurableError> {
    if policy.starts_with("allkeys-") {
        return Err(DurableError::Unavailable(format!(
            "Redis's maxmemory-policy is {policy}: it may evict the rooms' seq counters and recent windows, which durable mode keeps there; set maxmemory-policy noeviction"
        )));
    }
    Ok(policy.starts_with("volatile-").then(|| {
        format!(
            "Redis's maxmemory-policy is {policy}: under memory pressure it evicts idempotency keys (a retry then becomes a new message); noeviction refuses sends instead"
        )
    }))
}

/// The (room, seq) pairs as runs of consecutive seqs per room: (room, first, last).
fn runs(pairs: &[(Id, u64)]) -> Vec<(Id, u64, u64)> {
    let mut sorted = pairs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(Id, u64, u64)> = Vec::new();
    for (room, seq) in sorted {
        match out.last_mut() {
            Some((r, _, last)) if *r == room && *last + 1 == seq => *last = seq,
            _ => out.push((room, seq, seq)),
        }
    }
    out
}

/// The seq in a script's answer.
fn parse_seq(value: &[u8]) -> Result<u64, DurableError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DurableError::Corrupt("a seq in Redis is not a number".into()))
}

/// What an idempotency key holds: `<seq>` once confirmed, `<seq>:<record>` before.
fn parse_prior(value: Vec<u8>) -> Result<Allocation, DurableError> {
    match value.iter().position(|b| *b == b':') {
        None => Ok(Allocation::Repeat(parse_seq(&value)?)),
        Some(at) => Ok(Allocation::Unconfirmed(
            parse_seq(&value[..at])?,
            value[at + 1..].to_vec(),
        )),
    }
}

/// The scripts the pipelines run by hash.
struct Scripts {
    allocate: redis::Script,
    deposit: redis::Script,
}

/// Sends whatever ops are queued as one pipeline, answers each, repeats.
async fn pipeliner(
    conn: ConnectionManager,
    rx: Arc<AsyncMutex<mpsc::Receiver<Op>>>,
    scripts: Arc<Scripts>,
) {
    let mut ops: Vec<Op> = Vec::with_capacity(PIPELINE_MAX);
    loop {
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(op) => ops.push(op),
                None => return,
            }
            while ops.len() < PIPELINE_MAX {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
        }
        run_pipeline(&conn, &scripts, &mut ops).await;
    }
}

/// Runs `ops` as one pipeline and answers them (all drained from `ops`). A script that Redis
/// does not know (it restarted) is loaded and the pipeline sent again, once.
async fn run_pipeline(conn: &ConnectionManager, scripts: &Scripts, ops: &mut Vec<Op>) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for op in ops.iter() {
        match op {
            Op::Allocate {
                keys,
                ttl,
                max,
                draft,
                ..
            } => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.allocate.get_hash())
                    .arg(4)
                    .arg(&keys[..])
                    .arg(*ttl)
                    .arg(*max)
                    .arg(&draft.head[..])
                    .arg(&draft.tail[..]);
            }
            Op::Deposit {
                keys,
                seq,
                epoch,
                bytes,
                ..
            } => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.deposit.get_hash())
                    .arg(4)
                    .arg(&keys[..])
                    .arg(*seq)
                    .arg(&bytes[..])
                    .arg(*epoch);
            }
        }
    }
    let mut answers: Result<Vec<redis::Value>, redis::RedisError> =
        Err(redis::RedisError::from((redis::ErrorKind::Io, "not sent")));
    for attempt in 0..2 {
        let mut c = conn.clone();
        answers = pipe.query_async(&mut c).await;
        let unknown_script = matches!(&answers, Ok(values) if values.iter().any(|v| {
            matches!(v, redis::Value::ServerError(e) if e.code() == "NOSCRIPT")
        }));
        if !unknown_script || attempt == 1 {
            break;
        }
        let mut c = conn.clone();
        let loaded = redis::pipe()
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(ALLOCATE)
            .cmd("SCRIPT")
            .arg("LOAD")
            .arg(DEPOSIT)
            .query_async::<(String, String)>(&mut c)
            .await;
        if let Err(e) = loaded {
            answers = Err(e);
            break;
        }
    }
    match answers {
        Ok(values) if values.len() == ops.len() => {
            for (op, v) in ops.drain(..).zip(values) {
                match op {
                    Op::Allocate { reply, .. } => {
                        let _ = reply
                            .send(redis::from_redis_value::<Allocated>(v).map_err(unavailable));
                    }
                    Op::Deposit { reply, .. } => {
                        let _ = reply.send(
                            redis::from_redis_value::<i64>(v)
                                .map(|n| n == 1)
                                .map_err(unavailable),
                        );
                    }
                }
            }
        }
        other => {
            let why = match other {
                Ok(v) => format!("Redis answered {} of {} commands", v.len(), ops.len()),
                Err(e) => e.to_string(),
            };
            for op in ops.drain(..) {
                let e = DurableError::Unavailable(format!("Redis: {why}"));
                match op {
                    Op::Allocate { reply, .. } => {
                        let _ = reply.send(Err(e));
                    }
                    Op::Deposit { reply, .. } => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }
}

fn decode_all(room: Id, raw: Vec<Vec<u8>>) -> Result<Vec<Message>, DurableError> {
    raw.iter()
        .map(|bytes| match record::decode(bytes) {
            Ok(RoomMessage {
                room_id, message, ..
            }) if room_id == room => Ok(message),
            Ok(_) => Err(DurableError::Corrupt(
                "a window entry names another room".into(),
            )),
            Err(e) => Err(DurableError::Corrupt(format!("window entry: {e}"))),
        })
        .collect()
}

/// Merges two ascending, possibly overlapping message lists by seq (one copy of each seq: the
/// first list's when both have it — the database's, which carries the message's current
/// state, where the window has it as sent).
pub fn merge(a: Vec<Message>, b: Vec<Message>) -> Vec<Message> {
    let mut all: Vec<Message> = a.into_iter().chain(b).collect();
    all.sort_by_key(|m| m.seq);
    all.dedup_by_key(|m| m.seq);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_that_may_evict_counters_is_refused_and_one_that_may_evict_keys_with_a_ttl_is_warned_of(
    ) {
        assert!(eviction_verdict("allkeys-lru").is_err());
        assert!(eviction_verdict("allkeys-random").is_err());
        assert!(eviction_verdict("volatile-lru").unwrap().is_some());
        assert_eq!(eviction_verdict("noeviction").unwrap(), None);
    }
}
