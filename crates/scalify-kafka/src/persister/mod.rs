//! The persister: a Kafka consumer group that writes the messages topic to PostgreSQL.
//!
//! At-least-once with an idempotent sink, which gives exactly-once rows:
//! - offsets are stored (`enable.auto.offset.store=false`) and committed only after the
//!   database transaction holding their messages has committed;
//! - a batch goes in with `COPY`, and a batch holding a row already stored is written again
//!   by an insert that skips such rows, so a redelivered batch stores nothing twice.
//!
//! Batches are written while the next ones are read, by up to `writers` lanes at once (2 by
//! default), each on its own connection and for its own partitions: a partition has one write
//! in flight at a time, so its batches commit, trim the recent window and store their offsets
//! in the order they were read.
//!
//! On a database error the persister **pauses** its partitions, **keeps polling** (so the
//! group does not expel it; rust-rdkafka #433), probes the database with exponential backoff,
//! and on recovery **seeks every partition back to the first unwritten offset** before
//! resuming — `resume` alone would continue after the last message handed over, skipping the
//! failed batch (librdkafka #2557). Partitions assigned by a rebalance while paused are paused
//! too (librdkafka #1849). A record that does not decode goes to the dead-letter topic with
//! the reason and its partition keeps flowing. Each partition's records must arrive without a
//! hole: one (a broker answering a fetch inside a record batch from the next batch on) is
//! stepped back over, not written past ([`crate::continuity`]). A watchdog re-creates the
//! consumer when there is lag but no progress (rust-rdkafka #597) — for instance when its
//! connections went silent with no reset, which librdkafka notices only after
//! `socket.timeout.ms` — and replaces its own client when that one cannot answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use scalify_core::{Id, Message};
use scalify_store::postgres::{Persisted, PgStore};
use scalify_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::continuity::{self, Continuity, Verdict};
use crate::ledger::Ledger;
use crate::record::{self, RoomMessage};
use crate::{backoff, DurableError, KafkaConfig};

#[derive(Debug, Clone)]
pub struct PersisterConfig {
    /// This persister's name in logs, metrics and the admin page.
    pub id: String,
    /// Most messages written in one transaction.
    pub batch_max: usize,
    /// Batches written at the same time, each on its own database connection and for its
    /// own partitions (a partition is written by one writer, in order). Two by default: a
    /// backlog drains ~25 % faster on a fast machine and ~50 % on a slower one (44k → 65–69k
    /// rows/s, where one writer misses the 50,000 rows/s target), and the node's ack tail
    /// showed no cost at 3,000 and 5,000 msgs/s (docs/performance.md). A
    /// third adds nothing. With more than one, each reads up to four batches ahead
    /// (`LANE_READ_AHEAD`): memory for `writers × 5 × batch_max` messages.
    pub writers: usize,
    /// How long a batch waits to fill before it is written anyway.
    pub batch_wait: Duration,
    /// With lag and no message received for this long (and not paused on purpose), the
    /// consumer is re-created.
    pub stuck_after: Duration,
    /// How long an assignment waits for the group's committed offsets (to start each
    /// partition a little before its own). The client's rebalance waits meanwhile. When they
    /// are not read in time the partition starts where librdkafka finds it, and the loop reads
    /// the committed offset again before it judges the partition's first record, so a record
    /// past it is still stepped back over ([`crate::continuity`]).
    pub assignment_offsets_timeout: Duration,
    /// How many records before its committed offset the persister starts a partition, and
    /// the first look-back the watchdog widens from ([`crate::continuity`]): the workaround
    /// for a broker that answers a fetch inside a record batch from the next batch on.
    /// 0 turns it off, for Apache Kafka and Redpanda, which never skip records.
    pub lookback: i64,
}

impl PersisterConfig {
    pub fn new(id: impl Into<String>) -> Self {
        PersisterConfig {
            id: id.into(),
            batch_max: 2000,
            writers: 2,
            batch_wait: Duration::from_millis(20),
            stuck_after: Duration::from_secs(30),
            assignment_offsets_timeout: Duration::from_secs(5),
            lookback: continuity::LOOKBACK,
        }
    }
}

pub use scalify_core::PersisterStatus;

mod lanes;
mod rebalance;
mod sink;
mod watchdog;

use lanes::{next_written, Consumed, Lane, Pending, Written, LANE_READ_AHEAD};
use rebalance::{waiting_on_broker, Ctx, Shared};
use sink::Resumed;
pub(crate) use watchdog::observer;
use watchdog::{Progress, WATCH_EVERY};

/// What the consume loop woke up for.
enum Step<R> {
    Stop,
    /// A lane's write ended.
    Wrote(usize, Result<Written, StoreError>),
    Received(R),
    /// The watchdog's check is due (the loop may be blocked on a write, not reading).
    Check,
}

/// Why a consumer incarnation ended.
enum Ended {
    Stopped,
    Stuck,
}

pub struct Persister {
    kafka: KafkaConfig,
    config: PersisterConfig,
    db: Arc<PgStore>,
    ledger: Ledger,
    dead_letters: FutureProducer,
    /// A group-less view of the topic (watermarks, the group's committed offsets) for the
    /// watchdog: it must see the whole group's progress, not only this member's partitions.
    /// Replaced when it cannot answer (its connections may be as dead as the consumer's).
    observer: Mutex<Arc<BaseConsumer>>,
    status: Arc<Mutex<PersisterStatus>>,
    /// Window entries written to the database whose trim failed, for the next batch's trim.
    untrimmed: Mutex<Vec<(Id, u64)>>,
    /// Pauses since the last batch written ([`Persister::pause_until_healthy`] waits longer
    /// for each).
    pauses_in_a_row: std::sync::atomic::AtomicU32,
}

impl Persister {
    pub fn new(
        kafka: KafkaConfig,
        config: PersisterConfig,
        db: Arc<PgStore>,
        ledger: Ledger,
    ) -> Result<Self, DurableError> {
        let dead_letters: FutureProducer = kafka
            .client("dlq")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(|e| {
                DurableError::Kafka(format!("cannot create the dead-letter producer: {e}"))
            })?;
        let observer = observer(&kafka)?;
        let status = PersisterStatus {
            id: config.id.clone(),
            ..PersisterStatus::default()
        };
        Ok(Persister {
            kafka,
            config,
            db,
            ledger,
            dead_letters,
            observer: Mutex::new(Arc::new(observer)),
            status: Arc::new(Mutex::new(status)),
            untrimmed: Mutex::new(Vec::new()),
            pauses_in_a_row: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A live view of this persister's state.
    pub fn status(&self) -> Arc<Mutex<PersisterStatus>> {
        self.status.clone()
    }

    /// Rows written (and records dead-lettered) so far.
    fn written(&self) -> u64 {
        self.status
            .lock()
            .map(|s| s.persisted + s.dead_lettered)
            .unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut PersisterStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
            s.updated_at = scalify_core::now_ms();
        }
    }

    fn consumer(&self, shared: Arc<Shared>) -> Result<StreamConsumer<Ctx>, DurableError> {
        let consumer: StreamConsumer<Ctx> = self
            .kafka
            .client_with_defaults(
                &format!("persister-{}", self.config.id),
                &[
                    ("auto.commit.interval.ms", "1000"),
                    ("session.timeout.ms", "10000"),
                    ("statistics.interval.ms", "2000"),
                    // How long a fetch may wait for data. A Kafka broker answers as soon as
                    // data arrives; the test broker (tansu) holds every fetch about this long
                    // and lists every stored batch of each partition per fetch, so this sets
                    // both its sink rate and its CPU: 500 ms (librdkafka's default) capped the
                    // sink at ~53k rows/s on a fast machine, 50 ms made tansu list 20 times a
                    // second, taking CPU from the acks: ack p50 at 3,000 msgs/s 7–9 ms with
                    // 50, 4.4–5.1 ms with 100–500, while the sink stayed PostgreSQL-bound
                    // (docs/performance.md). An idle persister sends ~10 fetches/s
                    // per broker.
                    ("fetch.wait.max.ms", "100"),
                ],
            )
            // What the design rests on (offsets stored only after the database commit, no
            // message skipped on a fresh group): not overridable.
            .set("group.id", &self.kafka.group)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create_with_context(Ctx {
                topic: self.kafka.topic.clone(),
                shared,
                status: self.status.clone(),
            })
            .map_err(|e| DurableError::Kafka(format!("cannot create the consumer: {e}")))?;
        consumer
            .subscribe(&[&self.kafka.topic])
            .map_err(|e| DurableError::Kafka(format!("cannot subscribe: {e}")))?;
        Ok(consumer)
    }

    /// Runs until `stop` is cancelled, re-creating the consumer when the watchdog finds it
    /// stuck. Leaves the group cleanly (committing what was written) on the way out.
    pub async fn run(self, stop: CancellationToken) -> Result<(), DurableError> {
        // Doubled each time a consumer is found stuck without having written a row: a committed
        // offset inside a partition's last batch, further in than the look-back, on a broker
        // that answers from the next batch on, gets no record at all (crate::continuity).
        let mut lookback = self.config.lookback;
        loop {
            let shared = Arc::new(Shared {
                lookback,
                offsets_timeout: self.config.assignment_offsets_timeout,
                ..Shared::default()
            });
            let written_before = self.written();
            let consumer = self.consumer(shared.clone())?;
            match self.consume(&consumer, &shared, &stop).await {
                Ended::Stopped => {
                    // Leave the group cleanly, committing what was written. These calls wait
                    // for the broker: off the runtime's threads.
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = consumer.commit_consumer_state(CommitMode::Sync);
                        consumer.unsubscribe();
                        drop(consumer);
                    })
                    .await;
                    tracing::info!(id = %self.config.id, "persister stopped");
                    return Ok(());
                }
                Ended::Stuck => {
                    lookback = if self.written() == written_before {
                        continuity::widen(lookback)
                    } else {
                        self.config.lookback
                    };
                    metrics::counter!("scalify_persister_watchdog_restarts_total").increment(1);
                    self.update(|s| s.restarts += 1);
                    tracing::warn!(
                        lookback,
                        "persister has lag but makes no progress: re-creating its Kafka consumer"
                    );
                    // Not waited for: the old client may never hear from the broker again, and
                    // its close (which waits for the broker) runs off the runtime's threads. An
                    // offset it stored but could not commit is read again by the new one, and
                    // writing a message twice stores it once.
                    let _ = consumer.commit_consumer_state(CommitMode::Async);
                    tokio::task::spawn_blocking(move || drop(consumer));
                }
            }
        }
    }

    async fn consume(
        &self,
        consumer: &StreamConsumer<Ctx>,
        shared: &Arc<Shared>,
        stop: &CancellationToken,
    ) -> Ended {
        // The next offset to write, per partition, as known from this incarnation's commits.
        let mut frontier: HashMap<i32, i64> = HashMap::new();
        // Where each partition's next record must be: a hole is stepped back over, not
        // written past (crate::continuity says why).
        let mut continuity = Continuity::new(shared.lookback);
        let mut seen_rebalances = 0;
        // Each lane writes its batch while the others write theirs and the consumer reads on.
        let mut lanes: Vec<Lane<'_>> = (0..self.config.writers.max(1))
            .map(|_| Lane::new())
            .collect();
        let read_ahead = if lanes.len() > 1 {
            self.config.batch_max * LANE_READ_AHEAD
        } else {
            self.config.batch_max
        };
        // Which lane writes each partition: fixed for this consumer's life (see `Lane`).
        let mut lane_of: HashMap<i32, usize> = HashMap::new();
        let mut progress = Progress {
            committed: -1,
            since: Instant::now(),
            observer_renewed: None,
        };
        let mut next_check = Instant::now() + WATCH_EVERY;
        loop {
            let rebalances = shared.rebalances.load(Ordering::Acquire);
            if rebalances != seen_rebalances {
                seen_rebalances = rebalances;
                let assigned = shared.assigned();
                frontier.retain(|p, _| assigned.contains(p));
            }
            // Until the next batch is due. A lane whose write is in flight cannot start another
            // (the write's end wakes the loop): counting it would spin on zero timeouts.
            let wait = lanes
                .iter()
                .filter(|l| l.writing.is_none())
                .filter_map(|l| l.started)
                .map(|t| self.config.batch_wait.saturating_sub(t.elapsed()))
                .min()
                .unwrap_or(Duration::from_millis(500));
            // A lane with its read-ahead full waits for its write in flight before anything
            // more is read.
            let full = lanes.iter().any(|l| l.pending() >= read_ahead);
            let writing = lanes.iter().any(|l| l.writing.is_some());
            let step = tokio::select! {
                () = stop.cancelled() => Step::Stop,
                (lane, w) = next_written(&mut lanes), if writing => Step::Wrote(lane, w),
                r = tokio::time::timeout(wait, consumer.recv()), if !full => Step::Received(r),
                // Without it, a write the database holds (a lock, a connection gone silent)
                // with the read-ahead full would keep the watchdog from ever looking.
                () = tokio::time::sleep_until(next_check.into()) => Step::Check,
            };
            match step {
                Step::Stop => {
                    // Finish the writes in flight, write what is already read, then stop.
                    if !self
                        .finish_writes(&mut lanes, consumer, shared, &mut frontier)
                        .await
                    {
                        return Ended::Stopped;
                    }
                    for lane in &mut lanes {
                        while lane.pending() > 0 {
                            let write = lane.take_write(self);
                            // Nothing after a failed or dropped batch may be stored; what is
                            // left is read again by whoever takes the partitions next.
                            if !self.end_write(write, consumer, shared, &mut frontier).await {
                                return Ended::Stopped;
                            }
                        }
                    }
                    return Ended::Stopped;
                }
                Step::Wrote(lane, result) => {
                    lanes[lane].writing = None;
                    match result {
                        Ok(done) => {
                            self.pauses_in_a_row.store(0, Ordering::Release);
                            self.store_offsets(consumer, shared, done, &mut frontier)
                        }
                        Err(e) => {
                            // The other lanes' writes finish first (what they wrote is kept).
                            // What was read behind the failed batch is dropped too: the seek
                            // back to the frontier reads it again.
                            self.finish_writes(&mut lanes, consumer, shared, &mut frontier)
                                .await;
                            lanes.iter_mut().for_each(Lane::clear);
                            match self
                                .pause_until_healthy(
                                    consumer,
                                    shared,
                                    &frontier,
                                    &mut continuity,
                                    stop,
                                    e,
                                )
                                .await
                            {
                                Resumed::Yes => {
                                    progress.since = Instant::now();
                                }
                                Resumed::Stopped => return Ended::Stopped,
                                Resumed::Recreate => return Ended::Stuck,
                            }
                        }
                    }
                }
                Step::Received(Ok(Ok(m))) => {
                    let (partition, offset) = (m.partition(), m.offset());
                    shared.apply_starts(&mut continuity, consumer, &self.kafka.topic);
                    let lane = match lane_of.get(&partition) {
                        Some(&lane) => lane,
                        None => {
                            // The lane with the fewest partitions so far.
                            let lane = (0..lanes.len())
                                .min_by_key(|i| lane_of.values().filter(|l| *l == i).count())
                                .unwrap_or(0);
                            lane_of.insert(partition, lane);
                            lane
                        }
                    };
                    let lane = &mut lanes[lane];
                    // Whether to write the record, and whether it was read before.
                    let (take, again) = match continuity.check(partition, offset) {
                        Verdict::Take => (true, false),
                        Verdict::Again => (true, true),
                        Verdict::StepBack(to) => {
                            tracing::warn!(
                                partition,
                                received = offset,
                                seek_to = to,
                                "the broker skipped records: stepping back"
                            );
                            metrics::counter!("scalify_persister_step_backs_total").increment(1);
                            if let Err(e) = waiting_on_broker(|| {
                                consumer.seek(
                                    &self.kafka.topic,
                                    partition,
                                    Offset::Offset(to),
                                    Duration::from_secs(5),
                                )
                            }) {
                                // The new consumer starts at the committed offsets, which
                                // never pass an unwritten record.
                                tracing::error!(error = %e, partition,
                                    "cannot step back; re-creating the consumer");
                                self.finish_writes(&mut lanes, consumer, shared, &mut frontier)
                                    .await;
                                return Ended::Stuck;
                            }
                            (false, false)
                        }
                        Verdict::Hole(missing) => {
                            tracing::error!(partition, ?missing,
                                "records missing from the broker (deleted by retention?): written past them");
                            metrics::counter!("scalify_persister_missing_records_total")
                                .increment((missing.end - missing.start) as u64);
                            // This partition's lane: its rooms' windows are trimmed by its
                            // writes only.
                            lane.rescue_due = true;
                            (true, false)
                        }
                    };
                    if take {
                        let owned = m.detach();
                        match record::decode_keyed(owned.key(), owned.payload().unwrap_or_default())
                        {
                            Ok(RoomMessage {
                                room_id,
                                message,
                                epoch,
                            }) => lane.push(Pending::Row(Consumed {
                                partition,
                                offset,
                                room: room_id,
                                message,
                                epoch,
                            })),
                            // Dead-lettered when first read.
                            Err(_) if again => {}
                            Err(e) => lane.push(Pending::Dead(owned, e.to_string())),
                        }
                    }
                }
                Step::Received(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                }
                Step::Received(Err(_)) => {} // nothing arrived within `wait`
                Step::Check => {}            // done below
            }
            for lane in &mut lanes {
                let due = lane.pending() >= self.config.batch_max
                    || lane
                        .started
                        .is_some_and(|t| t.elapsed() >= self.config.batch_wait);
                if due && lane.writing.is_none() {
                    let write = lane.take_write(self);
                    lane.writing = Some(write);
                }
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + WATCH_EVERY;
                if self.group_stuck(&mut progress).await {
                    self.finish_writes(&mut lanes, consumer, shared, &mut frontier)
                        .await;
                    return Ended::Stuck;
                }
            }
        }
    }
}
