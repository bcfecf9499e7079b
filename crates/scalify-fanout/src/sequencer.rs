//! Per-room ordering at the point of delivery.
//!
//! Concurrent sends to one room commit in `seq` order, but the tasks that publish them may be
//! scheduled in any order (and with several nodes, arrive over the network in any order). A
//! client is promised messages in `seq` order, so delivery holds an early message back until
//! the ones before it have arrived. A gap that does not fill within [`GAP_WAIT`] (its sender's
//! node died between commit and publish, say) is skipped: clients see the jump in `seq` and
//! recover the missing message with `sync`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use scalify_core::RoomName;

use crate::{EventKind, LocalDelivery, RoomEvent};

pub const GAP_WAIT: Duration = Duration::from_millis(500);
/// Most messages held back per room; beyond it the room is flushed (memory stays bounded).
const MAX_PENDING: usize = 4096;

#[derive(Default)]
struct RoomOrder {
    /// The seq delivery expects next; `None` until the room's first message or `seed`.
    next: Option<u64>,
    pending: BTreeMap<u64, RoomEvent>,
    gap_timer: bool,
    /// Identifies the running gap timer; a seed restarts the wait, and the older timer, when
    /// it fires, finds a newer generation and does nothing.
    timer_gen: u64,
}

/// Rooms are locked one by one, and a room's lock is held while its events are handed to
/// delivery: two threads can never hand over one room's messages in the wrong order.
type RoomSlot = Arc<Mutex<RoomOrder>>;

pub struct Sequencer {
    inner: Arc<dyn LocalDelivery>,
    rooms: Mutex<HashMap<RoomName, RoomSlot>>,
    me: Weak<Sequencer>,
}

impl Sequencer {
    pub fn new(inner: Arc<dyn LocalDelivery>) -> Arc<Self> {
        Arc::new_cyclic(|me| Sequencer {
            inner,
            rooms: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    fn slot(&self, room: &RoomName) -> Option<RoomSlot> {
        let mut rooms = self.rooms.lock().ok()?;
        Some(rooms.entry(room.clone()).or_default().clone())
    }

    fn existing_slot(&self, room: &RoomName) -> Option<RoomSlot> {
        self.rooms.lock().ok()?.get(room).cloned()
    }

    /// Tells the sequencer the room's newest committed seq, when this node starts delivering
    /// the room (a connection joined it: the transport read `last_seq` after subscribing).
    /// Messages that arrived before the seed were held; they are released now, in order.
    pub fn seed(&self, room: &RoomName, last_seq: u64) {
        let Some(slot) = self.slot(room) else { return };
        let Ok(mut order) = slot.lock() else { return };
        if order.next.is_none() {
            order.next = Some(last_seq + 1);
            self.release(&mut order);
            // A wait that began before the seed was for the seed; a gap left now gets a full
            // wait of its own.
            order.timer_gen += 1;
            order.gap_timer = !order.pending.is_empty();
            if order.gap_timer {
                let generation = order.timer_gen;
                drop(order);
                self.start_gap_timer(room, generation);
            }
        }
    }

    /// Hands over what can go now: held messages at or below `next` (late ones: their gap was
    /// skipped, or they predate the seed), then the contiguous run from `next`.
    fn release(&self, order: &mut RoomOrder) {
        let Some(mut next) = order.next else { return };
        while let Some(entry) = order.pending.first_entry() {
            if *entry.key() > next {
                break;
            }
            let seq = *entry.key();
            let event = entry.remove();
            self.inner.deliver(&event);
            if seq == next {
                next += 1;
            }
        }
        order.next = Some(next);
    }

    fn flush_gap(&self, room: &RoomName, generation: u64) {
        // A room released meanwhile has nothing to flush (and must not be re-created).
        let Some(slot) = self.existing_slot(room) else {
            return;
        };
        let Ok(mut order) = slot.lock() else { return };
        if order.timer_gen != generation {
            return; // superseded by a newer wait
        }
        order.gap_timer = false;
        let held = std::mem::take(&mut order.pending);
        if let Some((&last, _)) = held.last_key_value() {
            if order.next.is_some() {
                tracing::warn!(%room, held = held.len(), "seq gap did not fill in time; delivering past it");
            }
            order.next = Some(last + 1);
        }
        for event in held.values() {
            self.inner.deliver(event);
        }
    }

    fn start_gap_timer(&self, room: &RoomName, generation: u64) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let me = self.me.clone();
            let room = room.clone();
            handle.spawn(async move {
                tokio::time::sleep(GAP_WAIT).await;
                if let Some(me) = me.upgrade() {
                    me.flush_gap(&room, generation);
                }
            });
        }
    }
}

impl LocalDelivery for Sequencer {
    fn room_released(&self, room: &RoomName) {
        // The next watcher seeds the room afresh; a stale `next` would hold its messages.
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.remove(room);
        }
        self.inner.room_released(room);
    }

    fn deliver(&self, event: &RoomEvent) {
        let EventKind::Message { seq, .. } = event.kind else {
            // Typing and presence are not sequenced.
            self.inner.deliver(event);
            return;
        };
        let Some(slot) = self.slot(&event.room) else {
            self.inner.deliver(event);
            return;
        };
        let Ok(mut order) = slot.lock() else {
            self.inner.deliver(event);
            return;
        };
        let Some(next) = order.next else {
            // Not seeded yet (a connection is joining this room right now): hold it until the
            // seed says where the room's live stream starts.
            self.hold(order, event);
            return;
        };
        if seq < next {
            // Late: its gap was already skipped. Deliver it; the client dedupes by id.
            self.inner.deliver(event);
        } else if seq == next {
            self.inner.deliver(event);
            order.next = Some(seq + 1);
            self.release(&mut order);
        } else {
            self.hold(order, event);
        }
    }
}

impl Sequencer {
    fn hold(&self, mut order: std::sync::MutexGuard<'_, RoomOrder>, event: &RoomEvent) {
        let EventKind::Message { seq, .. } = event.kind else {
            return;
        };
        order.pending.insert(seq, event.clone());
        if order.pending.len() > MAX_PENDING {
            let held = std::mem::take(&mut order.pending);
            for e in held.values() {
                self.inner.deliver(e);
            }
            order.next = held.last_key_value().map(|(&last, _)| last + 1);
        } else if !order.gap_timer {
            order.gap_timer = true;
            let generation = order.timer_gen;
            drop(order);
            self.start_gap_timer(&event.room, generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default)]
    struct Recorder(StdMutex<Vec<u64>>);
    impl LocalDelivery for Recorder {
        fn deliver(&self, e: &RoomEvent) {
            if let EventKind::Message { seq, .. } = e.kind {
                self.0.lock().unwrap().push(seq);
            }
        }
    }

    fn ev(seq: u64) -> RoomEvent {
        RoomEvent::new(
            RoomName::parse("r").unwrap(),
            EventKind::Message { seq, ts: 0 },
            &seq,
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn reorders_within_a_room() {
        let rec = Arc::new(Recorder::default());
        let s = Sequencer::new(rec.clone());
        s.seed(&RoomName::parse("r").unwrap(), 0);
        for seq in [2, 3, 1, 5, 4] {
            s.deliver(&ev(seq));
        }
        assert_eq!(*rec.0.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn holds_messages_until_seeded_then_releases_them_in_order() {
        let rec = Arc::new(Recorder::default());
        let s = Sequencer::new(rec.clone());
        // Live messages race the joining connection's read of last_seq (= 4).
        s.deliver(&ev(6));
        s.deliver(&ev(5));
        s.deliver(&ev(4));
        assert!(rec.0.lock().unwrap().is_empty());
        s.seed(&RoomName::parse("r").unwrap(), 4);
        assert_eq!(*rec.0.lock().unwrap(), vec![4, 5, 6]);
        s.deliver(&ev(7));
        assert_eq!(*rec.0.lock().unwrap(), vec![4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn a_released_room_starts_over_from_its_next_seed() {
        let rec = Arc::new(Recorder::default());
        let s = Sequencer::new(rec.clone());
        let room = RoomName::parse("r").unwrap();
        s.seed(&room, 0);
        s.deliver(&ev(1));
        s.room_released(&room);
        // Messages 2..9 went to other nodes while this one had no members; it rejoins at 9.
        s.seed(&room, 9);
        s.deliver(&ev(10));
        assert_eq!(*rec.0.lock().unwrap(), vec![1, 10]);
    }

    #[tokio::test]
    async fn held_messages_are_bounded_then_delivered_in_order() {
        let rec = Arc::new(Recorder::default());
        let s = Sequencer::new(rec.clone());
        s.seed(&RoomName::parse("r").unwrap(), 0);
        // seq 1 never comes: everything after it is held, up to the bound.
        let last = MAX_PENDING as u64 + 2;
        for seq in (2..=last).rev() {
            s.deliver(&ev(seq));
        }
        // Past the bound the room is flushed in order instead of growing.
        assert_eq!(*rec.0.lock().unwrap(), (2..=last).collect::<Vec<_>>());
        s.deliver(&ev(last + 1));
        assert_eq!(rec.0.lock().unwrap().last(), Some(&(last + 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_after_the_seed_gets_its_full_wait() {
        let rec = Arc::new(Recorder::default());
        let s = Sequencer::new(rec.clone());
        let room = RoomName::parse("r").unwrap();
        s.deliver(&ev(5)); // before the seed: held, a wait starts
        tokio::time::sleep(GAP_WAIT * 4 / 5).await;
        s.seed(&room, 4);
        s.deliver(&ev(7)); // a real gap at 6
        assert_eq!(*rec.0.lock().unwrap(), vec![5]);
        tokio::time::sleep(GAP_WAIT * 2 / 5).await; // the first wait would have ended here
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![5],
            "flushed early by the pre-seed wait"
        );
        tokio::time::sleep(GAP_WAIT).await;
        assert_eq!(*rec.0.lock().unwrap(), vec![5, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn skips_a_gap_that_never_fills() {
        let rec = Arc::new(Recorder::default());
        let s = Sequencer::new(rec.clone());
        s.seed(&RoomName::parse("r").unwrap(), 0);
        s.deliver(&ev(1));
        s.deliver(&ev(3));
        s.deliver(&ev(4));
        assert_eq!(*rec.0.lock().unwrap(), vec![1]);
        tokio::time::sleep(GAP_WAIT * 2).await;
        assert_eq!(*rec.0.lock().unwrap(), vec![1, 3, 4]);
        s.deliver(&ev(5));
        s.deliver(&ev(2)); // late, after its gap was skipped: still delivered
        assert_eq!(*rec.0.lock().unwrap(), vec![1, 3, 4, 5, 2]);
    }
}
