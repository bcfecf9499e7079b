//! The sink: a batch written to PostgreSQL in one transaction (row by row when the database
//! refuses it), the recent windows trimmed, offsets stored after the commit, undecodable records
//! dead-lettered, and the pause (with backoff probes) while the database fails.

use super::*;

/// Window messages written per transaction by [`Persister::rescue_windows`].
pub(super) const RESCUE_PAGE: u32 = 1000;

/// Most (room, seq) window entries kept for a later trim while Redis refuses trims.
pub(super) const UNTRIMMED_MAX: usize = 1_000_000;

/// Writes `rows` (their seqs given in `epochs`, parallel; empty: unknown) in one
/// transaction, or — when the database refuses the batch (not a connection problem) — row by
/// row, so one bad message cannot stall the others. Returns what was written and the rows
/// refused (index into `rows`, the database's reason).
pub(super) async fn persist_rows(
    db: &PgStore,
    rows: &[(Id, Message)],
    epochs: &[u64],
) -> Result<(Persisted, Vec<(usize, String)>), StoreError> {
    match db.persist_in_epochs(rows, epochs).await {
        Ok(outcome) => Ok((outcome, Vec::new())),
        Err(StoreError::Rejected(why)) => {
            tracing::warn!(%why, "batch refused; writing its messages one by one");
            let (mut total, mut refused) = (Persisted::default(), Vec::new());
            for (i, row) in rows.iter().enumerate() {
                let epoch = epochs.get(i).copied().unwrap_or(0);
                match db
                    .persist_in_epochs(std::slice::from_ref(row), &[epoch])
                    .await
                {
                    Ok(o) => {
                        total.inserted += o.inserted;
                        total.redelivered += o.redelivered;
                        total.resent += o.resent;
                        total.conflicts.extend(o.conflicts);
                        total.fenced.extend(o.fenced);
                    }
                    Err(StoreError::Rejected(why)) => refused.push((i, why)),
                    Err(e) => return Err(e),
                }
            }
            Ok((total, refused))
        }
        Err(e) => Err(e),
    }
}

/// How long a pause waits before its next probe of the database: 50 ms doubling to 5 s, then
/// — for pauses that keep coming back with nothing written between them — up to 60 s.
pub(super) fn pause_delay(attempt: u32) -> Duration {
    if attempt < 8 {
        backoff(attempt, Duration::from_secs(5))
    } else {
        Duration::from_secs(5u64.saturating_mul(1 << (attempt - 8).min(4)))
            .min(Duration::from_secs(60))
    }
}

/// Where a partition resumes after a pause: this consumer's own progress (`own`), else the
/// group's committed offset (`group`: `None` when it could not be read, `Some(None)` when the
/// group never committed the partition — it starts at the beginning). `None` when neither is
/// known: reading the partition from its beginning would replay all of it, and only a new
/// consumer (which starts at the committed offsets once the broker answers) is safe.
pub(super) fn resume_at(own: Option<i64>, group: Option<Option<Offset>>) -> Option<Offset> {
    match (own, group) {
        (Some(o), _) => Some(Offset::Offset(o)),
        (None, Some(committed)) => Some(committed.unwrap_or(Offset::Beginning)),
        (None, None) => None,
    }
}

/// How a pause ended.
pub(super) enum Resumed {
    Yes,
    Stopped,
    /// Seeking back failed: only a new consumer (starting at the committed offsets, which
    /// never pass an unwritten message) is safe.
    Recreate,
}

impl Persister {
    /// Writes the batch (and dead letters) and trims the recent window, and returns the
    /// offsets to store ([`Persister::store_offsets`] stores them). On error none is stored:
    /// the caller pauses and re-reads from the frontier (writing a batch again is idempotent).
    /// With `rescue`, every recent window is written to the database before the trim
    /// ([`Persister::rescue_windows`]).
    pub(super) async fn write(
        &self,
        batch: Vec<Consumed>,
        mut dead: Vec<(OwnedMessage, String)>,
        rescue: bool,
    ) -> Result<Written, StoreError> {
        let started = Instant::now();
        // The next offset of every partition touched, dead letters included.
        let mut next: HashMap<i32, i64> = HashMap::new();
        for (p, o) in batch
            .iter()
            .map(|c| (c.partition, c.offset))
            .chain(dead.iter().map(|(m, _)| (m.partition(), m.offset())))
        {
            let e = next.entry(p).or_insert(o + 1);
            *e = (*e).max(o + 1);
        }
        let positions: Vec<(i32, i64)> = batch.iter().map(|c| (c.partition, c.offset)).collect();
        let epochs: Vec<u64> = batch.iter().map(|c| c.epoch).collect();
        let rows: Vec<(Id, Message)> = batch.into_iter().map(|c| (c.room, c.message)).collect();
        // The database's part runs as a task of its own: a write dropped while it runs (by the
        // watchdog or a stop, after `stuck_after`) leaves it to end by itself. Dropping a `COPY`
        // mid-way instead leaves its pooled connection out of step with the server (sqlx
        // writes `CopyFail` and does not read the answer), and the next write on that
        // connection fails at once. A write that ends after it was dropped is harmless: its
        // rows are read and written again (found stored) by whoever resumes.
        let db = self.db.clone();
        let (persisted, rows, epochs) = tokio::spawn(async move {
            let persisted = persist_rows(&db, &rows, &epochs).await;
            (persisted, rows, epochs)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the batch write task failed: {e}")))?;
        let (outcome, refused) = persisted?;
        let refetched = |i: usize| {
            let (room, message) = &rows[i];
            self.refetched(*room, message, epochs[i], positions[i])
        };
        for (i, why) in refused {
            dead.push((refetched(i), format!("database refused the message: {why}")));
        }
        metrics::histogram!("scalify_persister_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("scalify_persister_batch_size").record(rows.len() as f64);
        metrics::counter!("scalify_persister_rows_total").increment(outcome.inserted as u64);
        metrics::counter!("scalify_persister_redelivered_total")
            .increment(outcome.redelivered as u64);
        metrics::counter!("scalify_persister_resent_total").increment(outcome.resent as u64);
        for m in &outcome.conflicts {
            if let Some(i) = rows.iter().position(|(_, r)| r.id == m.id) {
                dead.push((
                    refetched(i),
                    format!(
                        "conflict: room {} seq {} or its (sender, client_id) holds another message",
                        rows[i].0, m.seq
                    ),
                ));
            }
        }
        for m in &outcome.fenced {
            if let Some(i) = rows.iter().position(|(_, r)| r.id == m.id) {
                dead.push((
                    refetched(i),
                    format!(
                        "fenced: room {} seq {} was given in seq epoch {} and its room was seeded again since (Redis lost its data); never acked",
                        rows[i].0, m.seq, epochs[i]
                    ),
                ));
            }
        }
        metrics::counter!("scalify_persister_fenced_total").increment(outcome.fenced.len() as u64);
        for (msg, reason) in &dead {
            self.dead_letter(msg, reason)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        // Counted once committed (and dead-lettered), before the windows' housekeeping.
        let (persisted, dead_n) = (outcome.inserted as u64, dead.len() as u64);
        self.update(|s| {
            s.persisted += persisted;
            s.dead_lettered += dead_n;
        });
        if rescue {
            let saved = self.rescue_windows().await?;
            metrics::counter!("scalify_persister_rescued_total").increment(saved);
            tracing::warn!(
                saved,
                "records were missing from the broker: wrote the recent windows to the database"
            );
        }
        // Exactly the messages of this batch leave the windows (a lower seq of the same room
        // may still be on its way: records of one room reach the topic out of seq order) —
        // except fenced ones: their seq now belongs to a message of the new epoch, which the
        // window may hold and the database may not have yet. (A fenced record never entered
        // a window: its deposit was refused.)
        let fenced: HashSet<Id> = outcome.fenced.iter().map(|m| m.id).collect();
        let written: Vec<(Id, u64)> = rows
            .iter()
            .filter(|(_, m)| !fenced.contains(&m.id))
            .map(|(room, m)| (*room, m.seq))
            .collect();
        self.trim_windows(written).await;
        Ok(Written { next })
    }

    /// Removes these (room, seq) entries — stored now — from the recent windows, with those
    /// an earlier trim could not remove. A failed trim is tried again with the next one (an
    /// entry left in a window is read twice and shown once, but holds Redis memory).
    async fn trim_windows(&self, mut written: Vec<(Id, u64)>) {
        if let Ok(mut untrimmed) = self.untrimmed.lock() {
            written.append(&mut untrimmed);
        }
        let Err(e) = self.ledger.trim(&written).await else {
            return;
        };
        tracing::warn!(error = %e, "cannot trim the recent window (retried with the next batch)");
        if let Ok(mut untrimmed) = self.untrimmed.lock() {
            if untrimmed.len() + written.len() <= UNTRIMMED_MAX {
                untrimmed.append(&mut written);
            } else {
                tracing::error!(
                    dropped = written.len(),
                    "too many untrimmed window entries: these stay in Redis (read twice, shown once)"
                );
            }
        }
    }

    /// Writes every message of every room's recent window to the database, and returns how
    /// many were not there yet, trimming what it wrote. Why: when records went missing from
    /// the broker (a hole that reached offset 0 — deleted by retention before they were
    /// written), their messages' only copy left is in the windows, and no batch will ever
    /// write them. The write is idempotent: what is stored already is found stored. A window
    /// message the database refuses (say, its seq holds another message) is logged, not
    /// written, and trimmed.
    pub(super) async fn rescue_windows(&self) -> Result<u64, StoreError> {
        let unavailable = |e: DurableError| StoreError::Unavailable(e.to_string());
        let mut saved = 0u64;
        for room in self.ledger.windowed_rooms().await.map_err(unavailable)? {
            let mut after = 0;
            loop {
                let page = self
                    .ledger
                    .after(room, after, RESCUE_PAGE)
                    .await
                    .map_err(unavailable)?;
                let Some(last) = page.last().map(|m| m.seq) else {
                    break;
                };
                after = last;
                let full = page.len() == RESCUE_PAGE as usize;
                let rows: Vec<(Id, Message)> = page.into_iter().map(|m| (room, m)).collect();
                let (outcome, refused) = persist_rows(&self.db, &rows, &[]).await?;
                saved += outcome.inserted as u64;
                for (i, why) in refused {
                    tracing::error!(%room, seq = rows[i].1.seq, %why,
                        "the database refuses a recent window's message");
                }
                for m in &outcome.conflicts {
                    tracing::error!(%room, seq = m.seq, id = %m.id,
                        "a recent window's message conflicts with the database: not written");
                }
                // Handled, like a batch's rows: stored now (or found stored), or reported above.
                self.trim_windows(rows.iter().map(|(r, m)| (*r, m.seq)).collect())
                    .await;
                if !full {
                    break;
                }
            }
        }
        Ok(saved)
    }

    /// Stores a written batch's offsets (committed with the next auto-commit) and advances the
    /// frontier of the partitions still assigned.
    pub(super) fn store_offsets(
        &self,
        consumer: &StreamConsumer<Ctx>,
        shared: &Shared,
        done: Written,
        frontier: &mut HashMap<i32, i64>,
    ) {
        let assigned = shared.assigned();
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &done.next {
            let _ = tpl.add_partition_offset(&self.kafka.topic, *p, Offset::Offset(*o));
            if assigned.contains(p) {
                let f = frontier.entry(*p).or_insert(*o);
                *f = (*f).max(*o);
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its next owner re-reads (and skips) these rows.
            tracing::debug!(error = %e, "cannot store offsets");
        }
    }

    /// The consumed record again, for the dead-letter topic (the batch keeps decoded messages).
    pub(super) fn refetched(
        &self,
        room: Id,
        message: &Message,
        epoch: u64,
        (partition, offset): (i32, i64),
    ) -> OwnedMessage {
        OwnedMessage::new(
            Some(record::encode_in(room, message, epoch)),
            Some(room.to_string().into_bytes()),
            self.kafka.topic.clone(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    pub(super) async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        reason: &str,
    ) -> Result<(), DurableError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(msg.topic()),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(&offset),
            });
        let mut record = FutureRecord::to(&self.kafka.dead_letter_topic)
            .payload(msg.payload().unwrap_or_default())
            .headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        self.dead_letters
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| DurableError::Kafka(format!("cannot dead-letter a record: {e}")))?;
        tracing::warn!(%reason, partition = msg.partition(), offset = msg.offset(), "record sent to the dead-letter topic");
        metrics::counter!("scalify_persister_dead_letters_total").increment(1);
        Ok(())
    }

    /// Pauses every assigned partition, keeps polling, probes the database with backoff, and
    /// once it answers seeks each partition back to its first unwritten offset and resumes.
    pub(super) async fn pause_until_healthy(
        &self,
        consumer: &StreamConsumer<Ctx>,
        shared: &Arc<Shared>,
        frontier: &HashMap<i32, i64>,
        continuity: &mut Continuity,
        stop: &CancellationToken,
        error: StoreError,
    ) -> Resumed {
        tracing::error!(error = %error, "cannot write to PostgreSQL: pausing the persister");
        shared.paused.store(true, Ordering::Release);
        metrics::gauge!("scalify_persister_paused").set(1.0);
        self.update(|s| s.paused = true);
        if let Ok(assignment) = consumer.assignment() {
            if let Err(e) = consumer.pause(&assignment) {
                tracing::error!(error = %e, "cannot pause partitions");
            }
        }
        // Pauses in a row with no batch written between them: a failure the database probe
        // cannot see (the dead-letter topic refusing records, a batch the database fails on
        // every time) must not turn into a tight pause-resume loop.
        let again = self.pauses_in_a_row.fetch_add(1, Ordering::AcqRel);
        let mut attempt = again;
        loop {
            let delay = pause_delay(attempt);
            let until = Instant::now() + delay;
            // Keep polling while waiting: it serves rebalances and keeps us in the group.
            // Anything still delivered (fetched before the pause) is dropped; the seek below
            // reads it again.
            while Instant::now() < until {
                tokio::select! {
                    () = stop.cancelled() => return Resumed::Stopped,
                    got = tokio::time::timeout(until - Instant::now(), consumer.recv()) => {
                        if let Ok(Ok(_)) = got {
                            metrics::counter!("scalify_persister_dropped_while_paused_total")
                                .increment(1);
                        }
                    }
                }
            }
            attempt += 1;
            metrics::counter!("scalify_persister_retries_total").increment(1);
            self.update(|s| s.retries += 1);
            match self.db.ping().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "PostgreSQL still failing; persister stays paused")
                }
            }
        }
        // Assignments made while paused are superseded by the seeks below: their starts are
        // dropped unread (the committed offsets are read once, below).
        shared.discard_starts();
        let assignment = match consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the assignment; re-creating the consumer");
                return Resumed::Recreate;
            }
        };
        let committed = waiting_on_broker(|| consumer.committed(Duration::from_secs(5))).ok();
        for e in assignment.elements() {
            let p = e.partition();
            let group = committed.as_ref().map(|c| {
                c.find_partition(e.topic(), p)
                    .map(|c| c.offset())
                    .filter(|o| matches!(o, Offset::Offset(_)))
            });
            let Some(offset) = resume_at(frontier.get(&p).copied(), group) else {
                tracing::error!(
                    partition = p,
                    "cannot read the group's committed offsets; re-creating the consumer"
                );
                return Resumed::Recreate;
            };
            let from = match offset {
                Offset::Offset(o) => Offset::Offset(continuity.start(p, o)),
                other => {
                    continuity.forget(p);
                    other
                }
            };
            if let Err(err) =
                waiting_on_broker(|| consumer.seek(e.topic(), p, from, Duration::from_secs(5)))
            {
                tracing::error!(error = %err, partition = p, "cannot seek back; re-creating the consumer");
                return Resumed::Recreate;
            }
        }
        shared.paused.store(false, Ordering::Release);
        if let Err(e) = consumer.resume(&assignment) {
            tracing::error!(error = %e, "cannot resume partitions");
        }
        metrics::gauge!("scalify_persister_paused").set(0.0);
        self.update(|s| s.paused = false);
        tracing::info!("PostgreSQL is back: persister resumed from the first unwritten offset");
        Resumed::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resume that knows neither its own progress nor the group's never starts a partition
    /// from its beginning (that would replay all of it); the group never having committed one
    /// does.
    #[test]
    fn a_partition_resumes_from_the_beginning_only_when_the_group_never_committed_it() {
        assert_eq!(resume_at(Some(7), None), Some(Offset::Offset(7)));
        assert_eq!(
            resume_at(Some(7), Some(Some(Offset::Offset(3)))),
            Some(Offset::Offset(7))
        );
        assert_eq!(
            resume_at(None, Some(Some(Offset::Offset(3)))),
            Some(Offset::Offset(3))
        );
        assert_eq!(resume_at(None, Some(None)), Some(Offset::Beginning));
        assert_eq!(resume_at(None, None), None);
    }

    #[test]
    fn pauses_that_keep_coming_back_wait_longer_up_to_a_minute() {
        assert_eq!(pause_delay(0), Duration::from_millis(50));
        assert_eq!(pause_delay(7), Duration::from_secs(5));
        assert_eq!(pause_delay(8), Duration::from_secs(5));
        assert_eq!(pause_delay(9), Duration::from_secs(10));
        assert_eq!(pause_delay(12), Duration::from_secs(60));
        assert_eq!(pause_delay(u32::MAX), Duration::from_secs(60));
        // Twenty pauses in a row spend minutes, not a second, probing.
        let total: Duration = (0..20).map(pause_delay).sum();
        assert!(total > Duration::from_secs(300), "{total:?}");
    }
}
