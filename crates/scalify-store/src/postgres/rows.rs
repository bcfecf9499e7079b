//! Reading rows into the core types.

use super::*;

pub(super) fn parse_id(s: &str) -> Result<Id, sqlx::Error> {
    s.parse()
        .map_err(|e: ulid::DecodeError| sqlx::Error::Decode(Box::new(e)))
}

/// Reads [`MESSAGE_COLUMNS`] starting at column `at`.
pub(super) fn read_message(r: &PgRow, at: usize, room: &RoomName) -> Result<Message, sqlx::Error> {
    let (mentions, mention_room) = decode_mentions(r.try_get::<Option<&str>, _>(at + 7)?);
    let kind_column: Option<&str> = r.try_get(at + 8)?;
    let kind = MessageKind::from_column(kind_column).ok_or_else(|| {
        sqlx::Error::Decode(format!("unknown message kind {kind_column:?}").into())
    })?;
    let ref_seq = r.try_get::<Option<i64>, _>(at + 9)?.map(|s| s as u64);
    let referred = match (ref_seq, r.try_get::<Option<&str>, _>(at + 12)?) {
        (Some(seq), Some(id)) => Some((seq, parse_id(id)?)),
        _ => None,
    };
    let mut message = Message {
        id: parse_id(r.try_get::<&str, _>(at)?)?,
        room: room.clone(),
        seq: r.try_get::<i64, _>(at + 1)? as u64,
        sender: UserRef {
            id: parse_id(r.try_get::<&str, _>(at + 2)?)?,
            username: r.try_get(at + 3)?,
        },
        client_id: ClientId::from_trusted(r.try_get(at + 4)?),
        text: MessageText::from_trusted(r.try_get(at + 5)?),
        ts: r.try_get(at + 6)?,
        mentions,
        mention_room,
        kind,
        relates_to: None,
        relates_seq: None,
        reply_to: None,
        attachment: crate::decode_attachment(r.try_get::<Option<&str>, _>(at + 17)?)
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        edited_at: r.try_get(at + 10)?,
        deleted: r.try_get::<Option<i64>, _>(at + 11)?.is_some(),
        reactions: Default::default(),
    };
    if let Some((seq, id)) = referred {
        crate::attach_reference(&mut message, seq, id, || -> Result<_, sqlx::Error> {
            let sender = UserRef {
                id: parse_id(r.try_get::<&str, _>(at + 13)?)?,
                username: r.try_get(at + 14)?,
            };
            Ok((
                sender,
                r.try_get(at + 15)?,
                r.try_get::<Option<i64>, _>(at + 16)?.is_some(),
            ))
        })?;
    }
    Ok(message)
}

pub(super) fn read_room(r: &PgRow) -> Result<Room, sqlx::Error> {
    let kind: &str = r.try_get(2)?;
    Ok(Room {
        id: parse_id(r.try_get::<&str, _>(0)?)?,
        name: RoomName::from_trusted(r.try_get(1)?),
        kind: RoomKind::parse(kind).unwrap_or(RoomKind::Private),
        last_seq: r.try_get::<i64, _>(3)? as u64,
    })
}

pub(super) fn read_user(r: &PgRow) -> Result<User, sqlx::Error> {
    let name: &str = r.try_get(1)?;
    Ok(User {
        id: parse_id(r.try_get::<&str, _>(0)?)?,
        username: Username::parse(name).map_err(|e| sqlx::Error::Decode(e.into()))?,
    })
}

/// A message row's columns, read from [`MESSAGES_FROM`]: the message (`m`) and the one it
/// refers to (`p`: the message a change changes, or a reply answers).
pub(super) const MESSAGE_COLUMNS: &str =
    "m.id, m.seq, m.sender_id, m.sender_name, m.client_id, m.text, m.ts, m.mentions, m.kind,
     m.ref_seq, m.edited_at, m.deleted_at, p.id, p.sender_id, p.sender_name, p.text, p.deleted_at,
     m.attachment";

/// The tables [`MESSAGE_COLUMNS`] reads.
pub(super) const MESSAGES_FROM: &str =
    "messages m LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq";

/// The five columns of `read_state_sql!` starting at column `at`.
pub(super) fn read_state(r: &PgRow, at: usize) -> Result<ReadState, sqlx::Error> {
    Ok(ReadState::from_sql(
        r.try_get(at)?,
        r.try_get(at + 1)?,
        r.try_get(at + 2)?,
        r.try_get(at + 3)?,
        r.try_get(at + 4)?,
    ))
}
