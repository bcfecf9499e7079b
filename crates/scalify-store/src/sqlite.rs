//! The embedded SQLite engine.
//!
//! Writes go to one dedicated OS thread that owns the only write connection (`Writer`). It
//! takes every operation waiting in its queue (up to [`MAX_BATCH`]), runs them in one
//! transaction — an operation that fails leaves no trace, so it does not fail its neighbours
//! (see `Writer::apply`) — commits once, and only then answers each caller. With many
//! concurrent senders the cost of the commit (the fsync) is shared by the whole batch: group
//! commit.
//!
//! Reads run on a small pool of read connections in `spawn_blocking`; WAL mode lets them read
//! while the writer writes. A checkpointer thread copies the WAL into the database; the writer
//! finishes its work between batches now and then, so the WAL is rewound and reused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use scalify_core::{
    now_ms, ClientId, Id, Message, MessageText, NewMessage, Room, RoomKind, RoomName, UserRef,
    Username,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{Appended, Credentials, RoomListing, Store, StoreError, StoreResult, User};

/// Most operations committed in one transaction. Bounds the latency one commit adds.
pub const MAX_BATCH: usize = 1024;
/// Writes waiting for the writer; callers wait for room beyond this (back-pressure, not memory).
const QUEUE_DEPTH: usize = 16 * 1024;
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_admins.sql"),
];

/// How hard a commit waits for the disk. `Full` survives power loss; `Normal` (WAL) survives a
/// crash of the process but may lose the last commits on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file; its directory must exist.
    pub path: PathBuf,
    pub durability: Durability,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            durability: Durability::Full,
        }
    }
}

pub struct SqliteStore {
    writes: mpsc::Sender<WriteOp>,
    readers: Arc<ReaderPool>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Option<Checkpointer>,
}

/// Copies the WAL into the database file in the background (PASSIVE checkpoints: they never
/// wait for, nor block, the writer or readers). It does the bulk of the copying off the writer
/// thread; the writer only finishes the job now and then so the WAL can be rewound (see
/// [`Writer::checkpoint_now_and_then`]).
struct Checkpointer {
    /// Dropping it wakes the thread at once and stops it.
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(100);

    fn start(config: &SqliteConfig) -> StoreResult<Checkpointer> {
        let conn = open(&config.path, config.durability, false)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::EVERY)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

fn open(path: &Path, durability: Durability, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // A large page cache (the writer's) and memory-mapped reads keep hot b-tree pages out of
    // pread copies. Checkpoints are not run by commits (autocheckpoint off) but by the
    // checkpointer thread, and finished by the writer between batches (see
    // `Writer::checkpoint_now_and_then`). A WAL file that grew in a burst is cut back to
    // 64 MiB when it is next rewound.
    let cache_kib = if read_only { 16 * 1024 } else { 64 * 1024 };
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{cache_kib}; PRAGMA mmap_size = 1073741824; PRAGMA temp_store = MEMORY;"
    ))?;
    if !read_only {
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;"
        ))?;
    }
    Ok(conn)
}

/// Applies the migrations the database has not seen yet (tracked in `PRAGMA user_version`).
/// Returns how many were applied.
fn migrate(conn: &mut Connection) -> StoreResult<usize> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary ({}); upgrade scalify",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied sqlite migration");
    }
    Ok(MIGRATIONS.len() - current)
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies pending migrations, and starts the
    /// writer thread.
    pub fn open(config: SqliteConfig) -> StoreResult<Self> {
        let mut conn = open(&config.path, config.durability, false)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            conn,
            seq_cache: HashMap::new(),
            last_checkpoint: std::time::Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        let readers = (0..READERS)
            .map(|_| open(&config.path, config.durability, true))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(SqliteStore {
            writes: tx,
            readers: Arc::new(ReaderPool {
                permits: Semaphore::new(READERS),
                conns: Mutex::new(readers),
            }),
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Some(Checkpointer::start(&config)?),
        })
    }

    /// Applies migrations and returns how many ran (for `scalify migrate`).
    pub fn migrate_only(config: &SqliteConfig) -> StoreResult<usize> {
        let mut conn = open(&config.path, config.durability, false)?;
        migrate(&mut conn)
    }

    async fn write<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> WriteOp,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(op(reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shut down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool
                .conns
                .lock()
                .map_err(|_| StoreError::Backend("reader pool poisoned".into()))?
                .pop()
                .ok_or_else(|| StoreError::Backend("reader pool empty".into()))?;
            let result = f(&conn);
            if let Ok(mut conns) = pool.conns.lock() {
                conns.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Dropping `writes` closes the queue; the writer drains it and exits. Joining here
        // means a dropped store has committed everything it acknowledged.
        let (closed, _) = mpsc::channel(1);
        let _ = std::mem::replace(&mut self.writes, closed);
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
        if let Some(handle) = self.writer_thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

struct ReaderPool {
    permits: Semaphore,
    conns: Mutex<Vec<Connection>>,
}

type Reply<T> = oneshot::Sender<StoreResult<T>>;

enum WriteOp {
    CreateUser {
        username: Username,
        password_hash: String,
        reply: Reply<User>,
    },
    CreateRoom {
        name: RoomName,
        kind: RoomKind,
        members: Vec<Id>,
        if_absent: bool,
        reply: Reply<Room>,
    },
    AddMember {
        room: Id,
        user: Id,
        reply: Reply<bool>,
    },
    SetAdmin {
        username: Username,
        admin: bool,
        reply: Reply<bool>,
    },
    Append {
        message: NewMessage,
        reply: Reply<Appended>,
    },
    Flush {
        reply: Reply<()>,
    },
}

/// An operation's result, held until the batch commits.
enum Done {
    User(Reply<User>, StoreResult<User>),
    Room(Reply<Room>, StoreResult<Room>),
    Member(Reply<bool>, StoreResult<bool>),
    Appended(Reply<Appended>, StoreResult<Appended>),
    Flushed(Reply<()>),
}

impl Done {
    fn answer(self) {
        // A caller that went away (timeout, disconnect) is not an error for the store.
        match self {
            Done::User(r, v) => drop(r.send(v)),
            Done::Room(r, v) => drop(r.send(v)),
            Done::Member(r, v) => drop(r.send(v)),
            Done::Appended(r, v) => drop(r.send(v)),
            Done::Flushed(r) => drop(r.send(Ok(()))),
        }
    }
    fn fail(self, e: &str) {
        let msg = format!("commit failed: {e}");
        match self {
            Done::User(r, _) => drop(r.send(backend_err(&msg))),
            Done::Room(r, _) => drop(r.send(backend_err(&msg))),
            Done::Member(r, _) => drop(r.send(backend_err(&msg))),
            Done::Appended(r, _) => drop(r.send(backend_err(&msg))),
            Done::Flushed(r) => drop(r.send(backend_err(&msg))),
        }
    }
}

struct Writer {
    conn: Connection,
    /// `rooms.last_seq` of rooms written recently. Valid because this thread is the only
    /// writer of the database; cleared whenever a commit fails.
    seq_cache: HashMap<Id, u64>,
    /// When the writer last checkpointed (see [`Writer::checkpoint_now_and_then`]).
    last_checkpoint: std::time::Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
            self.checkpoint_now_and_then();
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<WriteOp>) {
        let started = std::time::Instant::now();
        metrics::histogram!("scalify_store_batch_size", "engine" => "sqlite")
            .record(batch.len() as f64);
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            tracing::error!(error = %msg, "cannot begin write transaction");
            for op in batch.drain(..) {
                op.into_unfinished().fail(&msg);
            }
            return;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut touched: HashMap<Id, u64> = HashMap::new();
        for op in batch.drain(..) {
            done.push(self.apply(op, &mut touched));
        }
        let result = self.store_seqs(&touched).and_then(|()| {
            self.conn.execute_batch("COMMIT")?;
            Ok(())
        });
        metrics::histogram!("scalify_store_commit_seconds", "engine" => "sqlite")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => done.into_iter().for_each(Done::answer),
            Err(e) => {
                metrics::counter!("scalify_store_batch_failures_total", "engine" => "sqlite")
                    .increment(1);
                let msg = e.to_string();
                tracing::error!(error = %msg, ops = done.len(), "write batch failed; rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.seq_cache.clear();
                done.into_iter().for_each(|d| d.fail(&msg));
            }
        }
    }

    /// Finishes the checkpointer thread's work between two batches, once per
    /// [`Writer::CHECKPOINT_EVERY`], so the WAL can be rewound.
    ///
    /// SQLite rewinds the WAL (writes it from its beginning again) only when a write
    /// transaction begins with every frame already copied into the database. The checkpointer
    /// thread alone, beside a writer that never pauses, never gets there: under steady load
    /// the WAL grew by ~120 MB/s — 1.2 GB after 10 s of `scalify bench durable` — and was
    /// never reused. Here nothing commits during the checkpoint, so the next batch rewinds
    /// the WAL (unless a reader still reads old frames; then a later one does). The thread has
    /// copied all but the last ~100 ms, so the pause is short. While the thread holds the
    /// checkpoint lock this returns at once, and the writer tries again after its next batch.
    fn checkpoint_now_and_then(&mut self) {
        if self.last_checkpoint.elapsed() < Self::CHECKPOINT_EVERY {
            return;
        }
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            // 1: busy, the checkpointer thread is copying; try again after the next batch.
            Ok(1) => {}
            Ok(_) => self.last_checkpoint = std::time::Instant::now(),
            Err(e) => {
                self.last_checkpoint = std::time::Instant::now();
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }

    const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

    fn store_seqs(&mut self, touched: &HashMap<Id, u64>) -> StoreResult<()> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE rooms SET last_seq = ?2 WHERE id = ?1")?;
        for (room, seq) in touched {
            stmt.execute(params![room.to_string(), *seq as i64])?;
        }
        Ok(())
    }

    /// Runs one operation. A failed operation must leave no trace, so its neighbours in the
    /// batch can still commit: single-statement operations get that from SQLite's statement
    /// atomicity; creating a room (several statements) runs inside a savepoint. Savepoints are
    /// not used for every op because each page an op touches is then copied to a
    /// sub-journal, which costs more than the insert itself.
    fn apply(&mut self, op: WriteOp, touched: &mut HashMap<Id, u64>) -> Done {
        match op {
            WriteOp::Flush { reply } => Done::Flushed(reply),
            WriteOp::CreateUser {
                username,
                password_hash,
                reply,
            } => Done::User(reply, self.create_user(username, &password_hash)),
            WriteOp::CreateRoom {
                name,
                kind,
                members,
                if_absent,
                reply,
            } => {
                let result = self.in_savepoint(|w| w.create_room(name, kind, &members, if_absent));
                Done::Room(reply, result)
            }
            WriteOp::AddMember { room, user, reply } => {
                Done::Member(reply, self.add_member(room, user))
            }
            WriteOp::SetAdmin {
                username,
                admin,
                reply,
            } => Done::Member(reply, self.set_admin(&username, admin)),
            // `append` updates the seq cache only after its INSERT succeeded.
            WriteOp::Append { message, reply } => {
                Done::Appended(reply, self.append(message, touched))
            }
        }
    }

    fn in_savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        self.conn.prepare_cached("SAVEPOINT op")?.execute([])?;
        let result = f(self);
        if result.is_err() {
            self.conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
        }
        self.conn.prepare_cached("RELEASE op")?.execute([])?;
        result
    }

    fn create_user(&mut self, username: Username, hash: &str) -> StoreResult<User> {
        let id = Id::new();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id.to_string(), username.as_str(), hash, now_ms()])?;
        Ok(User { id, username })
    }

    fn create_room(
        &mut self,
        name: RoomName,
        kind: RoomKind,
        members: &[Id],
        if_absent: bool,
    ) -> StoreResult<Room> {
        let existing = if if_absent {
            room_by_name(&self.conn, &name)?
        } else {
            None
        };
        let room = match existing {
            Some(room) => room,
            None => {
                let id = Id::new();
                self.conn
                    .prepare_cached(
                        "INSERT INTO rooms (id, name, kind, last_seq, created_at) VALUES (?1, ?2, ?3, 0, ?4)",
                    )?
                    .execute(params![id.to_string(), name.as_str(), kind.as_str(), now_ms()])?;
                self.seq_cache.insert(id, 0);
                Room {
                    id,
                    name,
                    kind,
                    last_seq: 0,
                }
            }
        };
        for user in members {
            self.add_member(room.id, *user)?;
        }
        Ok(room)
    }

    fn set_admin(&mut self, username: &Username, admin: bool) -> StoreResult<bool> {
        let n = self
            .conn
            .prepare_cached("UPDATE users SET is_admin = ?2 WHERE username = ?1")?
            .execute(params![username.as_str(), admin])?;
        Ok(n == 1)
    }

    fn add_member(&mut self, room: Id, user: Id) -> StoreResult<bool> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO members (room_id, user_id, joined_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![room.to_string(), user.to_string(), now_ms()])
            .map_err(|e| match StoreError::from(e) {
                // A foreign key violation: the room or the user does not exist.
                StoreError::Conflict => StoreError::NotFound,
                other => other,
            })?;
        Ok(n == 1)
    }

    fn append(&mut self, m: NewMessage, touched: &mut HashMap<Id, u64>) -> StoreResult<Appended> {
        let room_id = m.room_id;
        let room_key = room_id.to_string();
        let sender_key = m.sender.id.to_string();
        let last = match self.seq_cache.get(&room_id) {
            Some(s) => *s,
            None => self
                .conn
                .prepare_cached("SELECT last_seq FROM rooms WHERE id = ?1")?
                .query_row(params![room_key], |r| r.get::<_, i64>(0))
                .optional()?
                .ok_or(StoreError::NotFound)? as u64,
        };
        let message = Message {
            id: Id::new(),
            room: m.room,
            seq: last + 1,
            sender: m.sender,
            text: m.text,
            client_id: m.client_id,
            ts: now_ms(),
        };
        // The common case is a new message: insert first, and look up the original only when
        // the idempotency key turns out to be taken (one index descent instead of two).
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (room_id, sender_id, client_id) DO NOTHING",
            )?
            .execute(params![
                room_key,
                message.seq as i64,
                message.id.to_string(),
                sender_key,
                message.sender.username,
                message.client_id.as_str(),
                message.text.as_str(),
                message.ts
            ])?;
        if inserted == 0 {
            let original = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND sender_id = ?2 AND client_id = ?3"
                ))?
                .query_row(params![room_key, sender_key, message.client_id.as_str()], |r| {
                    read_message(r, &message.room)
                })?;
            return Ok(Appended {
                message: original,
                duplicate: true,
            });
        }
        self.seq_cache.insert(room_id, message.seq);
        touched.insert(room_id, message.seq);
        Ok(Appended {
            message,
            duplicate: false,
        })
    }
}

impl WriteOp {
    /// The pending answer of an op that never ran.
    fn into_unfinished(self) -> Done {
        let msg = "not run: the transaction could not start";
        match self {
            WriteOp::CreateUser { reply, .. } => Done::User(reply, backend_err(msg)),
            WriteOp::CreateRoom { reply, .. } => Done::Room(reply, backend_err(msg)),
            WriteOp::AddMember { reply, .. } | WriteOp::SetAdmin { reply, .. } => {
                Done::Member(reply, backend_err(msg))
            }
            WriteOp::Append { reply, .. } => Done::Appended(reply, backend_err(msg)),
            WriteOp::Flush { reply } => Done::Flushed(reply),
        }
    }
}

fn backend_err<T>(msg: &str) -> StoreResult<T> {
    Err(StoreError::Backend(msg.to_owned()))
}

const MESSAGE_COLUMNS: &str = "id, seq, sender_id, sender_name, client_id, text, ts";

fn parse_id(s: String) -> rusqlite::Result<Id> {
    s.parse().map_err(|e: ulid::DecodeError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn read_message(r: &rusqlite::Row<'_>, room: &RoomName) -> rusqlite::Result<Message> {
    Ok(Message {
        id: parse_id(r.get(0)?)?,
        room: room.clone(),
        seq: r.get::<_, i64>(1)? as u64,
        sender: UserRef {
            id: parse_id(r.get(2)?)?,
            username: r.get(3)?,
        },
        client_id: ClientId::from_trusted(r.get(4)?),
        text: MessageText::from_trusted(r.get(5)?),
        ts: r.get(6)?,
    })
}

fn read_room(r: &rusqlite::Row<'_>) -> rusqlite::Result<Room> {
    let kind: String = r.get(2)?;
    Ok(Room {
        id: parse_id(r.get(0)?)?,
        name: RoomName::from_trusted(r.get(1)?),
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Private),
        last_seq: r.get::<_, i64>(3)? as u64,
    })
}

fn room_by_name(conn: &Connection, name: &RoomName) -> StoreResult<Option<Room>> {
    Ok(conn
        .prepare_cached("SELECT id, name, kind, last_seq FROM rooms WHERE name = ?1")?
        .query_row(params![name.as_str()], read_room)
        .optional()?)
}

fn read_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let name: String = r.get(1)?;
    Ok(User {
        id: parse_id(r.get(0)?)?,
        // Stored names were validated on the way in; re-parse to keep the type honest.
        username: Username::parse(&name).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, username: &Username, password_hash: &str) -> StoreResult<User> {
        let (username, password_hash) = (username.clone(), password_hash.to_owned());
        self.write(|reply| WriteOp::CreateUser {
            username,
            password_hash,
            reply,
        })
        .await
    }

    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>> {
        let username = username.clone();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, username, password_hash FROM users WHERE username = ?1",
            )?
            .query_row(params![username.as_str()], |r| {
                Ok(Credentials {
                    user: read_user(r)?,
                    password_hash: r.get(2)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn user(&self, id: Id) -> StoreResult<Option<User>> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT id, username FROM users WHERE id = ?1")?
                    .query_row(params![id.to_string()], read_user)
                    .optional()?,
            )
        })
        .await
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<User>> {
        let username = username.clone();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT id, username FROM users WHERE username = ?1")?
                    .query_row(params![username.as_str()], read_user)
                    .optional()?,
            )
        })
        .await
    }

    async fn room(&self, name: &RoomName) -> StoreResult<Option<Room>> {
        let name = name.clone();
        self.read(move |c| room_by_name(c, &name)).await
    }

    async fn create_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room> {
        let (name, members) = (name.clone(), members.to_vec());
        self.write(|reply| WriteOp::CreateRoom {
            name,
            kind,
            members,
            if_absent: false,
            reply,
        })
        .await
    }

    async fn ensure_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room> {
        let (name, members) = (name.clone(), members.to_vec());
        self.write(|reply| WriteOp::CreateRoom {
            name,
            kind,
            members,
            if_absent: true,
            reply,
        })
        .await
    }

    async fn add_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.write(|reply| WriteOp::AddMember { room, user, reply })
            .await
    }

    async fn set_admin(&self, username: &Username, admin: bool) -> StoreResult<bool> {
        let username = username.clone();
        self.write(|reply| WriteOp::SetAdmin {
            username,
            admin,
            reply,
        })
        .await
    }

    async fn is_admin(&self, user: Id) -> StoreResult<bool> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT is_admin FROM users WHERE id = ?1")?
                    .query_row(params![user.to_string()], |r| r.get::<_, bool>(0))
                    .optional()?
                    .unwrap_or(false),
            )
        })
        .await
    }

    async fn is_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM members WHERE room_id = ?1 AND user_id = ?2")?
                    .query_row(params![room.to_string(), user.to_string()], |_| Ok(()))
                    .optional()?
                    .is_some(),
            )
        })
        .await
    }

    async fn members(&self, room: Id, limit: u32) -> StoreResult<Vec<User>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.username FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 ORDER BY u.username LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![room.to_string(), limit], read_user)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn list_rooms(&self, user: Id) -> StoreResult<Vec<RoomListing>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.id, r.name, r.kind, r.last_seq, m.user_id IS NOT NULL
                 FROM rooms r LEFT JOIN members m ON m.room_id = r.id AND m.user_id = ?1
                 WHERE m.user_id IS NOT NULL OR r.kind = 'public'
                 ORDER BY r.name",
            )?;
            let rows = stmt.query_map(params![user.to_string()], |r| {
                Ok(RoomListing {
                    room: read_room(r)?,
                    member: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn append(&self, message: NewMessage) -> StoreResult<Appended> {
        self.write(|reply| WriteOp::Append { message, reply }).await
    }

    async fn history(
        &self,
        room: &Room,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let (room, name) = (room.id, room.name.clone());
        self.read(move |c| {
            let before = before_seq.map(|s| s as i64).unwrap_or(i64::MAX);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let mut out = stmt
                .query_map(params![room.to_string(), before, limit], |r| {
                    read_message(r, &name)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn after(&self, room: &Room, after_seq: u64, limit: u32) -> StoreResult<Vec<Message>> {
        let (room, name) = (room.id, room.name.clone());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq > ?2
                 ORDER BY seq ASC LIMIT ?3"
            ))?;
            let out = stmt
                .query_map(params![room.to_string(), after_seq as i64, limit], |r| {
                    read_message(r, &name)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.write(|reply| WriteOp::Flush { reply }).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}
