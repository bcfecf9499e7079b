//! What reaches a member's attention besides the messages themselves: notification levels
//! per room, each user's settings, and read receipts — others' read markers, coalesced so a
//! fast reader does not flood the room.

use scalify_core::{NotifyLevel, Settings};

use super::*;

/// Most members a `join` lists in its `receipts`: those who read furthest.
pub const RECEIPTS_LIMIT: u32 = 100;

/// How often a node sends the receipts its users' read marks produced: a member's receipts
/// in a room are coalesced to at most one per period, carrying the marker as it stands.
pub const RECEIPT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A change of settings: what is left out stays.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub read_receipts: Option<bool>,
    pub previews: Option<bool>,
}

/// A room's notification level, as the answer and the event give it.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyChoice {
    pub room: RoomName,
    pub level: NotifyLevel,
}

/// How far a member has read a room, as `receipt` events and `join` acks give it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Receipt {
    pub user: UserRef,
    pub seq: u64,
}

/// A receipt waiting for the next [`Chat::send_receipts`].
#[derive(Debug, Clone)]
pub(super) struct PendingReceipt {
    room: RoomName,
    user: UserRef,
    seq: u64,
}

impl Chat {
    /// A user's settings. Cached only while the user has a connection on this node: a node
    /// hears of a change (the `settings` event, through the user's inbox) only while it
    /// watches that inbox. Otherwise read from the store.
    pub async fn settings(&self, user: Id) -> Result<Settings, ChatError> {
        if let Some(s) = self.cached_settings(user) {
            return Ok(s);
        }
        self.store.settings(user).await.map_err(store_error)
    }

    /// A connection of `user` opened here (its inbox is watched already): their settings read
    /// from the store, and cached while they stay connected — unless a `settings` event was
    /// noted meanwhile, which is newer than this read.
    pub async fn settings_at_connect(&self, user: Id) -> Result<Settings, ChatError> {
        let read = self.store.settings(user).await.map_err(store_error)?;
        let mut cache = self.settings.lock().map_err(|_| ChatError::internal())?;
        if cache.len() >= CACHE_CAP && !cache.contains_key(&user) {
            cache.clear();
        }
        Ok(*cache.entry(user).or_insert(read))
    }

    /// The user's settings as this node knows them now, if it caches them (a connection of
    /// theirs is here).
    pub fn cached_settings(&self, user: Id) -> Option<Settings> {
        self.settings
            .lock()
            .ok()
            .and_then(|m| m.get(&user).copied())
    }

    /// The user's last connection here closed: this node stops hearing of their settings.
    pub(super) fn forget_settings(&self, user: Id) {
        if let Ok(mut m) = self.settings.lock() {
            m.remove(&user);
        }
    }

    /// Changes a user's settings and tells every connection of theirs, on every node.
    pub async fn update_settings(
        &self,
        user: &UserRef,
        patch: SettingsPatch,
    ) -> Result<Settings, ChatError> {
        self.charge(user, Cost::One)?;
        let settings = self
            .store
            .update_settings(user.id, patch.read_receipts, patch.previews)
            .await
            .map_err(store_error)?
            .ok_or_else(ChatError::unauthorized)?;
        self.settings_changed(user.id, settings);
        self.publish(
            RoomName::inbox(user.id),
            EventKind::Settings,
            &settings,
            None,
        )
        .await;
        Ok(settings)
    }

    /// Notes a user's new settings (a `settings` event, from whichever node changed them),
    /// where this node caches them.
    pub fn settings_changed(&self, user: Id, settings: Settings) {
        if let Ok(mut m) = self.settings.lock() {
            if let Some(s) = m.get_mut(&user) {
                *s = settings;
            }
        }
    }

    /// Sets what of `room` notifies `user`, and tells every connection of theirs.
    pub async fn set_notifications(
        &self,
        user: &UserRef,
        room: &str,
        level: &str,
    ) -> Result<NotifyChoice, ChatError> {
        self.charge(user, Cost::One)?;
        let level = NotifyLevel::parse(level)?;
        let room = self.member_room(user, room).await?;
        if !self
            .store
            .set_notify_level(room.id, user.id, level)
            .await
            .map_err(store_error)?
        {
            return Err(ChatError::forbidden(format!(
                "you are not a member of '{}'",
                room.name
            )));
        }
        let choice = NotifyChoice {
            room: room.name,
            level,
        };
        self.publish(
            RoomName::inbox(user.id),
            EventKind::Notifications,
            &choice,
            None,
        )
        .await;
        Ok(choice)
    }

    /// How far the other members of `room` have read, for `user` to see: `None` when `user`
    /// turned receipts off.
    pub async fn receipts(
        &self,
        user: &UserRef,
        room: &Room,
    ) -> Result<Option<Vec<Receipt>>, ChatError> {
        if !self.settings(user.id).await?.read_receipts {
            return Ok(None);
        }
        let list = self
            .store
            .receipts(room.id, user.id, RECEIPTS_LIMIT)
            .await
            .map_err(store_error)?;
        Ok(Some(
            list.into_iter()
                .map(|(user, seq)| Receipt { user, seq })
                .collect(),
        ))
    }

    /// Queues the receipt of a read marker that moved, unless its user turned receipts off.
    pub(super) async fn queue_receipt(&self, user: &UserRef, room: &Room, seq: u64) {
        match self.settings(user.id).await {
            Ok(s) if s.read_receipts => {}
            Ok(_) => return,
            Err(e) => {
                // A receipt is a courtesy: without the settings, none is sent.
                tracing::debug!(error = %e.message, "no receipt: settings unavailable");
                return;
            }
        }
        if let Ok(mut pending) = self.receipts.lock() {
            let entry = pending
                .entry((room.id, user.id))
                .or_insert_with(|| PendingReceipt {
                    room: room.name.clone(),
                    user: user.clone(),
                    seq,
                });
            entry.seq = entry.seq.max(seq);
        }
    }

    /// Sends the receipts queued since the last call to their rooms (every [`RECEIPT_EVERY`],
    /// and once more at shutdown).
    pub async fn send_receipts(&self) {
        let pending = match self.receipts.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        for (_, r) in pending {
            // Turned off since the mark: not sent.
            if !self
                .settings(r.user.id)
                .await
                .is_ok_and(|s| s.read_receipts)
            {
                continue;
            }
            let payload = serde_json::json!({ "room": r.room, "user": r.user, "seq": r.seq });
            self.publish(r.room, EventKind::Receipt, &payload, Some(r.user.id))
                .await;
        }
    }
}
