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
}

pub struct Sequencer {
    inner: Arc<dyn LocalDelivery>,
    rooms: Mutex<HashMap<RoomName, RoomOrder>>,
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

    /// Tells the sequencer the room's newest committed seq, when this node starts delivering
    /// the room, so even its first message can be put in order.
    pub fn seed(&self, room: &RoomName, last_seq: u64) {
        if let Ok(mut rooms) = self.rooms.lock() {
            let order = rooms.entry(room.clone()).or_default();
            if order.next.is_none() {
                order.next = Some(last_seq + 1);
            }
        }
    }

    /// This node stopped delivering the room: drop its state.
    pub fn forget(&self, room: &RoomName) {
        let flushed = match self.rooms.lock() {
            Ok(mut rooms) => rooms.remove(room).map(|o| o.pending).unwrap_or_default(),
            Err(_) => return,
        };
        for event in flushed.values() {
            self.inner.deliver(event);
        }
    }

    fn flush_gap(&self, room: &RoomName) {
        let ready: Vec<RoomEvent> = match self.rooms.lock() {
            Ok(mut rooms) => match rooms.get_mut(room) {
                Some(order) => {
                    order.gap_timer = false;
                    let ready: Vec<_> = std::mem::take(&mut order.pending).into_values().collect();
                    if let Some(last) = ready.last() {
                        if let EventKind::Message { seq } = last.kind {
                            order.next = Some(seq + 1);
                        }
                    }
                    ready
                }
                None => return,
            },
            Err(_) => return,
        };
        if !ready.is_empty() {
            tracing::warn!(%room, held = ready.len(), "seq gap did not fill in time; delivering past it");
        }
        for event in &ready {
            self.inner.deliver(event);
        }
    }
}

impl LocalDelivery for Sequencer {
    fn deliver(&self, event: &RoomEvent) {
        let EventKind::Message { seq } = event.kind else {
            // Typing and presence are not sequenced.
            self.inner.deliver(event);
            return;
        };
        let mut ready = Vec::new();
        let mut start_timer = false;
        {
            let Ok(mut rooms) = self.rooms.lock() else {
                self.inner.deliver(event);
                return;
            };
            let order = rooms.entry(event.room.clone()).or_default();
            let next = *order.next.get_or_insert(seq);
            if seq < next {
                // Late: its gap was already skipped. Deliver it; the client dedupes by id.
                ready.push(event.clone());
            } else if seq == next {
                ready.push(event.clone());
                let mut n = seq + 1;
                while let Some(e) = order.pending.remove(&n) {
                    ready.push(e);
                    n += 1;
                }
                order.next = Some(n);
            } else {
                order.pending.insert(seq, event.clone());
                if order.pending.len() > MAX_PENDING {
                    ready.extend(std::mem::take(&mut order.pending).into_values());
                    order.next = Some(seq + 1);
                } else if !order.gap_timer {
                    order.gap_timer = true;
                    start_timer = true;
                }
            }
        }
        for e in &ready {
            self.inner.deliver(e);
        }
        if start_timer {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let me = self.me.clone();
                let room = event.room.clone();
                handle.spawn(async move {
                    tokio::time::sleep(GAP_WAIT).await;
                    if let Some(me) = me.upgrade() {
                        me.flush_gap(&room);
                    }
                });
            }
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
            if let EventKind::Message { seq } = e.kind {
                self.0.lock().unwrap().push(seq);
            }
        }
    }

    fn ev(seq: u64) -> RoomEvent {
        RoomEvent::new(RoomName::parse("r").unwrap(), EventKind::Message { seq }, &seq, None).unwrap()
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
