//! The writers (lanes): the records read for each and its write in flight, so batches are
//! written while the next ones are read, each partition by one lane, in order.

use super::*;

/// A consumed record waiting for its batch to be written.
pub(super) struct Consumed {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) room: Id,
    pub(super) message: Message,
    /// The seq epoch its seq was given in (0: unknown).
    pub(super) epoch: u64,
}

/// A batch in the database: the next offset to store per partition.
pub(super) struct Written {
    pub(super) next: HashMap<i32, i64>,
}

/// The write in flight ([`Persister::write`]).
pub(super) type WriteFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Written, StoreError>> + Send + 'a>>;

/// A record read for a lane, in the order read.
pub(super) enum Pending {
    Row(Consumed),
    /// A record that does not decode, dead-lettered with its batch.
    Dead(OwnedMessage, String),
}

/// How many batches a lane may hold read and unwritten before reading stops, when there are
/// several lanes. More than one: the consumer hands records over in runs of one partition, and
/// a lane that stopped the reading as soon as its next batch was full would keep the other
/// lanes idle (two writers drained 94–106k rows/s with one, 111–117k with four; one lane gains
/// nothing from reading further ahead, so it reads one batch ahead).
pub(super) const LANE_READ_AHEAD: usize = 4;

/// One of the persister's writers: the records read for it and its write in flight. Each
/// partition is written by one lane for the life of a consumer, so a partition's batches (and
/// a room's: its messages share a partition) commit, trim the recent window and store their
/// offsets in the order they were read; lanes write different partitions at the same time,
/// so one persister keeps more than one database connection busy.
pub(super) struct Lane<'a> {
    pub(super) read: Vec<Pending>,
    /// When the oldest record in `read` arrived (about: a write leaves it as it was).
    pub(super) started: Option<Instant>,
    /// Records of this lane's partitions went missing from the broker: its next write saves
    /// the recent windows first ([`Persister::rescue_windows`]).
    pub(super) rescue_due: bool,
    pub(super) writing: Option<WriteFuture<'a>>,
}

impl<'a> Lane<'a> {
    pub(super) fn new() -> Self {
        Lane {
            read: Vec::new(),
            started: None,
            rescue_due: false,
            writing: None,
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.read.len()
    }

    pub(super) fn push(&mut self, record: Pending) {
        self.read.push(record);
        self.started.get_or_insert_with(Instant::now);
    }

    /// Drops what was read (after a failed write: the seek back reads it again). A rescue
    /// still due stays due.
    pub(super) fn clear(&mut self) {
        self.read.clear();
        self.started = None;
    }

    /// The write of the oldest records read (at most a batch): for each partition, a run of
    /// its records from the first unwritten one on, so the offsets it stores pass nothing
    /// unwritten.
    pub(super) fn take_write(&mut self, persister: &'a Persister) -> WriteFuture<'a> {
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
pub(super) async fn next_written(lanes: &mut [Lane<'_>]) -> (usize, Result<Written, StoreError>) {
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

impl Persister {
    /// Waits for every write in flight and stores the offsets of those that succeeded (lanes
    /// write different partitions: one failing does not hold back another's). Returns whether
    /// all succeeded. Why wait rather than drop them: what they write is kept (its offsets
    /// stored), not read and written again. A write still running after `stuck_after` (a lock,
    /// a database connection gone silent: no answer, no reset) is dropped all the same, so
    /// that the watchdog's restart is not held up by it; its database part ends by itself
    /// ([`Persister::write`]).
    pub(super) async fn finish_writes(
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
    pub(super) async fn end_write(
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
}
