//! What this node has been doing lately, for the admin dashboard: messages per second over the
//! last minute, and per room over the current and the previous minute. Bounded: 60 second
//! buckets, and at most 10,000 rooms (`MAX_ROOMS`) counted per minute.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use scalify_core::{RoomActivity, RoomName};

const MAX_ROOMS: usize = 10_000;

#[derive(Default)]
struct Window {
    /// (unix second, messages) for the last 60 seconds.
    seconds: VecDeque<(u64, u64)>,
    minute: u64,
    this_minute: HashMap<RoomName, u64>,
    last_minute: HashMap<RoomName, u64>,
}

#[derive(Default)]
pub struct Activity(Mutex<Window>);

impl Activity {
    /// Counts one committed message in `room` at `now` (unix seconds).
    pub fn record(&self, room: &RoomName, now: u64) {
        let Ok(mut w) = self.0.lock() else { return };
        w.roll(now);
        match w.seconds.back_mut() {
            Some((s, n)) if *s == now => *n += 1,
            _ => w.seconds.push_back((now, 1)),
        }
        // Per message: look up before inserting, so the name is cloned once per room a minute.
        if let Some(n) = w.this_minute.get_mut(room) {
            *n += 1;
        } else if w.this_minute.len() < MAX_ROOMS {
            w.this_minute.insert(room.clone(), 1);
        }
    }

    /// Messages per second, averaged over the last `secs` seconds (at most 60).
    pub fn rate(&self, now: u64, secs: u64) -> f64 {
        let Ok(mut w) = self.0.lock() else { return 0.0 };
        w.roll(now);
        let secs = secs.clamp(1, 60);
        let n: u64 = w
            .seconds
            .iter()
            .filter(|(s, _)| *s + secs > now)
            .map(|(_, n)| n)
            .sum();
        n as f64 / secs as f64
    }

    /// The busiest rooms of the last one to two minutes, most messages first.
    pub fn busiest(&self, now: u64, top: usize) -> Vec<RoomActivity> {
        let Ok(mut w) = self.0.lock() else {
            return Vec::new();
        };
        w.roll(now);
        let mut sum: HashMap<&RoomName, u64> = HashMap::new();
        for (room, n) in w.this_minute.iter().chain(w.last_minute.iter()) {
            *sum.entry(room).or_insert(0) += n;
        }
        let mut rooms: Vec<RoomActivity> = sum
            .into_iter()
            .map(|(room, messages)| RoomActivity {
                room: room.to_string(),
                messages,
            })
            .collect();
        rooms.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.room.cmp(&b.room)));
        rooms.truncate(top);
        rooms
    }
}

impl Window {
    fn roll(&mut self, now: u64) {
        while self.seconds.front().is_some_and(|(s, _)| *s + 60 <= now) {
            self.seconds.pop_front();
        }
        let minute = now / 60;
        if minute != self.minute {
            self.last_minute = if minute == self.minute + 1 {
                std::mem::take(&mut self.this_minute)
            } else {
                self.this_minute.clear();
                HashMap::new()
            };
            self.minute = minute;
        }
    }
}

/// Merges per-node busiest lists into a cluster-wide one.
pub fn merge_busiest(
    lists: impl IntoIterator<Item = Vec<RoomActivity>>,
    top: usize,
) -> Vec<RoomActivity> {
    let mut sum: HashMap<String, u64> = HashMap::new();
    for list in lists {
        for r in list {
            *sum.entry(r.room).or_insert(0) += r.messages;
        }
    }
    let mut rooms: Vec<RoomActivity> = sum
        .into_iter()
        .map(|(room, messages)| RoomActivity { room, messages })
        .collect();
    rooms.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.room.cmp(&b.room)));
    rooms.truncate(top);
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: &str) -> RoomName {
        RoomName::parse(n).unwrap()
    }

    #[test]
    fn rate_and_busiest_rooms_over_sliding_windows() {
        let a = Activity::default();
        let t0 = 6_000; // a minute boundary
        for _ in 0..10 {
            a.record(&room("busy"), t0);
        }
        a.record(&room("quiet"), t0 + 5);
        assert_eq!(a.rate(t0 + 5, 10), 1.1);
        assert_eq!(a.rate(t0 + 5, 1), 1.0);
        assert_eq!(
            a.busiest(t0 + 5, 5)
                .iter()
                .map(|r| (r.room.as_str(), r.messages))
                .collect::<Vec<_>>(),
            vec![("busy", 10), ("quiet", 1)]
        );
        // Next minute: the previous one still counts; two minutes on, it is gone.
        a.record(&room("quiet"), t0 + 61);
        assert_eq!(a.busiest(t0 + 61, 1)[0].messages, 10);
        assert_eq!(a.rate(t0 + 61, 60), 2.0 / 60.0);
        assert!(a.busiest(t0 + 200, 5).is_empty());
        assert_eq!(a.rate(t0 + 200, 60), 0.0);
    }

    #[test]
    fn merging_sums_rooms_across_nodes() {
        let n1 = vec![
            RoomActivity {
                room: "a".into(),
                messages: 3,
            },
            RoomActivity {
                room: "b".into(),
                messages: 1,
            },
        ];
        let n2 = vec![RoomActivity {
            room: "b".into(),
            messages: 5,
        }];
        let merged = merge_busiest([n1, n2], 1);
        assert_eq!(
            merged,
            vec![RoomActivity {
                room: "b".into(),
                messages: 6
            }]
        );
    }
}
