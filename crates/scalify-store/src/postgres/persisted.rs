//! Writing already-sequenced messages (the durable pipeline's persister): `COPY` into the table,
//! rooms locked in id order, each room's `last_seq` raised to its newest seq.

use super::*;

/// What writing a batch of already-sequenced messages did (see [`PgStore::persist`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// Rows written now.
    pub inserted: usize,
    /// Messages that were already stored, same id at the same (room, seq): a redelivery.
    pub redelivered: usize,
    /// Of the rows written, messages whose (sender, client_id) an earlier message of the room
    /// holds, at another seq: sent again after their idempotency key expired, acked as new,
    /// and stored as new beside the first (`resend_seq`).
    pub resent: usize,
    /// Messages refused because their (room, seq) holds another message: they are not stored,
    /// and the caller must report them (never drop silently).
    pub conflicts: Vec<Message>,
    /// Messages not written because their seq was given in an older epoch than their room's
    /// (see [`PgStore::persist_in_epochs`]): never acked; the caller reports them.
    pub fenced: Vec<Message>,
}

impl PgStore {
    /// Writes messages that already have their seq (the durable pipeline sequences them
    /// before Kafka) in one transaction: lock their rooms in id order, write the rows, and
    /// raise each room's `last_seq` to its newest seq. Idempotent: writing the same batch twice
    /// stores it once. Every row counts as allocated in epoch 0, which is never fenced
    /// ([`PgStore::persist_in_epochs`]).
    pub async fn persist(&self, batch: &[(Id, Message)]) -> StoreResult<Persisted> {
        self.persist_in_epochs(batch, &[]).await
    }

    /// [`PgStore::persist`] for rows allocated in seq epochs: `epochs[i]` is the epoch
    /// `batch[i]`'s seq was given in (missing or 0: unknown, as in records written before
    /// epochs existed). A row from an epoch older than its room's (see
    /// [`PgStore::claim_seq_epoch`]) that is not stored yet is not written: it is reported in
    /// [`Persisted::fenced`]. Its seq was given before Redis lost the room's counter, and it
    /// reached the database only after the room was seeded again, so that seq may belong to
    /// another message now; such a message was never acked.
    ///
    /// The rows go in with `COPY … FROM STDIN`, PostgreSQL's cheapest bulk path — almost every
    /// batch is new rows. `COPY` has no `ON CONFLICT`, so a batch holding a row that is already
    /// there (a redelivery after a crash or a rebalance, or a conflict) fails with a unique
    /// violation; that transaction is dropped and the batch written again by
    /// `persist_skipping`, which skips and reports such rows.
    pub async fn persist_in_epochs(
        &self,
        batch: &[(Id, Message)],
        epochs: &[u64],
    ) -> StoreResult<Persisted> {
        if batch.is_empty() {
            return Ok(Persisted::default());
        }
        let mut sorted: Vec<(&(Id, Message), u64)> = batch
            .iter()
            .enumerate()
            .map(|(i, row)| (row, epochs.get(i).copied().unwrap_or(0)))
            .collect();
        sorted.sort_by_key(|(a, _)| (a.0, a.1.seq));
        sorted.dedup_by(|(a, _), (b, _)| a.0 == b.0 && a.1.seq == b.1.seq && a.1.id == b.1.id);
        let mut tx = self.pool.begin().await?;
        let fenced = lock_and_fence(&mut tx, &sorted).await?;
        let (rooms, tops) = newest_seqs(&fenced.rows);
        let copied = async {
            let mut copy = tx.copy_in_raw(COPY_MESSAGES).await?;
            copy.send(copy_text(&fenced.rows)).await?;
            copy.finish().await
        }
        .await;
        match copied {
            Ok(n) => {
                replay_changes(&mut tx, &fenced.rows).await?;
                raise_last_seq(&mut tx, &rooms, &tops).await?;
                tx.commit().await?;
                Ok(Persisted {
                    inserted: n as usize,
                    ..fenced.outcome
                })
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                drop(tx);
                self.persist_skipping(&sorted).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`PgStore::persist_in_epochs`]'s path for a batch with rows already stored: one
    /// multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`, then the skipped rows are sorted
    /// into redeliveries (same id at that seq) and conflicts.
    pub(super) async fn persist_skipping(
        &self,
        sorted: &[(&(Id, Message), u64)],
    ) -> StoreResult<Persisted> {
        let mut tx = self.pool.begin().await?;
        // Fenced again: a room may have been stamped since the first attempt.
        let Fenced { rows, mut outcome } = lock_and_fence(&mut tx, sorted).await?;
        let (rooms, tops) = newest_seqs(&rows);
        let mut cols = InsertColumns::default();
        for (room, m) in &rows {
            cols.push(&room.to_string(), m);
        }
        // Rows written are known by id: two messages of the batch at one (room, seq) (a seq
        // given twice after Redis lost its counter) are one written and one conflict.
        let returning = format!("{INSERT_MESSAGES} ON CONFLICT DO NOTHING RETURNING id");
        let written: Vec<String> = if rows.is_empty() {
            Vec::new()
        } else {
            cols.bind(sqlx::query(&returning))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, sqlx::Error>>()?
        };
        outcome.inserted = written.len();
        let out = &mut outcome;
        if written.len() < rows.len() {
            let written: std::collections::HashSet<String> = written.into_iter().collect();
            let skipped: Vec<&&(Id, Message)> = rows
                .iter()
                .filter(|(_, m)| !written.contains(&m.id.to_string()))
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
            let mut resends = InsertColumns::default();
            let mut resent_keys = Vec::new();
            for (room, m) in skipped {
                match present.get(&(room.to_string(), m.seq as i64)) {
                    Some(id) if *id == m.id.to_string() => out.redelivered += 1,
                    Some(_) => out.conflicts.push(m.clone()),
                    // Its seq is free, so its (sender, client_id) is what is taken: a resend
                    // after the idempotency window, which its sender was told is stored.
                    None => {
                        resends.push(&room.to_string(), m);
                        resent_keys.push(m);
                    }
                }
            }
            if !resent_keys.is_empty() {
                let resent = format!("{INSERT_RESENDS} ON CONFLICT DO NOTHING RETURNING id");
                let written: std::collections::HashSet<String> = resends
                    .bind(sqlx::query(&resent))
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, sqlx::Error>>()?;
                out.inserted += written.len();
                out.resent += written.len();
                // Two messages of the batch at one free seq (a seq given twice) cannot both
                // be stored: whatever this insert skipped is reported.
                for m in resent_keys {
                    if !written.contains(&m.id.to_string()) {
                        out.conflicts.push(m.clone());
                    }
                }
            }
        }
        replay_changes(&mut tx, &rows).await?;
        raise_last_seq(&mut tx, &rooms, &tops).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Stamps a room with seq epoch `epoch` and returns its `last_seq`: the seed of the room's
    /// counter once Redis lost it. Taken under the room's row lock, the same lock
    /// [`PgStore::persist_in_epochs`] writes under: a batch that committed first is in the
    /// returned `last_seq`, and a batch after it sees the new epoch and refuses rows of older
    /// ones. `None` when the room is gone or already in a newer epoch (this seed is stale: the
    /// caller must not use it).
    pub async fn claim_seq_epoch(&self, room: Id, epoch: u64) -> StoreResult<Option<u64>> {
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE rooms SET seq_epoch = $2 WHERE id = $1 AND seq_epoch <= $2 RETURNING last_seq",
        )
        .bind(room.to_string())
        .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await?;
        Ok(seq.map(|s| s.max(0) as u64))
    }

    /// The (sender, client_id, seq) of the room's newest `limit` messages, newest first.
    pub async fn recent_sends(&self, room: Id, limit: u32) -> StoreResult<Vec<(Id, String, u64)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT sender_id, client_id, seq FROM messages WHERE room_id = $1
             ORDER BY seq DESC LIMIT $2",
        )
        .bind(room.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(sender, client_id, seq)| {
                Some((sender.parse().ok()?, client_id, seq.max(0) as u64))
            })
            .collect())
    }

    /// A new seq epoch, greater than every one given before (a PostgreSQL sequence, so it
    /// survives what Redis forgets).
    pub async fn next_seq_epoch(&self) -> StoreResult<u64> {
        let e: i64 = sqlx::query_scalar("SELECT nextval('durable_epochs')")
            .fetch_one(&self.pool)
            .await?;
        Ok(e.max(0) as u64)
    }
}

/// A batch's rows after [`lock_and_fence`]: those to write, and what was decided for the rest.
struct Fenced<'a> {
    rows: Vec<&'a (Id, Message)>,
    outcome: Persisted,
}

/// Locks the batch's rooms and sets aside the rows allocated in an epoch older than their
/// room's: already stored (same id) is a redelivery, otherwise fenced.
async fn lock_and_fence<'a>(
    tx: &mut sqlx::PgConnection,
    sorted: &[(&'a (Id, Message), u64)],
) -> StoreResult<Fenced<'a>> {
    // Sorted by room: each room once, formatted once.
    let mut ids: Vec<Id> = sorted.iter().map(|((r, _), _)| *r).collect();
    ids.dedup();
    let rooms: Vec<String> = ids.iter().map(Id::to_string).collect();
    let by_name = lock_rooms(tx, &rooms).await?;
    let epochs: HashMap<Id, i64> = ids
        .into_iter()
        .zip(&rooms)
        .map(|(id, name)| (id, by_name.get(name).copied().unwrap_or(0)))
        .collect();
    let mut out = Fenced {
        rows: Vec::with_capacity(sorted.len()),
        outcome: Persisted::default(),
    };
    let mut stale = Vec::new();
    for (row, epoch) in sorted {
        let room_epoch = epochs.get(&row.0).copied().unwrap_or(0);
        if *epoch != 0 && (*epoch as i64) < room_epoch {
            stale.push(*row);
        } else {
            out.rows.push(*row);
        }
    }
    if stale.is_empty() {
        return Ok(out);
    }
    let ids: Vec<String> = stale.iter().map(|(_, m)| m.id.to_string()).collect();
    let stored: std::collections::HashSet<String> =
        sqlx::query_scalar("SELECT id FROM messages WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    for (_, m) in stale {
        if stored.contains(&m.id.to_string()) {
            out.outcome.redelivered += 1;
        } else {
            out.outcome.fenced.push(m.clone());
        }
    }
    Ok(out)
}

/// Each room of a batch sorted by room, with its newest seq: (room ids, seqs), for
/// [`lock_rooms`] and [`RAISE_LAST_SEQ`].
pub(super) fn newest_seqs(sorted: &[&(Id, Message)]) -> (Vec<String>, Vec<i64>) {
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
/// Locks the rooms in id order and returns each one's seq epoch.
pub(super) async fn lock_rooms(
    tx: &mut sqlx::PgConnection,
    rooms: &[String],
) -> StoreResult<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, seq_epoch FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(rooms)
            .fetch_all(tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Replays, over each message of `rows`, the changes to it already stored: the topic does not
/// keep seq order, so a change may have been written before its message, when it had nothing
/// to apply to (`replay_message_changes`, migration 0010). One probe of a small index per
/// message; a replay only where a change came first.
pub(super) async fn replay_changes(
    tx: &mut sqlx::PgConnection,
    rows: &[&(Id, Message)],
) -> StoreResult<()> {
    let (rooms, seqs): (Vec<String>, Vec<i64>) = rows
        .iter()
        .filter(|(_, m)| m.kind.is_message())
        .map(|(room, m)| (room.to_string(), m.seq as i64))
        .unzip();
    if rooms.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT replay_message_changes(t.room, t.seq)
         FROM UNNEST($1::text[], $2::int8[]) AS t(room, seq)
         WHERE EXISTS (SELECT 1 FROM messages c WHERE c.room_id = t.room AND c.ref_seq = t.seq
                         AND c.kind IS NOT NULL)",
    )
    .bind(&rooms)
    .bind(&seqs)
    .execute(tx)
    .await?;
    Ok(())
}

pub(super) async fn raise_last_seq(
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
pub(super) const COPY_MESSAGES: &str =
    "COPY messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts, mentions,
                    kind, ref_seq, attachment)
     FROM STDIN";

/// The rows in `COPY`'s text format: tab-separated columns, one line per row, with backslash,
/// tab, newline and carriage return escaped (the only bytes that format gives a meaning to;
/// NUL never reaches the store — `MessageText` refuses it).
pub(super) fn copy_text(sorted: &[&(Id, Message)]) -> Vec<u8> {
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
        let _ = write!(buf, "\t{}\t", m.ts);
        // Ids and the room marker hold no byte COPY escapes; `\N` is its NULL.
        match encode_mentions(&m.mentions, m.mention_room) {
            Some(mentions) => buf.extend_from_slice(mentions.as_bytes()),
            None => buf.extend_from_slice(b"\\N"),
        }
        // A kind's name and a number hold no byte COPY escapes either.
        match m.kind.column() {
            Some(kind) => {
                buf.push(b'\t');
                buf.extend_from_slice(kind.as_bytes());
            }
            None => buf.extend_from_slice(b"\t\\N"),
        }
        match m.ref_seq() {
            Some(seq) => {
                let _ = write!(buf, "\t{seq}");
            }
            None => buf.extend_from_slice(b"\t\\N"),
        }
        buf.push(b'\t');
        match crate::encode_attachment(&m.attachment) {
            Some(json) => field(&mut buf, &json),
            None => buf.extend_from_slice(b"\\N"),
        }
        buf.push(b'\n');
    }
    buf
}
