//! [`DurableStore`]: the [`Store`] a node uses in durable mode.
//!
//! Accounts, rooms and memberships go straight to the database (`inner`). Messages take the
//! pipeline: seq from the [`Ledger`], produced by [`Ingest`], deposited in the recent window,
//! and only then returned (acked). Reads merge the window with the database, window first:
//! the persister writes the database *before* trimming the window, so reading the window
//! first and the database second sees every message in at least one of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use scalify_core::{
    Id, Message, NewMessage, NotifyLevel, Room, RoomKind, RoomName, Settings, UserRef, Username,
};
use scalify_store::{
    Appended, Credentials, EndSessions, ReadMark, ReadState, RoomListing, Store, StoreResult, User,
    UNREAD_CAP, UNREAD_SCAN,
};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::fence::Fence;
use crate::ingest::Ingest;
use crate::ledger::{merge, Allocation, Ledger};
use crate::{backoff, record, DurableError};

/// Late-confirmed messages waiting for their broadcaster: enough for a burst after a broker
/// stall; beyond it the producing tasks wait for the broadcaster (bounded memory).
const LATE_QUEUE: usize = 1024;

/// How many of a room's newest window entries a lookup by id reads (a message not persisted
/// yet that many entries later is not found until it is).
const WINDOW_LOOKUP: u32 = 1000;

/// A message of this node between allocation and deposit: a retry of it waits on `done`.
struct Pending {
    /// Which message: after Redis lost its data one (room, seq) can be in flight twice here,
    /// a message of the old epoch and one of the new.
    id: Id,
    done: watch::Receiver<Option<Message>>,
}

/// The sender is still waiting: it gets the ack and the service broadcasts.
const WAITING: u8 = 0;
/// The sender gave up: the producing task broadcasts through the late hook.
const ABANDONED: u8 = 1;
const CONFIRMED: u8 = 2;

pub struct DurableStore {
    inner: Arc<dyn Store>,
    ledger: Ledger,
    ingest: Arc<Ingest>,
    /// When a room's counter may be seeded, and reads answered, after Redis lost its data.
    fence: Arc<Fence>,
    /// Messages of this node between allocation and deposit, by (room, seq).
    pending: Arc<Mutex<HashMap<(Id, u64), Pending>>>,
    producing: TaskTracker,
    /// Where messages the broker confirmed after their sender stopped waiting go, once
    /// someone broadcasts them ([`DurableStore::late_confirms`]).
    late: Arc<OnceLock<tokio::sync::mpsc::Sender<Message>>>,
    /// How long graceful shutdown waits for unconfirmed messages.
    drain_for: Duration,
}

impl DurableStore {
    pub fn new(
        inner: Arc<dyn Store>,
        ledger: Ledger,
        ingest: Arc<Ingest>,
        fence: Arc<Fence>,
    ) -> Self {
        DurableStore {
            inner,
            ledger,
            ingest,
            fence,
            pending: Arc::new(Mutex::new(HashMap::new())),
            producing: TaskTracker::new(),
            late: Arc::new(OnceLock::new()),
            drain_for: Duration::from_secs(20),
        }
    }

    /// The messages the broker confirmed after their sender stopped waiting, for the node to
    /// broadcast (the sender's retry is answered as a duplicate, which is not broadcast).
    /// `None` after the first call: there is one broadcaster. Without one they are not
    /// broadcast (clients still get them with `sync` and `history`).
    pub fn late_confirms(&self) -> Option<tokio::sync::mpsc::Receiver<Message>> {
        let (tx, rx) = tokio::sync::mpsc::channel(LATE_QUEUE);
        self.late.set(tx).ok().map(|()| rx)
    }

    /// The confirmation of a message this node is still producing, if it is.
    fn pending_confirmation(&self, room: Id, seq: u64) -> Option<watch::Receiver<Option<Message>>> {
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(&(room, seq)).map(|e| e.done.clone()))
    }

    async fn wait_confirmed(&self, mut done: watch::Receiver<Option<Message>>) -> Option<Message> {
        let waited =
            tokio::time::timeout(self.ingest.ack_timeout(), done.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(m)) => m.clone(),
            _ => None,
        }
    }

    /// Produces, deposits and publishes `message` (whose record is `payload`, its seq given
    /// in seq epoch `epoch`) in the background of the caller (which may stop waiting): this
    /// runs to completion whatever the caller does.
    fn start_producing(
        &self,
        room_id: Id,
        message: Message,
        epoch: u64,
        payload: Vec<u8>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> (watch::Receiver<Option<Message>>, Arc<AtomicU8>) {
        let (tx, rx) = watch::channel(None);
        let state = Arc::new(AtomicU8::new(WAITING));
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                (room_id, message.seq),
                Pending {
                    id: message.id,
                    done: rx.clone(),
                },
            );
        }
        let (ingest, ledger, pending, late) = (
            self.ingest.clone(),
            self.ledger.clone(),
            self.pending.clone(),
            self.late.clone(),
        );
        let flag = state.clone();
        self.producing.spawn(async move {
            let _permit = permit;
            // Fails only when the node shuts down before the broker confirms.
            let produced = ingest.produce(&room_id.to_string(), &payload).await;
            let deposited = match &produced {
                Ok(_) => deposit(&ledger, room_id, &message, epoch, &payload).await,
                Err(_) => Ok(()),
            };
            if let Ok(mut p) = pending.lock() {
                if p.get(&(room_id, message.seq)).is_some_and(|e| e.id == message.id) {
                    p.remove(&(room_id, message.seq));
                }
            }
            if let Err(e) = produced {
                tracing::error!(error = %e, room = %message.room, seq = message.seq,
                    "message never confirmed (node shutting down): a retry of its sender produces it");
                return;
            }
            metrics::counter!("scalify_kafka_produced_total").increment(1);
            match deposited {
                // Readable now: the sender may be acked.
                Ok(()) => {
                    let _ = tx.send(Some(message.clone()));
                }
                // Redis lost the room's counter since the allocation: its seq may be given
                // again, and the persister refuses this record if it comes after the room's
                // new seed. Neither acked nor broadcast; the sender's retry is a new send.
                Err(DurableError::Fenced(why)) => {
                    metrics::counter!("scalify_kafka_fenced_deposits_total").increment(1);
                    tracing::warn!(room = %message.room, seq = message.seq, %why,
                        "a message confirmed by Kafka is not acked: its room's seq counter was lost meanwhile");
                    return;
                }
                // In Kafka, so the persister stores it; not in the window, so no ack (the
                // sender's retry finds it once it is in the database). Still broadcast below.
                Err(e) => tracing::error!(error = %e, room = %message.room, seq = message.seq,
                    "message confirmed by Kafka but not recorded in the recent window"),
            }
            // Whoever stopped waiting leaves the broadcast to us (the sender gets no ack, and
            // its retry is answered as a duplicate, which is not broadcast).
            if flag.swap(CONFIRMED, Ordering::AcqRel) == ABANDONED {
                if let Some(late) = late.get() {
                    // Fails only once the broadcaster has stopped (the node is stopping).
                    let _ = late.send(message).await;
                }
            }
        });
        (rx, state)
    }

    /// The message a repeated (sender, client_id) was given, wherever it is now. `unconfirmed`:
    /// its record, when the ledger has no confirmation of it yet.
    ///
    /// Such a message is produced again from that record when this node is not producing it
    /// and no store has it: its producer may be gone (killed, stopped while the broker was
    /// away) or may never have started (Redis's answer to the allocation was lost). If the
    /// first copy did reach the topic, the persister stores the message once (same id at the
    /// same seq is a redelivery) and the window holds one entry per seq.
    async fn repeat(
        &self,
        room: &Room,
        seq: u64,
        unconfirmed: Option<Vec<u8>>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> StoreResult<Appended> {
        let duplicate = |message| Appended {
            message,
            duplicate: true,
        };
        if let Some(done) = self.pending_confirmation(room.id, seq) {
            if let Some(m) = self.wait_confirmed(done).await {
                return Ok(duplicate(m));
            }
            return Err(not_yet_confirmed());
        }
        if let Some(m) = self.ledger.at(room.id, seq).await? {
            return Ok(duplicate(m));
        }
        if let Some(m) = self
            .inner
            .after(room, seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|m| m.seq == seq)
        {
            return Ok(duplicate(m));
        }
        let Some(payload) = unconfirmed else {
            return Err(not_yet_confirmed());
        };
        let (message, epoch) = match record::decode(&payload) {
            Ok(rm) if rm.room_id == room.id && rm.message.seq == seq => (rm.message, rm.epoch),
            Ok(_) => {
                return Err(DurableError::Corrupt(
                    "an unconfirmed record in Redis names another message".into(),
                )
                .into())
            }
            Err(e) => {
                return Err(
                    DurableError::Corrupt(format!("an unconfirmed record in Redis: {e}")).into(),
                )
            }
        };
        metrics::counter!("scalify_kafka_reproduced_total").increment(1);
        tracing::info!(room = %message.room, seq, "producing an unconfirmed message again for its sender's retry");
        // Nobody has broadcast it: whoever confirms it does, as for a first send.
        let (done, state) = self.start_producing(room.id, message, epoch, payload, permit);
        self.answer(done, state).await
    }

    /// The sender's answer once `done` confirms the message, or an error ack after the ack
    /// timeout (the producing task then broadcasts it when confirmed).
    async fn answer(
        &self,
        done: watch::Receiver<Option<Message>>,
        state: Arc<AtomicU8>,
    ) -> StoreResult<Appended> {
        let confirmed = match self.wait_confirmed(done.clone()).await {
            Some(m) => Some(m),
            // Confirmed just as the wait ended: then the sender still gets it.
            None => match state.compare_exchange(
                WAITING,
                ABANDONED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => None,
                Err(_) => done.borrow().clone(),
            },
        };
        match confirmed {
            Some(message) => Ok(Appended {
                message,
                duplicate: false,
            }),
            None => {
                metrics::counter!("scalify_kafka_ack_timeouts_total").increment(1);
                Err(not_yet_confirmed())
            }
        }
    }

    async fn window_last_seq(&self, room: &mut Room) -> StoreResult<()> {
        if let Some(top) = self.ledger.window_max_seq(room.id).await? {
            room.last_seq = room.last_seq.max(top);
        }
        Ok(())
    }

    /// Adds to a read state counted in the database (whose last seq was then `stored`) the
    /// messages of others above it: those only the recent window holds, and any the persister
    /// wrote since (read window first, then database, as every read here is). Looked at only
    /// for a room whose window goes beyond the marker and the database; a window trimmed to
    /// nothing between the count and `top` (read after it) leaves those few uncounted until
    /// the next count.
    async fn count_window(
        &self,
        room: &Room,
        user: Id,
        stored: u64,
        top: Option<u64>,
        read: &mut ReadState,
    ) -> StoreResult<()> {
        let from = stored.max(read.last_read);
        let capped = read.unread >= UNREAD_CAP && read.mentions >= UNREAD_CAP;
        if capped || top.is_none_or(|t| t <= from) {
            return Ok(());
        }
        let above = self.after(room, from, UNREAD_SCAN).await?;
        read.count_more(&above, user, room.kind == RoomKind::Dm);
        Ok(())
    }
}

fn not_yet_confirmed() -> scalify_store::StoreError {
    DurableError::NotYetConfirmed(
        "this message is still waiting for the Kafka broker's confirmation; retry with the same client_id".into(),
    )
    .into()
}

/// Puts a confirmed message in the recent window, retrying while Redis is away (the message
/// is already durable in Kafka; the ack waits for this so reads can see it). Gives up after
/// about a minute: the persister still stores the message, and the sender (long timed out)
/// finds it with a retry once it is in the database.
async fn deposit(
    ledger: &Ledger,
    room: Id,
    message: &Message,
    epoch: u64,
    record: &[u8],
) -> Result<(), DurableError> {
    let mut attempt = 0;
    loop {
        match ledger.deposit(room, message, epoch, record.to_vec()).await {
            Ok(()) => return Ok(()),
            Err(e @ DurableError::Fenced(_)) => return Err(e),
            Err(e) if attempt >= 60 => return Err(e),
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot record a confirmed message in the recent window; retrying");
                tokio::time::sleep(backoff(attempt, Duration::from_secs(1))).await;
            }
        }
    }
}

#[async_trait]
impl Store for DurableStore {
    async fn create_user(&self, username: &Username, password_hash: &str) -> StoreResult<User> {
        self.inner.create_user(username, password_hash).await
    }
    async fn credentials(&self, username: &Username) -> StoreResult<Option<Credentials>> {
        self.inner.credentials(username).await
    }
    async fn user(&self, id: Id) -> StoreResult<Option<User>> {
        self.inner.user(id).await
    }
    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<User>> {
        self.inner.user_by_name(username).await
    }
    async fn set_admin(&self, username: &Username, admin: bool) -> StoreResult<bool> {
        self.inner.set_admin(username, admin).await
    }
    async fn is_admin(&self, user: Id) -> StoreResult<bool> {
        self.inner.is_admin(user).await
    }
    async fn remove_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.inner.remove_member(room, user).await
    }
    async fn claim_owner(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.inner.claim_owner(room, user).await
    }
    async fn room_owner(&self, room: Id) -> StoreResult<Option<Id>> {
        self.inner.room_owner(room).await
    }
    async fn set_block(&self, user: Id, other: Id, on: bool) -> StoreResult<bool> {
        self.inner.set_block(user, other, on).await
    }
    async fn blocks(&self, user: Id) -> StoreResult<Vec<User>> {
        self.inner.blocks(user).await
    }
    async fn has_blocked(&self, user: Id, other: Id) -> StoreResult<bool> {
        self.inner.has_blocked(user, other).await
    }
    async fn create_session(&self, user: Id, session: &str, expires_at: i64) -> StoreResult<()> {
        self.inner.create_session(user, session, expires_at).await
    }
    async fn session_user(&self, session: &str, now: i64) -> StoreResult<Option<Id>> {
        self.inner.session_user(session, now).await
    }
    async fn end_sessions(&self, user: Id, which: EndSessions) -> StoreResult<Vec<String>> {
        self.inner.end_sessions(user, which).await
    }
    async fn set_password(&self, user: Id, password_hash: &str) -> StoreResult<bool> {
        self.inner.set_password(user, password_hash).await
    }
    async fn delete_user(&self, user: Id) -> StoreResult<Vec<String>> {
        self.inner.delete_user(user).await
    }

    async fn room(&self, name: &RoomName) -> StoreResult<Option<Room>> {
        let Some(mut room) = self.inner.room(name).await? else {
            return Ok(None);
        };
        self.window_last_seq(&mut room).await?;
        Ok(Some(room))
    }
    async fn create_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room> {
        self.inner.create_room(name, kind, members).await
    }
    async fn ensure_room(
        &self,
        name: &RoomName,
        kind: RoomKind,
        members: &[Id],
    ) -> StoreResult<Room> {
        let mut room = self.inner.ensure_room(name, kind, members).await?;
        self.window_last_seq(&mut room).await?;
        Ok(room)
    }
    async fn add_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        let added = self.inner.add_member(room, user).await?;
        // The database started the new member's marker at its own last seq; messages only
        // the recent window holds are the room's past too.
        if added {
            if let Some(top) = self.ledger.window_max_seq(room).await? {
                self.inner.set_read(room, user, top).await?;
            }
        }
        Ok(added)
    }
    async fn is_member(&self, room: Id, user: Id) -> StoreResult<bool> {
        self.inner.is_member(room, user).await
    }
    async fn members(&self, room: Id, limit: u32) -> StoreResult<Vec<User>> {
        self.inner.members(room, limit).await
    }
    async fn list_rooms(&self, user: Id) -> StoreResult<Vec<RoomListing>> {
        let mut rooms = self.inner.list_rooms(user).await?;
        let ids: Vec<Id> = rooms.iter().map(|r| r.room.id).collect();
        let tops = self.ledger.window_max_seqs(&ids).await?;
        for (listing, top) in rooms.iter_mut().zip(tops) {
            let stored = listing.room.last_seq;
            if let Some(mut read) = listing.read {
                self.count_window(&listing.room, user, stored, top, &mut read)
                    .await?;
                listing.read = Some(read);
            }
            if let Some(top) = top {
                listing.room.last_seq = stored.max(top);
            }
        }
        Ok(rooms)
    }

    async fn set_read(&self, room: Id, user: Id, seq: u64) -> StoreResult<Option<ReadMark>> {
        self.inner.set_read(room, user, seq).await
    }

    async fn read_state(&self, room: &Room, user: Id) -> StoreResult<Option<(ReadState, u64)>> {
        let Some((mut read, stored)) = self.inner.read_state(room, user).await? else {
            return Ok(None);
        };
        let top = self.ledger.window_max_seq(room.id).await?;
        self.count_window(room, user, stored, top, &mut read)
            .await?;
        Ok(Some((read, stored.max(top.unwrap_or(0)))))
    }

    async fn set_notify_level(&self, room: Id, user: Id, level: NotifyLevel) -> StoreResult<bool> {
        self.inner.set_notify_level(room, user, level).await
    }

    async fn members_named(&self, room: Id, names: &[Username]) -> StoreResult<Vec<User>> {
        self.inner.members_named(room, names).await
    }

    async fn receipts(&self, room: Id, reader: Id, limit: u32) -> StoreResult<Vec<(UserRef, u64)>> {
        self.inner.receipts(room, reader, limit).await
    }

    async fn settings(&self, user: Id) -> StoreResult<Settings> {
        self.inner.settings(user).await
    }

    async fn update_settings(
        &self,
        user: Id,
        read_receipts: Option<bool>,
        previews: Option<bool>,
    ) -> StoreResult<Option<Settings>> {
        self.inner
            .update_settings(user, read_receipts, previews)
            .await
    }

    async fn append(&self, new: NewMessage) -> StoreResult<Appended> {
        let permit = self.ingest.reserve()?;
        let room = Room {
            id: new.room_id,
            name: new.room.clone(),
            kind: RoomKind::Public,
            last_seq: 0,
        };
        let room_id = new.room_id;
        let mut message = Message::from_new(new, Id::new(), 0, scalify_core::now_ms());
        let draft = Arc::new(record::draft(room_id, &message));
        let allocation = self
            .ledger
            .allocate(
                room_id,
                message.sender.id,
                &message.client_id,
                draft.clone(),
                // Once Redis's loss (if it lost anything) is behind the persisters, the
                // database holds every message given a seq before.
                || async {
                    let epoch = self.fence.ready().await?;
                    Ok((self.fence.claim(room_id, epoch).await?, epoch))
                },
            )
            .await?;
        let (seq, epoch) = match allocation {
            Allocation::Repeat(seq) => return self.repeat(&room, seq, None, permit).await,
            Allocation::Unconfirmed(seq, record) => {
                return self.repeat(&room, seq, Some(record), permit).await
            }
            Allocation::Fresh(seq, epoch) => (seq, epoch),
        };
        message.seq = seq;
        let payload = draft.with_seq(seq, epoch);
        let (done, state) = self.start_producing(room_id, message, epoch, payload, permit);
        self.answer(done, state).await
    }

    async fn history(
        &self,
        room: &Room,
        before_seq: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        // After Redis lost the windows, the database alone may miss acked messages until the
        // persisters catch up: no answer rather than an incomplete one.
        let recent = self.ledger.read_before(room.id, before_seq, limit).await?;
        self.fence.confirm(recent.epoch.as_deref()).await?;
        let recent = recent.messages;
        let stored = self.inner.history(room, before_seq, limit).await?;
        let mut all = merge(stored, recent);
        let excess = all.len().saturating_sub(limit as usize);
        all.drain(..excess);
        Ok(all)
    }

    async fn after(&self, room: &Room, after_seq: u64, limit: u32) -> StoreResult<Vec<Message>> {
        let recent = self.ledger.read_after(room.id, after_seq, limit).await?;
        self.fence.confirm(recent.epoch.as_deref()).await?;
        let recent = recent.messages;
        let stored = self.inner.after(room, after_seq, limit).await?;
        let mut all = merge(stored, recent);
        all.truncate(limit as usize);
        Ok(all)
    }

    async fn message(&self, room: &Room, id: Id) -> StoreResult<Option<Message>> {
        if let Some(m) = self.inner.message(room, id).await? {
            return Ok(Some(m));
        }
        // Acked but not yet persisted: in the recent window, which holds what the persisters
        // have not written yet (a change to it waits for nothing: it is sequenced after it).
        let recent = self
            .ledger
            .read_before(room.id, None, WINDOW_LOOKUP)
            .await?;
        self.fence.confirm(recent.epoch.as_deref()).await?;
        if let Some(m) = recent.messages.into_iter().find(|m| m.id == id) {
            return Ok(Some(m));
        }
        // Persisted between the two reads.
        self.inner.message(room, id).await
    }

    async fn reactions(
        &self,
        room: Id,
        seqs: std::ops::RangeInclusive<u64>,
        reader: Id,
    ) -> StoreResult<Vec<scalify_store::ReactionRow>> {
        self.inner.reactions(room, seqs, reader).await
    }

    /// Searches what the persisters have written: a message is found once it is in
    /// PostgreSQL (a few milliseconds behind its ack while they keep up).
    async fn search(
        &self,
        user: Id,
        query: &scalify_core::SearchQuery,
        room: Option<Id>,
        page: scalify_core::SearchPage,
    ) -> StoreResult<Vec<Message>> {
        self.inner.search(user, query, room, page).await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.producing.close();
        if tokio::time::timeout(self.drain_for, self.producing.wait())
            .await
            .is_err()
        {
            tracing::error!(
                waiting = self.producing.len(),
                "shutting down with messages the broker never confirmed (their senders got error acks)"
            );
        }
        self.ingest.close(Duration::from_secs(2)).await;
        self.inner.flush().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}
