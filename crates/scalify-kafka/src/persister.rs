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

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use serde::Serialize;
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

/// What the admin page and `/metrics` show of a persister.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct PersisterStatus {
    pub id: String,
    /// Paused because the database fails.
    pub paused: bool,
    pub partitions: Vec<i32>,
    /// Messages not yet written, per partition (from the client's statistics).
    pub lag: BTreeMap<i32, i64>,
    pub persisted: u64,
    pub dead_lettered: u64,
    pub retries: u64,
    pub restarts: u64,
    /// Last update, ms since the epoch.
    pub updated_at: i64,
}

/// State the rebalance and statistics callbacks share with the loop.
#[derive(Default)]
struct Shared {
    /// How far before the offset wanted each assigned partition starts ([`crate::continuity`]).
    lookback: i64,
    /// [`PersisterConfig::assignment_offsets_timeout`].
    offsets_timeout: Duration,
    paused: AtomicBool,
    assigned: Mutex<BTreeSet<i32>>,
    /// Bumped at each rebalance: the loop drops its frontier for partitions it lost.
    rebalances: AtomicI64,
    /// Per partition assigned since the loop last looked: where the loop wants its records
    /// from. The assignment starts each one a little earlier ([`crate::continuity`]).
    starts: Mutex<HashMap<i32, Start>>,
    /// `starts` holds something: the loop reads this flag per record, not the lock.
    starts_pending: AtomicBool,
}

/// Runs a librdkafka call that may wait for the broker (up to its timeout: seconds when the
/// broker is slow) without holding up the runtime's other tasks — in `serve --persister` the
/// node's connections share it. On a multi-threaded runtime the worker hands its other tasks
/// over meanwhile (`block_in_place`); elsewhere (a current-thread runtime, librdkafka's own
/// threads) the call just runs.
fn waiting_on_broker<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}

/// Where an assigned partition's records are wanted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The group's committed offset.
    At(i64),
    /// The group has no committed offset: from the topic's start.
    Beginning,
    /// The committed offset could not be read at the assignment: read it again before
    /// judging the partition's first record.
    Unread,
}

impl Shared {
    fn assigned(&self) -> BTreeSet<i32> {
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
    fn apply_starts(
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
    fn discard_starts(&self) {
        self.starts_pending.store(false, Ordering::Release);
        self.starts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The group's committed offsets of `partitions`; each `Unread` if they cannot be read.
    fn read_committed(
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
    fn start_behind_committed(
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

struct Ctx {
    topic: String,
    shared: Arc<Shared>,
    /// The statistics callback writes the lag straight into the persister's status (read by
    /// the admin page), every `statistics.interval.ms`.
    status: Arc<Mutex<PersisterStatus>>,
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

/// How often the watchdog looks at the group's progress.
const WATCH_EVERY: Duration = Duration::from_secs(3);
/// Window messages written per transaction by [`Persister::rescue_windows`].
const RESCUE_PAGE: u32 = 1000;

/// Writes `rows` in one transaction, or — when the database refuses the batch (not a
/// connection problem) — row by row, so one bad message cannot stall the others. Returns
/// what was written and the rows refused (index into `rows`, the database's reason).
async fn persist_rows(
    db: &PgStore,
    rows: &[(Id, Message)],
) -> Result<(Persisted, Vec<(usize, String)>), StoreError> {
    match db.persist(rows).await {
        Ok(outcome) => Ok((outcome, Vec::new())),
        Err(StoreError::Rejected(why)) => {
            tracing::warn!(%why, "batch refused; writing its messages one by one");
            let (mut total, mut refused) = (Persisted::default(), Vec::new());
            for (i, row) in rows.iter().enumerate() {
                match db.persist(std::slice::from_ref(row)).await {
                    Ok(o) => {
                        total.inserted += o.inserted;
                        total.redelivered += o.redelivered;
                        total.conflicts.extend(o.conflicts);
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

/// A consumed record waiting for its batch to be written.
struct Consumed {
    partition: i32,
    offset: i64,
    room: Id,
    message: Message,
}

/// How a pause ended.
enum Resumed {
    Yes,
    Stopped,
    /// Seeking back failed: only a new consumer (starting at the committed offsets, which
    /// never pass an unwritten message) is safe.
    Recreate,
}

/// A batch in the database: the next offset to store per partition.
struct Written {
    next: HashMap<i32, i64>,
}

/// The write in flight ([`Persister::write`]).
type WriteFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Written, StoreError>> + Send + 'a>>;

/// A record read for a lane, in the order read.
enum Pending {
    Row(Consumed),
    /// A record that does not decode, dead-lettered with its batch.
    Dead(OwnedMessage, String),
}

/// How many batches a lane may hold read and unwritten before reading stops, when there are
/// several lanes. More than one: the consumer hands records over in runs of one partition, and
/// a lane that stopped the reading as soon as its next batch was full would keep the other
/// lanes idle (two writers drained 94–106k rows/s with one, 111–117k with four; one lane gains
/// nothing from reading further ahead, so it reads one batch ahead).
const LANE_READ_AHEAD: usize = 4;

/// One of the persister's writers: the records read for it and its write in flight. Each
/// partition is written by one lane for the life of a consumer, so a partition's batches (and
/// a room's: its messages share a partition) commit, trim the recent window and store their
/// offsets in the order they were read; lanes write different partitions at the same time,
/// so one persister keeps more than one database connection busy.
struct Lane<'a> {
    read: Vec<Pending>,
    /// When the oldest record in `read` arrived (about: a write leaves it as it was).
    started: Option<Instant>,
    /// Records of this lane's partitions went missing from the broker: its next write saves
    /// the recent windows first ([`Persister::rescue_windows`]).
    rescue_due: bool,
    writing: Option<WriteFuture<'a>>,
}

impl<'a> Lane<'a> {
    fn new() -> Self {
        Lane {
            read: Vec::new(),
            started: None,
            rescue_due: false,
            writing: None,
        }
    }

    fn pending(&self) -> usize {
        self.read.len()
    }

    fn push(&mut self, record: Pending) {
        self.read.push(record);
        self.started.get_or_insert_with(Instant::now);
    }

    /// Drops what was read (after a failed write: the seek back reads it again). A rescue
    /// still due stays due.
    fn clear(&mut self) {
        self.read.clear();
        self.started = None;
    }

    /// The write of the oldest records read (at most a batch): for each partition, a run of
    /// its records from the first unwritten one on, so the offsets it stores pass nothing
    /// unwritten.
    fn take_write(&mut self, persister: &'a Persister) -> WriteFuture<'a> {
        let rest = self
            .read
            .split_off(self.read.len().min(persister.config.batch_max));
        let taken = std::mem::replace(&mut self.read, rest);
        if self.read.is_empty() {
            self.started = None;
        }
        let (mut batch, mut dead) = (Vec::with_capacity(taken.len()), Vec::new());
        for record in taken {
            match record {
                Pending::Row(c) => batch.push(c),
                Pending::Dead(m, why) => dead.push((m, why)),
            }
        }
        Box::pin(persister.write(batch, dead, std::mem::take(&mut self.rescue_due)))
    }
}

/// The first lane whose write ends, and how it ended.
async fn next_written(lanes: &mut [Lane<'_>]) -> (usize, Result<Written, StoreError>) {
    std::future::poll_fn(|cx| {
        for (i, lane) in lanes.iter_mut().enumerate() {
            if let Some(w) = lane.writing.as_mut() {
                if let std::task::Poll::Ready(r) = w.as_mut().poll(cx) {
                    return std::task::Poll::Ready((i, r));
                }
            }
        }
        std::task::Poll::Pending
    })
    .await
}

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
}

fn observer(kafka: &KafkaConfig) -> Result<BaseConsumer, DurableError> {
    kafka
        .client("watchdog")
        .set("group.id", &kafka.group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| DurableError::Kafka(format!("cannot create the watchdog's client: {e}")))
}

/// The group's progress on the topic, as the watchdog last saw it changing.
struct Progress {
    committed: i64,
    since: Instant,
    /// When the watchdog last replaced its own client (at most once per `stuck_after`, so a
    /// broker that is down does not cost a new client every check).
    observer_renewed: Option<Instant>,
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
                        Ok(done) => self.store_offsets(consumer, shared, done, &mut frontier),
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
                            Ok(RoomMessage { room_id, message }) => {
                                lane.push(Pending::Row(Consumed {
                                    partition,
                                    offset,
                                    room: room_id,
                                    message,
                                }))
                            }
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

    /// Waits for every write in flight and stores the offsets of those that succeeded (lanes
    /// write different partitions: one failing does not hold back another's). Returns whether
    /// all succeeded. Why wait rather than drop them: what they write is kept (its offsets
    /// stored), not read and written again. A write still running after `stuck_after` (a lock,
    /// a database connection gone silent: no answer, no reset) is dropped all the same, so
    /// that the watchdog's restart is not held up by it; its database part ends by itself
    /// ([`Persister::write`]).
    async fn finish_writes(
        &self,
        lanes: &mut [Lane<'_>],
        consumer: &StreamConsumer<Ctx>,
        shared: &Shared,
        frontier: &mut HashMap<i32, i64>,
    ) -> bool {
        let mut all = true;
        for lane in lanes {
            if let Some(w) = lane.writing.take() {
                all &= self.end_write(w, consumer, shared, frontier).await;
            }
        }
        all
    }

    /// Waits for one write, at most `stuck_after`, and stores its offsets if it succeeded.
    /// Returns whether it did. The one place a write is waited for outside the loop's `select!`
    /// (writes in flight at a restart or a stop, and a stop's last writes).
    async fn end_write(
        &self,
        write: WriteFuture<'_>,
        consumer: &StreamConsumer<Ctx>,
        shared: &Shared,
        frontier: &mut HashMap<i32, i64>,
    ) -> bool {
        match tokio::time::timeout(self.config.stuck_after, write).await {
            Ok(Ok(done)) => {
                self.store_offsets(consumer, shared, done, frontier);
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(
                    "a batch write did not end in time: dropped (its rows are read again)"
                );
                false
            }
        }
    }

    /// The watchdog: true when the topic has unwritten messages but the group's committed
    /// offsets have not moved for [`PersisterConfig::stuck_after`]. Then this member re-creates
    /// its consumer and so rejoins the group: it catches clients that never recover after a
    /// broker restart (rust-rdkafka #597) and a group left without a working assignment (seen
    /// with a test broker when a member is killed mid-rebalance).
    async fn group_stuck(&self, progress: &mut Progress) -> bool {
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let topic = self.kafka.topic.clone();
        let seen = tokio::task::spawn_blocking(
            move || -> Result<(i64, i64), rdkafka::error::KafkaError> {
                let timeout = Duration::from_secs(5);
                let md = observer.fetch_metadata(Some(&topic), timeout)?;
                let partitions: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic)
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition(&topic, *p);
                }
                let committed = observer.committed_offsets(tpl, timeout)?;
                let (mut done, mut lag) = (0i64, 0i64);
                for p in partitions {
                    let (low, high) = observer.fetch_watermarks(&topic, p, timeout)?;
                    let at = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => low,
                    };
                    done += at;
                    lag += (high - at).max(0);
                }
                Ok((done, lag))
            },
        )
        .await;
        let (committed, lag) = match seen {
            Ok(Ok(v)) => v,
            // The broker cannot be asked: that is stuck too, if it lasts. The next check asks
            // through a new client, in case the fault is this one's connections.
            failed => {
                if let Ok(Err(e)) = failed {
                    tracing::warn!(error = %e, "the watchdog cannot read the group's progress");
                }
                if progress
                    .observer_renewed
                    .is_none_or(|t| t.elapsed() >= self.config.stuck_after)
                {
                    progress.observer_renewed = Some(Instant::now());
                    self.renew_observer();
                }
                (progress.committed, 1)
            }
        };
        // This member's own view too: the high watermarks its fetches returned (the
        // statistics callback). A broker whose ListOffsets answer is off (the test broker's
        // memory engine answers the last batch's base offset + 1) still shows the lag here.
        let own_lag: i64 = self
            .status
            .lock()
            .map(|s| s.lag.values().sum())
            .unwrap_or_default();
        let lag = lag.max(own_lag);
        if lag == 0 || committed != progress.committed {
            progress.committed = committed;
            progress.since = Instant::now();
            return false;
        }
        progress.since.elapsed() > self.config.stuck_after
    }

    fn renew_observer(&self) {
        let fresh = match observer(&self.kafka) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                tracing::error!(error = %e, "cannot re-create the watchdog's client");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *self.observer.lock().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        // Its close may wait for the broker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Writes the batch (and dead letters) and trims the recent window, and returns the
    /// offsets to store ([`Persister::store_offsets`] stores them). On error none is stored:
    /// the caller pauses and re-reads from the frontier (writing a batch again is idempotent).
    /// With `rescue`, every recent window is written to the database before the trim
    /// ([`Persister::rescue_windows`]).
    async fn write(
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
        // The window keeps everything up to each room's newest seq written here.
        let mut newest: HashMap<Id, u64> = HashMap::new();
        for c in &batch {
            let e = newest.entry(c.room).or_default();
            *e = (*e).max(c.message.seq);
        }
        let positions: Vec<(i32, i64)> = batch.iter().map(|c| (c.partition, c.offset)).collect();
        let rows: Vec<(Id, Message)> = batch.into_iter().map(|c| (c.room, c.message)).collect();
        // The database's part runs as a task of its own: a write dropped while it runs (by the
        // watchdog or a stop, after `stuck_after`) leaves it to end by itself. Dropping a `COPY`
        // mid-way instead leaves its pooled connection out of step with the server (sqlx
        // writes `CopyFail` and does not read the answer), and the next write on that
        // connection fails at once. A write that ends after it was dropped is harmless: its
        // rows are read and written again (found stored) by whoever resumes.
        let db = self.db.clone();
        let (persisted, rows) = tokio::spawn(async move {
            let persisted = persist_rows(&db, &rows).await;
            (persisted, rows)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the batch write task failed: {e}")))?;
        let (outcome, refused) = persisted?;
        let refetched = |i: usize| {
            let (room, message) = &rows[i];
            self.refetched(*room, message, positions[i])
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
        for (msg, reason) in &dead {
            self.dead_letter(msg, reason)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        if rescue {
            let saved = self.rescue_windows().await?;
            metrics::counter!("scalify_persister_rescued_total").increment(saved);
            tracing::warn!(
                saved,
                "records were missing from the broker: wrote the recent windows to the database"
            );
        }
        // A failed trim is redone by the room's next batch: trimming is "everything up to seq".
        let newest: Vec<(Id, u64)> = newest.into_iter().collect();
        if let Err(e) = self.ledger.trim(&newest).await {
            tracing::warn!(error = %e, "cannot trim the recent window (retried with the next batch)");
        }
        let (persisted, dead_n) = (outcome.inserted as u64, dead.len() as u64);
        self.update(|s| {
            s.persisted += persisted;
            s.dead_lettered += dead_n;
        });
        Ok(Written { next })
    }

    /// Writes every message of every room's recent window to the database, and returns how
    /// many were not there yet. Why: when records went missing from the broker (a hole that
    /// reached offset 0 — deleted by retention before they were written), their messages'
    /// only copy left is in the windows, and the trim after the next batch (everything up to
    /// each room's newest seq written) would drop them. The write is idempotent: what is
    /// stored already is found stored. A window message the database refuses (say, its seq
    /// holds another message) is logged and not written.
    async fn rescue_windows(&self) -> Result<u64, StoreError> {
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
                let (outcome, refused) = persist_rows(&self.db, &rows).await?;
                saved += outcome.inserted as u64;
                for (i, why) in refused {
                    tracing::error!(%room, seq = rows[i].1.seq, %why,
                        "the database refuses a recent window's message");
                }
                for m in &outcome.conflicts {
                    tracing::error!(%room, seq = m.seq, id = %m.id,
                        "a recent window's message conflicts with the database: not written");
                }
                if !full {
                    break;
                }
            }
        }
        Ok(saved)
    }

    /// Stores a written batch's offsets (committed with the next auto-commit) and advances the
    /// frontier of the partitions still assigned.
    fn store_offsets(
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
    fn refetched(
        &self,
        room: Id,
        message: &Message,
        (partition, offset): (i32, i64),
    ) -> OwnedMessage {
        OwnedMessage::new(
            Some(record::encode(room, message)),
            Some(room.to_string().into_bytes()),
            self.kafka.topic.clone(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    async fn dead_letter(&self, msg: &OwnedMessage, reason: &str) -> Result<(), DurableError> {
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
    async fn pause_until_healthy(
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
        let mut attempt = 0;
        loop {
            let delay = backoff(attempt, Duration::from_secs(5));
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
            let offset = match frontier.get(&p) {
                Some(o) => Offset::Offset(*o),
                None => committed
                    .as_ref()
                    .and_then(|c| c.find_partition(e.topic(), p))
                    .map(|c| c.offset())
                    .filter(|o| matches!(o, Offset::Offset(_)))
                    .unwrap_or(Offset::Beginning),
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
