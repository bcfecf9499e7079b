//! What the consumer's callbacks do: at a rebalance, start each assigned partition a look-back
//! before the group's committed offset (paused if the persister is), and record the lag from
//! the client's statistics; the state they share with the consume loop.

use super::*;

/// State the rebalance and statistics callbacks share with the loop.
#[derive(Default)]
pub(super) struct Shared {
    /// How far before the offset wanted each assigned partition starts ([`crate::continuity`]).
    pub(super) lookback: i64,
    /// [`PersisterConfig::assignment_offsets_timeout`].
    pub(super) offsets_timeout: Duration,
    pub(super) paused: AtomicBool,
    pub(super) assigned: Mutex<BTreeSet<i32>>,
    /// Bumped at each rebalance: the loop drops its frontier for partitions it lost.
    pub(super) rebalances: AtomicI64,
    /// Per partition assigned since the loop last looked: where the loop wants its records
    /// from. The assignment starts each one a little earlier ([`crate::continuity`]).
    pub(super) starts: Mutex<HashMap<i32, Start>>,
    /// `starts` holds something: the loop reads this flag per record, not the lock.
    pub(super) starts_pending: AtomicBool,
}

/// Runs a librdkafka call that may wait for the broker (up to its timeout: seconds when the
/// broker is slow) without holding up the runtime's other tasks — in `serve --persister` the
/// node's connections share it. On a multi-threaded runtime the worker hands its other tasks
/// over meanwhile (`block_in_place`); elsewhere (a current-thread runtime, librdkafka's own
/// threads) the call just runs.
pub(super) fn waiting_on_broker<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}

/// Where an assigned partition's records are wanted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// The group's committed offset.
    At(i64),
    /// The group has no committed offset: from the topic's start.
    Beginning,
    /// The committed offset could not be read at the assignment: read it again before
    /// judging the partition's first record.
    Unread,
}

impl Shared {
    pub(super) fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Hands the assignments' wanted offsets to the loop's bookkeeping, once each. Called
    /// before each record is judged (set before the assignment starts fetching, they come
    /// before its first record).
    ///
    /// A committed offset the assignment could not read is read here (waiting for the broker
    /// up to 5 s, rarely: only after such an assignment). Nothing needs seeking: librdkafka
    /// started the partition at the committed offset it read itself (or, failing that, at the
    /// topic's start), so records before the offset read here are written again (idempotent)
    /// and a first record past it is a hole, stepped back over as usual.
    pub(super) fn apply_starts(
        &self,
        continuity: &mut Continuity,
        consumer: &impl Consumer<Ctx>,
        topic: &str,
    ) {
        if !self.starts_pending.load(Ordering::Acquire) {
            return;
        }
        self.starts_pending.store(false, Ordering::Release);
        let starts =
            std::mem::take(&mut *self.starts.lock().unwrap_or_else(PoisonError::into_inner));
        let unread: Vec<i32> = starts
            .iter()
            .filter(|(_, s)| **s == Start::Unread)
            .map(|(p, _)| *p)
            .collect();
        let reread = if unread.is_empty() {
            HashMap::new()
        } else {
            self.read_committed(consumer, topic, &unread, Duration::from_secs(5))
        };
        for (partition, wanted) in starts {
            let wanted = match wanted {
                Start::Unread => reread.get(&partition).copied().unwrap_or(Start::Unread),
                known => known,
            };
            match wanted {
                Start::At(next) => {
                    continuity.start(partition, next);
                }
                Start::Beginning => continuity.forget(partition),
                Start::Unread => {
                    tracing::warn!(partition, "the group's committed offset is still unreadable: the partition's first record is taken as its start");
                    metrics::counter!("scalify_persister_unchecked_starts_total").increment(1);
                    continuity.forget(partition);
                }
            }
        }
    }

    /// Drops the assignments' wanted offsets: a resume seeks every assigned partition itself.
    pub(super) fn discard_starts(&self) {
        self.starts_pending.store(false, Ordering::Release);
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The group's committed offsets of `partitions`; each `Unread` if they cannot be read.
    pub(super) fn read_committed(
        &self,
        consumer: &impl Consumer<Ctx>,
        topic: &str,
        partitions: &[i32],
        timeout: Duration,
    ) -> HashMap<i32, Start> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(topic, *p);
        }
        let committed = waiting_on_broker(|| consumer.committed_offsets(tpl, timeout));
        if let Err(e) = &committed {
            tracing::warn!(error = %e, ?partitions, "cannot read the group's committed offsets");
        }
        partitions
            .iter()
            .map(|p| {
                let start = match &committed {
                    Err(_) => Start::Unread,
                    Ok(c) => match c.find_partition(topic, *p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => Start::At(o),
                        _ => Start::Beginning,
                    },
                };
                (*p, start)
            })
            .collect()
    }

    /// Starts each partition of an assignment `lookback` records before the group's committed
    /// offset (what librdkafka would start it at), and tells the loop which offset it wants.
    pub(super) fn start_behind_committed(
        &self,
        consumer: &BaseConsumer<Ctx>,
        topic: &str,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        // Unread ones start where librdkafka finds them; the loop reads them again.
        let starts = self.read_committed(consumer, topic, &partitions, self.offsets_timeout);
        for (p, wanted) in &starts {
            if let Start::At(o) = wanted {
                let from = Offset::Offset(continuity::start_for(*o, self.lookback));
                if let Err(e) = tpl.set_partition_offset(topic, *p, from) {
                    tracing::warn!(error = %e, partition = p, "cannot set a start offset");
                }
            }
        }
        // Added to, not replaced: an incremental assignment leaves earlier ones in place.
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(starts);
        self.starts_pending.store(true, Ordering::Release);
    }
}

pub(super) struct Ctx {
    pub(super) topic: String,
    pub(super) shared: Arc<Shared>,
    /// The statistics callback writes the lag straight into the persister's status (read by
    /// the admin page), every `statistics.interval.ms`.
    pub(super) status: Arc<Mutex<PersisterStatus>>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let assigned = self.shared.assigned();
        let mut lag = BTreeMap::new();
        for (p, part) in &topic.partitions {
            if assigned.contains(p) && part.hi_offset >= 0 {
                // Lag behind what is *written* (stored after each commit), not behind what
                // was merely fetched.
                let done = part.stored_offset.max(part.committed_offset).max(0);
                let l = (part.hi_offset - done).max(0);
                metrics::gauge!("scalify_persister_lag_messages", "partition" => p.to_string())
                    .set(l as f64);
                lag.insert(*p, l);
            }
        }
        if let Ok(mut status) = self.status.lock() {
            status.lag = lag;
        }
    }
}

impl ConsumerContext for Ctx {
    /// rust-rdkafka's own, with the assignment's start offsets set first (a trait's default
    /// method cannot be called from its override, so the rest is repeated here).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if assign {
            self.shared
                .start_behind_committed(consumer, &self.topic, tpl);
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            _ => Rebalance::Error(KafkaError::Rebalance(err.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let applied = match (assign, cooperative) {
            (true, true) => consumer.incremental_assign(tpl),
            (true, false) => consumer.assign(tpl),
            (false, true) => consumer.incremental_unassign(tpl),
            (false, false) => consumer.unassign(),
        };
        if let Err(e) = applied {
            tracing::error!(error = %e, "cannot apply the rebalance");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // Commit what is stored before the partitions move, so the next owner starts
            // where this one stopped (a failure only costs redelivery).
            let _ = consumer.commit_consumer_state(CommitMode::Sync);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.shared.rebalances.fetch_add(1, Ordering::AcqRel);
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "persister assigned partitions");
                // Here, where the assignment happens: the loop does not run while paused.
                if let Ok(mut status) = self.status.lock() {
                    status.partitions = parts.iter().copied().collect();
                    status.updated_at = scalify_core::now_ms();
                }
                if let Ok(mut a) = self.shared.assigned.lock() {
                    *a = parts;
                }
                if self.shared.paused.load(Ordering::Acquire) {
                    // pause() covers only partitions assigned at the time (librdkafka #1849).
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::error!(error = %e, "cannot pause newly assigned partitions");
                    }
                }
            }
            Rebalance::Revoke(_) => {
                if let Ok(mut a) = self.shared.assigned.lock() {
                    a.clear();
                }
                if let Ok(mut status) = self.status.lock() {
                    // Another persister reports these partitions now: don't leave our last
                    // figures behind in the gauge.
                    for p in status.lag.keys() {
                        metrics::gauge!("scalify_persister_lag_messages", "partition" => p.to_string())
                            .set(0.0);
                    }
                    status.lag.clear();
                    status.partitions.clear();
                    status.updated_at = scalify_core::now_ms();
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}
