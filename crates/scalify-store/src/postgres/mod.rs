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
    now_ms, ClientId, Id, Message, MessageKind, MessageText, NewMessage, NotifyLevel, Room,
    RoomKind, RoomName, SearchPage, SearchQuery, Settings, UserRef, Username,
};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

use crate::{decode_mentions, encode_mentions, read_state_sql};
use crate::{
    Appended, Credentials, EndSessions, ReactionRow, ReadMark, ReadState, RoomListing, Store,
    StoreError, StoreResult, User, UNREAD_CAP, UNREAD_SCAN,
};

mod notify;
mod persisted;
mod rows;
mod search;
mod writer;

pub use persisted::Persisted;
use rows::*;
use writer::*;

/// Most appends committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Appends waiting for a writer; callers wait for room beyond this (back-pressure).
const QUEUE_DEPTH: usize = 16 * 1024;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "admins",
        include_str!("../../migrations/postgres/0002_admins.sql"),
    ),
    (
        3,
        "sessions",
        include_str!("../../migrations/postgres/0003_sessions.sql"),
    ),
    (
        4,
        "membership",
        include_str!("../../migrations/postgres/0004_membership.sql"),
    ),
    (
        5,
        "resends",
        include_str!("../../migrations/postgres/0005_resends.sql"),
    ),
    (
        6,
        "read markers",
        include_str!("../../migrations/postgres/0006_read_markers.sql"),
    ),
    (
        7,
        "mentions and notifications",
        include_str!("../../migrations/postgres/0007_mentions_and_notifications.sql"),
    ),
    (
        8,
        "seq epochs",
        include_str!("../../migrations/postgres/0008_seq_epochs.sql"),
    ),
    (
        9,
        "notifications",
        include_str!("../../migrations/postgres/0009_notifications.sql"),
    ),
    (
        10,
        "message changes",
        include_str!("../../migrations/postgres/0010_message_changes.sql"),
    ),
    (
        11,
        "search",
        include_str!("../../migrations/postgres/0011_search.sql"),
    ),
    (
        12,
        "attachments",
        include_str!("../../migrations/postgres/0012_attachments.sql"),
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
    /// How many matches in the whole log make a search query common (see `search.rs`).
    pub search_common: i64,
    /// How many of the newest messages a search for a common query looks through before it
    /// asks the full-text index.
    pub search_window: i64,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            max_connections: 16,
            writers: 2,
            search_common: 5_000,
            search_window: 20_000,
        }
    }
}

type Reply = oneshot::Sender<StoreResult<Appended>>;

pub struct PgStore {
    pool: PgPool,
    appends: mpsc::Sender<(NewMessage, Reply)>,
    /// Appends queued or being committed; `flush` waits for it to reach zero.
    outstanding: Arc<AtomicUsize>,
    search_common: i64,
    search_window: i64,
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
        // Every query here is a short indexed lookup, but the room list's correlated counts
        // are estimated costly enough for PostgreSQL to compile them (JIT) on every run:
        // measured at 30 ms of a 36 ms listing of 500 rooms. A `SET` once per connection
        // rather than a startup option, which connection poolers such as PgBouncer refuse.
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, "SET jit = off").await?;
                Ok(())
            })
        })
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

async fn end_sessions<'e>(
    db: impl sqlx::PgExecutor<'e>,
    user: Id,
    which: EndSessions,
) -> StoreResult<Vec<String>> {
    let (sql, session) = match which {
        EndSessions::One(s) => (
            "DELETE FROM sessions WHERE user_id = $1 AND id = $2 RETURNING id",
            s,
        ),
        EndSessions::All => (
            "DELETE FROM sessions WHERE user_id = $1 AND $2::text IS NOT NULL RETURNING id",
            String::new(),
        ),
        EndSessions::AllBut(s) => (
            "DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id",
            s,
        ),
    };
    Ok(sqlx::query_scalar(sql)
        .bind(user.to_string())
        .bind(session)
        .fetch_all(db)
        .await?)
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
            search_common: config.search_common.max(1),
            search_window: config.search_window.max(1),
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

async fn add_member_in<'c, E>(ex: E, room: Id, user: Id) -> StoreResult<bool>
where
    E: sqlx::PgExecutor<'c>,
{
    let done = sqlx::query(
        // A new member's read marker starts at the room's last message: its past is history,
        // not unread news.
        "INSERT INTO members (room_id, user_id, joined_at, last_read)
         VALUES ($1, $2, $3, COALESCE((SELECT last_seq FROM rooms WHERE id = $1), 0))
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
        let row = sqlx::query(
            "SELECT id, username, password_hash FROM users
             WHERE username = $1 AND deleted_at IS NULL",
        )
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
        // Membership by the rule of the room that exists, not of the one asked for.
        if room.kind == kind {
            for user in members {
                add_member_in(&mut *tx, room.id, *user).await?;
            }
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

    async fn remove_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM members WHERE room_id = $1 AND user_id = $2")
            .bind(room.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_owner(&self, room: Id, user: Id) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE rooms SET owner_id = $2 WHERE id = $1 AND owner_id IS NULL")
            .bind(room.to_string())
            .bind(user.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn room_owner(&self, room: Id) -> StoreResult<Option<Id>> {
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT owner_id FROM rooms WHERE id = $1")
                .bind(room.to_string())
                .fetch_optional(&self.pool)
                .await?;
        // '' marks a room older than owners.
        Ok(owner
            .flatten()
            .filter(|o| !o.is_empty())
            .as_deref()
            .map(parse_id)
            .transpose()?)
    }

    async fn set_block(&self, user: Id, other: Id, on: bool) -> StoreResult<bool> {
        let query = if on {
            sqlx::query(
                "INSERT INTO blocks (user_id, blocked_id, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(user.to_string())
            .bind(other.to_string())
            .bind(now_ms())
        } else {
            sqlx::query("DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2")
                .bind(user.to_string())
                .bind(other.to_string())
        };
        let done = query
            .execute(&self.pool)
            .await
            .map_err(|e| match StoreError::from(e) {
                // A foreign key violation: a user does not exist.
                StoreError::Conflict | StoreError::Rejected(_) => StoreError::NotFound,
                other => other,
            })?;
        Ok(done.rows_affected() == 1)
    }

    async fn blocks(&self, user: Id) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(
            "SELECT u.id, u.username FROM blocks b JOIN users u ON u.id = b.blocked_id
             WHERE b.user_id = $1 ORDER BY u.username LIMIT 1000",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(read_user).collect::<Result<Vec<_>, _>>()?)
    }

    async fn has_blocked(&self, user: Id, other: Id) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2")
            .bind(user.to_string())
            .bind(other.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn create_session(&self, user: Id, session: &str, expires_at: i64) -> StoreResult<()> {
        let (user, now) = (user.to_string(), now_ms());
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(session)
        .bind(&user)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND (expires_at <= $2 OR id NOT IN
             (SELECT id FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $3))",
        )
        .bind(&user)
        .bind(now)
        .bind(i64::from(crate::SESSIONS_PER_USER))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_user(&self, session: &str, now: i64) -> StoreResult<Option<Id>> {
        let user: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1 AND expires_at > $2")
                .bind(session)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
        Ok(user.as_deref().map(parse_id).transpose()?)
    }

    async fn end_sessions(&self, user: Id, which: EndSessions) -> StoreResult<Vec<String>> {
        end_sessions(&self.pool, user, which).await
    }

    async fn set_password(&self, user: Id, password_hash: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(user.to_string())
                .bind(password_hash)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user(&self, user: Id) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE users SET password_hash = '', deleted_at = $2
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(user.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM push_subscriptions WHERE user_id = $1")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        let ended = end_sessions(&mut *tx, user, EndSessions::All).await?;
        tx.commit().await?;
        Ok(ended)
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
        // The unread count is skipped where nothing follows the marker.
        let rows = sqlx::query(concat!(
            "SELECT r.id, r.name, r.kind, r.last_seq, m.user_id IS NOT NULL, u.id, u.username, ",
            read_state_sql!("$1", "$2", "$3"),
            "
             FROM rooms r LEFT JOIN members m ON m.room_id = r.id AND m.user_id = $1
             LEFT JOIN members p ON r.kind = 'dm' AND m.user_id IS NOT NULL
               AND p.room_id = r.id AND p.user_id <> $1
             LEFT JOIN users u ON u.id = p.user_id
             WHERE m.user_id IS NOT NULL OR r.kind = 'public'
             ORDER BY r.name"
        ))
        .bind(user.to_string())
        .bind(i64::from(UNREAD_CAP))
        .bind(i64::from(UNREAD_SCAN))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let member: bool = r.try_get(4)?;
                let peer = match (
                    r.try_get::<Option<&str>, _>(5)?,
                    r.try_get::<Option<String>, _>(6)?,
                ) {
                    (Some(id), Some(username)) => Some(UserRef {
                        id: parse_id(id)?,
                        username,
                    }),
                    _ => None,
                };
                let read = if member {
                    Some(read_state(r, 7)?)
                } else {
                    None
                };
                Ok(RoomListing {
                    room: read_room(r)?,
                    member,
                    peer,
                    read,
                })
            })
            .collect()
    }

    async fn set_read(&self, room: Id, user: Id, seq: u64) -> StoreResult<Option<ReadMark>> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let moved = sqlx::query(
            "UPDATE members SET last_read = $3
             WHERE room_id = $1 AND user_id = $2 AND last_read < $3 RETURNING last_read",
        )
        .bind(room.to_string())
        .bind(user.to_string())
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = moved {
            return Ok(Some(ReadMark {
                last_read: r.try_get::<i64, _>(0)?.max(0) as u64,
                moved: true,
            }));
        }
        // Not moved: the marker as it stands, or none for a non-member.
        let last_read = crate::notify::NotifyStore::last_read(self, room, user).await?;
        Ok(last_read.map(|last_read| ReadMark {
            last_read,
            moved: false,
        }))
    }

    async fn read_state(&self, room: &Room, user: Id) -> StoreResult<Option<(ReadState, u64)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            read_state_sql!("$1", "$2", "$3"),
            ", r.last_seq
             FROM members m JOIN rooms r ON r.id = m.room_id
             WHERE m.user_id = $1 AND m.room_id = $4"
        ))
        .bind(user.to_string())
        .bind(i64::from(UNREAD_CAP))
        .bind(i64::from(UNREAD_SCAN))
        .bind(room.id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((read_state(&r, 0)?, r.try_get::<i64, _>(5)?.max(0) as u64)),
            None => None,
        })
    }

    async fn set_notify_level(&self, room: Id, user: Id, level: NotifyLevel) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE members SET notify_level = $3 WHERE room_id = $1 AND user_id = $2")
                .bind(room.to_string())
                .bind(user.to_string())
                .bind(level.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn members_named(&self, room: Id, names: &[Username]) -> StoreResult<Vec<User>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let rows = sqlx::query(
            "SELECT u.id, u.username FROM users u
             JOIN members m ON m.user_id = u.id AND m.room_id = $1
             WHERE u.username = ANY($2)",
        )
        .bind(room.to_string())
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(read_user).collect::<Result<Vec<_>, _>>()?)
    }

    async fn receipts(&self, room: Id, reader: Id, limit: u32) -> StoreResult<Vec<(UserRef, u64)>> {
        let rows = sqlx::query(
            "SELECT u.id, u.username, m.last_read FROM members m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.user_id <> $2 AND m.last_read > 0 AND u.read_receipts
             ORDER BY m.last_read DESC, u.username LIMIT $3",
        )
        .bind(room.to_string())
        .bind(reader.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    UserRef {
                        id: parse_id(r.try_get::<&str, _>(0)?)?,
                        username: r.try_get(1)?,
                    },
                    r.try_get::<i64, _>(2)?.max(0) as u64,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn settings(&self, user: Id) -> StoreResult<Settings> {
        let row = sqlx::query("SELECT read_receipts, previews FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Settings {
                read_receipts: r.try_get(0)?,
                previews: r.try_get(1)?,
            },
            None => Settings::default(),
        })
    }

    async fn update_settings(
        &self,
        user: Id,
        read_receipts: Option<bool>,
        previews: Option<bool>,
    ) -> StoreResult<Option<Settings>> {
        let row = sqlx::query(
            "UPDATE users SET read_receipts = COALESCE($2, read_receipts),
               previews = COALESCE($3, previews) WHERE id = $1
             RETURNING read_receipts, previews",
        )
        .bind(user.to_string())
        .bind(read_receipts)
        .bind(previews)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(Settings {
                read_receipts: r.try_get(0)?,
                previews: r.try_get(1)?,
            }),
            None => None,
        })
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
            "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM} WHERE m.room_id = $1 AND m.seq < $2
             ORDER BY m.seq DESC LIMIT $3"
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
            "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM} WHERE m.room_id = $1 AND m.seq > $2
             ORDER BY m.seq ASC LIMIT $3"
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

    async fn message(&self, room: &Room, id: Id) -> StoreResult<Option<Message>> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM}
             WHERE m.id = $2 COLLATE \"C\" AND m.room_id = $1"
        ))
        .bind(room.id.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| read_message(&r, 0, &room.name)).transpose()?)
    }

    async fn reactions(
        &self,
        room: Id,
        seqs: std::ops::RangeInclusive<u64>,
        reader: Id,
    ) -> StoreResult<Vec<ReactionRow>> {
        let cap = |s: u64| s.min(i64::MAX as u64) as i64;
        let rows: Vec<(i64, String, i64, bool)> = sqlx::query_as(
            "SELECT seq, emoji, count(*), bool_or(user_id = $4) FROM reactions
             WHERE room_id = $1 AND seq BETWEEN $2 AND $3 GROUP BY seq, emoji",
        )
        .bind(room.to_string())
        .bind(cap(*seqs.start()))
        .bind(cap(*seqs.end()))
        .bind(reader.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, emoji, count, me)| ReactionRow {
                seq: seq as u64,
                emoji,
                count: count as u32,
                me,
            })
            .collect())
    }

    async fn search(
        &self,
        user: Id,
        query: &SearchQuery,
        room: Option<Id>,
        page: SearchPage,
    ) -> StoreResult<Vec<Message>> {
        self.search_messages(user, query, room, page).await
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
