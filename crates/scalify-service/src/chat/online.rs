//! Typing and presence: who is online in a room, on this node and across the cluster (the presence
//! keeper renews and expires the cluster's entries).

use super::*;

impl Chat {
    pub async fn typing(&self, user: &UserRef, room: &str) -> Result<(), ChatError> {
        self.charge(user, Cost::One)?;
        let room = self.writable_room(user, room).await?;
        let payload = serde_json::json!({ "room": room.name, "user": user });
        self.publish(room.name, EventKind::Typing, &payload, Some(user.id))
            .await;
        Ok(())
    }

    /// Publishes an event to the room. A failure is logged, not returned: the event's cause
    /// (a commit, a presence change) already happened, and members recover messages with
    /// `sync`.
    pub(super) async fn publish<T: Serialize>(
        &self,
        room: RoomName,
        kind: EventKind,
        payload: &T,
        except: Option<Id>,
    ) {
        match RoomEvent::new(room, kind, payload, except) {
            Ok(event) => {
                let room = event.room.clone();
                if let Err(e) = self.fanout.publish(event).await {
                    tracing::warn!(error = %e, %room, "publish failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize event"),
        }
    }

    /// A connection of `user` entered `room` (after a successful `join`). Subscribes this node
    /// to the room if it is its first local connection there (so when this returns, every
    /// message committed from now on reaches the connection), announces the user online if
    /// they were not online anywhere, and returns who is online now.
    pub async fn connection_joined(&self, room: &Room, user: &UserRef) -> Vec<UserRef> {
        let t = self.presence.join(&room.name, user);
        if t.room_changed {
            self.update_interest(&room.name).await;
        }
        if t.user_changed {
            let announce = match &self.cluster {
                Some(c) => c.presence.arrive(&room.name, user).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, room = %room.name, "cluster presence unavailable");
                    true
                }),
                None => true,
            };
            if announce {
                self.announce(&room.name, user, true).await;
            }
        }
        self.online(&room.name).await
    }

    /// The users online in `room` now, on every node (this node's alone if the cluster
    /// registry is unreachable).
    pub async fn online(&self, room: &RoomName) -> Vec<UserRef> {
        let mut users = self.presence.online(room);
        if let Some(c) = &self.cluster {
            match c.presence.online(room).await {
                Ok(remote) => {
                    users.extend(remote);
                    users.sort_by(|a, b| a.username.cmp(&b.username).then(a.id.cmp(&b.id)));
                    users.dedup_by(|a, b| a.id == b.id);
                }
                Err(e) => tracing::warn!(error = %e, %room, "cluster presence unavailable"),
            }
        }
        users
    }

    /// The room's newest committed seq, read from the store.
    pub async fn last_seq(&self, room: &Room) -> Result<u64, ChatError> {
        Ok(self.fresh_room(room).await?.last_seq)
    }

    /// A connection of `user` left `room` (by `leave` or by disconnecting).
    pub async fn connection_left(&self, room: &RoomName, user: &UserRef) {
        let t = self.presence.leave(room, user.id);
        self.after_leaving(room, user, t).await;
    }

    /// Announces a departure and drops the room's subscription, as `t` calls for.
    pub(super) async fn after_leaving(
        &self,
        room: &RoomName,
        user: &UserRef,
        t: crate::presence::Transition,
    ) {
        if t.user_changed {
            let announce = match &self.cluster {
                Some(c) => c.presence.depart(room, user).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, %room, "cluster presence unavailable");
                    true
                }),
                None => true,
            };
            if announce {
                self.announce(room, user, false).await;
            }
        }
        if t.room_changed {
            self.update_interest(room).await;
        }
    }

    pub(super) async fn announce(&self, room: &RoomName, user: &UserRef, online: bool) {
        let payload = serde_json::json!({ "room": room, "user": user, "online": online });
        self.publish(room.clone(), EventKind::Presence, &payload, None)
            .await;
    }

    /// Subscribes to or unsubscribes from `room`, whichever its local connections call for
    /// now (decided under the room's shard lock: the last decision sees the latest counts).
    pub(super) async fn update_interest(&self, room: &RoomName) {
        let _guard = self.interest[crate::presence::bucket_of(room, INTEREST_SHARDS)]
            .lock()
            .await;
        metrics::gauge!("scalify_rooms_local").set(self.presence.room_count() as f64);
        let counts = if room.is_inbox() {
            &self.inboxes
        } else {
            &self.presence
        };
        let wanted = counts.has_room(room);
        let r = if wanted {
            self.fanout.watch(room).await
        } else {
            self.fanout.unwatch(room).await
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, %room, "fan-out subscription change failed; it is retried on reconnect");
        }
    }

    /// Listens to the cluster's control room (ended sessions, removed members): every node
    /// must, whoever its connections are. Called once, when the node is assembled.
    pub async fn watch_control(&self) -> Result<(), ChatError> {
        self.fanout.watch(&RoomName::control()).await.map_err(|e| {
            tracing::error!(error = %e, "cannot listen to the control room");
            ChatError::internal()
        })
    }

    /// A connection of `user` opened: their inbox reaches this node while any is open. Refused
    /// (`rate_limited`) when they already hold `max_connections_per_user` on this node; a
    /// refused connection must not call [`Chat::connection_closed`].
    pub async fn connection_opened(&self, user: &UserRef) -> Result<(), ChatError> {
        let inbox = RoomName::inbox(user.id);
        let Some(joined) =
            self.inboxes
                .join_within(&inbox, user, self.config.max_connections_per_user.max(1))
        else {
            metrics::counter!("scalify_rate_limited_total").increment(1);
            return Err(ChatError::new(
                scalify_core::ErrorCode::RateLimited,
                "too many connections",
            ));
        };
        if joined.room_changed {
            self.update_interest(&inbox).await;
        }
        Ok(())
    }

    pub async fn connection_closed(&self, user: &UserRef) {
        let inbox = RoomName::inbox(user.id);
        if self.inboxes.leave(&inbox, user.id).room_changed {
            self.forget_settings(user.id);
            self.update_interest(&inbox).await;
        }
    }

    /// Tells every connection, on every node, that a public room now exists.
    pub(super) async fn announce_created(&self, room: &Room) {
        if room.kind == RoomKind::Public {
            let payload = serde_json::json!({ "room": room });
            self.publish(RoomName::control(), EventKind::RoomCreated, &payload, None)
                .await;
        }
    }

    /// Tells every connection of `user`, on any node, that they are now in `room`.
    pub(super) async fn notify_added(&self, user: Id, room: &Room) {
        let payload = serde_json::json!({ "room": room });
        self.publish(RoomName::inbox(user), EventKind::RoomAdded, &payload, None)
            .await;
    }

    /// Keeps this node's presence entries alive in the cluster registry and announces users
    /// whose nodes died, until shutdown. A no-op for an embedded node.
    ///
    /// Each refresh interval is split into ticks of about [`crate::presence::TICK`], and each tick
    /// renews and sweeps one slice of the entries and rooms: the same work per interval, but
    /// in small steps. Renewing every entry at once put a burst of thousands of Redis scripts
    /// ahead of the sends' scripts every interval (a jump in the ack tail every 5 s, see
    /// docs/performance.md).
    pub async fn keep_presence(self: Arc<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let interval = cluster.presence.refresh_interval();
        let slices = crate::presence::slices_for(interval);
        let mut tick = tokio::time::interval(interval / slices as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for slice in (0..slices).cycle() {
            tokio::select! {
                () = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Taken afresh each tick: a user who left since the last tick is not renewed.
            match cluster
                .presence
                .refresh(&self.presence.entries_in(slice, slices))
                .await
            {
                Ok(revived) => {
                    for (room, user) in revived {
                        self.announce(&room, &user, true).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence refresh failed"),
            }
            if slice == 0 {
                if let Err(e) = cluster.registry.announce_node(&self.node_status()).await {
                    tracing::warn!(error = %e, "cannot announce this node to the cluster");
                }
            }
            match cluster
                .presence
                .sweep(&self.presence.rooms_in(slice, slices))
                .await
            {
                Ok(gone) => {
                    for (room, user) in gone {
                        tracing::info!(%room, user = %user.username, "presence expired (its node stopped refreshing)");
                        self.announce(&room, &user, false).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence sweep failed"),
            }
        }
    }
}
