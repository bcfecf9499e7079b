//! The group-commit writers: a batch of appends sequenced and inserted in one transaction of five
//! statements, retried one by one when it fails for a reason other than a lost connection.

use super::*;

/// One writer: takes a batch off the shared queue, commits it, answers its callers. The
/// writers end when the store (the queue's sender) is dropped.
pub(super) async fn writer(
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

pub(super) async fn commit_or_split(
    pool: &PgPool,
    messages: &[NewMessage],
) -> Vec<StoreResult<Appended>> {
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

pub(super) fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Backend(s) => StoreError::Backend(s.clone()),
        StoreError::Retry(s) => StoreError::Retry(s.clone()),
        StoreError::Rejected(s) => StoreError::Rejected(s.clone()),
    }
}

/// What a sender hears when the database did not answer its commit.
pub(super) const COMMIT_UNKNOWN: &str =
    "the database did not confirm the commit: the message may be stored; retry with the same client_id (it is stored once)";

pub(super) type IdemKey = (Id, Id, String);

pub(super) fn key_of(m: &NewMessage) -> IdemKey {
    (m.room_id, m.sender.id, m.client_id.as_str().to_owned())
}

/// Commits one batch (see the module docs). Per-message outcomes are in the result; the outer
/// error means the transaction failed as a whole.
pub(super) async fn commit_batch(
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
    let existing_rows = sqlx::query(&format!(
        "SELECT m.room_id, {MESSAGE_COLUMNS}
         FROM {MESSAGES_FROM}
         JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS k(r, s, c)
           ON m.room_id = k.r AND m.sender_id = k.s AND m.client_id = k.c
         WHERE m.resend_seq = 0"
    ))
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
        let message = Message::stored(m, Id::new(), *last as u64, now_ms());
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
    if let Err(e) = tx.commit().await {
        // The COMMIT may have been carried out with its answer lost (the connection dropped
        // after the server wrote it): "not stored" could be false. The sender's retry finds
        // the message by its key if it is there, and stores it once if it is not.
        tracing::warn!(error = %e, batch = batch.len(), "the database did not confirm a commit: its outcome is unknown");
        return Ok(batch
            .iter()
            .map(|_| Err(StoreError::Retry(COMMIT_UNKNOWN.into())))
            .collect());
    }

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
pub(super) const INSERT_MESSAGES: &str =
    "INSERT INTO messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts, mentions,
                           kind, ref_seq, attachment)
     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::int8[], $9::text[], $10::text[], $11::int8[],
                          $12::text[])";

/// [`INSERT_MESSAGES`] for resends after the idempotency window: `resend_seq` is the seq.
pub(super) const INSERT_RESENDS: &str =
    "INSERT INTO messages (room_id, seq, id, sender_id, sender_name, client_id, text, ts, mentions,
                           kind, ref_seq, attachment, resend_seq)
     SELECT u.*, u.seq FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::int8[], $9::text[], $10::text[], $11::int8[],
                          $12::text[])
       AS u(room_id, seq, id, sender_id, sender_name, client_id, text, ts, mentions, kind,
            ref_seq, attachment)";

/// Raises each room's `last_seq` (`$1` room ids, `$2` seqs) — never lowers it — and marks the
/// room for its notifier (`notify_from`, the database's clock, set once until the notifier
/// has looked).
pub(super) const RAISE_LAST_SEQ: &str =
    "UPDATE rooms SET last_seq = v.s,
       notify_from = COALESCE(rooms.notify_from, (extract(epoch FROM clock_timestamp()) * 1000)::int8)
     FROM UNNEST($1::text[], $2::int8[]) AS v(id, s)
     WHERE rooms.id = v.id AND rooms.last_seq < v.s";

/// Column arrays for one multi-row insert.
#[derive(Default)]
pub(super) struct InsertColumns {
    room_id: Vec<String>,
    seq: Vec<i64>,
    id: Vec<String>,
    sender_id: Vec<String>,
    sender_name: Vec<String>,
    client_id: Vec<String>,
    text: Vec<String>,
    ts: Vec<i64>,
    mentions: Vec<Option<String>>,
    kind: Vec<Option<&'static str>>,
    ref_seq: Vec<Option<i64>>,
    attachment: Vec<Option<String>>,
}

impl InsertColumns {
    /// Binds the twelve arrays, in [`INSERT_MESSAGES`]' order.
    pub(super) fn bind<'q>(
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
            .bind(&self.mentions)
            .bind(&self.kind)
            .bind(&self.ref_seq)
            .bind(&self.attachment)
    }

    pub(super) fn push(&mut self, room_key: &str, m: &Message) {
        self.room_id.push(room_key.to_owned());
        self.seq.push(m.seq as i64);
        self.id.push(m.id.to_string());
        self.sender_id.push(m.sender.id.to_string());
        self.sender_name.push(m.sender.username.clone());
        self.client_id.push(m.client_id.as_str().to_owned());
        self.text.push(m.text.as_str().to_owned());
        self.ts.push(m.ts);
        self.mentions
            .push(encode_mentions(&m.mentions, m.mention_room));
        self.kind.push(m.kind.column());
        self.ref_seq.push(m.ref_seq().map(|s| s as i64));
        self.attachment
            .push(crate::encode_attachment(&m.attachment));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalify_core::{ClientId, MessageText, RoomKind, UserRef, Username};
    use scalify_testkit::FreshDb;

    /// The split path itself: a batch the database refuses as a whole (one row breaks a
    /// constraint) is written again one append at a time, and only the bad append fails.
    #[tokio::test]
    async fn a_refused_batch_is_written_one_by_one_and_only_its_bad_append_fails() {
        let db = FreshDb::create().await;
        let store = PgStore::open(PgConfig::new(&db.url)).await.unwrap();
        // A rule only this test's database has: what it refuses is "bad" for the database,
        // not for the writer's own checks.
        sqlx::query("ALTER TABLE messages ADD CONSTRAINT no_poison CHECK (text <> 'poison')")
            .execute(&store.pool)
            .await
            .unwrap();
        let alice = store
            .create_user(&Username::parse("alice").unwrap(), "h")
            .await
            .unwrap();
        let room = store
            .ensure_room(
                &RoomName::parse("r").unwrap(),
                RoomKind::Public,
                &[alice.id],
            )
            .await
            .unwrap();
        let append = |client_id: &str, text: &str| {
            NewMessage::plain(
                room.id,
                room.name.clone(),
                UserRef {
                    id: alice.id,
                    username: "alice".into(),
                },
                MessageText::parse(text, 4096).unwrap(),
                ClientId::parse(client_id).unwrap(),
            )
        };
        let batch = [append("a", "x"), append("b", "poison"), append("c", "y")];
        assert!(
            commit_batch(&store.pool, &batch).await.is_err(),
            "the batch as a whole is refused"
        );
        let results = commit_or_split(&store.pool, &batch).await;
        assert_eq!(
            results.iter().map(Result::is_ok).collect::<Vec<_>>(),
            [true, false, true]
        );
        let stored = store.after(&room, 0, 10).await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|m| (m.seq, m.client_id.as_str()))
                .collect::<Vec<_>>(),
            [(1, "a"), (2, "c")]
        );
    }
}
