//! What one notification says: for each member a room may notify, the messages they have not
//! read that notify at their level, summed up — how many, how many mention them, who wrote
//! the first and (if they allow previews) how it starts.

use scalify_core::{Message, Room, RoomKind, UserRef};
use scalify_store::notify::Recipient;
use serde::Serialize;

/// Most characters of the first message a notification quotes.
pub const PREVIEW_CHARS: usize = 140;

/// The body of a notification, as the webhook receives it and a Web Push payload carries it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// The notification's id: the same in every delivery of it (an idempotency key).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Who is notified.
    pub user: UserRef,
    pub room: SummaryRoom,
    /// Messages told of: unread, from others, notifying at the user's level.
    pub count: u32,
    /// Of those, the ones that mention the user or the room (in a DM: all).
    pub mentions: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The sender of the first one.
    pub from: UserRef,
    /// When the first one was sent (ms since the epoch).
    pub ts: i64,
    /// How the first one starts; left out when the user turned previews off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// The room of a [`Summary`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SummaryRoom {
    pub name: String,
    pub kind: RoomKind,
}

/// The summary for `recipient` of `messages` (ascending seq) in `room`, if any of them is for
/// them.
pub fn summarize(room: &Room, messages: &[Message], recipient: &Recipient) -> Option<Summary> {
    let dm = room.kind == RoomKind::Dm;
    let me = recipient.user.id;
    let mut told = messages.iter().filter_map(|m| {
        if m.seq <= recipient.last_read || m.sender.id == me || !m.is_counted() || m.deleted {
            return None;
        }
        let mentioned = m.mentions_user(me, dm);
        recipient
            .level
            .notifies(mentioned)
            .then_some((m, mentioned))
    });
    let (first, mentioned) = told.next()?;
    let (mut count, mut mentions, mut last_seq) = (1u32, u32::from(mentioned), first.seq);
    for (m, mentioned) in told {
        count += 1;
        mentions += u32::from(mentioned);
        last_seq = m.seq;
    }
    Some(Summary {
        id: ulid::Ulid::new().to_string(),
        kind: "messages",
        user: recipient.user.clone(),
        room: SummaryRoom {
            name: room.name.to_string(),
            kind: room.kind,
        },
        count,
        mentions,
        first_seq: first.seq,
        last_seq,
        from: first.sender.clone(),
        ts: first.ts,
        preview: recipient.previews.then(|| preview(first.text.as_str())),
    })
}

/// The first [`PREVIEW_CHARS`] characters of `text`, with an ellipsis when cut.
fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalify_core::{ClientId, Id, MessageText, NotifyLevel, RoomName};

    fn user(name: &str) -> UserRef {
        UserRef {
            id: Id::new(),
            username: name.into(),
        }
    }

    fn msg(seq: u64, from: &UserRef, text: &str, mentions: Vec<Id>) -> Message {
        let mut new = scalify_core::NewMessage::plain(
            Id::new(),
            RoomName::from_trusted("general".into()),
            from.clone(),
            MessageText::from_trusted(text.into()),
            ClientId::from_trusted(format!("c{seq}")),
        );
        new.mentions = mentions;
        Message::from_new(new, Id::new(), seq, 1000 + seq as i64)
    }

    fn room(kind: RoomKind) -> Room {
        Room {
            id: Id::new(),
            name: RoomName::from_trusted("general".into()),
            kind,
            last_seq: 9,
        }
    }

    fn recipient(u: &UserRef, level: NotifyLevel, last_read: u64, previews: bool) -> Recipient {
        Recipient {
            user: u.clone(),
            level,
            last_read,
            previews,
        }
    }

    #[test]
    fn a_summary_counts_others_unread_messages_at_the_members_level() {
        let (ann, bob) = (user("ann"), user("bob"));
        let messages = vec![
            msg(1, &ann, "read already", vec![]),
            msg(2, &bob, "bob's own", vec![]),
            msg(3, &ann, "hello bob", vec![]),
            msg(4, &ann, "@bob look", vec![bob.id]),
        ];
        let s = summarize(
            &room(RoomKind::Public),
            &messages,
            &recipient(&bob, NotifyLevel::All, 1, true),
        )
        .expect("a summary");
        assert_eq!((s.count, s.mentions, s.first_seq, s.last_seq), (2, 1, 3, 4));
        assert_eq!(s.from, ann);
        assert_eq!(s.preview.as_deref(), Some("hello bob"));

        let s = summarize(
            &room(RoomKind::Public),
            &messages,
            &recipient(&bob, NotifyLevel::Mentions, 1, false),
        )
        .expect("a summary");
        assert_eq!((s.count, s.first_seq, s.preview), (1, 4, None));

        assert!(summarize(
            &room(RoomKind::Public),
            &messages,
            &recipient(&bob, NotifyLevel::Mentions, 4, true)
        )
        .is_none());
        assert!(summarize(
            &room(RoomKind::Public),
            &messages[..3],
            &recipient(&bob, NotifyLevel::Mentions, 0, true)
        )
        .is_none());
    }

    #[test]
    fn every_message_of_a_dm_counts_as_a_mention() {
        let (ann, bob) = (user("ann"), user("bob"));
        let messages = vec![msg(1, &ann, "hi", vec![]), msg(2, &ann, "there", vec![])];
        let s = summarize(
            &room(RoomKind::Dm),
            &messages,
            &recipient(&bob, NotifyLevel::Mentions, 0, true),
        )
        .expect("a summary");
        assert_eq!((s.count, s.mentions), (2, 2));
    }

    #[test]
    fn a_preview_is_cut_on_a_character_boundary() {
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let p = preview(&long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
        assert!(p.ends_with('…'));
        assert_eq!(preview("short"), "short");
    }
}
