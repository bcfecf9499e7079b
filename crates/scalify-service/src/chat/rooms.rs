//! Rooms: creation, listing, membership, joining and leaving, direct messages.

use super::*;

impl Chat {
    pub(super) async fn find_room(&self, name: &RoomName) -> Result<Option<Room>, ChatError> {
        if let Some(room) = self.rooms.lock().ok().and_then(|r| r.get(name).cloned()) {
            return Ok(Some(room));
        }
        let room = self.store.room(name).await.map_err(store_error)?;
        if let (Some(room), Ok(mut cache)) = (&room, self.rooms.lock()) {
            insert_bounded(&mut cache, room.name.clone(), room.clone());
        }
        Ok(room)
    }

    pub(super) async fn is_member(&self, room: Id, user: Id) -> Result<bool, ChatError> {
        if self
            .members
            .lock()
            .map(|m| m.contains(&(room, user)))
            .unwrap_or(false)
        {
            return Ok(true);
        }
        let member = self
            .store
            .is_member(room, user)
            .await
            .map_err(store_error)?;
        if member {
            self.remember_member(room, user);
        }
        Ok(member)
    }

    pub(super) fn remember_member(&self, room: Id, user: Id) {
        if let Ok(mut m) = self.members.lock() {
            if m.len() >= CACHE_CAP {
                m.clear();
            }
            m.insert((room, user));
        }
    }

    /// The room, if it exists and `user` is a member. Otherwise `not_found`, exactly as for a
    /// room that does not exist, unless the room is public (anyone may see and join those):
    /// then `forbidden`. A private room or a DM thus tells an outsider nothing, not even that
    /// it exists (a DM's name would tell who writes to whom).
    pub async fn member_room(&self, user: &UserRef, room: &str) -> Result<Room, ChatError> {
        let name = RoomName::parse(room)?;
        let room = self
            .find_room(&name)
            .await?
            .ok_or_else(|| no_such_room(&name))?;
        if !self.is_member(room.id, user.id).await? {
            if !room.kind.is_open() {
                return Err(no_such_room(&name));
            }
            return Err(ChatError::forbidden(format!(
                "you are not a member of '{name}'"
            )));
        }
        Ok(room)
    }

    /// The room `user` writes to (a message, a typing notice): a room they are a member of,
    /// and, for a DM, one whose other user has not blocked them — blocking is how a DM, which
    /// cannot be left, is silenced.
    pub(super) async fn writable_room(
        &self,
        user: &UserRef,
        room: &str,
    ) -> Result<Room, ChatError> {
        let room = self.member_room(user, room).await?;
        if let Some((a, b)) = room.name.dm_users() {
            let other = if a == user.id { b } else { a };
            if self
                .store
                .has_blocked(other, user.id)
                .await
                .map_err(store_error)?
            {
                return Err(ChatError::forbidden(
                    "the other user does not accept messages from you",
                ));
            }
        }
        Ok(room)
    }

    /// The room a user may delete messages in: one they are a member of, or any, for an
    /// admin.
    pub(super) async fn deletable_room(
        &self,
        user: &UserRef,
        room: &str,
    ) -> Result<Room, ChatError> {
        match self.member_room(user, room).await {
            Ok(room) => Ok(room),
            Err(refused) if self.is_admin(user).await? => self
                .find_room(&RoomName::parse(room)?)
                .await?
                .ok_or(refused),
            Err(refused) => Err(refused),
        }
    }

    pub(super) async fn fresh_room(&self, room: &Room) -> Result<Room, ChatError> {
        // Cached rooms carry a stale last_seq; answers that report it read it fresh.
        self.store
            .room(&room.name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| no_such_room(&room.name))
    }

    /// Makes `user` a member of a public room (created on first join), or checks they are a
    /// member of a private room or DM. The room's `last_seq` may be stale (rooms are cached);
    /// read it with [`Chat::last_seq`] when it matters.
    pub async fn join(&self, user: &UserRef, room: &str) -> Result<Room, ChatError> {
        let name = RoomName::parse(room)?;
        let room = match self.find_room(&name).await? {
            Some(room) => room,
            None => {
                let name = RoomName::parse_creatable(room)?;
                self.charge(user, Cost::Create)?;
                let room = self
                    .store
                    .ensure_room(&name, RoomKind::Public, &[user.id])
                    .await
                    .map_err(store_error)?;
                if room.kind.is_open() {
                    self.remember_member(room.id, user.id);
                    // Its creator owns it (a joiner racing the creation may win the claim:
                    // both were creating it).
                    let created = self
                        .store
                        .claim_owner(room.id, user.id)
                        .await
                        .map_err(store_error)?;
                    if created {
                        self.announce_created(&room).await;
                    }
                    self.notify_added(user.id, &room).await;
                    return Ok(room);
                }
                // Its owner created it as a private room meanwhile: the store added nobody,
                // and the room's own rule decides below.
                room
            }
        };
        if !self.is_member(room.id, user.id).await? {
            if !room.kind.is_open() {
                // As if it did not exist: a DM's name is refused as any `dm-` name is, and
                // a private room's as a room nobody can see.
                RoomName::parse_creatable(name.as_str())?;
                return Err(no_such_room(&name));
            }
            // Joining a room one is in already (every room, at each reconnect) is free.
            self.charge(user, Cost::Read)?;
            let added = self
                .store
                .add_member(room.id, user.id)
                .await
                .map_err(store_error)?;
            self.remember_member(room.id, user.id);
            if added {
                // The user's other connections (another tab, a phone) list it too.
                self.notify_added(user.id, &room).await;
            }
        }
        Ok(room)
    }

    pub async fn list_rooms(&self, user: &UserRef) -> Result<Vec<RoomListing>, ChatError> {
        self.charge(user, Cost::Read)?;
        self.store.list_rooms(user.id).await.map_err(store_error)
    }

    pub(super) async fn user_named(&self, username: &str) -> Result<UserRef, ChatError> {
        let name = Username::parse(username)?;
        let user = self
            .store
            .user_by_name(&name)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ChatError::not_found(format!("no user named '{name}'")))?;
        Ok(user.into())
    }

    /// Creates a public or private room with the creator and `members` (usernames) in it.
    pub async fn create_room(
        &self,
        creator: &UserRef,
        name: &str,
        kind: &str,
        members: &[String],
    ) -> Result<Room, ChatError> {
        let name = RoomName::parse_creatable(name)?;
        self.charge(creator, Cost::Create)?;
        let kind = match RoomKind::parse(kind) {
            Some(k @ (RoomKind::Public | RoomKind::Private)) => k,
            _ => return Err(ChatError::bad_request("kind must be 'public' or 'private'")),
        };
        if members.len() > 1000 {
            return Err(ChatError::bad_request("at most 1000 members at creation"));
        }
        let mut ids = vec![creator.id];
        for m in members {
            let member = self.user_named(m).await?;
            self.refuse_if_blocked(&member, creator).await?;
            ids.push(member.id);
        }
        ids.sort();
        ids.dedup();
        let room = self
            .store
            .create_room(&name, kind, &ids)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    ChatError::conflict(format!("room '{name}' already exists"))
                }
                other => store_error(other),
            })?;
        self.store
            .claim_owner(room.id, creator.id)
            .await
            .map_err(store_error)?;
        // Every member's connections learn of it, the creator's other tabs included.
        for id in ids {
            self.notify_added(id, &room).await;
        }
        self.announce_created(&room).await;
        Ok(room)
    }

    /// Adds `username` to a room. Anyone may add to a public room; only members may add to a
    /// private room; DMs stay between their two users.
    pub async fn add_member(
        &self,
        actor: &UserRef,
        room: &str,
        username: &str,
    ) -> Result<(Room, UserRef), ChatError> {
        self.charge(actor, Cost::Read)?;
        let room = self.room_to_change(actor, room, false).await?;
        let user = self.user_named(username).await?;
        self.refuse_if_blocked(&user, actor).await?;
        let added = self
            .store
            .add_member(room.id, user.id)
            .await
            .map_err(store_error)?;
        self.remember_member(room.id, user.id);
        let room = self.fresh_room(&room).await?;
        if added {
            self.notify_added(user.id, &room).await;
        }
        Ok((room, user))
    }

    /// The members of a room `user` belongs to (at most 1,000: `MEMBERS_LIMIT`), by username.
    pub async fn members(&self, user: &UserRef, room: &str) -> Result<Vec<UserRef>, ChatError> {
        self.charge(user, Cost::Read)?;
        let room = self.member_room(user, room).await?;
        let members = self
            .store
            .members(room.id, MEMBERS_LIMIT)
            .await
            .map_err(store_error)?;
        Ok(members.into_iter().map(UserRef::from).collect())
    }

    /// The owner (creator) of a room `user` belongs to, if it has one.
    pub async fn room_owner(&self, user: &UserRef, room: &str) -> Result<Option<Id>, ChatError> {
        let room = self.member_room(user, room).await?;
        self.store.room_owner(room.id).await.map_err(store_error)
    }

    /// The DM room between `actor` and `username`: the same room whichever of them asks.
    pub async fn dm(&self, actor: &UserRef, username: &str) -> Result<Room, ChatError> {
        self.charge(actor, Cost::Create)?;
        let other = self.user_named(username).await?;
        if other.id == actor.id {
            return Err(ChatError::bad_request(
                "cannot open a direct-message room with yourself",
            ));
        }
        self.refuse_if_blocked(&other, actor).await?;
        let name = RoomName::for_dm(actor.id, other.id);
        let room = self
            .store
            .ensure_room(&name, RoomKind::Dm, &[actor.id, other.id])
            .await
            .map_err(store_error)?;
        self.remember_member(room.id, actor.id);
        self.remember_member(room.id, other.id);
        // Both sides: the other user's sidebar, and the asker's other connections.
        self.notify_added(other.id, &room).await;
        self.notify_added(actor.id, &room).await;
        Ok(room)
    }
}

impl Chat {
    /// Leaves a room for good: no more of its events, and its history is closed to the user
    /// (a public room can be joined again; a private one needs a member to add them back). A
    /// DM cannot be left: block its other user instead.
    pub async fn leave_room(&self, user: &UserRef, room: &str) -> Result<(), ChatError> {
        self.charge(user, Cost::Read)?;
        let room = self.member_room(user, room).await?;
        if room.kind == RoomKind::Dm {
            return Err(ChatError::bad_request(
                "a direct message cannot be left; block the other user instead",
            ));
        }
        self.store
            .remove_member(room.id, user.id)
            .await
            .map_err(store_error)?;
        tracing::info!(target: "audit", event = "member_left", room = %room.name, user = %user.id, name = %user.username);
        self.announce_removal(&room, user.id).await;
        Ok(())
    }

    /// Removes `username` from a room: its owner (creator) or a server admin may. The removed
    /// user's connections stop getting the room's events at once, on every node.
    pub async fn remove_member(
        &self,
        actor: &UserRef,
        room: &str,
        username: &str,
    ) -> Result<(), ChatError> {
        self.charge(actor, Cost::Read)?;
        let admin = self.is_admin(actor).await?;
        let room = self.room_to_change(actor, room, admin).await?;
        let name = &room.name;
        let owner = self.store.room_owner(room.id).await.map_err(store_error)?;
        if !admin && owner != Some(actor.id) {
            return Err(ChatError::forbidden(
                "only the room's owner or an admin can remove members",
            ));
        }
        let user = self.user_named(username).await?;
        let removed = self
            .store
            .remove_member(room.id, user.id)
            .await
            .map_err(store_error)?;
        if !removed {
            return Err(ChatError::not_found(format!(
                "'{}' is not a member of '{name}'",
                user.username
            )));
        }
        tracing::info!(target: "audit", event = "member_removed", room = %room.name, user = %user.id, name = %user.username, by = %actor.id);
        self.announce_removal(&room, user.id).await;
        Ok(())
    }

    /// The room whose members `actor` wants to change: it must exist and be visible to them
    /// (a private room they are not in answers as one that does not exist, unless `admin`),
    /// and not be a DM, whose members are fixed.
    async fn room_to_change(
        &self,
        actor: &UserRef,
        room: &str,
        admin: bool,
    ) -> Result<Room, ChatError> {
        let name = RoomName::parse(room)?;
        let room = self
            .find_room(&name)
            .await?
            .ok_or_else(|| no_such_room(&name))?;
        if !admin && !room.kind.is_open() && !self.is_member(room.id, actor.id).await? {
            return Err(no_such_room(&name));
        }
        if room.kind == RoomKind::Dm {
            return Err(ChatError::forbidden(
                "direct-message rooms have fixed members",
            ));
        }
        Ok(room)
    }

    /// Tells every node that `user` is no longer in `room`: each forgets the membership and
    /// takes the user's connections out of the room.
    async fn announce_removal(&self, room: &Room, user: Id) {
        self.forget_member(room.id, user);
        let payload = serde_json::json!({ "room": room.name, "room_id": room.id, "user": user });
        self.publish(
            RoomName::control(),
            EventKind::MemberRemoved,
            &payload,
            None,
        )
        .await;
    }

    /// Forgets a cached membership (the member left or was removed, here or on another node).
    pub fn forget_member(&self, room: Id, user: Id) {
        if let Ok(mut m) = self.members.lock() {
            m.remove(&(room, user));
        }
    }

    /// This node's part of a removal: the user is no longer online in the room here.
    pub async fn member_gone(&self, room: &RoomName, room_id: Id, user: Id) {
        self.forget_member(room_id, user);
        if let Some((t, user)) = self.presence.remove_user(room, user) {
            self.after_leaving(room, &user, t).await;
        }
    }

    /// `username` may no longer open a DM with `user` nor add them to a room.
    pub async fn block(&self, user: &UserRef, username: &str, on: bool) -> Result<(), ChatError> {
        self.charge(user, Cost::Read)?;
        let other = self.user_named(username).await?;
        if other.id == user.id {
            return Err(ChatError::bad_request("you cannot block yourself"));
        }
        self.store
            .set_block(user.id, other.id, on)
            .await
            .map_err(store_error)?;
        let event = if on { "blocked" } else { "unblocked" };
        tracing::info!(target: "audit", event, user = %user.id, name = %user.username, other = %other.id);
        Ok(())
    }

    /// The users `user` has blocked.
    pub async fn blocks(&self, user: &UserRef) -> Result<Vec<UserRef>, ChatError> {
        self.charge(user, Cost::Read)?;
        let users = self.store.blocks(user.id).await.map_err(store_error)?;
        Ok(users.into_iter().map(UserRef::from).collect())
    }

    /// Refuses what `actor` asks of `target` (a DM, adding them to a room) when `target` has
    /// blocked `actor`, with the same answer as for anyone who may not: nothing says a block
    /// is why.
    async fn refuse_if_blocked(&self, target: &UserRef, actor: &UserRef) -> Result<(), ChatError> {
        if self
            .store
            .has_blocked(target.id, actor.id)
            .await
            .map_err(store_error)?
        {
            return Err(ChatError::forbidden(format!(
                "'{}' does not accept this from you",
                target.username
            )));
        }
        Ok(())
    }
}

/// The answer for a room that does not exist, and for one the asker may not know of.
fn no_such_room(name: &RoomName) -> ChatError {
    ChatError::not_found(format!("no room named '{name}'"))
}
