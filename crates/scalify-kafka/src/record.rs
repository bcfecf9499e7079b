//! The messages topic's record format: one JSON object per message, keyed by room id.
//!
//! The same encoding is kept in the Redis recent window, so a message read from either place
//! decodes the same way. Decoding validates every field with the core's parsers: a record that
//! does not decode is a poison record (the persister dead-letters it with the reason).

use scalify_core::{
    Attachment, ClientId, FileName, Id, Message, MessageKind, MessageText, ReplyPreview, RoomName,
    UserRef,
};
use serde::{Deserialize, Serialize};

/// Format version of a plain message's record; a reader refuses versions it does not know.
pub const VERSION: u32 = 1;

/// Format version of a record that changes a message or replies to one: a reader that knows
/// only [`VERSION`] refuses it (dead-letters it) rather than storing it as a plain message.
pub const VERSION_CHANGES: u32 = 2;

/// Format version of a record that carries an attachment: a reader that knows only the
/// versions above refuses it rather than storing the message without its file.
pub const VERSION_ATTACHMENTS: u32 = 3;

/// Longest content type an attachment's record may carry (the server names short ones).
const MAX_CONTENT_TYPE: usize = 128;

/// Largest text a record may carry. Above any configurable `max_text_bytes`, it only bounds
/// what a hostile producer could make the persister hold.
const MAX_RECORD_TEXT: usize = 1 << 20;

/// Most mentioned users a record may carry (a send mentions at most
/// [`scalify_core::MAX_MENTION_NAMES`]).
const MAX_RECORD_MENTIONS: usize = 2 * scalify_core::MAX_MENTION_NAMES;

/// One message as stored in Kafka and in the recent window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub id: String,
    pub room_id: String,
    pub room: String,
    pub seq: u64,
    /// The seq epoch the seq was given in ([`crate::ledger`]); absent (0) in records written
    /// before epochs existed, which are never fenced.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    pub sender_id: String,
    pub sender: String,
    pub client_id: String,
    pub text: String,
    pub ts: i64,
    /// Absent in records of messages that mention nobody, and in records written before
    /// mentions existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mention_room: bool,
    /// A change's kind (`edit`, `delete`, `reaction`, `unreaction`); absent for a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The message a change changes, or a reply answers: its id and seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ref_seq: u64,
    /// A reply's preview as it was sent (the database's copy follows later changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyRecord>,
    /// The file the message carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
}

/// What a record keeps of the message a reply answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyRecord {
    pub sender_id: String,
    pub sender: String,
    pub text: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A committed message and the room id it belongs to (the message itself names its room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    pub room_id: Id,
    pub message: Message,
    /// The seq epoch its seq was given in (0: unknown).
    pub epoch: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a JSON message record: {0}")]
    Json(String),
    #[error("unknown record version {0}")]
    Version(u32),
    #[error("invalid field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("the record key {key:?} is not its room id {room_id}")]
    Key { key: String, room_id: String },
}

fn field<T, E: std::fmt::Display>(field: &'static str, r: Result<T, E>) -> Result<T, DecodeError> {
    r.map_err(|e| DecodeError::Field {
        field,
        reason: e.to_string(),
    })
}

/// Encodes a message of room `room_id` as record JSON, with no epoch.
pub fn encode(room_id: Id, m: &Message) -> Vec<u8> {
    encode_in(room_id, m, 0)
}

/// Encodes a message of room `room_id` whose seq was given in seq epoch `epoch`.
pub fn encode_in(room_id: Id, m: &Message, epoch: u64) -> Vec<u8> {
    let reference = m
        .relates_to
        .zip(m.relates_seq)
        .or(m.reply_to.as_ref().map(|r| (r.id, r.seq)));
    let record = Record {
        v: if m.attachment.is_some() {
            VERSION_ATTACHMENTS
        } else if reference.is_some() || !m.kind.is_message() {
            VERSION_CHANGES
        } else {
            VERSION
        },
        id: m.id.to_string(),
        room_id: room_id.to_string(),
        room: m.room.to_string(),
        seq: m.seq,
        epoch,
        sender_id: m.sender.id.to_string(),
        sender: m.sender.username.clone(),
        client_id: m.client_id.as_str().to_owned(),
        text: m.text.as_str().to_owned(),
        ts: m.ts,
        mentions: m.mentions.iter().map(Id::to_string).collect(),
        mention_room: m.mention_room,
        kind: m.kind.column().map(str::to_owned),
        ref_id: reference.map(|(id, _)| id.to_string()),
        ref_seq: reference.map_or(0, |(_, seq)| seq),
        reply: m.reply_to.as_ref().map(|r| ReplyRecord {
            sender_id: r.sender.id.to_string(),
            sender: r.sender.username.clone(),
            text: r.text.clone(),
        }),
        attachment: m.attachment.as_deref().cloned(),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// A message's record with its seq left out: `head`, the seq's decimal digits, the epoch
/// (`,"epoch":<digits>`, left out when 0), then `tail`.
/// The ledger's allocation script completes it with the seq it allocates and keeps it until
/// the broker confirms the message, so whoever retries the send can produce exactly the same
/// record again (same id, text and time) — a copy the persister recognises as a redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Draft {
    /// The record with its seq and epoch (the ledger's allocation script builds the same).
    pub fn with_seq(&self, seq: u64, epoch: u64) -> Vec<u8> {
        let digits = seq.to_string();
        let mut out = Vec::with_capacity(self.head.len() + digits.len() + self.tail.len() + 24);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(digits.as_bytes());
        if epoch != 0 {
            out.extend_from_slice(format!(",\"epoch\":{epoch}").as_bytes());
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// The record of `m` with its seq left out.
pub fn draft(room_id: Id, m: &Message) -> Draft {
    let mut bytes = encode(room_id, m);
    // `seq` follows `room` and precedes `sender_id` in `Record`; inside a JSON string a quote
    // is escaped, so this marker occurs once, where the field is.
    let digits = m.seq.to_string();
    let marker = format!(",\"seq\":{digits},\"sender_id\":");
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .map_or(bytes.len(), |i| i + ",\"seq\":".len());
    let tail = bytes.split_off((at + digits.len()).min(bytes.len()));
    bytes.truncate(at);
    Draft { head: bytes, tail }
}

/// Decodes and validates record JSON.
pub fn decode(bytes: &[u8]) -> Result<RoomMessage, DecodeError> {
    let r: Record = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !matches!(r.v, VERSION | VERSION_CHANGES | VERSION_ATTACHMENTS) {
        return Err(DecodeError::Version(r.v));
    }
    let kind = match r.kind.as_deref() {
        None => MessageKind::Message,
        Some(k) => field(
            "kind",
            MessageKind::parse(k)
                .filter(|k| !k.is_message())
                .ok_or("unknown kind"),
        )?,
    };
    let reference = match (&r.ref_id, r.ref_seq) {
        (None, 0) => None,
        (Some(id), seq) if seq > 0 && seq < r.seq => {
            Some((field("ref_id", id.parse::<Id>())?, seq))
        }
        _ => {
            return Err(DecodeError::Field {
                field: "ref_seq",
                reason: "a reference names an earlier message by id and seq".into(),
            })
        }
    };
    let misreferenced = if kind.is_message() {
        reference.is_some() && r.reply.is_none()
    } else {
        reference.is_none() || r.reply.is_some()
    };
    if misreferenced {
        return Err(DecodeError::Field {
            field: "ref_id",
            reason: "a change names the message it changes; a message names none".into(),
        });
    }
    // A deletion carries no text; every other entry does.
    let text = if kind == MessageKind::Delete {
        field(
            "text",
            if r.text.is_empty() {
                Ok(())
            } else {
                Err("a deletion carries no text")
            },
        )?;
        MessageText::from_trusted(String::new())
    } else if r.attachment.is_some() && r.text.is_empty() {
        // A file may go without a caption.
        MessageText::from_trusted(String::new())
    } else {
        field("text", MessageText::parse(&r.text, MAX_RECORD_TEXT))?
    };
    let attachment = match r.attachment {
        None => None,
        Some(_) if !kind.is_message() => {
            return Err(DecodeError::Field {
                field: "attachment",
                reason: "only a message carries a file".into(),
            })
        }
        Some(a) => {
            field("attachment.name", FileName::parse(a.name.as_str()))?;
            if a.content_type.len() > MAX_CONTENT_TYPE || a.width.is_some() != a.height.is_some() {
                return Err(DecodeError::Field {
                    field: "attachment",
                    reason: "a content type up to 128 bytes, and both dimensions or none".into(),
                });
            }
            Some(Box::new(a))
        }
    };
    let reply_to = match (&r.reply, reference) {
        (None, _) => None,
        (Some(reply), Some((id, seq))) if kind.is_message() => Some(Box::new(ReplyPreview::of(
            id,
            seq,
            UserRef {
                id: field("reply.sender_id", reply.sender_id.parse::<Id>())?,
                username: field("reply.sender", scalify_core::Username::parse(&reply.sender))?
                    .to_string(),
            },
            &reply.text,
            false,
        ))),
        _ => {
            return Err(DecodeError::Field {
                field: "reply",
                reason: "only a message with a reference replies".into(),
            })
        }
    };
    let relation = if kind.is_message() { None } else { reference };
    if r.seq == 0 || r.seq > i64::MAX as u64 {
        return Err(DecodeError::Field {
            field: "seq",
            reason: "must be 1 or more".into(),
        });
    }
    let message = Message {
        id: field("id", r.id.parse::<Id>())?,
        room: field("room", RoomName::parse_internal(&r.room))?,
        seq: r.seq,
        sender: UserRef {
            id: field("sender_id", r.sender_id.parse::<Id>())?,
            username: field("sender", scalify_core::Username::parse(&r.sender))?.to_string(),
        },
        text,
        client_id: field("client_id", ClientId::parse(&r.client_id))?,
        ts: r.ts,
        mentions: r
            .mentions
            .iter()
            .take(MAX_RECORD_MENTIONS + 1)
            .map(|id| field("mentions", id.parse::<Id>()))
            .collect::<Result<_, _>>()?,
        mention_room: r.mention_room,
        kind,
        relates_to: relation.map(|(id, _)| id),
        relates_seq: relation.map(|(_, seq)| seq),
        reply_to,
        attachment,
        edited_at: None,
        deleted: false,
        reactions: Default::default(),
    };
    if message.mentions.len() > MAX_RECORD_MENTIONS {
        return Err(DecodeError::Field {
            field: "mentions",
            reason: format!("more than {MAX_RECORD_MENTIONS}"),
        });
    }
    Ok(RoomMessage {
        room_id: field("room_id", r.room_id.parse::<Id>())?,
        message,
        epoch: r.epoch,
    })
}

/// Decodes a record and checks it is filed under its own room (the partitioning key).
pub fn decode_keyed(key: Option<&[u8]>, bytes: &[u8]) -> Result<RoomMessage, DecodeError> {
    let rm = decode(bytes)?;
    let expected = rm.room_id.to_string();
    match key {
        Some(k) if k == expected.as_bytes() => Ok(rm),
        other => Err(DecodeError::Key {
            key: String::from_utf8_lossy(other.unwrap_or_default()).into_owned(),
            room_id: expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> (Id, Message) {
        let room_id = Id::new();
        let mut new = scalify_core::NewMessage::plain(
            room_id,
            RoomName::parse("general").unwrap(),
            UserRef {
                id: Id::new(),
                username: "alice".into(),
            },
            MessageText::parse("hello ✓", 4096).unwrap(),
            ClientId::parse("c-1").unwrap(),
        );
        new.mentions = vec![Id::new()];
        new.mention_room = true;
        let m = Message::from_new(new, Id::new(), 7, 1_700_000_000_123);
        (room_id, m)
    }

    /// A record from a hostile or broken producer cannot make the persister hold an unbounded
    /// list of mentions; a record without mentions (written before they existed) reads as
    /// mentioning nobody.
    #[test]
    fn mentions_are_bounded_and_optional() {
        let (room_id, mut m) = message();
        m.mentions = (0..=MAX_RECORD_MENTIONS).map(|_| Id::new()).collect();
        let err = decode(&encode(room_id, &m)).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Field {
                    field: "mentions",
                    ..
                }
            ),
            "{err}"
        );
        m.mentions.truncate(MAX_RECORD_MENTIONS);
        assert_eq!(decode(&encode(room_id, &m)).unwrap().message, m);
        m.mentions.clear();
        m.mention_room = false;
        let bytes = encode(room_id, &m);
        assert!(!String::from_utf8_lossy(&bytes).contains("mention"));
        assert_eq!(decode(&bytes).unwrap().message, m);
    }

    #[test]
    fn round_trips() {
        let (room_id, m) = message();
        let bytes = encode(room_id, &m);
        let back = decode_keyed(Some(room_id.to_string().as_bytes()), &bytes).unwrap();
        assert_eq!(back.room_id, room_id);
        assert_eq!(back.message, m);
    }

    #[test]
    fn a_draft_with_its_seq_is_the_record() {
        let (room_id, mut m) = message();
        for seq in [1, 7, 10, 123_456_789_012] {
            m.seq = seq;
            assert_eq!(draft(room_id, &m).with_seq(seq, 0), encode(room_id, &m));
            for epoch in [1, 42] {
                let record = draft(room_id, &m).with_seq(seq, epoch);
                assert_eq!(record, encode_in(room_id, &m, epoch));
                assert_eq!(decode(&record).unwrap().epoch, epoch);
            }
        }
        // A room name or text that spells the marker inside a string changes nothing.
        m.text = MessageText::parse(r#","seq":0,"sender_id":"#, 4096).unwrap();
        assert_eq!(
            draft(room_id, &m).with_seq(9, 0),
            encode(room_id, &Message { seq: 9, ..m })
        );
    }

    /// Changes and replies travel in records of version 2 (a reader of version 1 only refuses
    /// them rather than store them as messages), and come back as they went.
    #[test]
    fn changes_and_replies_round_trip_and_are_checked() {
        let (room_id, first) = message();
        let mut edit = first.clone();
        edit.id = Id::new();
        edit.seq = 9;
        edit.kind = MessageKind::Edit;
        edit.relates_to = Some(first.id);
        edit.relates_seq = Some(first.seq);
        edit.mentions.clear();
        edit.mention_room = false;
        let bytes = encode(room_id, &edit);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (v["v"].as_u64(), v["kind"].as_str()),
            (Some(2), Some("edit"))
        );
        assert_eq!(decode(&bytes).unwrap().message, edit);
        let mut reply = first.clone();
        reply.seq = 10;
        reply.reply_to = Some(Box::new(ReplyPreview::of(
            first.id,
            first.seq,
            first.sender.clone(),
            "hello ✓",
            false,
        )));
        assert_eq!(decode(&encode(room_id, &reply)).unwrap().message, reply);
        let plain = serde_json::from_slice::<serde_json::Value>(&encode(room_id, &first)).unwrap();
        assert_eq!(
            plain["v"].as_u64(),
            Some(1),
            "a plain message keeps version 1"
        );

        let good: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for (key, bad) in [
            ("kind", serde_json::json!("poll")),
            ("kind", serde_json::json!("message")),
            ("ref_seq", serde_json::json!(9)),
            ("ref_id", serde_json::json!(null)),
        ] {
            let mut v = good.clone();
            v[key] = bad;
            assert!(decode(v.to_string().as_bytes()).is_err(), "{key}");
        }
        let mut delete = good.clone();
        delete["kind"] = "delete".into();
        assert!(
            decode(delete.to_string().as_bytes()).is_err(),
            "a deletion with text"
        );
        delete["text"] = "".into();
        assert!(decode(delete.to_string().as_bytes()).is_ok());
    }

    /// A message with a file travels in a record of version 3 (an older reader refuses it
    /// rather than store the message without its file), may go without a caption, and comes
    /// back as it went; a bad file name or a file on a change is poison.
    #[test]
    fn attachments_round_trip_and_are_checked() {
        let (room_id, mut m) = message();
        m.text = MessageText::from_trusted(String::new());
        m.attachment = Some(Box::new(Attachment {
            id: Id::new(),
            name: FileName::parse("cat.png").unwrap(),
            size: 1234,
            content_type: "image/png".into(),
            width: Some(640),
            height: Some(480),
        }));
        let bytes = encode(room_id, &m);
        let good: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(good["v"].as_u64(), Some(3));
        assert_eq!(decode(&bytes).unwrap().message, m);
        for (key, bad) in [
            ("name", serde_json::json!("")),
            ("name", serde_json::json!("a/")),
            ("height", serde_json::json!(null)),
            ("content_type", serde_json::json!("x".repeat(129))),
        ] {
            let mut v = good.clone();
            v["attachment"][key] = bad;
            assert!(decode(v.to_string().as_bytes()).is_err(), "{key}");
        }
        let mut change = good.clone();
        change["kind"] = "reaction".into();
        change["text"] = "👍".into();
        change["ref_id"] = Id::new().to_string().into();
        change["ref_seq"] = 1.into();
        assert!(decode(change.to_string().as_bytes()).is_err());
        // Without a file, empty text is still refused.
        let mut bare = good.clone();
        bare["attachment"] = serde_json::Value::Null;
        assert!(decode(bare.to_string().as_bytes()).is_err());
    }

    #[test]
    fn rejects_poison() {
        let (room_id, m) = message();
        let good: serde_json::Value = serde_json::from_slice(&encode(room_id, &m)).unwrap();
        assert!(matches!(decode(b"not json"), Err(DecodeError::Json(_))));
        let mut v = good.clone();
        v["v"] = 4.into();
        assert_eq!(
            decode(v.to_string().as_bytes()),
            Err(DecodeError::Version(4))
        );
        for (key, bad) in [
            ("seq", serde_json::json!(0)),
            ("id", serde_json::json!("nope")),
            ("room", serde_json::json!("Bad Room")),
            ("text", serde_json::json!("")),
            ("client_id", serde_json::json!("")),
            ("sender", serde_json::json!("X")),
        ] {
            let mut v = good.clone();
            v[key] = bad;
            let err = decode(v.to_string().as_bytes()).unwrap_err();
            assert!(
                matches!(err, DecodeError::Field { field, .. } if field == key),
                "{key}: {err}"
            );
        }
        // Filed under another room's key: refused, since it would break per-room ordering.
        assert!(matches!(
            decode_keyed(Some(b"other"), &encode(room_id, &m)),
            Err(DecodeError::Key { .. })
        ));
    }
}
