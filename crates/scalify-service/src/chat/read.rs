//! Read state: each member's read marker in a room, stored with the membership, only ever
//! moving forward, and told to every connection of theirs on every node (a `read` event to
//! their inbox), so a second device clears its unread count at once.

use super::*;

/// The answer to a read mark: the marker as it now stands.
#[derive(Debug, Clone, Serialize)]
pub struct ReadMarker {
    pub room: RoomName,
    pub last_read: u64,
}

impl Chat {
    /// Marks `room` read up to `seq` for `user`. A seq beyond the room's last counts as its
    /// last; a seq below the marker changes nothing (the answer gives the marker).
    pub async fn mark_read(
        &self,
        user: &UserRef,
        room: &str,
        seq: i64,
    ) -> Result<ReadMarker, ChatError> {
        self.charge(user, Cost::One)?;
        let seq = u64::try_from(seq)
            .map_err(|_| ChatError::bad_request("seq must be a non-negative integer"))?;
        let room = self.member_room(user, room).await?;
        let last = self.fresh_room(&room).await?.last_seq;
        let wanted = seq.min(last);
        let mark = self
            .store
            .set_read(room.id, user.id, wanted)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ChatError::forbidden(format!("you are not a member of '{}'", room.name))
            })?;
        if mark.moved {
            let payload = serde_json::json!({ "room": room.name, "seq": mark.last_read });
            self.publish(RoomName::inbox(user.id), EventKind::Read, &payload, None)
                .await;
            self.queue_receipt(user, &room, mark.last_read).await;
        }
        Ok(ReadMarker {
            room: room.name,
            last_read: mark.last_read,
        })
    }

    /// The room's newest committed seq and `user`'s read state in it, in one store read: what
    /// a `join` answers once the connection is subscribed.
    pub async fn joined_state(
        &self,
        user: &UserRef,
        room: &Room,
    ) -> Result<(u64, ReadState), ChatError> {
        match self
            .store
            .read_state(room, user.id)
            .await
            .map_err(store_error)?
        {
            Some((read, last_seq)) => Ok((last_seq, read)),
            // No longer a member (removed meanwhile): the room's last seq alone.
            None => Ok((self.last_seq(room).await?, ReadState::default())),
        }
    }
}
