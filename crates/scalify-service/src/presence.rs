//! Who is online where, on this node: per room, each user and how many of their connections
//! have joined it. A user is online in a room while at least one connection is in it.
//! In a cluster these counts decide when this node tells the cluster-wide registry
//! (`scalify_fanout::ClusterPresence`) that a user arrived or departed.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};
use std::sync::Mutex;
use std::time::Duration;

use scalify_core::{Id, RoomName, UserRef};

/// What a join or leave changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transition {
    /// The user's first connection joined / last connection left the room.
    pub user_changed: bool,
    /// The room gained its first / lost its last local connection.
    pub room_changed: bool,
}

/// A room's online users, each with their number of connections in the room.
type RoomPresence = HashMap<Id, (UserRef, usize)>;

#[derive(Default)]
pub struct Presence {
    rooms: Mutex<HashMap<RoomName, RoomPresence>>,
}

impl Presence {
    pub fn join(&self, room: &RoomName, user: &UserRef) -> Transition {
        let Ok(mut rooms) = self.rooms.lock() else {
            return Transition::default();
        };
        let room_changed = !rooms.contains_key(room);
        let users = rooms.entry(room.clone()).or_default();
        let entry = users.entry(user.id).or_insert_with(|| (user.clone(), 0));
        entry.1 += 1;
        Transition {
            user_changed: entry.1 == 1,
            room_changed,
        }
    }

    /// Joins unless the user already has `max` connections in the room (`None` then).
    pub fn join_within(&self, room: &RoomName, user: &UserRef, max: usize) -> Option<Transition> {
        let Ok(mut rooms) = self.rooms.lock() else {
            return Some(Transition::default());
        };
        let room_changed = !rooms.contains_key(room);
        let users = rooms.entry(room.clone()).or_default();
        let entry = users.entry(user.id).or_insert_with(|| (user.clone(), 0));
        if entry.1 >= max {
            return None;
        }
        entry.1 += 1;
        Some(Transition {
            user_changed: entry.1 == 1,
            room_changed,
        })
    }

    pub fn leave(&self, room: &RoomName, user: Id) -> Transition {
        let Ok(mut rooms) = self.rooms.lock() else {
            return Transition::default();
        };
        let Some(users) = rooms.get_mut(room) else {
            return Transition::default();
        };
        let mut t = Transition::default();
        if let Some(entry) = users.get_mut(&user) {
            entry.1 -= 1;
            if entry.1 == 0 {
                users.remove(&user);
                t.user_changed = true;
            }
        }
        if users.is_empty() {
            rooms.remove(room);
            t.room_changed = true;
        }
        t
    }

    /// Takes every connection of `user` out of the room at once (they were removed from it):
    /// what changed, and who they were, if they were in it.
    pub fn remove_user(&self, room: &RoomName, user: Id) -> Option<(Transition, UserRef)> {
        let mut rooms = self.rooms.lock().ok()?;
        let users = rooms.get_mut(room)?;
        let (user, _) = users.remove(&user)?;
        let room_changed = users.is_empty();
        if room_changed {
            rooms.remove(room);
        }
        Some((
            Transition {
                user_changed: true,
                room_changed,
            },
            user,
        ))
    }

    /// Whether any local connection is in the room.
    pub fn has_room(&self, room: &RoomName) -> bool {
        self.rooms
            .lock()
            .map(|r| r.contains_key(room))
            .unwrap_or(false)
    }

    /// Every (room, user) pair with a local connection: what this node keeps alive in the
    /// cluster-wide registry (the keeper asks for it a slice at a time, [`Presence::entries_in`]).
    #[cfg(test)]
    pub fn entries(&self) -> Vec<(RoomName, UserRef)> {
        let Ok(rooms) = self.rooms.lock() else {
            return Vec::new();
        };
        rooms
            .iter()
            .flat_map(|(room, users)| users.values().map(|(u, _)| (room.clone(), u.clone())))
            .collect()
    }

    /// How many connections have joined, summed over rooms and users.
    pub fn connection_count(&self) -> usize {
        self.rooms
            .lock()
            .map(|r| r.values().flat_map(|u| u.values()).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }

    /// How many rooms have at least one local connection.
    pub fn room_count(&self) -> usize {
        self.rooms.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// One slice (`slice` of `0..slices`) of the (room, user) pairs with a local connection —
    /// what this node keeps alive in the cluster-wide registry. Slices `0..slices` together
    /// hold every pair once, so refreshing one slice per tick renews every entry once per
    /// `slices` ticks, in small steps rather than one burst (a burst of thousands of Redis
    /// scripts delays the sends' scripts queued behind it).
    pub fn entries_in(&self, slice: usize, slices: usize) -> Vec<(RoomName, UserRef)> {
        let Ok(rooms) = self.rooms.lock() else {
            return Vec::new();
        };
        rooms
            .iter()
            .flat_map(|(room, users)| users.values().map(move |(u, _)| (room, u)))
            .filter(|(room, u)| bucket_of(&(room, u.id), slices) == slice)
            .map(|(room, u)| (room.clone(), u.clone()))
            .collect()
    }

    /// The rooms with a local connection of one slice, as [`Presence::entries_in`] slices
    /// entries.
    pub fn rooms_in(&self, slice: usize, slices: usize) -> Vec<RoomName> {
        self.rooms
            .lock()
            .map(|r| {
                r.keys()
                    .filter(|room| bucket_of(room, slices) == slice)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub fn rooms(&self) -> Vec<RoomName> {
        self.rooms
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The users online in a room, by username.
    pub fn online(&self, room: &RoomName) -> Vec<UserRef> {
        let Ok(rooms) = self.rooms.lock() else {
            return Vec::new();
        };
        let mut users: Vec<UserRef> = rooms
            .get(room)
            .map(|u| u.values().map(|(u, _)| u.clone()).collect())
            .unwrap_or_default();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }
}

/// How often the presence keeper (`ChatService::keep_presence`) renews one slice of this
/// node's entries.
pub const TICK: Duration = Duration::from_millis(250);

/// Into how many slices a refresh interval's work is split: one per [`TICK`], at most 20
/// (the default 5 s interval ticks every 250 ms), at least 1.
pub fn slices_for(interval: Duration) -> usize {
    (interval.as_millis() / TICK.as_millis()).clamp(1, 20) as usize
}

/// Which of `n` buckets `key` falls in: a hash with fixed keys, so a key stays in its bucket
/// from one call to the next — a presence entry in its slice (renewed once per round, never
/// skipped), a room in its interest shard (`Chat::update_interest`).
pub(crate) fn bucket_of(key: &impl Hash, n: usize) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    (hash % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_while_any_connection_is_in() {
        let p = Presence::default();
        let room = RoomName::parse("r").unwrap();
        let alice = UserRef {
            id: Id::new(),
            username: "alice".into(),
        };
        let bob = UserRef {
            id: Id::new(),
            username: "bob".into(),
        };
        assert_eq!(
            p.join(&room, &alice),
            Transition {
                user_changed: true,
                room_changed: true
            }
        );
        assert_eq!(
            p.join(&room, &alice),
            Transition {
                user_changed: false,
                room_changed: false
            }
        );
        assert_eq!(
            p.join(&room, &bob),
            Transition {
                user_changed: true,
                room_changed: false
            }
        );
        assert_eq!(p.online(&room).len(), 2);
        assert_eq!(p.leave(&room, alice.id), Transition::default());
        assert_eq!(
            p.leave(&room, alice.id),
            Transition {
                user_changed: true,
                room_changed: false
            }
        );
        assert_eq!(p.online(&room), vec![bob.clone()]);
        assert_eq!(
            p.leave(&room, bob.id),
            Transition {
                user_changed: true,
                room_changed: true
            }
        );
        assert!(p.online(&room).is_empty());
    }

    #[test]
    fn an_interval_is_split_into_ticks_of_about_a_quarter_second() {
        assert_eq!(slices_for(Duration::from_secs(5)), 20);
        assert_eq!(slices_for(Duration::from_secs(1)), 4);
        assert_eq!(slices_for(Duration::from_secs(20)), 20, "at most 20");
        assert_eq!(slices_for(Duration::from_millis(100)), 1, "at least 1");
    }

    #[test]
    fn the_slices_partition_the_entries_and_rooms_and_spread_them() {
        let p = Presence::default();
        for r in 0..40 {
            let room = RoomName::parse(&format!("room-{r}")).unwrap();
            for u in 0..(r % 7 + 1) {
                let user = UserRef {
                    id: Id::new(),
                    username: format!("u{r}-{u}"),
                };
                p.join(&room, &user);
            }
        }
        let key = |(r, u): &(RoomName, UserRef)| (r.to_string(), u.id);
        let mut all: Vec<_> = p.entries().iter().map(key).collect();
        all.sort();
        let mut rooms: Vec<_> = p.rooms().iter().map(|r| r.to_string()).collect();
        rooms.sort();
        assert_eq!(all.len(), (0..40).map(|r| r % 7 + 1).sum::<usize>());

        for slices in [1, 3, 20] {
            let mut sliced = Vec::new();
            let mut sliced_rooms = Vec::new();
            let mut used = 0;
            for slice in 0..slices {
                let part = p.entries_in(slice, slices);
                used += usize::from(!part.is_empty());
                sliced.extend(part.iter().map(key));
                sliced_rooms.extend(p.rooms_in(slice, slices).iter().map(|r| r.to_string()));
            }
            sliced.sort();
            sliced_rooms.sort();
            // Every entry and room in exactly one slice, none twice, none left out ...
            assert_eq!(sliced, all, "{slices} slices");
            assert_eq!(sliced_rooms, rooms, "{slices} slices");
            // ... spread over the slices, not all in one (no burst), ...
            assert!(used * 2 > slices, "{used} of {slices} slices hold entries");
            // ... and the same slice each time it is asked for.
            assert_eq!(
                p.entries_in(slices - 1, slices)
                    .iter()
                    .map(key)
                    .collect::<Vec<_>>(),
                p.entries_in(slices - 1, slices)
                    .iter()
                    .map(key)
                    .collect::<Vec<_>>()
            );
        }
        assert!(
            p.entries_in(3, 3).is_empty(),
            "a slice out of range holds nothing"
        );
    }
}
