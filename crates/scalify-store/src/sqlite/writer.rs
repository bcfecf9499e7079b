//! The writer thread that owns the only write connection (group commit: a batch of operations in
//! one transaction, each operation undone alone when it fails) and the checkpointer that keeps the
//! WAL short.

use super::*;
use scalify_core::MessageKind;

/// Copies the WAL into the database file in the background (PASSIVE checkpoints: they never
/// wait for, nor block, the writer or readers). It does the bulk of the copying off the writer
/// thread; the writer only finishes the job now and then so the WAL can be rewound (see
/// [`Writer::checkpoint_now_and_then`]).
pub(super) struct Checkpointer {
    /// Dropping it wakes the thread at once and stops it.
    pub(super) stop: std::sync::mpsc::Sender<()>,
    pub(super) thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(100);

    pub(super) fn start(config: &SqliteConfig) -> StoreResult<Checkpointer> {
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

    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

pub(super) type Reply<T> = oneshot::Sender<StoreResult<T>>;

pub(super) enum WriteOp {
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
    Account {
        op: AccountOp,
        reply: Reply<Vec<String>>,
    },
    /// One statement; answers whether it changed exactly one row.
    Exec {
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
        reply: Reply<bool>,
    },
    Flush {
        reply: Reply<()>,
    },
    /// Statements of their own, run in a savepoint of the batch; answered after the commit.
    Run(Job),
}

/// A [`WriteOp::Run`]: runs on the write connection (`None`: it cannot run, the batch
/// failed first) and returns whether it succeeded, and what answers its caller once the
/// batch's fate is known (`None`: committed).
pub(super) type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;
pub(super) type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// A write to an account's sessions or password. Each answers the ids of the sessions it
/// ended (`SetPassword`: the user's id if the account was found).
pub(super) enum AccountOp {
    CreateSession {
        user: Id,
        session: String,
        expires_at: i64,
    },
    EndSessions {
        user: Id,
        which: EndSessions,
    },
    SetPassword {
        user: Id,
        password_hash: String,
    },
    Delete {
        user: Id,
    },
}

/// An operation's result, held until the batch commits.
pub(super) enum Done {
    User(Reply<User>, StoreResult<User>),
    Room(Reply<Room>, StoreResult<Room>),
    Member(Reply<bool>, StoreResult<bool>),
    /// Boxed: a message is the largest result by far, and every other op would carry its size.
    Appended(Reply<Appended>, Box<StoreResult<Appended>>),
    Account(Reply<Vec<String>>, StoreResult<Vec<String>>),
    Flushed(Reply<()>),
    Ran(Finish),
}

impl Done {
    pub(super) fn answer(self) {
        // A caller that went away (timeout, disconnect) is not an error for the store.
        match self {
            Done::User(r, v) => drop(r.send(v)),
            Done::Room(r, v) => drop(r.send(v)),
            Done::Member(r, v) => drop(r.send(v)),
            Done::Appended(r, v) => drop(r.send(*v)),
            Done::Account(r, v) => drop(r.send(v)),
            Done::Flushed(r) => drop(r.send(Ok(()))),
            Done::Ran(f) => f(None),
        }
    }
    pub(super) fn fail(self, e: &str) {
        let msg = format!("commit failed: {e}");
        match self {
            Done::User(r, _) => drop(r.send(backend_err(&msg))),
            Done::Room(r, _) => drop(r.send(backend_err(&msg))),
            Done::Member(r, _) => drop(r.send(backend_err(&msg))),
            Done::Appended(r, _) => drop(r.send(backend_err(&msg))),
            Done::Account(r, _) => drop(r.send(backend_err(&msg))),
            Done::Flushed(r) => drop(r.send(backend_err(&msg))),
            Done::Ran(f) => f(Some(&msg)),
        }
    }
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    /// `rooms.last_seq` of rooms written recently. Valid because this thread is the only
    /// writer of the database; cleared whenever a commit fails.
    pub(super) seq_cache: HashMap<Id, u64>,
    /// The search index's next entry (`messages.search_doc`), read from the database on first
    /// use. Only ever grows: an entry of a rolled-back batch leaves a gap, never a reuse.
    pub(super) next_doc: Option<i64>,
    /// Rooms known to carry their notifier's mark (`notify_from`). Forgotten whenever the
    /// notifier may have cleared a mark (it runs as a [`WriteOp::Run`]) and when a batch fails.
    pub(super) marked: std::collections::HashSet<Id>,
    /// When the writer last checkpointed (see [`Writer::checkpoint_now_and_then`]).
    pub(super) last_checkpoint: std::time::Instant,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
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

    pub(super) fn commit_batch(&mut self, batch: &mut Vec<WriteOp>) {
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
        let mut ops = batch.drain(..);
        for op in ops.by_ref() {
            done.push(self.apply(op, &mut touched));
            // On some errors (disk full, I/O error, out of memory) SQLite rolls the whole
            // transaction back by itself; the next statements would then each commit on their
            // own, and the batch's earlier operations be lost while reported done.
            if self.conn.is_autocommit() {
                let msg = "the database rolled the transaction back (disk full or I/O error); nothing of it is stored";
                let not_run: Vec<WriteOp> = ops.by_ref().collect();
                drop(ops);
                metrics::counter!("scalify_store_batch_failures_total", "engine" => "sqlite")
                    .increment(1);
                tracing::error!(
                    ops = done.len() + not_run.len(),
                    "write batch rolled back by SQLite"
                );
                self.seq_cache.clear();
                self.marked.clear();
                done.into_iter().for_each(|d| d.fail(msg));
                not_run
                    .into_iter()
                    .for_each(|op| op.into_unfinished().fail(msg));
                return;
            }
        }
        drop(ops);
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
                self.marked.clear();
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
    pub(super) fn checkpoint_now_and_then(&mut self) {
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

    pub(super) fn store_seqs(&mut self, touched: &HashMap<Id, u64>) -> StoreResult<()> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE rooms SET last_seq = ?2 WHERE id = ?1")?;
        for (room, seq) in touched {
            stmt.execute(params![room.to_string(), *seq as i64])?;
        }
        // The notifier looks at a room once its first unseen message is old enough: the room
        // is marked with that time, once. A statement of its own, run only for rooms not known
        // to be marked: SQLite maintains the index of every column an UPDATE sets, changed
        // or not (a quarter more per room update, measured), so marking in the statement
        // above cost every batch.
        let now = scalify_core::now_ms();
        let mut mark = self.conn.prepare_cached(
            "UPDATE rooms SET notify_from = ?2 WHERE id = ?1 AND notify_from IS NULL",
        )?;
        for room in touched.keys() {
            if self.marked.insert(*room) {
                mark.execute(params![room.to_string(), now])?;
            }
        }
        Ok(())
    }

    /// Runs one operation. A failed operation must leave no trace, so its neighbours in the
    /// batch can still commit: single-statement operations get that from SQLite's statement
    /// atomicity, a plain message (its row, then its search entry) by taking its row back if
    /// the entry fails; creating a room (several statements) runs inside a savepoint. Savepoints are
    /// not used for every op because each page an op touches is then copied to a
    /// sub-journal, which costs more than the insert itself.
    pub(super) fn apply(&mut self, op: WriteOp, touched: &mut HashMap<Id, u64>) -> Done {
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
            // `append` updates the seq cache only after its INSERTs succeeded. One with
            // mentions, or a change (applied to its message), is two statements or more: a
            // savepoint keeps it whole.
            WriteOp::Append { message, reply } => {
                let result = if message.mention_room
                    || !message.mentions.is_empty()
                    || !message.kind.is_message()
                {
                    self.in_savepoint(|w| w.append(message, touched))
                } else {
                    self.append(message, touched)
                };
                Done::Appended(reply, Box::new(result))
            }
            WriteOp::Account { op, reply } => {
                Done::Account(reply, self.in_savepoint(|w| w.account(op)))
            }
            WriteOp::Exec { sql, params, reply } => {
                let result = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(params)))
                    .map(|n| n == 1)
                    .map_err(|e| match StoreError::from(e) {
                        // A foreign key violation: the room or the user does not exist.
                        StoreError::Conflict => StoreError::NotFound,
                        other => other,
                    });
                Done::Member(reply, result)
            }
            WriteOp::Run(job) => {
                self.marked.clear();
                let saved = self.conn.execute_batch("SAVEPOINT op").is_ok();
                let (ok, finish) = job(Some(&self.conn));
                if saved {
                    // A failed job leaves nothing behind; its own error answers its caller.
                    if !ok {
                        let _ = self.conn.execute_batch("ROLLBACK TO op");
                    }
                    let _ = self.conn.execute_batch("RELEASE op");
                }
                Done::Ran(finish)
            }
        }
    }

    pub(super) fn in_savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.conn.prepare_cached("SAVEPOINT op")?.execute([])?;
        let result = f(self);
        if result.is_err() {
            self.conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
        }
        self.conn.prepare_cached("RELEASE op")?.execute([])?;
        result
    }

    pub(super) fn create_user(&mut self, username: Username, hash: &str) -> StoreResult<User> {
        let id = Id::new();
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id.to_string(), username.as_str(), hash, now_ms()])?;
        Ok(User { id, username })
    }

    pub(super) fn create_room(
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
        // Membership by the rule of the room that exists, not of the one asked for.
        if room.kind == kind {
            for user in members {
                self.add_member(room.id, *user)?;
            }
        }
        Ok(room)
    }

    pub(super) fn set_admin(&mut self, username: &Username, admin: bool) -> StoreResult<bool> {
        let n = self
            .conn
            .prepare_cached("UPDATE users SET is_admin = ?2 WHERE username = ?1")?
            .execute(params![username.as_str(), admin])?;
        Ok(n == 1)
    }

    pub(super) fn account(&mut self, op: AccountOp) -> StoreResult<Vec<String>> {
        match op {
            AccountOp::CreateSession {
                user,
                session,
                expires_at,
            } => {
                let (user, now) = (user.to_string(), now_ms());
                self.conn
                    .prepare_cached(
                        "INSERT INTO sessions (id, user_id, created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![session, user, now, expires_at])?;
                self.conn
                    .prepare_cached(
                        "DELETE FROM sessions WHERE user_id = ?1 AND (expires_at <= ?2 OR id NOT IN
                         (SELECT id FROM sessions WHERE user_id = ?1
                          ORDER BY created_at DESC, id DESC LIMIT ?3))",
                    )?
                    .execute(params![user, now, crate::SESSIONS_PER_USER])?;
                Ok(Vec::new())
            }
            AccountOp::EndSessions { user, which } => self.end_sessions(user, which),
            AccountOp::SetPassword {
                user,
                password_hash,
            } => {
                let n = self
                    .conn
                    .prepare_cached(
                        "UPDATE users SET password_hash = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    )?
                    .execute(params![user.to_string(), password_hash])?;
                Ok(if n == 1 {
                    vec![user.to_string()]
                } else {
                    Vec::new()
                })
            }
            AccountOp::Delete { user } => {
                self.conn
                    .prepare_cached(
                        "UPDATE users SET password_hash = '', deleted_at = ?2
                         WHERE id = ?1 AND deleted_at IS NULL",
                    )?
                    .execute(params![user.to_string(), now_ms()])?;
                self.conn
                    .prepare_cached("DELETE FROM push_subscriptions WHERE user_id = ?1")?
                    .execute(params![user.to_string()])?;
                self.end_sessions(user, EndSessions::All)
            }
        }
    }

    fn end_sessions(&mut self, user: Id, which: EndSessions) -> StoreResult<Vec<String>> {
        let user = user.to_string();
        let (sql, session) = match &which {
            EndSessions::One(s) => (
                "DELETE FROM sessions WHERE user_id = ?1 AND id = ?2 RETURNING id",
                s.as_str(),
            ),
            EndSessions::All => (
                "DELETE FROM sessions WHERE user_id = ?1 AND ?2 = ?2 RETURNING id",
                "",
            ),
            EndSessions::AllBut(s) => (
                "DELETE FROM sessions WHERE user_id = ?1 AND id <> ?2 RETURNING id",
                s.as_str(),
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let ended = stmt
            .query_map(params![user, session], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ended)
    }

    pub(super) fn add_member(&mut self, room: Id, user: Id) -> StoreResult<bool> {
        let n = self
            .conn
            .prepare_cached(
                // A new member's read marker starts at the room's last message: its past
                // is history, not unread news. The seq cache is ahead of the table while the
                // batch that appended to the room is uncommitted.
                "INSERT INTO members (room_id, user_id, joined_at, last_read)
                 VALUES (?1, ?2, ?3, COALESCE(?4, (SELECT last_seq FROM rooms WHERE id = ?1), 0))
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                room.to_string(),
                user.to_string(),
                now_ms(),
                self.seq_cache.get(&room).map(|s| *s as i64)
            ])
            .map_err(|e| match StoreError::from(e) {
                // A foreign key violation: the room or the user does not exist.
                StoreError::Conflict => StoreError::NotFound,
                other => other,
            })?;
        Ok(n == 1)
    }

    pub(super) fn append(
        &mut self,
        m: NewMessage,
        touched: &mut HashMap<Id, u64>,
    ) -> StoreResult<Appended> {
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
        let message = Message::from_new(m, Id::new(), last + 1, now_ms());
        // Messages are searchable, changes are not (an edit's text goes into its message's
        // entry).
        let doc = if message.kind.is_message() {
            Some(self.next_doc()?)
        } else {
            None
        };
        // The common case is a new message: insert first, and look up the original only when
        // the idempotency key turns out to be taken (one index descent instead of two).
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts,
                                       mentions, kind, ref_seq, search_doc, attachment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
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
                message.ts,
                encode_mentions(&message.mentions, message.mention_room),
                message.kind.column(),
                message.ref_seq().map(|s| s as i64),
                doc,
                crate::encode_attachment(&message.attachment)
            ])?;
        if inserted == 0 {
            let original = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_FROM}
                     WHERE m.room_id = ?1 AND m.sender_id = ?2 AND m.client_id = ?3"
                ))?
                .query_row(
                    params![room_key, sender_key, message.client_id.as_str()],
                    |r| read_message(r, &message.room),
                )?;
            return Ok(Appended {
                message: original,
                duplicate: true,
            });
        }
        if let Some(doc) = doc {
            self.next_doc = Some(doc + 1);
            if let Err(e) = self.index(doc, message.text.as_str()) {
                // A plain message runs without a savepoint: take its row back, so the failed
                // append leaves no trace (a row the index lacks is never found, and the room's
                // next seq would collide with it).
                self.conn
                    .prepare_cached("DELETE FROM messages WHERE room_id = ?1 AND seq = ?2")?
                    .execute(params![room_key, message.seq as i64])?;
                return Err(e);
            }
        }
        if let Some(target) = message.relates_seq {
            self.apply_change(&room_key, &message, target)?;
        }
        if message.mention_room || !message.mentions.is_empty() {
            let mut stmt = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO mentions (user_id, room_id, seq, sender_id)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            // A room mention covers every member: one row, so no message counts twice.
            let rows: Vec<String> = if message.mention_room {
                vec![ROOM_MENTION.to_owned()]
            } else {
                message.mentions.iter().map(Id::to_string).collect()
            };
            for user in rows {
                stmt.execute(params![user, room_key, message.seq as i64, sender_key])?;
            }
        }
        self.seq_cache.insert(room_id, message.seq);
        touched.insert(room_id, message.seq);
        Ok(Appended {
            message,
            duplicate: false,
        })
    }
}

impl Writer {
    /// Applies a change entry just inserted (`message`, of room `room`) to the message it
    /// names (seq `target`, always stored already: this writer gives seqs in order), by the
    /// rules of `scalify_core::Timeline` — the same rules as PostgreSQL's `apply_change`.
    fn apply_change(&mut self, room: &str, message: &Message, target: u64) -> StoreResult<()> {
        let (seq, at, target) = (message.seq as i64, message.ts, target as i64);
        let sender = message.sender.id.to_string();
        let text = message.text.as_str();
        match message.kind {
            // The rules of who may change what are in `live`; the statements after it change
            // the row it found, and its search entry with it.
            MessageKind::Edit => match self.live(room, target, Some(&sender))? {
                Some((doc, old)) => {
                    self.conn
                        .prepare_cached(
                            "UPDATE messages SET text = ?3, edited_at = ?4
                             WHERE room_id = ?1 AND seq = ?2",
                        )?
                        .execute(params![room, target, text, at])?;
                    self.unindex(doc, &old)?;
                    self.index(doc, text)?;
                }
                // An edit of a message deleted before it keeps no text either.
                None => {
                    self.conn
                        .prepare_cached(
                            "UPDATE messages SET text = '' WHERE room_id = ?1 AND seq = ?2",
                        )?
                        .execute(params![room, seq])?;
                }
            },
            MessageKind::Delete => {
                if let Some((doc, old)) = self.live(room, target, None)? {
                    self.conn
                        .prepare_cached(
                            "UPDATE messages SET text = '', attachment = NULL, deleted_at = ?3
                             WHERE room_id = ?1 AND seq = ?2",
                        )?
                        .execute(params![room, target, at])?;
                    self.unindex(doc, &old)?;
                }
                self.conn
                    .prepare_cached(
                        "UPDATE messages SET text = ''
                         WHERE room_id = ?1 AND ref_seq = ?2 AND kind = 'edit' AND text <> ''",
                    )?
                    .execute(params![room, target])?;
                self.conn
                    .prepare_cached("DELETE FROM reactions WHERE room_id = ?1 AND seq = ?2")?
                    .execute(params![room, target])?;
            }
            MessageKind::Reaction => {
                self.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO reactions (room_id, seq, emoji, user_id)
                         SELECT ?1, ?2, ?3, ?4
                         WHERE EXISTS (SELECT 1 FROM messages WHERE room_id = ?1 AND seq = ?2
                                         AND kind IS NULL AND deleted_at IS NULL)",
                    )?
                    .execute(params![room, target, text, sender])?;
            }
            MessageKind::Unreaction => {
                self.conn
                    .prepare_cached(
                        "DELETE FROM reactions
                         WHERE room_id = ?1 AND seq = ?2 AND emoji = ?3 AND user_id = ?4",
                    )?
                    .execute(params![room, target, text, sender])?;
            }
            MessageKind::Message => {}
        }
        Ok(())
    }
}

impl Writer {
    /// The search index entry the next message gets.
    fn next_doc(&mut self) -> StoreResult<i64> {
        if let Some(doc) = self.next_doc {
            return Ok(doc);
        }
        let last: i64 = self
            .conn
            .prepare_cached("SELECT coalesce(max(search_doc), 0) FROM messages")?
            .query_row([], |r| r.get(0))?;
        self.next_doc = Some(last + 1);
        Ok(last + 1)
    }

    fn index(&mut self, doc: i64, text: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached("INSERT INTO messages_search (rowid, text) VALUES (?1, ?2)")?
            .execute(params![doc, text])?;
        Ok(())
    }

    /// The message at `seq` of `room`, if an edit (by `sender`) or a deletion (`None`) may
    /// still change it — a message, not deleted, and for an edit the sender's own: its search
    /// entry and the text that entry indexes. Every such message has an entry (the migration
    /// that made the index gave one to each); a missing one fails the change rather than
    /// leave the index behind the text.
    fn live(
        &mut self,
        room: &str,
        seq: i64,
        sender: Option<&str>,
    ) -> StoreResult<Option<(i64, String)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT search_doc, text FROM messages
                 WHERE room_id = ?1 AND seq = ?2 AND kind IS NULL AND deleted_at IS NULL
                   AND (?3 IS NULL OR sender_id = ?3)",
            )?
            .query_row(params![room, seq, sender], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Removes entry `doc`, which indexes `text`, from the search index: the index finds the
    /// words it holds for it from the text, and (`secure-delete`) removes them from its pages.
    fn unindex(&mut self, doc: i64, text: &str) -> StoreResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO messages_search (messages_search, rowid, text)
                 VALUES ('delete', ?1, ?2)",
            )?
            .execute(params![doc, text])?;
        Ok(())
    }
}

impl WriteOp {
    /// The pending answer of an op that never ran.
    pub(super) fn into_unfinished(self) -> Done {
        let msg = "not run: the transaction could not start";
        match self {
            WriteOp::CreateUser { reply, .. } => Done::User(reply, backend_err(msg)),
            WriteOp::CreateRoom { reply, .. } => Done::Room(reply, backend_err(msg)),
            WriteOp::AddMember { reply, .. } | WriteOp::SetAdmin { reply, .. } => {
                Done::Member(reply, backend_err(msg))
            }
            WriteOp::Append { reply, .. } => Done::Appended(reply, Box::new(backend_err(msg))),
            WriteOp::Account { reply, .. } => Done::Account(reply, backend_err(msg)),
            WriteOp::Exec { reply, .. } => Done::Member(reply, backend_err(msg)),
            WriteOp::Flush { reply } => Done::Flushed(reply),
            WriteOp::Run(job) => Done::Ran(job(None).1),
        }
    }
}

pub(super) fn backend_err<T>(msg: &str) -> StoreResult<T> {
    Err(StoreError::Backend(msg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalify_core::{ClientId, MessageText, UserRef};

    fn writer(path: &Path) -> Writer {
        let mut conn = open(path, Durability::Full, false).unwrap();
        migrate(&mut conn).unwrap();
        Writer {
            conn,
            seq_cache: HashMap::new(),
            next_doc: None,
            marked: Default::default(),
            last_checkpoint: std::time::Instant::now(),
        }
    }

    /// A writer on a fresh database holding user "alice" and her public room "r".
    fn writer_with_room(path: &Path) -> (Writer, User, Room) {
        let mut w = writer(path);
        let user = w
            .create_user(Username::parse("alice").unwrap(), "h")
            .unwrap();
        let room = w
            .create_room(
                RoomName::parse("r").unwrap(),
                RoomKind::Public,
                &[user.id],
                false,
            )
            .unwrap();
        (w, user, room)
    }

    /// The op appending `text` as alice's message `i` to `room`, and where its answer comes.
    fn append_op(
        room: &Room,
        user: &User,
        i: usize,
        text: &str,
    ) -> (WriteOp, oneshot::Receiver<StoreResult<Appended>>) {
        let (reply, answer) = oneshot::channel();
        let message = NewMessage::plain(
            room.id,
            room.name.clone(),
            UserRef {
                id: user.id,
                username: user.username.to_string(),
            },
            MessageText::parse(text, 1 << 20).unwrap(),
            ClientId::parse(&format!("c{i}")).unwrap(),
        );
        (WriteOp::Append { message, reply }, answer)
    }

    /// A batch in which SQLite rolls the transaction back by itself (here the file reaching
    /// `max_page_count`, as a full disk would) fails as a whole: no operation of it is stored
    /// or reported done, and the next append takes the next seq, with no hole.
    #[test]
    fn a_batch_sqlite_rolls_back_by_itself_fails_whole_with_no_seq_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, user, room) = writer_with_room(&dir.path().join("t.db"));
        let append = |i: usize, text: &str| append_op(&room, &user, i, text);
        let pages: i64 = w
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        w.conn
            .execute_batch(&format!("PRAGMA max_page_count = {}", pages + 8))
            .unwrap();
        let big = "x".repeat(3000);
        let (mut batch, mut answers) = (Vec::new(), Vec::new());
        for i in 0..40 {
            let (op, answer) = append(i, &big);
            batch.push(op);
            answers.push(answer);
        }
        w.commit_batch(&mut batch);
        let outcomes: Vec<bool> = answers
            .into_iter()
            .map(|mut a| matches!(a.try_recv(), Ok(Ok(_))))
            .collect();
        assert!(outcomes.iter().all(|ok| !ok), "reported done: {outcomes:?}");
        let stored: i64 = w
            .conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 0, "nothing of a failed batch is stored");

        w.conn
            .execute_batch("PRAGMA max_page_count = 1073741823")
            .unwrap();
        let (op, mut answer) = append(100, "small");
        w.commit_batch(&mut vec![op]);
        let appended = answer.try_recv().unwrap().unwrap();
        assert_eq!(appended.message.seq, 1);
    }

    /// A plain message whose search entry cannot be written fails alone and leaves no row: the
    /// messages around it in the batch commit, and the room's next message takes its seq.
    #[test]
    fn a_message_the_index_refuses_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, user, room) = writer_with_room(&dir.path().join("t.db"));
        // An index that refuses one text, as a full disk or a lack of memory would refuse a
        // write half-way through an append.
        w.conn
            .execute_batch(
                "DROP TABLE messages_search;
                 CREATE TABLE messages_search (text TEXT CHECK (text <> 'poison'));",
            )
            .unwrap();
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for (i, text) in ["first", "poison", "second"].into_iter().enumerate() {
            let (op, answer) = append_op(&room, &user, i, text);
            batch.push(op);
            answers.push(answer);
        }
        w.commit_batch(&mut batch);
        let outcomes: Vec<Option<u64>> = answers
            .into_iter()
            .map(|mut a| match a.try_recv() {
                Ok(Ok(appended)) => Some(appended.message.seq),
                _ => None,
            })
            .collect();
        assert_eq!(outcomes, [Some(1), None, Some(2)]);
        let texts: Vec<String> = w
            .conn
            .prepare("SELECT text FROM messages ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(texts, ["first", "second"]);
        let indexed: i64 = w
            .conn
            .query_row("SELECT count(*) FROM messages_search", [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexed, 2);
    }
}
