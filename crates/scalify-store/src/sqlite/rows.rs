//! Reading rows into the core types.

use super::*;

/// A message row's columns, read from [`MESSAGES_FROM`]: the message (`m`) and the one it
/// refers to (`p`: the message a change changes, or a reply answers).
pub(super) const MESSAGE_COLUMNS: &str =
    "m.id, m.seq, m.sender_id, m.sender_name, m.client_id, m.text, m.ts, m.mentions, m.kind,
     m.ref_seq, m.edited_at, m.deleted_at, p.id, p.sender_id, p.sender_name, p.text, p.deleted_at,
     m.attachment";

/// The tables [`MESSAGE_COLUMNS`] reads.
pub(super) const MESSAGES_FROM: &str =
    "messages m LEFT JOIN messages p ON p.room_id = m.room_id AND p.seq = m.ref_seq";

pub(super) fn parse_id(s: String) -> rusqlite::Result<Id> {
    s.parse().map_err(|e: ulid::DecodeError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn read_message(r: &rusqlite::Row<'_>, room: &RoomName) -> rusqlite::Result<Message> {
    let (mentions, mention_room) = decode_mentions(r.get::<_, Option<String>>(7)?.as_deref());
    let kind_column: Option<String> = r.get(8)?;
    let kind = MessageKind::from_column(kind_column.as_deref()).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            8,
            rusqlite::types::Type::Text,
            format!("unknown message kind {kind_column:?}").into(),
        )
    })?;
    let ref_seq = r.get::<_, Option<i64>>(9)?.map(|s| s as u64);
    let referred = match (ref_seq, r.get::<_, Option<String>>(12)?) {
        (Some(seq), Some(id)) => Some((seq, parse_id(id)?)),
        _ => None,
    };
    let mut message = Message {
        id: parse_id(r.get(0)?)?,
        room: room.clone(),
        seq: r.get::<_, i64>(1)? as u64,
        sender: UserRef {
            id: parse_id(r.get(2)?)?,
            username: r.get(3)?,
        },
        client_id: ClientId::from_trusted(r.get(4)?),
        text: MessageText::from_trusted(r.get(5)?),
        ts: r.get(6)?,
        mentions,
        mention_room,
        kind,
        relates_to: None,
        relates_seq: None,
        reply_to: None,
        attachment: crate::decode_attachment(r.get::<_, Option<String>>(17)?.as_deref()).map_err(
            |e| {
                rusqlite::Error::FromSqlConversionFailure(17, rusqlite::types::Type::Text, e.into())
            },
        )?,
        edited_at: r.get(10)?,
        deleted: r.get::<_, Option<i64>>(11)?.is_some(),
        reactions: Default::default(),
    };
    if let Some((seq, id)) = referred {
        crate::attach_reference(&mut message, seq, id, || -> rusqlite::Result<_> {
            let sender = UserRef {
                id: parse_id(r.get(13)?)?,
                username: r.get(14)?,
            };
            Ok((sender, r.get(15)?, r.get::<_, Option<i64>>(16)?.is_some()))
        })?;
    }
    Ok(message)
}

pub(super) fn read_room(r: &rusqlite::Row<'_>) -> rusqlite::Result<Room> {
    let kind: String = r.get(2)?;
    Ok(Room {
        id: parse_id(r.get(0)?)?,
        name: RoomName::from_trusted(r.get(1)?),
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Private),
        last_seq: r.get::<_, i64>(3)? as u64,
    })
}

pub(super) fn room_by_name(conn: &Connection, name: &RoomName) -> StoreResult<Option<Room>> {
    Ok(conn
        .prepare_cached("SELECT id, name, kind, last_seq FROM rooms WHERE name = ?1")?
        .query_row(params![name.as_str()], read_room)
        .optional()?)
}

pub(super) fn read_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let name: String = r.get(1)?;
    Ok(User {
        id: parse_id(r.get(0)?)?,
        // Stored names were validated on the way in; re-parse to keep the type honest.
        username: Username::parse(&name).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
    })
}

/// The five columns of `read_state_sql!` starting at column `at`.
pub(super) fn read_state(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ReadState> {
    Ok(ReadState::from_sql(
        r.get(at)?,
        r.get(at + 1)?,
        r.get(at + 2)?,
        &r.get::<_, String>(at + 3)?,
        r.get(at + 4)?,
    ))
}
