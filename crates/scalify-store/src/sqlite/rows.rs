//! Reading rows into the core types.

use super::*;

pub(super) const MESSAGE_COLUMNS: &str =
    "id, seq, sender_id, sender_name, client_id, text, ts, mentions";

pub(super) fn parse_id(s: String) -> rusqlite::Result<Id> {
    s.parse().map_err(|e: ulid::DecodeError| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn read_message(r: &rusqlite::Row<'_>, room: &RoomName) -> rusqlite::Result<Message> {
    let (mentions, mention_room) = decode_mentions(r.get::<_, Option<String>>(7)?.as_deref());
    Ok(Message {
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
    })
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
