//! Who is online where, on this node: per room, each user and how many of their connections
//! have joined it. A user is online in a room while at least one connection is in it.
//! In a cluster these counts decide when this node tells the cluster-wide registry
//! (`scalify_fanout::ClusterPresence`) that a user arrived or departed.

use std::collections::HashMap;
use std::sync::Mutex;

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

    /// Whether any local connection is in the room.
    pub fn has_room(&self, room: &RoomName) -> bool {
        self.rooms
            .lock()
            .map(|r| r.contains_key(room))
            .unwrap_or(false)
    }

    /// Every (room, user) pair with a local connection: what this node keeps alive in the
    /// cluster-wide registry.
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
}
