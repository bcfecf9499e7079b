//! The envelope a room event travels in between nodes: the origin node, the kind and the payload
//! bytes as they are.

use super::*;

/// Wire form of a [`RoomEvent`] on a channel: six header lines, then the JSON payload as-is
/// (it is never re-serialized): `node \n room \n kind \n seq \n ts \n except_user \n payload`.
pub(super) fn encode(node: &str, event: &RoomEvent) -> Vec<u8> {
    let (kind, seq, ts) = match event.kind {
        EventKind::Message { seq, ts } => ("m", seq, ts),
        EventKind::Typing => ("t", 0, 0),
        EventKind::Presence => ("p", 0, 0),
        EventKind::RoomAdded => ("a", 0, 0),
        EventKind::SessionsEnded => ("s", 0, 0),
        EventKind::MemberRemoved => ("r", 0, 0),
        EventKind::BudgetSpent => ("b", 0, 0),
        EventKind::RoomCreated => ("c", 0, 0),
        EventKind::Read => ("d", 0, 0),
        EventKind::Receipt => ("e", 0, 0),
        EventKind::Notifications => ("n", 0, 0),
        EventKind::Settings => ("g", 0, 0),
    };
    let except = event.except_user.map(|u| u.to_string()).unwrap_or_default();
    let payload = event.payload.get();
    let mut out = Vec::with_capacity(node.len() + event.room.as_str().len() + payload.len() + 48);
    for part in [
        node,
        event.room.as_str(),
        kind,
        &seq.to_string(),
        &ts.to_string(),
        &except,
    ] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(payload.as_bytes());
    out
}

/// The node that published an envelope (its first line), without decoding the rest.
pub(super) fn origin(bytes: &[u8]) -> Option<&[u8]> {
    bytes
        .iter()
        .position(|&b| b == b'\n')
        .map(|end| &bytes[..end])
}

/// The event an envelope carries; its first line, the publishing node, is read by [`origin`].
pub(super) fn decode(bytes: &[u8]) -> Result<RoomEvent, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let mut parts = text.splitn(7, '\n').skip(1);
    let mut next = || parts.next().ok_or_else(|| "truncated envelope".to_owned());
    let room = RoomName::parse_internal(next()?).map_err(|e| e.message)?;
    let kind = next()?;
    let seq: u64 = next()?.parse().map_err(|_| "bad seq".to_owned())?;
    let ts: i64 = next()?.parse().map_err(|_| "bad ts".to_owned())?;
    let except = match next()? {
        "" => None,
        id => Some(id.parse::<Id>().map_err(|e| e.to_string())?),
    };
    let payload = RawValue::from_string(next()?.to_owned()).map_err(|e| e.to_string())?;
    let kind = match kind {
        "m" => EventKind::Message { seq, ts },
        "t" => EventKind::Typing,
        "p" => EventKind::Presence,
        "a" => EventKind::RoomAdded,
        "s" => EventKind::SessionsEnded,
        "r" => EventKind::MemberRemoved,
        "b" => EventKind::BudgetSpent,
        "c" => EventKind::RoomCreated,
        "d" => EventKind::Read,
        "e" => EventKind::Receipt,
        "n" => EventKind::Notifications,
        "g" => EventKind::Settings,
        other => return Err(format!("unknown kind '{other}'")),
    };
    Ok(RoomEvent {
        room,
        kind,
        payload: Arc::from(payload),
        except_user: except,
    })
}
