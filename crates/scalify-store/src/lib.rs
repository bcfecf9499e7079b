//! # scalify-store — durable state behind one narrow trait
//!
//! [`Store`] is everything the service needs from a database: accounts, rooms, memberships and
//! the append-only, per-room sequenced message log. Engines implement it:
//!
//! - [`sqlite::SqliteStore`] — the embedded default. One writer thread owns the write
//!   connection and commits whatever sends are waiting as one transaction (group commit), so
//!   many concurrent senders share one fsync; readers use a small pool of their own connections.
//! - [`postgres::PgStore`] — for clusters: every node writes to the same database. Appends are
//!   batched too, and each batch locks its rooms' rows, which keeps `seq` gap-free and the
//!   idempotency rule exact when several nodes write to one room.
//!
//! The contract every engine keeps, checked by the shared tests in `tests/`:
//! - `append` returns only after the message is committed (durable);
//! - `seq` is per room, starts at 1, strictly increasing, gap-free;
//! - a second `append` with the same (room, sender, client_id) returns the first message with
//!   `duplicate: true` and stores nothing.

pub mod notify;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use scalify_core::{
    Id, Message, NewMessage, NotifyLevel, Room, RoomKind, RoomName, SearchPage, SearchQuery,
    Settings, UserRef, Username,
};

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Id,
    pub username: Username,
}

/// An account as the wire shows it.
impl From<User> for UserRef {
    fn from(u: User) -> Self {
        UserRef {
            id: u.id,
            username: u.username.to_string(),
        }
    }
}

/// What login needs: the account and its password hash.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Which of a user's sessions [`Store::end_sessions`] ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndSessions {
    /// This one (sign-out).
    One(String),
    /// Every one (sign out everywhere, account deletion).
    All,
    /// Every one but this (a password change keeps the session that made it).
    AllBut(String),
}

/// Most sessions an account keeps: signing in beyond this ends the oldest, so a client that
/// signs in in a loop cannot grow the table.
pub const SESSIONS_PER_USER: u32 = 100;

/// The outcome of an append: the stored message, and whether it was already there.
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    /// True when (room, sender, client_id) was seen before: nothing was stored, and the
    /// caller must not broadcast again.
    pub duplicate: bool,
}

/// One emoji's reactions to one message, counted for a reader ([`Store::reactions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionRow {
    pub seq: u64,
    pub emoji: String,
    pub count: u32,
    /// The reader is among them.
    pub me: bool,
}

/// Puts `rows` on the messages of `messages` they belong to (by seq).
pub fn bundle_reactions(messages: &mut [Message], rows: Vec<ReactionRow>) {
    for row in rows {
        if let Ok(i) = messages.binary_search_by_key(&row.seq, |m| m.seq) {
            messages[i].reactions.insert(
                row.emoji,
                scalify_core::ReactionCount {
                    count: row.count,
                    me: row.me,
                },
            );
        }
    }
}

/// Puts what a row refers to (`ref_seq` `seq`, and the id `id` of the message stored there) on
/// `m`: for a change, the message it changes; for a message, the reply preview of the one it
/// answers, whose sender, text and deletion `answered` reads from the row.
pub(crate) fn attach_reference<E>(
    m: &mut Message,
    seq: u64,
    id: Id,
    answered: impl FnOnce() -> Result<(UserRef, String, bool), E>,
) -> Result<(), E> {
    if m.kind.is_message() {
        let (sender, text, deleted) = answered()?;
        m.reply_to = Some(Box::new(scalify_core::ReplyPreview::of(
            id, seq, sender, &text, deleted,
        )));
    } else {
        m.relates_to = Some(id);
        m.relates_seq = Some(seq);
    }
    Ok(())
}

/// A room as listed for a user: whether they are a member of it.
#[derive(Debug, Clone)]
pub struct RoomListing {
    pub room: Room,
    pub member: bool,
    /// For a DM: the other user (a client names the DM after them even when it has never
    /// seen them otherwise).
    pub peer: Option<UserRef>,
    /// The member's read state (`None` for a public room they are not in).
    pub read: Option<ReadState>,
}

/// Most unread messages a room's count goes up to: counting stops there. A client shows the
/// cap as "99+".
pub const UNREAD_CAP: u32 = 100;

/// Most log entries after a marker an unread count looks at (the reader's own and changes
/// included): a count reads at most this many index entries per room, however long the
/// history and however much the reader wrote since the marker. Others' messages beyond them
/// are not counted.
pub const UNREAD_SCAN: u32 = 1000;

/// The outcome of a read mark: the marker as it now stands, and whether this mark moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    pub last_read: u64,
    pub moved: bool,
}

/// Where a member has read up to in a room, how many messages of others follow, and what of
/// the room notifies them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The highest seq the member marked read (0: nothing yet). Only ever moves forward.
    pub last_read: u64,
    /// Messages after `last_read` sent by others, counted up to [`UNREAD_CAP`].
    pub unread: u32,
    /// Of those, the ones that mention the member or the room (in a DM: all of them).
    pub mentions: u32,
    pub level: NotifyLevel,
}

impl ReadState {
    /// From a database row's marker, counts and level (SQL integers and text); `dm` makes
    /// every unread message count as a mention.
    pub(crate) fn from_sql(
        last_read: i64,
        unread: i64,
        mentions: i64,
        level: &str,
        dm: bool,
    ) -> Self {
        let cap = |n: i64| n.clamp(0, i64::from(UNREAD_CAP)) as u32;
        let unread = cap(unread);
        ReadState {
            last_read: last_read.max(0) as u64,
            unread,
            // A mention is an unread message: never more of them than unread ones.
            mentions: if dm {
                unread
            } else {
                cap(mentions).min(unread)
            },
            level: NotifyLevel::parse(level).unwrap_or_default(),
        }
    }

    /// Counts `messages` (all after the marker and after what was counted so far) as `user`
    /// would: others' messages are unread, and mentions those that name `user` or the room.
    pub fn count_more<'a>(
        &mut self,
        messages: impl IntoIterator<Item = &'a Message>,
        user: Id,
        dm: bool,
    ) {
        for m in messages {
            if m.sender.id == user || !m.is_counted() {
                continue;
            }
            self.unread = (self.unread + 1).min(UNREAD_CAP);
            if m.mentions_user(user, dm) {
                self.mentions = (self.mentions + 1).min(UNREAD_CAP);
            }
        }
    }
}

/// How a message's mentions are kept with it in the database: one text column, `NULL` when
/// there are none, else the mentioned ids separated by spaces, after `@room ` when the room
/// is mentioned. Each token is also a row of the `mentions` table (PostgreSQL splits the
/// column in a trigger; SQLite's writer writes the rows).
/// A message's attachment as its column holds it (JSON).
pub(crate) fn encode_attachment(a: &Option<Box<scalify_core::Attachment>>) -> Option<String> {
    a.as_ref().and_then(|a| serde_json::to_string(a).ok())
}

/// [`encode_attachment`]'s column back; `Err` names what is wrong with it.
pub(crate) fn decode_attachment(
    column: Option<&str>,
) -> Result<Option<Box<scalify_core::Attachment>>, String> {
    column
        .map(|json| {
            serde_json::from_str(json)
                .map(Box::new)
                .map_err(|e| format!("bad attachment column: {e}"))
        })
        .transpose()
}

pub(crate) fn encode_mentions(ids: &[Id], room: bool) -> Option<String> {
    if ids.is_empty() && !room {
        return None;
    }
    let mut out = String::with_capacity(ids.len() * 27 + 6);
    if room {
        out.push_str(ROOM_MENTION);
    }
    for id in ids {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&id.to_string());
    }
    Some(out)
}

/// The marker of a room mention in the mentions column, and its `user_id` in the `mentions`
/// table.
pub(crate) const ROOM_MENTION: &str = "@room";

/// The ids and the room flag of a mentions column (see [`encode_mentions`]); what does not
/// parse is skipped.
pub(crate) fn decode_mentions(text: Option<&str>) -> (Vec<Id>, bool) {
    let Some(text) = text else {
        return (Vec::new(), false);
    };
    let mut room = false;
    let ids = text
        .split(' ')
        .filter(|t| {
            let marker = *t == ROOM_MENTION;
            room |= marker;
            !marker && !t.is_empty()
        })
        .filter_map(|t| t.parse().ok())
        .collect();
    (ids, room)
}

/// The unread count of member row `m` of `user` (SQL, the engines' own placeholders for
/// `user`, [`UNREAD_CAP`] and [`UNREAD_SCAN`]): others' messages (not changes) among the first
/// `UNREAD_SCAN` after the marker, up to `UNREAD_CAP` — a bounded scan of the room's
/// (room, seq) key.
macro_rules! unread_count_sql {
    ($user:literal, $cap:literal, $scan:literal) => {
        concat!(
            "(SELECT count(*) FROM (SELECT 1 FROM (SELECT sender_id, kind FROM messages x
               WHERE x.room_id = m.room_id AND x.seq > m.last_read ORDER BY x.seq LIMIT ",
            $scan,
            ") s WHERE kind IS NULL AND sender_id <> ",
            $user,
            " LIMIT ",
            $cap,
            ") c)"
        )
    };
}
pub(crate) use unread_count_sql;

/// The mention count of member row `m` of `user` (SQL, placeholders as in
/// [`unread_count_sql`]): the rows of the `mentions` table naming `user` or the whole room in
/// that room after the marker, others' only — two ranges of its key, read up to
/// [`UNREAD_SCAN`] entries and counted up to [`UNREAD_CAP`]. A room where nobody mentions the
/// member costs two index probes, however much it talks.
macro_rules! mention_count_sql {
    ($user:literal, $cap:literal, $scan:literal) => {
        concat!(
            "(SELECT count(*) FROM (SELECT 1 FROM (SELECT sender_id FROM mentions n
               WHERE n.user_id IN (",
            $user,
            ", '@room') AND n.room_id = m.room_id AND n.seq > m.last_read LIMIT ",
            $scan,
            ") s WHERE sender_id <> ",
            $user,
            " LIMIT ",
            $cap,
            ") c)"
        )
    };
}
pub(crate) use mention_count_sql;

/// The five columns [`ReadState::from_sql`] takes, for member row `m` of `user` in room row
/// `r` (placeholders as in [`unread_count_sql`]): marker, unread count, mention count, level,
/// and whether the room is a DM. The counts are skipped where nothing follows the marker (and
/// the mention count in a DM, where it is the unread count); a row with no member (`m` of a
/// public room the user is not in) counts nothing.
macro_rules! read_state_sql {
    ($user:literal, $cap:literal, $scan:literal) => {
        concat!(
            "m.last_read,
             CASE WHEN m.user_id IS NULL OR r.last_seq <= m.last_read THEN 0 ELSE ",
            $crate::unread_count_sql!($user, $cap, $scan),
            " END,
             CASE WHEN m.user_id IS NULL OR r.last_seq <= m.last_read OR r.kind = 'dm'
               THEN 0 ELSE ",
            $crate::mention_count_sql!($user, $cap, $scan),
            " END, m.notify_level, r.kind = 'dm'"
        )
    };
}
pub(crate) use read_state_sql;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name (username, room name) is taken.
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    /// The engine cannot serve requests (shut down, connection lost).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Backend(String),
    /// The database refused this data itself (a data exception or a constraint, SQLSTATE
    /// classes 22 and 23): retrying the same rows cannot succeed, unlike a lost connection.
    #[error("rejected by the database: {0}")]
    Rejected(String),
    /// Not done yet, and safe to retry with the same client_id (the message says why: a
    /// broker that has not confirmed, a persister that is behind). Shown to the client.
    #[error("{0}")]
    Retry(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account; [`StoreError::Conflict`] if the username is taken.
    async fn create_user(&self, username: &Username, password_hash: &str) -> StoreResult<User>;
    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>>;
    async fn user(&self, id: Id) -> StoreResult<Option<User>>;
    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<User>>;
    /// Grants or revokes the admin role; false if no such user.
    async fn set_admin(&self, username: &Username, admin: bool) -> StoreResult<bool>;
    async fn is_admin(&self, user: Id) -> StoreResult<bool>;

    /// Opens session `session` of `user` until `expires_at` (ms since the epoch). The user's
    /// expired sessions end, and the oldest beyond [`SESSIONS_PER_USER`].
    async fn create_session(&self, user: Id, session: &str, expires_at: i64) -> StoreResult<()>;
    /// The user of session `session`, if it exists and has not expired at `now` (ms).
    async fn session_user(&self, session: &str, now: i64) -> StoreResult<Option<Id>>;
    /// Ends sessions of `user`; the ids of those that ended.
    async fn end_sessions(&self, user: Id, which: EndSessions) -> StoreResult<Vec<String>>;
    /// Replaces a live account's password hash; false if there is no such account.
    async fn set_password(&self, user: Id, password_hash: &str) -> StoreResult<bool>;
    /// Deletes an account: no password matches it any more ([`Store::credentials`] no longer
    /// finds it), every session ends (their ids are returned), and its name stays taken, so
    /// nobody can pose as it. Its messages stay, under the name they were sent with.
    async fn delete_user(&self, user: Id) -> StoreResult<Vec<String>>;

    async fn room(&self, name: &RoomName) -> StoreResult<Option<Room>>;
    /// Creates a room whose members are `members`; [`StoreError::Conflict`] if the name exists.
    async fn create_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room>;
    /// Returns the room named `name`, creating it with `kind` and `members` if absent. Safe
    /// under concurrent callers: exactly one room results. The members are added only to a
    /// room of `kind`: a caller asking for a public room never becomes a member of a private
    /// room of that name created meanwhile (the caller checks the returned room's kind).
    async fn ensure_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room>;
    /// Adds a member; returns false if they already were one.
    async fn add_member(&self, room: Id, user: Id) -> StoreResult<bool>;
    /// Removes a member; false if they were not one.
    async fn remove_member(&self, room: Id, user: Id) -> StoreResult<bool>;
    /// Makes `user` the owner of a room that has none yet — its creator, right after creating
    /// it; false if the room has an owner (or is older than owners).
    async fn claim_owner(&self, room: Id, user: Id) -> StoreResult<bool>;
    /// The room's owner, if it has one.
    async fn room_owner(&self, room: Id) -> StoreResult<Option<Id>>;
    /// `user` blocks (`on`) or unblocks `other`; false if nothing changed.
    async fn set_block(&self, user: Id, other: Id, on: bool) -> StoreResult<bool>;
    /// The users `user` has blocked, by username.
    async fn blocks(&self, user: Id) -> StoreResult<Vec<User>>;
    /// Whether `user` has blocked `other`.
    async fn has_blocked(&self, user: Id, other: Id) -> StoreResult<bool>;
    async fn is_member(&self, room: Id, user: Id) -> StoreResult<bool>;
    /// The room's members by username, at most `limit`.
    async fn members(&self, room: Id, limit: u32) -> StoreResult<Vec<User>>;
    /// The user's rooms (with their read state) and every public room.
    async fn list_rooms(&self, user: Id) -> StoreResult<Vec<RoomListing>>;
    /// Moves `user`'s read marker in `room` up to `seq` (never back); the marker after the
    /// call, or `None` if they are not a member. The caller bounds `seq` by the room's last.
    async fn set_read(&self, room: Id, user: Id, seq: u64) -> StoreResult<Option<ReadMark>>;
    /// `user`'s read state in `room`, or `None` if they are not a member, with the room's
    /// last seq as this store has it, read together with the count.
    async fn read_state(&self, room: &Room, user: Id) -> StoreResult<Option<(ReadState, u64)>>;
    /// Sets what of `room` notifies `user`; false if they are not a member.
    async fn set_notify_level(&self, room: Id, user: Id, level: NotifyLevel) -> StoreResult<bool>;
    /// The members of `room` among `names`.
    async fn members_named(&self, room: Id, names: &[Username]) -> StoreResult<Vec<User>>;
    /// How far the other members of `room` read, for `reader`: the `limit` members with the
    /// highest markers, leaving out `reader`, members who read nothing and those who turned
    /// receipts off.
    async fn receipts(&self, room: Id, reader: Id, limit: u32) -> StoreResult<Vec<(UserRef, u64)>>;
    /// A user's settings (the defaults for an unknown user).
    async fn settings(&self, user: Id) -> StoreResult<Settings>;
    /// Changes the settings given (`None`: left as they are) in one statement, so two changes
    /// of different settings made at once both hold; the settings after it, or `None` if there
    /// is no such user.
    async fn update_settings(
        &self,
        user: Id,
        read_receipts: Option<bool>,
        previews: Option<bool>,
    ) -> StoreResult<Option<Settings>>;

    /// Appends a message, allocating the room's next `seq`; returns once committed.
    async fn append(&self, message: NewMessage) -> StoreResult<Appended>;
    /// Up to `limit` messages with `seq < before_seq` (all if `None`), the newest ones,
    /// returned in ascending `seq` order. Takes the whole room (the caller has resolved it)
    /// so an engine need not look its name up again.
    async fn history(
        &self,
        room: &Room,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    /// Up to `limit` messages with `seq > after_seq`, ascending.
    async fn after(&self, room: &Room, after_seq: u64, limit: u32) -> StoreResult<Vec<Message>>;
    /// The entry of `room` with id `id`, as it stands now (current text, edited, deleted; no
    /// reactions).
    async fn message(&self, room: &Room, id: Id) -> StoreResult<Option<Message>>;
    /// The reactions to the messages of `room` with a seq in `seqs`, counted per message and
    /// emoji for `reader`.
    async fn reactions(
        &self,
        room: Id,
        seqs: std::ops::RangeInclusive<u64>,
        reader: Id,
    ) -> StoreResult<Vec<ReactionRow>>;

    /// The messages of the rooms `user` is a member of (of room `room` only, if given) whose
    /// current text matches `query`, newest first: at most `page.limit`, older than message
    /// `page.before` (none when no search hit has that id). Current state as `history` has it,
    /// no reactions.
    async fn search(
        &self,
        user: Id,
        query: &SearchQuery,
        room: Option<Id>,
        page: SearchPage,
    ) -> StoreResult<Vec<Message>>;

    /// Waits until every write accepted so far is committed (used by graceful shutdown).
    async fn flush(&self) -> StoreResult<()>;
    /// Cheap readiness check.
    async fn ping(&self) -> StoreResult<()>;
}
