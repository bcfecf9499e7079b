//! Changes to messages as entries of the room's log.
//!
//! An edit, a deletion or a reaction is not a mutation of an earlier entry: it is a new entry
//! of the room's seq log ([`MessageKind`]) that names the message it changes (`relates_to`).
//! So it inherits every guarantee of a message — ordered, idempotent on `client_id`, acked
//! after its commit, fanned out, recovered by `sync` — and a client that replays the log
//! reaches the state `history` bundles with each message. [`Timeline`] is that replay, the
//! rules in one place: the stores apply the same rules as they write (docs/protocol.md,
//! "Edits, deletions and reactions"), and the tests compare both.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::{ChatError, Id, Message, UserRef};

/// What a log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// A message someone wrote.
    #[default]
    Message,
    /// Its `text` replaces the text of the message it relates to (the sender's own).
    Edit,
    /// Erases the message it relates to, which stays as a placeholder.
    Delete,
    /// Its `text` is an emoji its sender adds to the message it relates to.
    Reaction,
    /// Takes its sender's reaction `text` off the message it relates to.
    Unreaction,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Message => "message",
            MessageKind::Edit => "edit",
            MessageKind::Delete => "delete",
            MessageKind::Reaction => "reaction",
            MessageKind::Unreaction => "unreaction",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            MessageKind::Message,
            MessageKind::Edit,
            MessageKind::Delete,
            MessageKind::Reaction,
            MessageKind::Unreaction,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// How a store keeps it: `NULL` for a message (nearly every row, and free to store),
    /// else its name.
    pub fn column(self) -> Option<&'static str> {
        (self != MessageKind::Message).then(|| self.as_str())
    }

    /// From a store's column (see [`MessageKind::column`]); an unknown name reads as a
    /// message's absence of meaning, never as a message: `None`.
    pub fn from_column(s: Option<&str>) -> Option<Self> {
        match s {
            None => Some(MessageKind::Message),
            Some(s) => Self::parse(s).filter(|k| *k != MessageKind::Message),
        }
    }

    pub fn is_message(&self) -> bool {
        *self == MessageKind::Message
    }
}

/// What a reply shows of the message it answers: its sender and first line, as they are now
/// (an edit changes the preview; a deletion empties it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyPreview {
    pub id: Id,
    pub seq: u64,
    pub sender: UserRef,
    /// The first line of the text, at most [`PREVIEW_BYTES`] bytes (cut at a character).
    pub text: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Longest preview a reply carries, in bytes.
pub const PREVIEW_BYTES: usize = 200;

impl ReplyPreview {
    /// The preview of a message with `text` (empty when deleted).
    pub fn of(id: Id, seq: u64, sender: UserRef, text: &str, deleted: bool) -> Self {
        ReplyPreview {
            id,
            seq,
            sender,
            text: if deleted {
                String::new()
            } else {
                first_line(text, PREVIEW_BYTES)
            },
            deleted,
        }
    }
}

/// The first non-empty line of `text`, cut to at most `max` bytes at a character boundary.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut end = line.len().min(max);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

/// How many members reacted with one emoji, and whether the reader is one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReactionCount {
    pub count: u32,
    pub me: bool,
}

/// A reaction: one emoji, as the Unicode emoji set spells it — a single emoji, a flag, a
/// keycap, or a sequence joined by U+200D (skin tones and variation selectors included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Emoji(String);

/// Longest emoji accepted, in bytes: the longest sequences in the Unicode set (families,
/// flags of subdivisions) are under 40.
pub const MAX_EMOJI_BYTES: usize = 64;

impl Emoji {
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let bad = || ChatError::bad_request("emoji must be one emoji");
        if raw.is_empty() || raw.len() > MAX_EMOJI_BYTES {
            return Err(bad());
        }
        let chars: Vec<char> = raw.chars().collect();
        // Regional indicators come in pairs: one flag.
        if chars.iter().all(|c| is_regional_indicator(*c)) {
            return if chars.len() == 2 {
                Ok(Emoji(raw.into()))
            } else {
                Err(bad())
            };
        }
        // Tag sequences (subdivision flags): a black flag, tags, a cancel tag.
        if chars[0] == '\u{1F3F4}' && chars.len() > 2 && chars[chars.len() - 1] == '\u{E007F}' {
            let tags = &chars[1..chars.len() - 1];
            return if tags.iter().all(|c| ('\u{E0020}'..='\u{E007E}').contains(c)) {
                Ok(Emoji(raw.into()))
            } else {
                Err(bad())
            };
        }
        // Keycaps: a digit, '#' or '*', an optional VS16, U+20E3.
        if chars.last() == Some(&'\u{20E3}') {
            let base_ok = matches!(chars[0], '0'..='9' | '#' | '*');
            let middle_ok = chars[1..chars.len() - 1].iter().all(|c| *c == '\u{FE0F}');
            return if base_ok && middle_ok && chars.len() <= 3 {
                Ok(Emoji(raw.into()))
            } else {
                Err(bad())
            };
        }
        // Otherwise: pictographs, each followed by modifiers, joined by ZWJ.
        let mut expect_base = true;
        for c in chars {
            if expect_base {
                if !is_pictograph(c) {
                    return Err(bad());
                }
                expect_base = false;
            } else if c == '\u{200D}' {
                expect_base = true;
            } else if !is_modifier(c) {
                return Err(bad());
            }
        }
        if expect_base {
            return Err(bad());
        }
        Ok(Emoji(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

/// Code points that begin an emoji: the pictographic blocks and the older symbols that the
/// emoji set includes.
fn is_pictograph(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21AA}' | '\u{231A}'..='\u{23FF}' | '\u{24C2}'
        | '\u{25AA}'..='\u{25FE}' | '\u{2600}'..='\u{27BF}' | '\u{2934}' | '\u{2935}'
        | '\u{2B05}'..='\u{2B55}' | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1F0FF}' | '\u{1F10D}'..='\u{1F1AD}'
        | '\u{1F201}'..='\u{1F2FF}' | '\u{1F300}'..='\u{1F3FA}' | '\u{1F400}'..='\u{1FAFF}')
}

/// What may follow a pictograph inside one emoji: variation selectors and skin tones.
fn is_modifier(c: char) -> bool {
    matches!(
        c,
        '\u{FE0E}' | '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}' | '\u{20E3}'
    )
}

/// A message's state after every entry of its room's log up to now: the rules by which each
/// kind of entry changes it. Clients replay the log by the same rules; the stores apply them
/// as they write each entry.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// Messages by id, as they stand.
    pub messages: BTreeMap<u64, Message>,
    by_id: HashMap<Id, u64>,
    /// Who reacted with what, per message seq.
    reactions: HashMap<u64, BTreeMap<String, BTreeSet<Id>>>,
}

impl Timeline {
    /// Applies one entry, in seq order. Rules:
    /// - a message is added;
    /// - an edit replaces the text of its target if the target is a message of the edit's
    ///   sender that is not deleted, and sets `edited_at` to the edit's time; else nothing;
    /// - a delete erases the target's text, marks it deleted and drops its reactions;
    /// - a reaction adds its sender to the target's emoji (once), unless the target is
    ///   deleted; an unreaction takes it off.
    pub fn apply(&mut self, entry: &Message) {
        let target = entry.relates_seq.filter(|seq| {
            self.messages
                .get(seq)
                .is_some_and(|m| m.kind.is_message() && Some(m.id) == entry.relates_to)
        });
        match entry.kind {
            MessageKind::Message => {
                self.by_id.insert(entry.id, entry.seq);
                self.messages.insert(entry.seq, entry.clone());
            }
            MessageKind::Edit => {
                if let Some(m) = target.and_then(|seq| self.messages.get_mut(&seq)) {
                    if !m.deleted && m.sender.id == entry.sender.id {
                        m.text = entry.text.clone();
                        m.edited_at = Some(entry.ts);
                    }
                }
            }
            MessageKind::Delete => {
                if let Some(seq) = target {
                    if let Some(m) = self.messages.get_mut(&seq) {
                        if !m.deleted {
                            m.text = crate::MessageText::from_trusted(String::new());
                            m.attachment = None;
                            m.deleted = true;
                        }
                    }
                    self.reactions.remove(&seq);
                }
            }
            MessageKind::Reaction => {
                if let Some(seq) = target {
                    if self.messages.get(&seq).is_some_and(|m| !m.deleted) {
                        self.reactions
                            .entry(seq)
                            .or_default()
                            .entry(entry.text.as_str().to_owned())
                            .or_default()
                            .insert(entry.sender.id);
                    }
                }
            }
            MessageKind::Unreaction => {
                if let Some(by_emoji) = target.and_then(|seq| self.reactions.get_mut(&seq)) {
                    if let Some(users) = by_emoji.get_mut(entry.text.as_str()) {
                        users.remove(&entry.sender.id);
                        if users.is_empty() {
                            by_emoji.remove(entry.text.as_str());
                        }
                    }
                }
            }
        }
    }

    /// The message with seq `seq` as `reader` sees it: current text, and its reactions
    /// counted.
    pub fn get(&self, seq: u64, reader: Id) -> Option<Message> {
        let mut m = self.messages.get(&seq)?.clone();
        m.reactions = self
            .reactions
            .get(&seq)
            .map(|by_emoji| {
                by_emoji
                    .iter()
                    .map(|(emoji, users)| {
                        (
                            emoji.clone(),
                            ReactionCount {
                                count: users.len() as u32,
                                me: users.contains(&reader),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(m)
    }

    /// The seq of the message with id `id`, if the timeline has it.
    pub fn seq_of(&self, id: Id) -> Option<u64> {
        self.by_id.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientId, MessageText, RoomName};

    fn user(name: &str) -> UserRef {
        UserRef {
            id: Id::new(),
            username: name.into(),
        }
    }

    fn entry(
        seq: u64,
        from: &UserRef,
        kind: MessageKind,
        text: &str,
        to: Option<&Message>,
    ) -> Message {
        Message {
            id: Id::new(),
            room: RoomName::parse("r").unwrap(),
            seq,
            sender: from.clone(),
            text: MessageText::from_trusted(text.into()),
            client_id: ClientId::parse(&format!("c{seq}")).unwrap(),
            ts: 1000 + seq as i64,
            mentions: vec![],
            mention_room: false,
            kind,
            relates_to: to.map(|m| m.id),
            relates_seq: to.map(|m| m.seq),
            reply_to: None,
            attachment: None,
            edited_at: None,
            deleted: false,
            reactions: BTreeMap::new(),
        }
    }

    #[test]
    fn an_edit_changes_only_its_senders_live_message() {
        let (ann, bob) = (user("ann"), user("bob"));
        let mut t = Timeline::default();
        let m = entry(1, &ann, MessageKind::Message, "helo", None);
        t.apply(&m);
        t.apply(&entry(2, &bob, MessageKind::Edit, "hijacked", Some(&m)));
        assert_eq!(t.get(1, ann.id).unwrap().text.as_str(), "helo");
        t.apply(&entry(3, &ann, MessageKind::Edit, "hello", Some(&m)));
        let now = t.get(1, ann.id).unwrap();
        assert_eq!((now.text.as_str(), now.edited_at), ("hello", Some(1003)));
        t.apply(&entry(4, &ann, MessageKind::Delete, "", Some(&m)));
        t.apply(&entry(5, &ann, MessageKind::Edit, "back", Some(&m)));
        let now = t.get(1, ann.id).unwrap();
        assert!(now.deleted);
        assert_eq!(
            now.text.as_str(),
            "",
            "an edit after the deletion brings nothing back"
        );
    }

    #[test]
    fn reactions_count_each_member_once_and_go_with_a_deletion() {
        let (ann, bob) = (user("ann"), user("bob"));
        let mut t = Timeline::default();
        let m = entry(1, &ann, MessageKind::Message, "hi", None);
        t.apply(&m);
        t.apply(&entry(2, &bob, MessageKind::Reaction, "👍", Some(&m)));
        t.apply(&entry(3, &bob, MessageKind::Reaction, "👍", Some(&m)));
        t.apply(&entry(4, &ann, MessageKind::Reaction, "👍", Some(&m)));
        t.apply(&entry(5, &ann, MessageKind::Reaction, "🎉", Some(&m)));
        t.apply(&entry(6, &ann, MessageKind::Unreaction, "🎉", Some(&m)));
        let seen = t.get(1, bob.id).unwrap().reactions;
        assert_eq!(seen.len(), 1);
        assert_eq!(seen["👍"], ReactionCount { count: 2, me: true });
        t.apply(&entry(7, &bob, MessageKind::Delete, "", Some(&m)));
        t.apply(&entry(8, &bob, MessageKind::Reaction, "👍", Some(&m)));
        assert!(t.get(1, bob.id).unwrap().reactions.is_empty());
    }

    #[test]
    fn an_entry_whose_target_id_and_seq_disagree_changes_nothing() {
        let ann = user("ann");
        let mut t = Timeline::default();
        let m = entry(1, &ann, MessageKind::Message, "hi", None);
        t.apply(&m);
        let mut edit = entry(2, &ann, MessageKind::Edit, "x", Some(&m));
        edit.relates_to = Some(Id::new());
        t.apply(&edit);
        assert_eq!(t.get(1, ann.id).unwrap().text.as_str(), "hi");
    }

    #[test]
    fn emoji_are_single_emoji_sequences() {
        for ok in [
            "👍",
            "👍🏽",
            "❤️",
            "🏳️‍🌈",
            "👨‍👩‍👧‍👦",
            "🇫🇷",
            "1️⃣",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        ] {
            assert!(Emoji::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "a",
            "👍👍",
            "👍 ",
            "🇫",
            "🇫🇷🇫",
            "<b>",
            "‍👍",
            "👍‍",
            "1",
            &"👍🏽".repeat(20),
        ] {
            assert!(Emoji::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_preview_is_the_first_line_cut_at_a_character() {
        assert_eq!(first_line("\n  hello  \nworld", 200), "hello");
        assert_eq!(first_line("ééé", 3), "é");
        let p = ReplyPreview::of(Id::new(), 1, user("a"), "secret", true);
        assert_eq!(p.text, "");
    }

    #[test]
    fn kinds_round_trip_through_their_column() {
        for k in [
            MessageKind::Message,
            MessageKind::Edit,
            MessageKind::Delete,
            MessageKind::Reaction,
            MessageKind::Unreaction,
        ] {
            assert_eq!(MessageKind::from_column(k.column()), Some(k));
        }
        assert_eq!(MessageKind::from_column(Some("message")), None);
        assert_eq!(MessageKind::from_column(Some("poll")), None);
    }
}
