use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::{MessageKind, ReactionCount, ReplyPreview};
use crate::{Attachment, ClientId, Id, MessageText, RoomName};

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
    /// A message, or a change to one ([`MessageKind`], [`crate::Timeline`]).
    pub kind: MessageKind,
    /// For a change: the id of the message it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relates_to: Option<Id>,
    /// For a change: the seq of the message it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relates_seq: Option<u64>,
    /// For a reply: what it answers, as that message stands now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Box<ReplyPreview>>,
    /// The file the message carries (gone once the message is deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Box<Attachment>>,
    /// When the text was last edited (bundled state: set on messages `history` and `sync`
    /// return, never on the entry as first broadcast).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// The message was deleted: its text is gone, it stays as a placeholder.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Reactions by emoji, counted, with whether the reader is among them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, ReactionCount>,
}

impl Message {
    /// A message or change as first stored, from what was asked (moved, not copied: this is
    /// every send's path): no bundled state yet.
    pub fn from_new(new: NewMessage, id: Id, seq: u64, ts: i64) -> Self {
        Message {
            id,
            room: new.room,
            seq,
            sender: new.sender,
            text: new.text,
            client_id: new.client_id,
            ts,
            mentions: new.mentions,
            mention_room: new.mention_room,
            kind: new.kind,
            relates_to: new.relates_to.map(|(id, _)| id),
            relates_seq: new.relates_to.map(|(_, seq)| seq),
            reply_to: new.reply_to,
            attachment: new.attachment,
            edited_at: None,
            deleted: false,
            reactions: BTreeMap::new(),
        }
    }

    /// [`Message::from_new`] for a caller that keeps what was asked.
    pub fn stored(new: &NewMessage, id: Id, seq: u64, ts: i64) -> Self {
        Self::from_new(new.clone(), id, seq, ts)
    }

    /// The seq a store keeps in the entry's reference column: the changed message's for a
    /// change, the answered message's for a reply.
    pub fn ref_seq(&self) -> Option<u64> {
        self.relates_seq.or(self.reply_to.as_ref().map(|r| r.seq))
    }

    /// Whether unread counts and notifications count it: messages do, changes do not.
    pub fn is_counted(&self) -> bool {
        self.kind.is_message()
    }

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
    pub kind: MessageKind,
    /// For a change: the id and seq of the message it changes.
    pub relates_to: Option<(Id, u64)>,
    /// For a reply: the message it answers.
    pub reply_to: Option<Box<ReplyPreview>>,
    /// The file it carries, uploaded before.
    pub attachment: Option<Box<Attachment>>,
}

impl NewMessage {
    /// A plain message (no reply, not a change).
    pub fn plain(
        room_id: Id,
        room: RoomName,
        sender: UserRef,
        text: MessageText,
        client_id: ClientId,
    ) -> Self {
        NewMessage {
            room_id,
            room,
            sender,
            text,
            client_id,
            mentions: Vec::new(),
            mention_room: false,
            kind: MessageKind::Message,
            relates_to: None,
            reply_to: None,
            attachment: None,
        }
    }
}
