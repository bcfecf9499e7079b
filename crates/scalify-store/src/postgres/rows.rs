//! Reading rows into the core types.

use super::*;

pub(super) fn parse_id(s: &str) -> Result<Id, sqlx::Error> {
    s.parse()
        .map_err(|e: ulid::DecodeError| sqlx::Error::Decode(Box::new(e)))
}

/// Reads `id, seq, sender_id, sender_name, client_id, text, ts, mentions` starting at column
/// `at`.
pub(super) fn read_message(r: &PgRow, at: usize, room: &RoomName) -> Result<Message, sqlx::Error> {
    let (mentions, mention_room) = decode_mentions(r.try_get::<Option<&str>, _>(at + 7)?);
    Ok(Message {
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
    })
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

pub(super) const MESSAGE_COLUMNS: &str =
    "id, seq, sender_id, sender_name, client_id, text, ts, mentions";

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
