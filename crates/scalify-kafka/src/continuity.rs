//! Offset continuity: the persister checks that each partition's records reach it without a
//! hole, and steps back over one instead of writing on past it.
//!
//! Why: only idempotent producers write the messages topic and it is never compacted, so its
//! offsets have no holes; a record past the offset expected means the broker skipped some.
//! A Kafka broker answers a fetch at an offset inside a record batch with that whole batch
//! (the client drops the records before the offset). The test broker's memory engine (tansu
//! 0.6.0, `DynoStore::fetch`) answers from the first batch *starting* at or after the offset,
//! so a committed offset inside a batch — a persister batch cut by `batch_max` mid-way
//! through a produced batch, then a restart, a rebalance or a seek back after a database
//! error — skipped the rest of that batch: silently when later records followed (they were
//! written, the skipped ones never), and for good when none did (nothing came, the lag
//! stayed). So the persister never starts a partition exactly at the offset it wants: it
//! starts [`LOOKBACK`] records earlier and writes them again (idempotent); and when a
//! record still comes past the offset expected, it seeks twice as far back, until the batch
//! holding that offset comes. Only a hole that reaches offset 0 (records deleted by
//! retention) is accepted, and reported. When no record comes at all (the offset wanted is in
//! the partition's last batch, further in than the look-back), the watchdog finds the
//! persister stuck and re-creates its consumer with the look-back doubled ([`widen`]).
//!
//! Pure bookkeeping, no I/O: the persister does the seeking.

use std::collections::HashMap;
use std::ops::Range;

/// How far before the offset it wants the persister starts a partition. Records read again
/// cost a fetch and an idempotent write each (found stored: no row added). A produced batch holds at most librdkafka's
/// `batch.num.messages` (10,000) records; at 10,000 msgs/s over 6 partitions and a 5-ms
/// linger it holds about 8, after a broker outage up to `batch.size` (1 MB, some 3,000 of
/// our records): a hole past this is closed by a step or two back.
pub const LOOKBACK: i64 = 1024;

/// The widest look-back: past librdkafka's largest default batch (10,000 records), and
/// bounded so a consumer stuck for another reason reads again at most this much per partition.
pub const MAX_LOOKBACK: i64 = 64 * 1024;

/// The look-back after a consumer made no progress with `lookback` (none stays none: the
/// look-back is off on a broker that never skips records).
pub fn widen(lookback: i64) -> i64 {
    (lookback * 2).min(MAX_LOOKBACK)
}

/// Where to start a partition whose records are wanted from `next` on.
pub fn start_for(next: i64, lookback: i64) -> i64 {
    (next - lookback).max(0)
}

/// What to do with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The record expected next: write it.
    Take,
    /// Before the offset expected: read again by the look-back or a step back, so most
    /// likely written already. Write it again all the same (the write is idempotent): if the
    /// broker's log was cut below the committed offset and refilled, these are new messages.
    Again,
    /// Past the offset expected: drop it and seek the partition to this offset.
    StepBack(i64),
    /// A hole that starting at offset 0 did not close: these offsets are gone from the
    /// broker. The record is written (there is nothing else left to do).
    Hole(Range<i64>),
}

#[derive(Debug, Clone, Copy)]
struct Expected {
    next: i64,
    /// Where the partition was last started or sought to, until `next` comes.
    stepped_to: Option<i64>,
}

/// The next offset expected per partition, for partitions whose position is known.
#[derive(Debug)]
pub struct Continuity {
    partitions: HashMap<i32, Expected>,
    lookback: i64,
}

impl Continuity {
    pub fn new(lookback: i64) -> Self {
        Continuity {
            partitions: HashMap::new(),
            lookback: lookback.max(0),
        }
    }

    /// The persister wants `partition`'s records from `next` on (after an assignment, the
    /// group's committed offset; after a pause, the first unwritten one). Returns the offset
    /// to start the partition at instead: the look-back ([`LOOKBACK`] at first) earlier.
    pub fn start(&mut self, partition: i32, next: i64) -> i64 {
        let from = start_for(next, self.lookback);
        self.partitions.insert(
            partition,
            Expected {
                next,
                stepped_to: (from < next).then_some(from),
            },
        );
        from
    }

    /// The partition starts where the broker says (no committed offset: the topic's start);
    /// its first record is taken as the start.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Judges a delivered record.
    pub fn check(&mut self, partition: i32, offset: i64) -> Verdict {
        let e = self.partitions.entry(partition).or_insert(Expected {
            next: offset,
            stepped_to: None,
        });
        if offset == e.next {
            e.next += 1;
            e.stepped_to = None;
            return Verdict::Take;
        }
        if offset < e.next {
            return Verdict::Again;
        }
        let target = match e.stepped_to {
            Some(0) => {
                let hole = e.next..offset;
                e.next = offset + 1;
                e.stepped_to = None;
                return Verdict::Hole(hole);
            }
            // A stale record from before the last seek is judged like a fresh one: at worst
            // the next step goes further back than needed.
            Some(prior) => e.next - 2 * (e.next - prior),
            // Without a look-back (a broker that never skips), a hole all the same is closed
            // by steps back from one record.
            None => e.next - self.lookback.max(1),
        }
        .max(0);
        e.stepped_to = Some(target);
        Verdict::StepBack(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_starts_behind_the_offset_wanted_and_skips_up_to_it() {
        let mut c = Continuity::new(LOOKBACK);
        assert_eq!(c.start(0, 5000), 5000 - LOOKBACK);
        assert_eq!(c.check(0, 4000), Verdict::Again);
        assert_eq!(c.check(0, 4999), Verdict::Again);
        assert_eq!(c.check(0, 5000), Verdict::Take);
        assert_eq!(c.check(0, 5001), Verdict::Take);
        assert_eq!(c.check(0, 5001), Verdict::Again);
        // Near the partition's start: from 0.
        assert_eq!(c.start(1, 10), 0);
        assert_eq!(c.check(1, 10), Verdict::Take);
        // Position unknown: the first record is the start.
        assert_eq!(c.check(2, 40), Verdict::Take);
        assert_eq!(c.check(2, 41), Verdict::Take);
        c.forget(0);
        assert_eq!(c.check(0, 3), Verdict::Take);
    }

    #[test]
    fn a_hole_steps_back_twice_as_far_until_the_expected_offset_comes() {
        let mut c = Continuity::new(LOOKBACK);
        let from = c.start(0, 5000);
        // The broker answered from the first batch starting at or after `from`...
        assert_eq!(c.check(0, 4100), Verdict::Again);
        // ... then from the batch after the one holding 5000.
        assert_eq!(
            c.check(0, 5004),
            Verdict::StepBack(5000 - 2 * (5000 - from))
        );
        assert_eq!(
            c.check(0, 5004),
            Verdict::StepBack(5000 - 4 * (5000 - from))
        );
        // The batch holding 5000 has come: what was written is dropped, then 5000 taken.
        assert_eq!(c.check(0, 4999), Verdict::Again);
        assert_eq!(c.check(0, 5000), Verdict::Take);
        // A later hole starts again with the first step.
        assert_eq!(c.check(0, 6000), Verdict::StepBack(5001 - LOOKBACK));
    }

    #[test]
    fn a_hole_down_to_offset_zero_is_accepted_and_reported() {
        let mut c = Continuity::new(LOOKBACK);
        assert_eq!(c.start(2, 100), 0);
        assert_eq!(c.check(2, 150), Verdict::Hole(100..150));
        assert_eq!(c.check(2, 151), Verdict::Take);
        // Unknown position, then a hole mid-stream.
        assert_eq!(c.check(3, 2000), Verdict::Take);
        assert_eq!(c.check(3, 2500), Verdict::StepBack(2001 - LOOKBACK));
        assert_eq!(c.check(3, 2500), Verdict::StepBack(0));
        assert_eq!(c.check(3, 2500), Verdict::Hole(2001..2500));
        assert_eq!(c.check(3, 2501), Verdict::Take);
    }

    #[test]
    fn a_wider_look_back_starts_earlier_up_to_a_bound() {
        let mut c = Continuity::new(widen(LOOKBACK));
        assert_eq!(c.start(0, 5000), 5000 - 2 * LOOKBACK);
        assert_eq!(c.check(0, 9000), Verdict::StepBack(5000 - 4 * LOOKBACK));
        let mut l = LOOKBACK;
        for _ in 0..20 {
            l = widen(l);
        }
        assert_eq!(l, MAX_LOOKBACK);
    }

    #[test]
    fn without_a_look_back_a_partition_starts_where_wanted_and_still_closes_a_hole() {
        let mut c = Continuity::new(0);
        assert_eq!(c.start(0, 5000), 5000);
        assert_eq!(c.check(0, 5000), Verdict::Take);
        assert_eq!(c.check(0, 5003), Verdict::StepBack(5000));
        assert_eq!(c.check(0, 5003), Verdict::StepBack(4999));
        assert_eq!(c.check(0, 5001), Verdict::Take);
        assert_eq!(widen(0), 0, "the watchdog does not turn it on");
    }
}
