use serde::{Deserialize, Serialize};

use crate::{ClientId, Id, MessageText, RoomName};

/// Milliseconds since the Unix epoch: the `ts` of the wire contract.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A user as other users see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: Id,
    pub username: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Public,
    Private,
    Dm,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Public => "public",
            RoomKind::Private => "private",
            RoomKind::Dm => "dm",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(RoomKind::Public),
            "private" => Some(RoomKind::Private),
            "dm" => Some(RoomKind::Dm),
            _ => None,
        }
    }
    /// Only public rooms admit anyone who asks; the others admit members only.
    pub fn is_open(self) -> bool {
        self == RoomKind::Public
    }
}

/// A room and the sequence number of its newest message (0 when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Room {
    pub id: Id,
    pub name: RoomName,
    pub kind: RoomKind,
    pub last_seq: u64,
}

/// A committed message, exactly as the wire contract's `message` event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: Id,
    pub room: RoomName,
    /// Per-room, starts at 1, strictly increasing and gap-free: a client that sees seq n+2 after
    /// n knows it missed one and recovers it with `sync`.
    pub seq: u64,
    pub sender: UserRef,
    pub text: MessageText,
    pub client_id: ClientId,
    pub ts: i64,
    /// The members the text mentions (`@username`), the sender left out.
    pub mentions: Vec<Id>,
    /// The text mentions every member (`@room`, where the sender may).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mention_room: bool,
}

impl Message {
    /// Whether the message counts as a mention of `user`: it names them or the room, or it is
    /// in a DM (`dm`), where every message does. The one rule behind mention counts and
    /// notifications.
    pub fn mentions_user(&self, user: Id, dm: bool) -> bool {
        dm || self.mention_room || self.mentions.contains(&user)
    }
}

/// A message a client asked to send, already validated; the store gives it `id`, `seq`, `ts`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room_id: Id,
    pub room: RoomName,
    pub sender: UserRef,
    pub text: MessageText,
    pub client_id: ClientId,
    pub mentions: Vec<Id>,
    pub mention_room: bool,
}
