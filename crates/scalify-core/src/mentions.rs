//! Mentions and what a member is notified of: `@username` and `@room` in a message's text,
//! each member's notification level per room, and each user's notification settings.

use serde::{Deserialize, Serialize};

use crate::{ChatError, Username};

/// Most `@names` of one message that are looked up: a text full of `@`s costs no more than
/// this many lookups.
pub const MAX_MENTION_NAMES: usize = 50;

/// The `@` names a text holds, as candidates for members' usernames, and whether it says
/// `@room`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MentionNames {
    /// Distinct, in order of appearance, at most [`MAX_MENTION_NAMES`].
    pub names: Vec<Username>,
    pub room: bool,
}

/// Finds the `@name`s of a text. A name is the longest run of characters a username may hold
/// (ASCII letters, digits, `_`, `.`, `-`; letters match either case) after an `@` that does
/// not follow a letter, digit or `_` (so an e-mail address mentions nobody; any non-ASCII
/// character counts as a letter here). A name that ends
/// in `.` or `-` is also tried without them: "thanks @bob." mentions bob.
pub fn mention_names(text: &str) -> MentionNames {
    let mut out = MentionNames::default();
    if !text.contains('@') {
        return out;
    }
    let bytes = text.as_bytes();
    // Any non-ASCII byte counts as part of a word: "é@bob" is no mention.
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let mut i = 0;
    while i < bytes.len() && out.names.len() < MAX_MENTION_NAMES {
        if bytes[i] != b'@' || (i > 0 && word_byte(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < bytes.len() && name_byte(bytes[end]) {
            end += 1;
        }
        i = end.max(start);
        // The run is ASCII, so these are char boundaries.
        let token = &text[start..end];
        if token.eq_ignore_ascii_case("room") {
            out.room = true;
            continue;
        }
        let trimmed = token.trim_end_matches(['.', '-']);
        for candidate in [token, trimmed] {
            if let Ok(name) = Username::parse(candidate) {
                if !out.names.contains(&name) && out.names.len() < MAX_MENTION_NAMES {
                    out.names.push(name);
                }
            }
        }
    }
    out
}

/// What of a room notifies a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyLevel {
    /// Every message of others.
    #[default]
    All,
    /// Messages that mention the member or the room; in a DM, every message.
    Mentions,
    /// Nothing (muted): unread still counts.
    None,
}

impl NotifyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyLevel::All => "all",
            NotifyLevel::Mentions => "mentions",
            NotifyLevel::None => "none",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ChatError> {
        match s {
            "all" => Ok(NotifyLevel::All),
            "mentions" => Ok(NotifyLevel::Mentions),
            "none" => Ok(NotifyLevel::None),
            _ => Err(ChatError::bad_request(
                "level must be one of 'all', 'mentions', 'none'",
            )),
        }
    }

    /// Whether a message notifies at this level: `mentioned` when it mentions the member or
    /// the room, or is in a DM.
    pub fn notifies(self, mentioned: bool) -> bool {
        match self {
            NotifyLevel::All => true,
            NotifyLevel::Mentions => mentioned,
            NotifyLevel::None => false,
        }
    }
}

/// A user's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Others see how far this user has read, and this user sees how far others have.
    pub read_receipts: bool,
    /// Notifications sent while the user is away may quote the message.
    pub previews: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            read_receipts: true,
            previews: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        mention_names(text)
            .names
            .into_iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn finds_names_after_an_at_sign_that_starts_a_word() {
        assert_eq!(
            names("hi @bob and @Ann_1, @carol-x!"),
            ["bob", "ann_1", "carol-x"]
        );
        assert_eq!(
            names("write to ann@example.org or x_@bob"),
            Vec::<String>::new()
        );
        assert_eq!(names("(@bob)"), ["bob"]);
        assert_eq!(names("@bob @BOB @bob"), ["bob"]);
        assert_eq!(names("no mention @ all, @x, @"), Vec::<String>::new());
    }

    #[test]
    fn a_trailing_dot_or_dash_is_tried_both_ways() {
        assert_eq!(names("thanks @bob."), ["bob.", "bob"]);
        assert_eq!(names("@a.b.c"), ["a.b.c"]);
    }

    #[test]
    fn at_room_is_a_flag_in_any_case() {
        let m = mention_names("@Room please read");
        assert!(m.room);
        assert!(m.names.is_empty());
        assert!(!mention_names("@rooms").room);
        assert_eq!(names("@rooms"), ["rooms"]);
    }

    #[test]
    fn the_number_of_names_is_bounded() {
        let text: String = (0..500).map(|i| format!("@user{i} ")).collect();
        assert_eq!(mention_names(&text).names.len(), MAX_MENTION_NAMES);
        // Multi-byte text around the names is no problem.
        assert_eq!(names("é@bob ü @ann é"), ["ann"]);
    }

    #[test]
    fn levels_parse_and_decide() {
        assert_eq!(
            NotifyLevel::parse("mentions").unwrap(),
            NotifyLevel::Mentions
        );
        assert!(NotifyLevel::parse("loud").is_err());
        assert!(NotifyLevel::All.notifies(false));
        assert!(!NotifyLevel::Mentions.notifies(false));
        assert!(NotifyLevel::Mentions.notifies(true));
        assert!(!NotifyLevel::None.notifies(true));
    }
}
