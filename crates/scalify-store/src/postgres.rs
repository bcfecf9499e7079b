//! The PostgreSQL engine, for clusters: every node of a cluster uses the same database.
//!
//! Appends are batched (group commit) by [`PgConfig::writers`] writer tasks per node. A writer
//! takes every append waiting in the queue (up to [`MAX_BATCH`]) and commits them in one
//! transaction of five statements, whatever the batch size:
//!
//! 1. lock the batch's rooms (`SELECT … FOR UPDATE`, in id order so two writers never deadlock)
//!    and read their `last_seq`;
//! 2. look up which (room, sender, client_id) keys already exist — any node's commit of the
//!    same key is visible here, because it held the same room lock;
//! 3. give each new message the room's next seq;
//! 4. insert them all (`INSERT … SELECT FROM UNNEST`);
//! 5. store each room's new `last_seq`.
//!
//! The room row lock is what keeps `seq` gap-free and strictly increasing across nodes, and
//! what makes the idempotency check race-free. Callers are answered after the commit. If a
//! batch fails for a reason other than a lost connection, its appends are retried one by one
//! so one bad row cannot fail its neighbours.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scalify_core::{
    now_ms, ClientId, Id, Message, MessageText, NewMessage, Room, RoomKind, RoomName, UserRef,
    Username,
};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

use crate::{Appended, Credentials, RoomListing, Store, StoreError, StoreResult, User};

/// Most appends committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Appends waiting for a writer; callers wait for room beyond this (back-pressure).
const QUEUE_DEPTH: usize = 16 * 1024;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "admins",
        include_str!("../migrations/postgres/0002_admins.sql"),
    ),
];

/// The migrations, embedded in the binary, in the form sqlx's migrator takes.
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Vec<Migration>, Box<dyn std::error::Error + Send + Sync>>,
                > + Send
                + 's,
        >,
    > {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Connections in this node's pool (reads and the writers share it).
    pub max_connections: u32,
    /// Writer tasks committing batches of appends. Two let one batch be collected while the
    /// previous one commits.
    pub writers: usize,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            max_connections: 16,
            writers: 2,
        }
    }
}

type Reply = oneshot::Sender<StoreResult<Appended>>;

pub struct PgStore {
    pool: PgPool,
    appends: mpsc::Sender<(NewMessage, Reply)>,
    /// Appends queued or being committed; `flush` waits for it to reach zero.
    outstanding: Arc<AtomicUsize>,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("23505") => StoreError::Conflict,
                Some("23503") => StoreError::NotFound,
                // The server is shutting down, starting up or out of connection slots.
                Some("57P01" | "57P02" | "57P03" | "53300") => {
                    StoreError::Unavailable(e.to_string())
                }
                Some(code) if code.starts_with("22") || code.starts_with("23") => {
                    StoreError::Rejected(e.to_string())
                }
                _ => StoreError::Backend(e.to_string()),
            },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(format!("migration failed: {e}"))
    }
}

async fn connect(config: &PgConfig) -> StoreResult<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.max_connections.max(2))
        // A send waits at most this long for a connection when PostgreSQL is down; then its
        // client gets `internal` (and retries with the same client_id).
        .acquire_timeout(Duration::from_secs(2))
        .connect(&config.url)
        .await
        .map_err(|e| {
            let why = format!("cannot connect to PostgreSQL: {e}");
            // Unreachable, starting up or full: worth waiting for. Anything else (a wrong
            // password or database name) will not pass by itself.
            match StoreError::from(e) {
                StoreError::Unavailable(_) => StoreError::Unavailable(why),
                _ => StoreError::Backend(why),
            }
        })
}

async fn migrate(pool: &PgPool) -> StoreResult<usize> {
    let migrator = Migrator::new(Embedded).await?;
    // Before the first run the ledger table does not exist: nothing applied yet.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .unwrap_or_default();
    migrator.run(pool).await?;
    Ok(MIGRATIONS.len().saturating_sub(before as usize))
}

impl PgStore {
    /// Connects, applies pending migrations (sqlx's migrator takes an advisory lock, so nodes
    /// starting together apply them once), and starts the writers.
    pub async fn open(config: PgConfig) -> StoreResult<Self> {
        let pool = connect(&config).await?;
        migrate(&pool).await?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let rx = Arc::new(AsyncMutex::new(rx));
        let outstanding = Arc::new(AtomicUsize::new(0));
        for _ in 0..config.writers.max(1) {
            tokio::spawn(writer(pool.clone(), rx.clone(), outstanding.clone()));
        }
        Ok(PgStore {
            pool,
            appends: tx,
            outstanding,
        })
    }

    /// Applies pending migrations and returns how many were applied.
    pub async fn migrate_only(config: &PgConfig) -> StoreResult<usize> {
        let pool = connect(config).await?;
        let n = migrate(&pool).await?;
        pool.close().await;
        Ok(n)
    }
}

/// What writing a batch of already-sequenced messages did (see [`PgStore::persist`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// Rows written now.
    pub inserted: usize,
    /// Messages that were already stored, same id at the same (room, seq): a redelivery.
    pub redelivered: usize,
    /// Messages refused because their (room, seq) or (room, sender, client_id) holds another
    /// message: they are not stored, and the caller must report them (never drop silently).
    pub conflicts: Vec<Message>,
}

impl PgStore {
    /// Writes messages that already have their seq (the durable pipeline sequences them
    /// before Kafka) in one transaction: lock their rooms in id order, write the rows, and
    /// raise each room's `last_seq` to its newest seq. Idempotent: writing the same batch twice
    /// stores it once.
    ///
    /// The rows go in with `COPY … FROM STDIN`, PostgreSQL's cheapest bulk path — almost every
    /// batch is new rows. `COPY` has no `ON CONFLICT`, so a batch holding a row that is already
    /// there (a redelivery after a crash or a rebalance, or a conflict) fails with a unique
    /// violation; that transaction is dropped and the batch written again by
    /// `persist_skipping`, which skips and reports such rows.
    pub async fn persist(&self, batch: &[(Id, Message)]) -> StoreResult<Persisted> {
        if batch.is_empty() {
            return Ok(Persisted::default());
        }
        let mut sorted: Vec<&(Id, Message)> = batch.iter().collect();
        sorted.sort_by_key(|a| (a.0, a.1.seq));
        sorted.dedup_by(|a, b| a.0 == b.0 && a.1.seq == b.1.seq && a.1.id == b.1.id);
        let (rooms, tops) = newest_seqs(&sorted);
        let mut tx = self.pool.begin().await?;
        lock_rooms(&mut tx, &rooms).await?;
        let copied = async {
            let mut copy = tx.copy_in_raw(COPY_MESSAGES).await?;
            copy.send(copy_text(&sorted)).await?;
            copy.finish().await
        }
        .await;
        match copied {
            Ok(n) => {
                raise_last_seq(&mut tx, &rooms, &tops).await?;
                tx.commit().await?;
                Ok(Persisted {
                    inserted: n as usize,
                    ..Persisted::default()
                })
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                drop(tx);
                self.persist_skipping(&sorted, &rooms, &tops).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`PgStore::persist`]'s path for a batch with rows already stored: one multi-row
    /// `INSERT … ON CONFLICT DO NOTHING RETURNING`, then the skipped rows are sorted into
    /// redeliveries (same id at that seq) and conflicts.
    async fn persist_skipping(
        &self,
        sorted: &[&(Id, Message)],
        rooms: &[String],
        tops: &[i64],
    ) -> StoreResult<Persisted> {
        let mut cols = InsertColumns::default();
        for (room, m) in sorted {
            cols.push(&room.to_string(), m);
        }
        let mut tx = self.pool.begin().await?;
        lock_rooms(&mut tx, rooms).await?;
        let returning = format!("{INSERT_MESSAGES} ON CONFLICT DO NOTHING RETURNING room_id, seq");
        let written: Vec<(String, i64)> = cols
            .bind(sqlx::query(&returning))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let mut out = Persisted {
            inserted: written.len(),
            ..Persisted::default()
        };
        if written.len() < sorted.len() {
            let written: std::collections::HashSet<(String, i64)> = written.into_iter().collect();
            let skipped: Vec<&&(Id, Message)> = sorted
                .iter()
                .filter(|(room, m)| !written.contains(&(room.to_string(), m.seq as i64)))
                .collect();
            let room_ids: Vec<String> = skipped.iter().map(|(r, _)| r.to_string()).collect();
            let seqs: Vec<i64> = skipped.iter().map(|(_, m)| m.seq as i64).collect();
            let present: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT m.room_id, m.seq, m.id FROM messages m
                 JOIN UNNEST($1::text[], $2::bigint[]) AS u(room_id, seq)
                   ON m.room_id = u.room_id AND m.seq = u.seq",
            )
            .bind(&room_ids)
            .bind(&seqs)
            .fetch_all(&mut *tx)
            .await?;
            let present: HashMap<(String, i64), String> =
                present.into_iter().map(|(r, s, id)| ((r, s), id)).collect();
            for (room, m) in skipped {
                match present.get(&(room.to_string(), m.seq as i64)) {
                    Some(id) if *id == m.id.to_string() => out.redelivered += 1,
                    _ => out.conflicts.push(m.clone()),
                }
            }
        }
        raise_last_seq(&mut tx, rooms, tops).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Each room of a batch sorted by room, with its newest seq: (room ids, seqs), for
/// [`lock_rooms`] and [`RAISE_LAST_SEQ`].
fn newest_seqs(sorted: &[&(Id, Message)]) -> (Vec<String>, Vec<i64>) {
    let mut newest: Vec<(Id, i64)> = Vec::new();
    for (room, m) in sorted {
        match newest.last_mut() {
            Some((r, seq)) if r == room => *seq = (*seq).max(m.seq as i64),
            _ => newest.push((*room, m.seq as i64)),
        }
    }
    newest.into_iter().map(|(r, s)| (r.to_string(), s)).unzip()
}

/// Locks the rooms' rows in id order (two writers never deadlock).
async fn lock_rooms(tx: &mut sqlx::PgConnection, rooms: &[String]) -> StoreResult<()> {
    sqlx::query("SELECT id FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(rooms)
        .execute(tx)
        .await?;
    Ok(())
}

async fn raise_last_seq(
    tx: &mut sqlx::PgConnection,
    rooms: &[String],
    tops: &[i64],
) -> StoreResult<()> {
    sqlx::query(RAISE_LAST_SEQ)
        .bind(rooms)
        .bind(tops)
        .execute(tx)
        .await?;
    Ok(())
}

/// `COPY`'s statement for [`copy_text`]'s rows.
const COPY_MESSAGES: &str =
    "COPY messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts) FROM STDIN";

/// The rows in `COPY`'s text format: tab-separated columns, one line per row, with backslash,
/// tab, newline and carriage return escaped (the only bytes that format gives a meaning to;
/// NUL never reaches the store — `MessageText` refuses it).
fn copy_text(sorted: &[&(Id, Message)]) -> Vec<u8> {
    use std::io::Write;
    fn field(buf: &mut Vec<u8>, s: &str) {
        for b in s.bytes() {
            match b {
                b'\\' => buf.extend_from_slice(b"\\\\"),
                b'\t' => buf.extend_from_slice(b"\\t"),
                b'\n' => buf.extend_from_slice(b"\\n"),
                b'\r' => buf.extend_from_slice(b"\\r"),
                _ => buf.push(b),
            }
        }
    }
    let mut buf = Vec::with_capacity(sorted.len() * 160);
    for (room, m) in sorted {
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "{room}\t{}\t{}\t{}\t", m.seq, m.id, m.sender.id);
        field(&mut buf, &m.sender.username);
        buf.push(b'\t');
        field(&mut buf, m.client_id.as_str());
        buf.push(b'\t');
        field(&mut buf, m.text.as_str());
        let _ = writeln!(buf, "\t{}", m.ts);
    }
    buf
}

/// One writer: takes a batch off the shared queue, commits it, answers its callers. The
/// writers end when the store (the queue's sender) is dropped.
async fn writer(
    pool: PgPool,
    rx: Arc<AsyncMutex<mpsc::Receiver<(NewMessage, Reply)>>>,
    outstanding: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let n = batch.len();
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        metrics::histogram!("scalify_store_batch_size", "engine" => "postgres").record(n as f64);
        let results = commit_or_split(&pool, &messages).await;
        metrics::histogram!("scalify_store_commit_seconds", "engine" => "postgres")
            .record(started.elapsed().as_secs_f64());
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        outstanding.fetch_sub(n, Ordering::AcqRel);
    }
}

async fn commit_or_split(pool: &PgPool, messages: &[NewMessage]) -> Vec<StoreResult<Appended>> {
    match commit_batch(pool, messages).await {
        Ok(results) => results,
        Err(e) => {
            metrics::counter!("scalify_store_batch_failures_total", "engine" => "postgres")
                .increment(1);
            let e = StoreError::from(e);
            if matches!(e, StoreError::Unavailable(_)) || messages.len() == 1 {
                tracing::warn!(error = %e, batch = messages.len(), "append batch failed");
                return messages.iter().map(|_| Err(clone_err(&e))).collect();
            }
            tracing::warn!(error = %e, batch = messages.len(), "append batch failed; retrying one by one");
            let mut out = Vec::with_capacity(messages.len());
            for m in messages {
                out.push(match commit_batch(pool, std::slice::from_ref(m)).await {
                    Ok(mut r) => r
                        .pop()
                        .unwrap_or(Err(StoreError::Backend("no result".into()))),
                    Err(e) => Err(e.into()),
                });
            }
            out
        }
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Backend(s) => StoreError::Backend(s.clone()),
        StoreError::Retry(s) => StoreError::Retry(s.clone()),
        StoreError::Rejected(s) => StoreError::Rejected(s.clone()),
    }
}

type IdemKey = (Id, Id, String);

fn key_of(m: &NewMessage) -> IdemKey {
    (m.room_id, m.sender.id, m.client_id.as_str().to_owned())
}

/// Commits one batch (see the module docs). Per-message outcomes are in the result; the outer
/// error means the transaction failed as a whole.
async fn commit_batch(
    pool: &PgPool,
    batch: &[NewMessage],
) -> Result<Vec<StoreResult<Appended>>, sqlx::Error> {
    // A key repeated inside the batch is stored once; its repeats answer as duplicates.
    let mut first_of: HashMap<IdemKey, usize> = HashMap::with_capacity(batch.len());
    let mut unique = Vec::with_capacity(batch.len());
    for (i, m) in batch.iter().enumerate() {
        first_of.entry(key_of(m)).or_insert_with(|| {
            unique.push(i);
            i
        });
    }
    let mut room_ids: Vec<String> = batch.iter().map(|m| m.room_id.to_string()).collect();
    room_ids.sort();
    room_ids.dedup();

    let mut tx = pool.begin().await?;
    let mut last_seq: HashMap<String, i64> =
        sqlx::query("SELECT id, last_seq FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&room_ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;

    let (kr, ks, kc): (Vec<String>, Vec<String>, Vec<String>) = unique
        .iter()
        .map(|&i| {
            let m = &batch[i];
            (
                m.room_id.to_string(),
                m.sender.id.to_string(),
                m.client_id.as_str().to_owned(),
            )
        })
        .fold((vec![], vec![], vec![]), |mut acc, (r, s, c)| {
            acc.0.push(r);
            acc.1.push(s);
            acc.2.push(c);
            acc
        });
    let existing_rows = sqlx::query(
        "SELECT m.room_id, m.id, m.seq, m.sender_id, m.sender_name, m.client_id, m.text, m.ts
         FROM messages m
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS k(r, s, c)
           ON m.room_id = k.r AND m.sender_id = k.s AND m.client_id = k.c",
    )
    .bind(&kr)
    .bind(&ks)
    .bind(&kc)
    .fetch_all(&mut *tx)
    .await?;
    let names: HashMap<Id, &RoomName> = batch.iter().map(|m| (m.room_id, &m.room)).collect();
    let mut existing: HashMap<IdemKey, Message> = HashMap::with_capacity(existing_rows.len());
    for row in &existing_rows {
        let room_id: String = row.try_get(0)?;
        let room_id = parse_id(&room_id)?;
        let Some(name) = names.get(&room_id) else {
            continue;
        };
        let m = read_message(row, 1, name)?;
        existing.insert((room_id, m.sender.id, m.client_id.as_str().to_owned()), m);
    }

    let mut results: Vec<Option<StoreResult<Appended>>> = (0..batch.len()).map(|_| None).collect();
    let mut ins = InsertColumns::default();
    for &i in &unique {
        let m = &batch[i];
        if let Some(original) = existing.remove(&key_of(m)) {
            results[i] = Some(Ok(Appended {
                message: original,
                duplicate: true,
            }));
            continue;
        }
        let room_key = m.room_id.to_string();
        let Some(last) = last_seq.get_mut(&room_key) else {
            results[i] = Some(Err(StoreError::NotFound));
            continue;
        };
        *last += 1;
        let message = Message {
            id: Id::new(),
            room: m.room.clone(),
            seq: *last as u64,
            sender: m.sender.clone(),
            text: m.text.clone(),
            client_id: m.client_id.clone(),
            ts: now_ms(),
        };
        ins.push(&room_key, &message);
        results[i] = Some(Ok(Appended {
            message,
            duplicate: false,
        }));
    }
    if !ins.seq.is_empty() {
        ins.bind(sqlx::query(INSERT_MESSAGES))
            .execute(&mut *tx)
            .await?;
        let (ids, seqs): (Vec<String>, Vec<i64>) = last_seq.into_iter().unzip();
        sqlx::query(RAISE_LAST_SEQ)
            .bind(&ids)
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    // Repeats inside the batch answer with what their first occurrence got.
    let repeats: Vec<(usize, StoreResult<Appended>)> = (0..batch.len())
        .filter(|&i| results[i].is_none())
        .map(|i| {
            let first = first_of.get(&key_of(&batch[i])).copied().unwrap_or(i);
            let answer = match results.get(first).and_then(|r| r.as_ref()) {
                Some(Ok(a)) => Ok(Appended {
                    message: a.message.clone(),
                    duplicate: true,
                }),
                Some(Err(e)) => Err(clone_err(e)),
                None => Err(StoreError::Backend("unanswered append".into())),
            };
            (i, answer)
        })
        .collect();
    for (i, answer) in repeats {
        results[i] = Some(answer);
    }
    let out = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Backend("unanswered append".into()))))
        .collect();
    Ok(out)
}

/// One multi-row insert of messages from column arrays ([`InsertColumns::bind`] binds them).
const INSERT_MESSAGES: &str =
    "INSERT INTO messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts)
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::int8[])";

/// Raises each room's `last_seq` (`$1` room ids, `$2` seqs) — never lowers it.
const RAISE_LAST_SEQ: &str =
    "UPDATE rooms SET last_seq = v.s FROM UNNEST($1::text[], $2::int8[]) AS v(id, s)
     WHERE rooms.id = v.id AND rooms.last_seq < v.s";

/// Column arrays for one multi-row insert.
#[derive(Default)]
struct InsertColumns {
    room_id: Vec<String>,
    seq: Vec<i64>,
    id: Vec<String>,
    sender_id: Vec<String>,
    sender_name: Vec<String>,
    client_id: Vec<String>,
    text: Vec<String>,
    ts: Vec<i64>,
}

impl InsertColumns {
    /// Binds the eight arrays, in [`INSERT_MESSAGES`]' order.
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.room_id)
            .bind(&self.seq)
            .bind(&self.id)
            .bind(&self.sender_id)
            .bind(&self.sender_name)
            .bind(&self.client_id)
            .bind(&self.text)
            .bind(&self.ts)
    }

    fn push(&mut self, room_key: &str, m: &Message) {
        self.room_id.push(room_key.to_owned());
        self.seq.push(m.seq as i64);
        self.id.push(m.id.to_string());
        self.sender_id.push(m.sender.id.to_string());
        self.sender_name.push(m.sender.username.clone());
        self.client_id.push(m.client_id.as_str().to_owned());
        self.text.push(m.text.as_str().to_owned());
        self.ts.push(m.ts);
    }
}

fn parse_id(s: &str) -> Result<Id, sqlx::Error> {
    s.parse()
        .map_err(|e: ulid::DecodeError| sqlx::Error::Decode(Box::new(e)))
}

/// Reads `id, seq, sender_id, sender_name, client_id, text, ts` starting at column `at`.
fn read_message(r: &PgRow, at: usize, room: &RoomName) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: parse_id(r.try_get::<&str, _>(at)?)?,
        room: room.clone(),
        seq: r.try_get::<i64, _>(at + 1)? as u64,
        sender: UserRef {
            id: parse_id(r.try_get::<&str, _>(at + 2)?)?,
            username: r.try_get(at + 3)?,
        },
        client_id: ClientId::from_trusted(r.try_get(at + 4)?),
        text: MessageText::from_trusted(r.try_get(at + 5)?),
        ts: r.try_get(at + 6)?,
    })
}

fn read_room(r: &PgRow) -> Result<Room, sqlx::Error> {
    let kind: &str = r.try_get(2)?;
    Ok(Room {
        id: parse_id(r.try_get::<&str, _>(0)?)?,
        name: RoomName::from_trusted(r.try_get(1)?),
        kind: RoomKind::parse(kind).unwrap_or(RoomKind::Private),
        last_seq: r.try_get::<i64, _>(3)? as u64,
    })
}

fn read_user(r: &PgRow) -> Result<User, sqlx::Error> {
    let name: &str = r.try_get(1)?;
    Ok(User {
        id: parse_id(r.try_get::<&str, _>(0)?)?,
        username: Username::parse(name).map_err(|e| sqlx::Error::Decode(e.into()))?,
    })
}

const MESSAGE_COLUMNS: &str = "id, seq, sender_id, sender_name, client_id, text, ts";

async fn add_member_in<'c, E>(ex: E, room: Id, user: Id) -> StoreResult<bool>
where
    E: sqlx::PgExecutor<'c>,
{
    let done = sqlx::query(
        "INSERT INTO members (room_id, user_id, joined_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(room.to_string())
    .bind(user.to_string())
    .bind(now_ms())
    .execute(ex)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict => StoreError::NotFound,
        other => other,
    })?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, username: &Username, password_hash: &str) -> StoreResult<User> {
        let id = Id::new();
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(username.as_str())
        .bind(password_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(User {
            id,
            username: username.clone(),
        })
    }

    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>> {
        let row = sqlx::query("SELECT id, username, password_hash FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(Credentials {
                user: read_user(&r)?,
                password_hash: r.try_get(2)?,
            }),
            None => None,
        })
    }

    async fn user(&self, id: Id) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT id, username FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(read_user).transpose()?)
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT id, username FROM users WHERE username = $1")
            .bind(username.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(read_user).transpose()?)
    }

    async fn room(&self, name: &RoomName) -> StoreResult<Option<Room>> {
        let row = sqlx::query("SELECT id, name, kind, last_seq FROM rooms WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(read_room).transpose()?)
    }

    async fn create_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room> {
        let mut tx = self.pool.begin().await?;
        let id = Id::new();
        sqlx::query(
            "INSERT INTO rooms (id, name, kind, last_seq, created_at) VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(id.to_string())
        .bind(name.as_str())
        .bind(kind.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for user in members {
            add_member_in(&mut *tx, id, *user).await?;
        }
        tx.commit().await?;
        Ok(Room {
            id,
            name: name.clone(),
            kind,
            last_seq: 0,
        })
    }

    async fn ensure_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room> {
        let mut tx = self.pool.begin().await?;
        // Whichever node inserts first wins; the others see its row.
        sqlx::query(
            "INSERT INTO rooms (id, name, kind, last_seq, created_at) VALUES ($1, $2, $3, 0, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(Id::new().to_string())
        .bind(name.as_str())
        .bind(kind.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT id, name, kind, last_seq FROM rooms WHERE name = $1")
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let room = read_room(&row)?;
        for user in members {
            add_member_in(&mut *tx, room.id, *user).await?;
        }
        tx.commit().await?;
        Ok(room)
    }

    async fn add_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        add_member_in(&self.pool, room, user).await
    }

    async fn set_admin(&self, username: &Username, admin: bool) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET is_admin = $2 WHERE username = $1")
            .bind(username.as_str())
            .bind(admin)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn is_admin(&self, user: Id) -> StoreResult<bool> {
        let admin: Option<bool> = sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(admin.unwrap_or(false))
    }

    async fn is_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM members WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn members(&self, room: Id, limit: u32) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(
            "SELECT u.id, u.username FROM members m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 ORDER BY u.username LIMIT $2",
        )
        .bind(room.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(read_user).collect::<Result<Vec<_>, _>>()?)
    }

    async fn list_rooms(&self, user: Id) -> StoreResult<Vec<RoomListing>> {
        let rows = sqlx::query(
            "SELECT r.id, r.name, r.kind, r.last_seq, m.user_id IS NOT NULL
             FROM rooms r LEFT JOIN members m ON m.room_id = r.id AND m.user_id = $1
             WHERE m.user_id IS NOT NULL OR r.kind = 'public'
             ORDER BY r.name",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RoomListing {
                    room: read_room(r)?,
                    member: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn append(&self, message: NewMessage) -> StoreResult<Appended> {
        let (tx, rx) = oneshot::channel();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        if self.appends.send((message, tx)).await.is_err() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Unavailable("store is shut down".into()));
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    async fn history(
        &self,
        room: &Room,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let before = before_seq.map_or(i64::MAX, |s| s.min(i64::MAX as u64) as i64);
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq < $2
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(room.id.to_string())
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| read_message(r, 0, &room.name))
            .collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    async fn after(&self, room: &Room, after_seq: u64, limit: u32) -> StoreResult<Vec<Message>> {
        let after = after_seq.min(i64::MAX as u64) as i64;
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = $1 AND seq > $2
             ORDER BY seq ASC LIMIT $3"
        ))
        .bind(room.id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| read_message(r, 0, &room.name))
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every answered append is already committed; wait for the ones still queued.
        while self.outstanding.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        // Readiness must answer quickly even when the database does not.
        match tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(&self.pool),
        )
        .await
        {
            Ok(r) => r.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(
                "PostgreSQL did not answer within 1 s".into(),
            )),
        }
    }
}
