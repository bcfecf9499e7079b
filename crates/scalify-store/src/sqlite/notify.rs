//! [`NotifyStore`] on SQLite: one node, so claims need no locking beyond the writer's; the
//! leases still hold, so the same notifier code runs on both engines.

use super::*;
use crate::notify::{
    Delivery, DueRoom, NotifyStore, Outgoing, PushSubscription, Recipient,
    PUSH_SUBSCRIPTIONS_PER_USER,
};

fn read_subscription(r: &rusqlite::Row<'_>) -> rusqlite::Result<PushSubscription> {
    Ok(PushSubscription {
        endpoint: r.get(0)?,
        p256dh: r.get(1)?,
        auth: r.get(2)?,
    })
}

#[async_trait]
impl NotifyStore for SqliteStore {
    async fn claim_due_rooms(
        &self,
        delay_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueRoom>> {
        self.run(move |c| {
            let now = now_ms();
            let mut stmt = c.prepare_cached(
                "UPDATE rooms SET notify_lease = ?2 + ?3
                 WHERE id IN (SELECT id FROM rooms
                              WHERE notify_from <= ?2 - ?1
                                AND (notify_lease IS NULL OR notify_lease < ?2)
                              ORDER BY notify_from LIMIT ?4)
                 RETURNING id, name, kind, last_seq, notify_seq, notify_lease",
            )?;
            let rows = stmt.query_map(params![delay_ms, now, lease_ms, limit], |r| {
                Ok(DueRoom {
                    room: read_room(r)?,
                    seen: r.get::<_, i64>(4)?.max(0) as u64,
                    lease: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn recipients(
        &self,
        room: Id,
        seq: u64,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Recipient>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.id, u.username, m.notify_level, m.last_read, u.previews
                 FROM members m JOIN users u ON u.id = m.user_id
                 WHERE m.room_id = ?1 AND m.notify_level <> 'none' AND m.last_read < ?2
                   AND u.deleted_at IS NULL AND m.user_id > ?3
                 ORDER BY m.user_id LIMIT ?4",
            )?;
            let after = after.map(|a| a.to_string()).unwrap_or_default();
            let rows =
                stmt.query_map(params![room.to_string(), seq as i64, after, limit], |r| {
                    let level: String = r.get(2)?;
                    Ok(Recipient {
                        user: UserRef {
                            id: parse_id(r.get(0)?)?,
                            username: r.get(1)?,
                        },
                        level: NotifyLevel::parse(&level).unwrap_or_default(),
                        last_read: r.get::<_, i64>(3)?.max(0) as u64,
                        previews: r.get(4)?,
                    })
                })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn last_read(&self, room: Id, user: Id) -> StoreResult<Option<u64>> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT last_read FROM members WHERE room_id = ?1 AND user_id = ?2",
            )?
            .query_row(params![room.to_string(), user.to_string()], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|n| n.max(0) as u64))
        })
        .await
    }

    async fn finish_room(
        &self,
        due: &DueRoom,
        seen: u64,
        next_from: Option<i64>,
        out: &[Outgoing],
    ) -> StoreResult<bool> {
        let (room, lease, out) = (due.room.id.to_string(), due.lease, out.to_vec());
        self.run(move |c| {
            let now = now_ms();
            let held = c
                .prepare_cached(
                    "UPDATE rooms SET notify_seq = max(notify_seq, ?2), notify_lease = NULL,
                       notify_from = CASE WHEN last_seq > ?2 THEN COALESCE(?4, ?5) END
                     WHERE id = ?1 AND notify_lease = ?3",
                )?
                .execute(params![room, seen as i64, lease, next_from, now])?
                == 1;
            if held {
                let mut insert = c.prepare_cached(
                    "INSERT OR IGNORE INTO notify_outbox
                       (id, target, user_id, room_id, first_seq, body, next_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                )?;
                for o in &out {
                    insert.execute(params![
                        o.id,
                        o.target,
                        o.user.to_string(),
                        o.room.to_string(),
                        o.first_seq as i64,
                        o.body,
                        now
                    ])?;
                }
            }
            Ok(held)
        })
        .await
    }

    async fn claim_deliveries(&self, lease_ms: i64, limit: u32) -> StoreResult<Vec<Delivery>> {
        self.run(move |c| {
            let now = now_ms();
            let mut stmt = c.prepare_cached(
                "UPDATE notify_outbox SET next_at = ?1 + ?2, attempts = attempts + 1
                 WHERE (id, target) IN (SELECT id, target FROM notify_outbox WHERE next_at <= ?1
                                        ORDER BY next_at LIMIT ?3)
                 RETURNING id, target, user_id, room_id, first_seq, body, attempts",
            )?;
            let rows = stmt.query_map(params![now, lease_ms, limit], |r| {
                Ok(Delivery {
                    outgoing: Outgoing {
                        id: r.get(0)?,
                        target: r.get(1)?,
                        user: parse_id(r.get(2)?)?,
                        room: parse_id(r.get(3)?)?,
                        first_seq: r.get::<_, i64>(4)?.max(0) as u64,
                        body: r.get(5)?,
                    },
                    attempts: r.get::<_, i64>(6)?.max(0) as u32,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delivered(&self, id: &str, target: &str, attempts: u32) -> StoreResult<()> {
        let (id, target) = (id.to_owned(), target.to_owned());
        self.run(move |c| {
            c.prepare_cached(
                "DELETE FROM notify_outbox WHERE id = ?1 AND target = ?2 AND attempts = ?3",
            )?
            .execute(params![id, target, attempts])?;
            Ok(())
        })
        .await
    }

    async fn retry_delivery(
        &self,
        id: &str,
        target: &str,
        attempts: u32,
        delay_ms: i64,
    ) -> StoreResult<()> {
        let (id, target) = (id.to_owned(), target.to_owned());
        self.run(move |c| {
            c.prepare_cached(
                "UPDATE notify_outbox SET next_at = ?4
                 WHERE id = ?1 AND target = ?2 AND attempts = ?3",
            )?
            .execute(params![id, target, attempts, now_ms() + delay_ms])?;
            Ok(())
        })
        .await
    }

    async fn subscribe_push(&self, user: Id, sub: &PushSubscription) -> StoreResult<()> {
        let sub = sub.clone();
        self.run(move |c| {
            let user = user.to_string();
            c.prepare_cached(
                "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (endpoint) DO UPDATE SET user_id = ?2, p256dh = ?3, auth = ?4,
                                                      created_at = ?5",
            )?
            .execute(params![sub.endpoint, user, sub.p256dh, sub.auth, now_ms()])?;
            c.prepare_cached(
                "DELETE FROM push_subscriptions WHERE endpoint IN (
                   SELECT endpoint FROM push_subscriptions WHERE user_id = ?1
                   ORDER BY created_at DESC, endpoint LIMIT -1 OFFSET ?2)",
            )?
            .execute(params![user, PUSH_SUBSCRIPTIONS_PER_USER])?;
            Ok(())
        })
        .await
    }

    async fn unsubscribe_push(&self, user: Option<Id>, endpoint: &str) -> StoreResult<bool> {
        let endpoint = endpoint.to_owned();
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM push_subscriptions WHERE endpoint = ?1
                     AND (?2 IS NULL OR user_id = ?2)",
                )?
                .execute(params![endpoint, user.map(|u| u.to_string())])?;
            Ok(n > 0)
        })
        .await
    }

    async fn push_subscriptions(&self, users: &[Id]) -> StoreResult<Vec<(Id, PushSubscription)>> {
        let users = users.to_vec();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = ?1
                 ORDER BY created_at, endpoint",
            )?;
            let mut out = Vec::new();
            for user in users {
                for sub in stmt.query_map(params![user.to_string()], read_subscription)? {
                    out.push((user, sub?));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn push_subscription(
        &self,
        user: Id,
        endpoint: &str,
    ) -> StoreResult<Option<PushSubscription>> {
        let endpoint = endpoint.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT endpoint, p256dh, auth FROM push_subscriptions
                 WHERE endpoint = ?1 AND user_id = ?2",
            )?
            .query_row(params![endpoint, user.to_string()], read_subscription)
            .optional()?)
        })
        .await
    }
}
