//! Validated newtypes for everything a client names. Parsing is the only way in, so a value of
//! one of these types is known to satisfy the contract everywhere downstream.

use std::fmt;

use serde::Serialize;

use crate::ChatError;

fn all_chars(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(allowed)
}

/// A username: `[a-z0-9_.-]{3,32}` after case-folding, so `Alice` and `alice` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let folded = raw.trim().to_lowercase();
        let ok = (3..=32).contains(&folded.len())
            && all_chars(&folded, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if ok {
            Ok(Username(folded))
        } else {
            Err(ChatError::bad_request(
                "username must be 3-32 characters of a-z, 0-9, '_', '.', '-'",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room name: `[a-z0-9_-]{1,64}`. Names starting with `dm-` are reserved for direct-message
/// rooms, which only the server creates (see [`RoomName::for_dm`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    pub const DM_PREFIX: &'static str = "dm-";

    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let ok = (1..=64).contains(&raw.len())
            && all_chars(raw, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
            });
        if ok {
            Ok(RoomName(raw.to_owned()))
        } else {
            Err(ChatError::bad_request(
                "room name must be 1-64 characters of a-z, 0-9, '_', '-'",
            ))
        }
    }

    /// Like [`RoomName::parse`], for a room a user creates (by `join` or `POST /api/rooms`):
    /// the DM prefix is refused so nobody can squat the name of a future DM.
    pub fn parse_creatable(raw: &str) -> Result<Self, ChatError> {
        let name = Self::parse(raw)?;
        if name.is_dm() {
            return Err(ChatError::bad_request(
                "room names starting with 'dm-' are reserved for direct messages",
            ));
        }
        Ok(name)
    }

    /// The one name of the DM room between two users, the same whichever of them asks:
    /// `dm-<lower id>-<higher id>` (ULIDs in lower case, 56 characters).
    pub fn for_dm(a: crate::Id, b: crate::Id) -> Self {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        RoomName(format!(
            "{}{}-{}",
            Self::DM_PREFIX,
            lo.to_lowercase(),
            hi.to_lowercase()
        ))
    }

    pub fn is_dm(&self) -> bool {
        self.0.starts_with(Self::DM_PREFIX)
    }

    /// The two users of a DM room, read from its name; `None` for any other room.
    pub fn dm_users(&self) -> Option<(crate::Id, crate::Id)> {
        let (a, b) = self.0.strip_prefix(Self::DM_PREFIX)?.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }

    /// A user's inbox: the internal room through which the server tells all of a user's
    /// connections, on any node, about something that concerns them alone (they were added to
    /// a room). The ':' makes it a name no client can join, create or send to.
    pub fn inbox(user: crate::Id) -> Self {
        RoomName(format!("{}{user}", Self::INBOX_PREFIX))
    }

    const INBOX_PREFIX: &'static str = "user:";

    pub fn is_inbox(&self) -> bool {
        self.0.starts_with(Self::INBOX_PREFIX)
    }

    /// The user whose inbox this is, if it is one.
    pub fn inbox_user(&self) -> Option<crate::Id> {
        self.0.strip_prefix(Self::INBOX_PREFIX)?.parse().ok()
    }

    /// The cluster's control room: every node listens to it, for what every node must learn
    /// at once (a member removed from a room, sessions ended). No client can join it.
    pub fn control() -> Self {
        RoomName(Self::CONTROL.to_owned())
    }

    const CONTROL: &'static str = "cluster:control";

    pub fn is_control(&self) -> bool {
        self.0 == Self::CONTROL
    }

    /// Parses a name that may also be an inbox or the control room (for names arriving from
    /// other nodes).
    pub fn parse_internal(raw: &str) -> Result<Self, ChatError> {
        if raw == Self::CONTROL {
            return Ok(Self::control());
        }
        match raw.strip_prefix(Self::INBOX_PREFIX) {
            Some(id) => id
                .parse::<crate::Id>()
                .map(Self::inbox)
                .map_err(|_| ChatError::bad_request("bad inbox name")),
            None => Self::parse(raw),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a name read back from our own store; it was validated when written.
    pub fn from_trusted(s: String) -> Self {
        RoomName(s)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as typed: at least 8 characters. The upper bound (1024 bytes) keeps hashing cost
/// bounded against a client that posts megabytes.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        if raw.chars().count() < 8 {
            return Err(ChatError::bad_request(
                "password must be at least 8 characters",
            ));
        }
        if raw.len() > 1024 {
            return Err(ChatError::bad_request(
                "password must be at most 1024 bytes",
            ));
        }
        Ok(Password(raw.to_owned()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The client's own identifier for a send, 1–64 characters; the key of idempotency together
/// with the sender and the room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let chars = raw.chars().count();
        if (1..=64).contains(&chars) && !raw.chars().any(char::is_control) {
            Ok(ClientId(raw.to_owned()))
        } else {
            Err(ChatError::bad_request(
                "client_id must be 1-64 characters without control characters",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn from_trusted(s: String) -> Self {
        ClientId(s)
    }
}

/// Message text: non-empty (not only whitespace) UTF-8, at most `max_bytes` bytes, without
/// NUL characters (PostgreSQL cannot store them in text, so no engine accepts them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: &str, max_bytes: usize) -> Result<Self, ChatError> {
        if raw.trim().is_empty() {
            return Err(ChatError::bad_request("text must not be empty"));
        }
        if raw.len() > max_bytes {
            return Err(ChatError::too_large(format!(
                "text is {} bytes; the limit is {max_bytes}",
                raw.len()
            )));
        }
        if raw.contains('\0') {
            return Err(ChatError::bad_request(
                "text must not contain NUL characters",
            ));
        }
        Ok(MessageText(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn from_trusted(s: String) -> Self {
        MessageText(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Id};

    #[test]
    fn usernames_are_case_folded_and_checked() {
        assert_eq!(Username::parse("Alice_1").unwrap().as_str(), "alice_1");
        assert_eq!(Username::parse("a.b-c").unwrap().as_str(), "a.b-c");
        for bad in [
            "ab",
            "",
            "has space",
            "x".repeat(33).as_str(),
            "émile",
            "a/b",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Username::parse(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn room_names_follow_the_contract() {
        assert!(RoomName::parse("general").is_ok());
        assert!(RoomName::parse("a").is_ok());
        assert!(RoomName::parse(&"r".repeat(64)).is_ok());
        for bad in ["", "General", "a.b", "a b", &"r".repeat(65), "é"] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_dm_name_gives_back_its_two_users() {
        let (a, b) = (crate::Id::new(), crate::Id::new());
        let name = RoomName::for_dm(b, a);
        let (lo, hi) = name.dm_users().expect("a DM");
        assert_eq!((lo.min(hi), lo.max(hi)), (a.min(b), a.max(b)));
        assert_eq!(RoomName::parse("general").unwrap().dm_users(), None);
    }

    #[test]
    fn dm_names_are_reserved_symmetric_and_valid() {
        let (a, b) = (Id::new(), Id::new());
        let ab = RoomName::for_dm(a, b);
        assert_eq!(ab, RoomName::for_dm(b, a));
        assert!(ab.is_dm());
        assert!(RoomName::parse(ab.as_str()).is_ok());
        assert!(RoomName::parse_creatable(ab.as_str()).is_err());
        assert!(RoomName::parse_creatable("dm-x").is_err());
    }

    #[test]
    fn passwords_need_eight_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"p".repeat(2000)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pass").unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn client_ids_are_bounded() {
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse(&"c".repeat(64)).is_ok());
        assert!(ClientId::parse(&"c".repeat(65)).is_err());
        assert!(ClientId::parse("a\nb").is_err());
    }

    #[test]
    fn inbox_names_cannot_be_parsed_from_client_input() {
        let id = Id::new();
        let inbox = RoomName::inbox(id);
        assert!(inbox.is_inbox());
        assert!(RoomName::parse(inbox.as_str()).is_err());
        assert_eq!(RoomName::parse_internal(inbox.as_str()).unwrap(), inbox);
        assert!(RoomName::parse_internal("user:not-an-id").is_err());
        let control = RoomName::control();
        assert!(RoomName::parse(control.as_str()).is_err());
        assert_eq!(RoomName::parse_internal(control.as_str()).unwrap(), control);
        assert!(control.is_control() && !control.is_inbox());
        assert_eq!(
            RoomName::parse_internal("general").unwrap().as_str(),
            "general"
        );
    }

    #[test]
    fn text_limits_distinguish_empty_from_too_large() {
        assert_eq!(
            MessageText::parse("  ", 10).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            MessageText::parse("hello world", 5).unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert_eq!(MessageText::parse("héllo", 6).unwrap().as_str(), "héllo");
        assert_eq!(
            MessageText::parse("a\0b", 10).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert!(MessageText::parse("line\nbreak\ttab", 20).is_ok());
    }
}
