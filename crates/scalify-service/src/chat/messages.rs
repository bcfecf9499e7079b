//! Messages: sending (validated, idempotent on `client_id`), history and `sync`.

use super::*;

/// Most bytes of messages one `sync` answers with (about: text plus a fixed allowance for the
/// other fields); past it the room is `truncated` and the client syncs again from there.
pub const SYNC_MAX_BYTES: usize = 1 << 20;

/// A message's share of an answer: its text and client id, plus the other fields.
fn approx_bytes(m: &Message) -> usize {
    m.text.as_str().len() + m.client_id.as_str().len() + m.sender.username.len() + 160
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
        let new = self.accept(sender, room, text, client_id).await?;
        self.commit_and_publish(new).await
    }

    /// Everything a send checks before its commit: the server is not closing, the text and
    /// client id are valid, the sender is a member (of a DM: not blocked by the other user).
    pub(super) async fn accept(
        &self,
        sender: &UserRef,
        room: &str,
        text: &str,
        client_id: &str,
    ) -> Result<NewMessage, ChatError> {
        if self.is_closing() {
            return Err(ChatError::shutting_down());
        }
        self.charge(sender, Cost::One)?;
        let text = MessageText::parse(text, self.config.max_text_bytes)?;
        let client_id = ClientId::parse(client_id)?;
        let room = self.writable_room(sender, room).await?;
        let (mentions, mention_room) = self.mentions(sender, &room, &text).await?;
        Ok(NewMessage {
            room_id: room.id,
            room: room.name,
            sender: sender.clone(),
            text,
            client_id,
            mentions,
            mention_room,
        })
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
        let messages = self
            .store
            .history(&room, query.before_seq, query.limit)
            .await
            .map_err(store_error)?;
        // seq is gap-free from 1, so anything older exists exactly when the oldest message
        // returned is above 1; an empty page means nothing lies below before_seq.
        let has_more = messages.first().is_some_and(|m| m.seq > 1);
        Ok((messages, has_more))
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
