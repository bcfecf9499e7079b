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
    now_ms, ClientId, Id, Message, MessageKind, MessageText, NewMessage, NotifyLevel, Room,
    RoomKind, RoomName, SearchPage, SearchQuery, Settings, UserRef, Username,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{decode_mentions, encode_mentions, read_state_sql, ROOM_MENTION};
use crate::{
    Appended, Credentials, EndSessions, ReactionRow, ReadMark, ReadState, RoomListing, Store,
    StoreError, StoreResult, User, UNREAD_CAP, UNREAD_SCAN,
};

mod notify;
mod rows;
mod writer;

use rows::*;
use writer::*;

/// Most operations committed in one transaction. Bounds the latency one commit adds.
pub const MAX_BATCH: usize = 1024;
/// Writes waiting for the writer; callers wait for room beyond this (back-pressure, not memory).
const QUEUE_DEPTH: usize = 16 * 1024;
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_admins.sql"),
    include_str!("../../migrations/sqlite/0003_sessions.sql"),
    include_str!("../../migrations/sqlite/0004_membership.sql"),
    include_str!("../../migrations/sqlite/0005_read_markers.sql"),
    include_str!("../../migrations/sqlite/0006_mentions_and_notifications.sql"),
    include_str!("../../migrations/sqlite/0007_notifications.sql"),
    include_str!("../../migrations/sqlite/0008_message_changes.sql"),
    include_str!("../../migrations/sqlite/0009_search.sql"),
    include_str!("../../migrations/sqlite/0010_attachments.sql"),
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
    // 64 MiB when it is next rewound. `secure_delete` zeroes what a write frees, so the text
    // of a deleted message does not linger in the file's free space.
    let cache_kib = if read_only { 16 * 1024 } else { 64 * 1024 };
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{cache_kib}; PRAGMA mmap_size = 1073741824; PRAGMA temp_store = MEMORY;"
    ))?;
    if !read_only {
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;
             PRAGMA secure_delete = ON;"
        ))?;
    }
    Ok(conn)
}

/// Makes the database file readable by its owner only (0600), creating it empty if absent
/// (SQLite takes an empty file for a new database). SQLite gives the `-wal` and `-shm` files
/// it creates beside it the same mode.
fn owner_only(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| {
            StoreError::Backend(format!("cannot secure {}: {e}", path.display()))
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
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
        owner_only(&config.path)?;
        let mut conn = open(&config.path, config.durability, false)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            conn,
            seq_cache: HashMap::new(),
            next_doc: None,
            marked: Default::default(),
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

    async fn exec(
        &self,
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
    ) -> StoreResult<bool> {
        self.write(|reply| WriteOp::Exec { sql, params, reply })
            .await
    }

    /// Runs `f` on the write connection, in a savepoint of the writer's next batch: what it
    /// wrote is undone if it fails, and its answer comes after the batch commits.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: writer::Job = Box::new(move |conn| {
            let result = match conn {
                Some(c) => f(c),
                None => Err(StoreError::Backend("not run: the batch failed".into())),
            };
            let ok = result.is_ok();
            let finish: writer::Finish = Box::new(move |failed| {
                let _ = reply.send(match failed {
                    None => result,
                    Some(e) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                });
            });
            (ok, finish)
        });
        self.writes
            .send(WriteOp::Run(job))
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
        // The read connections close first: the writer's last checkpoint truncates the WAL
        // only when no connection still reads from it.
        if let Ok(mut readers) = self.readers.conns.lock() {
            readers.clear();
        }
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
                "SELECT id, username, password_hash FROM users
                 WHERE username = ?1 AND deleted_at IS NULL",
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

    async fn remove_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.exec(
            "DELETE FROM members WHERE room_id = ?1 AND user_id = ?2",
            vec![room.to_string().into(), user.to_string().into()],
        )
        .await
    }

    async fn claim_owner(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.exec(
            "UPDATE rooms SET owner_id = ?2 WHERE id = ?1 AND owner_id IS NULL",
            vec![room.to_string().into(), user.to_string().into()],
        )
        .await
    }

    async fn room_owner(&self, room: Id) -> StoreResult<Option<Id>> {
        let owner: Option<Option<String>> = self
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT owner_id FROM rooms WHERE id = ?1")?
                        .query_row(params![room.to_string()], |r| r.get(0))
                        .optional()?,
                )
            })
            .await?;
        // '' marks a room older than owners.
        owner
            .flatten()
            .filter(|o| !o.is_empty())
            .map(|o| parse_id(o).map_err(StoreError::from))
            .transpose()
    }

    async fn set_block(&self, user: Id, other: Id, on: bool) -> StoreResult<bool> {
        let (user, other) = (user.to_string().into(), other.to_string().into());
        if on {
            self.exec(
                "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                vec![user, other, now_ms().into()],
            )
            .await
        } else {
            self.exec(
                "DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2",
                vec![user, other],
            )
            .await
        }
    }

    async fn blocks(&self, user: Id) -> StoreResult<Vec<User>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.username FROM blocks b JOIN users u ON u.id = b.blocked_id
                 WHERE b.user_id = ?1 ORDER BY u.username LIMIT 1000",
            )?;
            let users = stmt
                .query_map(params![user.to_string()], read_user)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(users)
        })
        .await
    }

    async fn has_blocked(&self, user: Id, other: Id) -> StoreResult<bool> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked_id = ?2")?
                    .query_row(params![user.to_string(), other.to_string()], |_| Ok(()))
                    .optional()?
                    .is_some(),
            )
        })
        .await
    }

    async fn create_session(&self, user: Id, session: &str, expires_at: i64) -> StoreResult<()> {
        let op = AccountOp::CreateSession {
            user,
            session: session.to_owned(),
            expires_at,
        };
        self.write(|reply| WriteOp::Account { op, reply })
            .await
            .map(drop)
    }

    async fn session_user(&self, session: &str, now: i64) -> StoreResult<Option<Id>> {
        let session = session.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT user_id FROM sessions WHERE id = ?1 AND expires_at > ?2")?
                    .query_row(params![session, now], |r| r.get(0).and_then(parse_id))
                    .optional()?,
            )
        })
        .await
    }

    async fn end_sessions(&self, user: Id, which: EndSessions) -> StoreResult<Vec<String>> {
        let op = AccountOp::EndSessions { user, which };
        self.write(|reply| WriteOp::Account { op, reply }).await
    }

    async fn set_password(&self, user: Id, password_hash: &str) -> StoreResult<bool> {
        let op = AccountOp::SetPassword {
            user,
            password_hash: password_hash.to_owned(),
        };
        Ok(!self
            .write(|reply| WriteOp::Account { op, reply })
            .await?
            .is_empty())
    }

    async fn delete_user(&self, user: Id) -> StoreResult<Vec<String>> {
        let op = AccountOp::Delete { user };
        self.write(|reply| WriteOp::Account { op, reply }).await
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
            // The unread count is skipped where nothing follows the marker.
            let mut stmt = c.prepare_cached(concat!(
                "SELECT r.id, r.name, r.kind, r.last_seq, m.user_id IS NOT NULL, u.id, u.username, ",
                read_state_sql!("?1", "?2", "?3"),
                "
                 FROM rooms r LEFT JOIN members m ON m.room_id = r.id AND m.user_id = ?1
                 LEFT JOIN members p ON r.kind = 'dm' AND m.user_id IS NOT NULL
                   AND p.room_id = r.id AND p.user_id <> ?1
                 LEFT JOIN users u ON u.id = p.user_id
                 WHERE m.user_id IS NOT NULL OR r.kind = 'public'
                 ORDER BY r.name"
            ))?;
            let rows = stmt.query_map(params![user.to_string(), UNREAD_CAP, UNREAD_SCAN], |r| {
                let member: bool = r.get(4)?;
                Ok(RoomListing {
                    room: read_room(r)?,
                    member,
                    peer: match (
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ) {
                        (Some(id), Some(username)) => Some(UserRef {
                            id: parse_id(id)?,
                            username,
                        }),
                        _ => None,
                    },
                    read: if member { Some(read_state(r, 7)?) } else { None },
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_read(&self, room: Id, user: Id, seq: u64) -> StoreResult<Option<ReadMark>> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let moved = self
            .exec(
                "UPDATE members SET last_read = ?3
                 WHERE room_id = ?1 AND user_id = ?2 AND last_read < ?3",
                vec![room.to_string().into(), user.to_string().into(), seq.into()],
            )
            .await?;
        // Read back: the marker as it stands (a concurrent mark may have moved it further),
        // or none for a non-member.
        let last_read = crate::notify::NotifyStore::last_read(self, room, user).await?;
        Ok(last_read.map(|last_read| ReadMark { last_read, moved }))
    }

    async fn read_state(&self, room: &Room, user: Id) -> StoreResult<Option<(ReadState, u64)>> {
        let room = room.id;
        self.read(move |c| {
            Ok(c.prepare_cached(concat!(
                "SELECT ",
                read_state_sql!("?1", "?2", "?3"),
                ", r.last_seq
                 FROM members m JOIN rooms r ON r.id = m.room_id
                 WHERE m.user_id = ?1 AND m.room_id = ?4"
            ))?
            .query_row(
                params![user.to_string(), UNREAD_CAP, UNREAD_SCAN, room.to_string()],
                |r| Ok((read_state(r, 0)?, r.get::<_, i64>(5)?.max(0) as u64)),
            )
            .optional()?)
        })
        .await
    }

    async fn set_notify_level(&self, room: Id, user: Id, level: NotifyLevel) -> StoreResult<bool> {
        let changed = self
            .exec(
                "UPDATE members SET notify_level = ?3 WHERE room_id = ?1 AND user_id = ?2",
                vec![
                    room.to_string().into(),
                    user.to_string().into(),
                    level.as_str().to_owned().into(),
                ],
            )
            .await?;
        Ok(changed)
    }

    async fn members_named(&self, room: Id, names: &[Username]) -> StoreResult<Vec<User>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.read(move |c| {
            // One statement per name count; at most MAX_MENTION_NAMES of them are cached.
            let marks = vec!["?"; names.len()].join(", ");
            let mut stmt = c.prepare_cached(&format!(
                "SELECT u.id, u.username FROM users u
                 JOIN members m ON m.user_id = u.id AND m.room_id = ?
                 WHERE u.username IN ({marks})"
            ))?;
            let args = std::iter::once(room.to_string()).chain(names);
            let rows = stmt.query_map(rusqlite::params_from_iter(args), read_user)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn receipts(&self, room: Id, reader: Id, limit: u32) -> StoreResult<Vec<(UserRef, u64)>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.username, m.last_read FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 AND m.user_id <> ?2 AND m.last_read > 0
                   AND u.read_receipts <> 0
                 ORDER BY m.last_read DESC, u.username LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![room.to_string(), reader.to_string(), limit], |r| {
                Ok((
                    UserRef {
                        id: parse_id(r.get(0)?)?,
                        username: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn settings(&self, user: Id) -> StoreResult<Settings> {
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT read_receipts, previews FROM users WHERE id = ?1")?
                    .query_row(params![user.to_string()], |r| {
                        Ok(Settings {
                            read_receipts: r.get(0)?,
                            previews: r.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default(),
            )
        })
        .await
    }

    async fn update_settings(
        &self,
        user: Id,
        read_receipts: Option<bool>,
        previews: Option<bool>,
    ) -> StoreResult<Option<Settings>> {
        let flag =
            |b: Option<bool>| b.map_or(rusqlite::types::Value::Null, |b| i64::from(b).into());
        let found = self
            .exec(
                "UPDATE users SET read_receipts = COALESCE(?2, read_receipts),
                   previews = COALESCE(?3, previews) WHERE id = ?1",
                vec![user.to_string().into(), flag(read_receipts), flag(previews)],
            )
            .await?;
        if !found {
            return Ok(None);
        }
        self.settings(user).await.map(Some)
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
                "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM} WHERE m.room_id = ?1 AND m.seq < ?2
                 ORDER BY m.seq DESC LIMIT ?3"
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

    async fn search(
        &self,
        user: Id,
        query: &SearchQuery,
        room: Option<Id>,
        page: SearchPage,
    ) -> StoreResult<Vec<Message>> {
        let expr = query.fts5();
        self.read(move |c| {
            let before = match page.before {
                None => Some(i64::MAX),
                Some(id) => c
                    .prepare_cached("SELECT search_doc FROM messages WHERE id = ?1")?
                    .query_row(params![id.to_string()], |r| r.get::<_, Option<i64>>(0))
                    .optional()?
                    .flatten(),
            };
            let Some(before) = before else {
                return Ok(Vec::new());
            };
            // The index drives (CROSS JOIN keeps it outermost), read backwards from `before`:
            // newest first, stopping after a page of hits in the reader's rooms.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS}, r.name FROM messages_search f
                 CROSS JOIN messages m ON m.search_doc = f.rowid
                 LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq
                 JOIN rooms r ON r.id = m.room_id
                 WHERE messages_search MATCH ?1 AND f.rowid < ?2
                   AND m.room_id IN (SELECT room_id FROM members WHERE user_id = ?3)
                   AND (?4 IS NULL OR m.room_id = ?4)
                 ORDER BY f.rowid DESC LIMIT ?5"
            ))?;
            let out = stmt
                .query_map(
                    params![
                        expr,
                        before,
                        user.to_string(),
                        room.map(|r| r.to_string()),
                        page.limit
                    ],
                    |r| read_message(r, &RoomName::from_trusted(r.get(18)?)),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
        .await
    }

    async fn after(&self, room: &Room, after_seq: u64, limit: u32) -> StoreResult<Vec<Message>> {
        let (room, name) = (room.id, room.name.clone());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM} WHERE m.room_id = ?1 AND m.seq > ?2
                 ORDER BY m.seq ASC LIMIT ?3"
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

    async fn message(&self, room: &Room, id: Id) -> StoreResult<Option<Message>> {
        let (room, name) = (room.id, room.name.clone());
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM} WHERE m.room_id = ?1 AND m.id = ?2"
            ))?
            .query_row(params![room.to_string(), id.to_string()], |r| {
                read_message(r, &name)
            })
            .optional()?)
        })
        .await
    }

    async fn reactions(
        &self,
        room: Id,
        seqs: std::ops::RangeInclusive<u64>,
        reader: Id,
    ) -> StoreResult<Vec<ReactionRow>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, emoji, count(*), max(user_id = ?4) FROM reactions
                 WHERE room_id = ?1 AND seq BETWEEN ?2 AND ?3 GROUP BY seq, emoji",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        room.to_string(),
                        *seqs.start() as i64,
                        (*seqs.end()).min(i64::MAX as u64) as i64,
                        reader.to_string()
                    ],
                    |r| {
                        Ok(ReactionRow {
                            seq: r.get::<_, i64>(0)? as u64,
                            emoji: r.get(1)?,
                            count: r.get::<_, i64>(2)? as u32,
                            me: r.get::<_, i64>(3)? != 0,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
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
