//! Messages: sending (validated, idempotent on `client_id`), history and `sync`.

use super::*;
use scalify_core::{fragment, Emoji, MessageKind, ReplyPreview, SearchPage, SearchQuery};

/// One search hit: the message as it stands now, and the part of its text that matched.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub message: Message,
    pub fragment: String,
}

/// A page of search hits, whether more follow, and the words the query looks for (lower
/// case), which a client marks in the fragments without parsing the query itself.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
    pub has_more: bool,
    pub words: Vec<String>,
}

/// Most bytes of messages one `sync` answers with (about: text plus a fixed allowance for the
/// other fields); past it the room is `truncated` and the client syncs again from there.
pub const SYNC_MAX_BYTES: usize = 1 << 20;

/// A message's share of an answer: its text and client id, plus the other fields.
fn approx_bytes(m: &Message) -> usize {
    m.text.as_str().len() + m.client_id.as_str().len() + m.sender.username.len() + 160
}

/// A change to a message ([`Chat::change`]), as a client asked for it. Owned: an HTTP
/// handler moves it into the task that runs it.
#[derive(Debug, Clone)]
pub enum Change {
    /// New text for the sender's own message.
    Edit(String),
    Delete,
    /// Adds the user's reaction with this emoji.
    React(String),
    /// Takes the user's reaction with this emoji off.
    Unreact(String),
}

/// The message id a client gave as `field`.
fn message_id(raw: &str, field: &str) -> Result<Id, ChatError> {
    raw.parse()
        .map_err(|_| ChatError::bad_request(format!("{field} must be a message id")))
}

fn no_such_message() -> ChatError {
    ChatError::not_found("no such message")
}

impl Chat {
    /// Sends a message: validates it, commits it, publishes it to the room, and returns it.
    /// Returns only after the commit. A repeat of (sender, room, client_id) returns the first
    /// message and publishes nothing.
    ///
    /// Runs in the caller's task, so the caller must not drop it half-way: a message
    /// committed but then not published would reach no member until they sync. A Socket.IO
    /// event runs as a task of its own that nothing cancels (socketioxide spawns it, and the
    /// handler holds a [`Chat::admit`] guard); an HTTP handler, which axum drops when its
    /// client hangs up, runs the send with [`Chat::spawn`].
    pub async fn send(
        &self,
        sender: &UserRef,
        room: &str,
        text: &str,
        client_id: &str,
    ) -> Result<Message, ChatError> {
        self.send_full(sender, room, text, client_id, None, None)
            .await
    }

    /// [`Chat::send`] of a reply to the message with id `reply_to` (of the same room, not
    /// deleted), which the reply carries a preview of, and of a message that carries the
    /// file `attachment` (an upload of the sender's to the room; the text may then be empty).
    pub async fn send_full(
        &self,
        sender: &UserRef,
        room: &str,
        text: &str,
        client_id: &str,
        reply_to: Option<&str>,
        attachment: Option<&str>,
    ) -> Result<Message, ChatError> {
        // A file may go without a caption; text alone may not be empty.
        let captionless = attachment.is_some() && text.trim().is_empty();
        let (room, mut new) = self
            .accept(sender, room, text, client_id, captionless)
            .await?;
        if let Some(id) = reply_to {
            let answered = self.live_message(&room, id).await?;
            new.reply_to = Some(Box::new(ReplyPreview::of(
                answered.id,
                answered.seq,
                answered.sender,
                answered.text.as_str(),
                false,
            )));
        }
        // Last of the checks: from here the upload is this send's (and a retry's).
        if let Some(id) = attachment {
            let file = self.take_upload(sender, &room, id, &new.client_id).await?;
            new.attachment = Some(Box::new(file));
        }
        self.commit_and_publish(new).await
    }

    /// Changes a message: an edit, a deletion, a reaction or its removal, appended to the
    /// room's log as an entry of its own (idempotent on `client_id` like a send) and
    /// broadcast like a message. Who may: the sender edits; the sender, the room's owner or
    /// an admin deletes; members react.
    pub async fn change(
        &self,
        user: &UserRef,
        room: &str,
        target: &str,
        change: Change,
        client_id: &str,
    ) -> Result<Message, ChatError> {
        if self.is_closing() {
            return Err(ChatError::shutting_down());
        }
        self.charge(user, Cost::One)?;
        let client_id = ClientId::parse(client_id)?;
        let (kind, text) = match change {
            Change::Edit(text) => (
                MessageKind::Edit,
                MessageText::parse(&text, self.config.max_text_bytes)?,
            ),
            Change::Delete => (
                MessageKind::Delete,
                MessageText::from_trusted(String::new()),
            ),
            Change::React(emoji) => (
                MessageKind::Reaction,
                MessageText::from_trusted(Emoji::parse(&emoji)?.as_str().to_owned()),
            ),
            Change::Unreact(emoji) => (
                MessageKind::Unreaction,
                MessageText::from_trusted(Emoji::parse(&emoji)?.as_str().to_owned()),
            ),
        };
        let room = if kind == MessageKind::Delete {
            self.deletable_room(user, room).await?
        } else {
            self.writable_room(user, room).await?
        };
        let target = self.message_by_id(&room, target, "id").await?;
        match kind {
            // A deleted message may be deleted again by whoever could: it changes nothing and
            // succeeds (a retry after a lost ack finds it deleted).
            MessageKind::Delete if target.sender.id == user.id => {}
            MessageKind::Delete => {
                let owner = self.store.room_owner(room.id).await.map_err(store_error)?;
                if owner != Some(user.id) && !self.is_admin(user).await? {
                    return Err(ChatError::forbidden(
                        "only the sender, the room's owner or an admin deletes a message",
                    ));
                }
            }
            _ if target.deleted => return Err(no_such_message()),
            MessageKind::Edit if target.sender.id != user.id => {
                return Err(ChatError::forbidden("only the sender edits a message"));
            }
            _ => {}
        }
        // A deleted message's file: no longer served from before the deletion commits, and
        // deleted after it (or by the sweep, if this is cut short).
        let file = match &target.attachment {
            Some(file) if kind == MessageKind::Delete => {
                self.trash_upload(&room, target.id, file).await?;
                Some(file.id)
            }
            _ => None,
        };
        let room_id = room.id;
        let mut new = NewMessage::plain(room.id, room.name, user.clone(), text, client_id);
        new.kind = kind;
        new.relates_to = Some((target.id, target.seq));
        let committed = self.commit_and_publish(new).await?;
        if let Some(file) = file {
            // A client_id this user gave another entry before answers with that entry: the
            // message was not deleted, and its file is served again.
            if committed.kind == MessageKind::Delete && committed.relates_to == Some(target.id) {
                let _ = self.delete_upload(room_id, file).await;
            } else {
                self.untrash_upload(room_id, file).await;
            }
        }
        Ok(committed)
    }

    /// A message (not a change) of `room`, by the id a client gave as `field`.
    async fn message_by_id(
        &self,
        room: &Room,
        raw: &str,
        field: &str,
    ) -> Result<Message, ChatError> {
        self.store
            .message(room, message_id(raw, field)?)
            .await
            .map_err(store_error)?
            .filter(|m| m.kind.is_message())
            .ok_or_else(no_such_message)
    }

    /// A message of `room` that is not deleted, by the id a client gave as `reply_to`.
    async fn live_message(&self, room: &Room, id: &str) -> Result<Message, ChatError> {
        Some(self.message_by_id(room, id, "reply_to").await?)
            .filter(|m| !m.deleted)
            .ok_or_else(no_such_message)
    }

    /// Everything a send checks before its commit: the server is not closing, the text (empty
    /// when `captionless`) and client id are valid, the sender is a member (of a DM: not
    /// blocked by the other user).
    pub(super) async fn accept(
        &self,
        sender: &UserRef,
        room: &str,
        text: &str,
        client_id: &str,
        captionless: bool,
    ) -> Result<(Room, NewMessage), ChatError> {
        if self.is_closing() {
            return Err(ChatError::shutting_down());
        }
        self.charge(sender, Cost::One)?;
        let text = if captionless {
            MessageText::from_trusted(String::new())
        } else {
            MessageText::parse(text, self.config.max_text_bytes)?
        };
        let client_id = ClientId::parse(client_id)?;
        let room = self.writable_room(sender, room).await?;
        let (mentions, mention_room) = self.mentions(sender, &room, &text).await?;
        let mut new =
            NewMessage::plain(room.id, room.name.clone(), sender.clone(), text, client_id);
        new.mentions = mentions;
        new.mention_room = mention_room;
        Ok((room, new))
    }

    /// Who a text sent to `room` by `sender` mentions: the members named by `@username` (not
    /// the sender), and whether `@room` counts — in a public room only from its owner or an
    /// admin (docs/protocol.md, "Mentions"). A text without `@` costs nothing.
    async fn mentions(
        &self,
        sender: &UserRef,
        room: &Room,
        text: &MessageText,
    ) -> Result<(Vec<Id>, bool), ChatError> {
        let names = scalify_core::mention_names(text.as_str());
        let mut ids = Vec::new();
        if !names.names.is_empty() {
            let members = self
                .store
                .members_named(room.id, &names.names)
                .await
                .map_err(store_error)?;
            // In the order the text names them.
            for name in &names.names {
                if let Some(u) = members.iter().find(|u| &u.username == name) {
                    if u.id != sender.id && !ids.contains(&u.id) {
                        ids.push(u.id);
                    }
                }
            }
        }
        let everyone = names.room
            && (!room.kind.is_open()
                || self.is_admin(sender).await?
                || self.store.room_owner(room.id).await.map_err(store_error)? == Some(sender.id));
        Ok((ids, everyone))
    }

    pub(super) async fn commit_and_publish(&self, new: NewMessage) -> Result<Message, ChatError> {
        let appended = self.store.append(new).await.map_err(store_error)?;
        if appended.duplicate {
            metrics::counter!("scalify_messages_accepted_total", "outcome" => "duplicate")
                .increment(1);
        } else {
            self.broadcast_stored(&appended.message, "stored").await;
        }
        Ok(appended.message)
    }

    /// Older messages of a room, ascending, and whether there are more before them.
    pub async fn history(
        &self,
        user: &UserRef,
        room: &str,
        query: HistoryQuery,
    ) -> Result<(Vec<Message>, bool), ChatError> {
        self.charge(user, Cost::Read)?;
        let room = self.member_room(user, room).await?;
        let mut messages = self
            .store
            .history(&room, query.before_seq, query.limit)
            .await
            .map_err(store_error)?;
        self.bundle_reactions(&room, &mut messages, user).await?;
        // seq is gap-free from 1, so anything older exists exactly when the oldest message
        // returned is above 1; an empty page means nothing lies below before_seq.
        let has_more = messages.first().is_some_and(|m| m.seq > 1);
        Ok((messages, has_more))
    }

    /// The messages of the rooms `user` is a member of (of `room` only, if given) that match
    /// query `q`, newest first, older than message `before`.
    pub async fn search(
        &self,
        user: &UserRef,
        q: &str,
        room: Option<&str>,
        before: Option<&str>,
        limit: Option<i64>,
    ) -> Result<SearchResults, ChatError> {
        let query = SearchQuery::parse(q)?;
        let before = before.map(|id| message_id(id, "before")).transpose()?;
        let page = SearchPage::new(before, limit)?;
        self.charge(user, Cost::Sync)?;
        let room = match room {
            Some(name) => Some(self.member_room(user, name).await?.id),
            None => None,
        };
        let mut found = self
            .store
            .search(
                user.id,
                &query,
                room,
                SearchPage {
                    limit: page.limit + 1,
                    ..page
                },
            )
            .await
            .map_err(store_error)?;
        let has_more = found.len() > page.limit as usize;
        found.truncate(page.limit as usize);
        let words = query.words();
        let results = found
            .into_iter()
            .map(|message| SearchHit {
                fragment: fragment(message.text.as_str(), &words),
                message,
            })
            .collect();
        Ok(SearchResults {
            results,
            has_more,
            words,
        })
    }

    /// Puts on each message of `messages` (ascending, of `room`) its reactions as `reader`
    /// sees them.
    async fn bundle_reactions(
        &self,
        room: &Room,
        messages: &mut [Message],
        reader: &UserRef,
    ) -> Result<(), ChatError> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(());
        };
        let rows = self
            .store
            .reactions(room.id, first.seq..=last.seq, reader.id)
            .await
            .map_err(store_error)?;
        scalify_store::bundle_reactions(messages, rows);
        Ok(())
    }

    /// Everything after each room's `last_seq`, capped per room and in total.
    pub async fn sync(
        &self,
        user: &UserRef,
        request: SyncRequest,
    ) -> Result<BTreeMap<RoomName, SyncedRoom>, ChatError> {
        self.charge(user, Cost::Sync)?;
        let mut budget = self.config.sync_total;
        let mut bytes_left = SYNC_MAX_BYTES;
        let mut out = BTreeMap::new();
        for (name, last_seq) in request.rooms {
            let room = self.member_room(user, name.as_str()).await?;
            let cap = if bytes_left == 0 {
                0
            } else {
                self.config.sync_per_room.min(budget)
            };
            let mut messages = if cap == 0 {
                Vec::new()
            } else {
                self.store
                    .after(&room, last_seq, cap + 1)
                    .await
                    .map_err(store_error)?
            };
            let mut truncated = messages.len() as u64 > u64::from(cap) || {
                // With no budget left we could not look: say truncated if anything is newer.
                cap == 0 && self.fresh_room(&room).await?.last_seq > last_seq
            };
            messages.truncate(cap as usize);
            self.bundle_reactions(&room, &mut messages, user).await?;
            // The answer's size is bounded too: long messages fill it before the count does.
            let fits = messages
                .iter()
                .scan(0usize, |used, m| {
                    *used += approx_bytes(m);
                    Some(*used)
                })
                .take_while(|&used| used <= bytes_left)
                .count();
            if fits < messages.len() {
                messages.truncate(fits);
                truncated = true;
                bytes_left = 0;
            } else {
                bytes_left -= messages.iter().map(approx_bytes).sum::<usize>();
            }
            budget -= messages.len() as u32;
            out.insert(
                name,
                SyncedRoom {
                    messages,
                    truncated,
                },
            );
        }
        Ok(out)
    }
}
