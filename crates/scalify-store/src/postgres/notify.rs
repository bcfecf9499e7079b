//! [`NotifyStore`] on PostgreSQL. Every node's notifier uses the same tables; claims skip rows
//! another node holds (`FOR UPDATE SKIP LOCKED`) and leases are on the database's clock, so
//! the nodes' clocks need not agree.

use super::*;
use crate::notify::{
    Delivery, DueRoom, NotifyStore, Outgoing, PushSubscription, Recipient,
    PUSH_SUBSCRIPTIONS_PER_USER,
};

/// The database's clock in ms since the epoch.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";

fn read_delivery(r: &PgRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        outgoing: Outgoing {
            id: r.try_get(0)?,
            target: r.try_get(1)?,
            user: parse_id(r.try_get::<&str, _>(2)?)?,
            room: parse_id(r.try_get::<&str, _>(3)?)?,
            first_seq: r.try_get::<i64, _>(4)?.max(0) as u64,
            body: r.try_get(5)?,
        },
        attempts: r.try_get::<i32, _>(6)?.max(0) as u32,
    })
}

#[async_trait]
impl NotifyStore for PgStore {
    async fn claim_due_rooms(
        &self,
        delay_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueRoom>> {
        let rows = sqlx::query(&format!(
            "WITH now AS (SELECT {DB_NOW} AS t),
             due AS (SELECT r.id FROM rooms r, now
                     WHERE r.notify_from <= now.t - $1
                       AND (r.notify_lease IS NULL OR r.notify_lease < now.t)
                     ORDER BY r.notify_from LIMIT $3 FOR UPDATE OF r SKIP LOCKED)
             UPDATE rooms r SET notify_lease = (SELECT t FROM now) + $2
             FROM due WHERE r.id = due.id
             RETURNING r.id, r.name, r.kind, r.last_seq, r.notify_seq, r.notify_lease"
        ))
        .bind(delay_ms)
        .bind(lease_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueRoom {
                    room: read_room(r)?,
                    seen: r.try_get::<i64, _>(4)?.max(0) as u64,
                    lease: r.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn recipients(
        &self,
        room: Id,
        seq: u64,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Recipient>> {
        let rows = sqlx::query(
            "SELECT u.id, u.username, m.notify_level, m.last_read, u.previews
             FROM members m JOIN users u ON u.id = m.user_id
             WHERE m.room_id = $1 AND m.notify_level <> 'none' AND m.last_read < $2
               AND u.deleted_at IS NULL AND m.user_id > $3
             ORDER BY m.user_id LIMIT $4",
        )
        .bind(room.to_string())
        .bind(seq as i64)
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Recipient {
                    user: UserRef {
                        id: parse_id(r.try_get::<&str, _>(0)?)?,
                        username: r.try_get(1)?,
                    },
                    level: NotifyLevel::parse(r.try_get(2)?).unwrap_or_default(),
                    last_read: r.try_get::<i64, _>(3)?.max(0) as u64,
                    previews: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn last_read(&self, room: Id, user: Id) -> StoreResult<Option<u64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT last_read FROM members WHERE room_id = $1 AND user_id = $2")
                .bind(room.to_string())
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(n,)| n.max(0) as u64))
    }

    async fn finish_room(
        &self,
        due: &DueRoom,
        seen: u64,
        next_from: Option<i64>,
        out: &[Outgoing],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // The outbox first, the room's row last: the row lock, which the room's writers wait
        // for, is held only from the fencing update to the commit.
        if !out.is_empty() {
            let col = |f: fn(&Outgoing) -> String| out.iter().map(f).collect::<Vec<_>>();
            sqlx::query(&format!(
                "INSERT INTO notify_outbox (id, target, user_id, room_id, first_seq, body, next_at,
                                            created_at)
                 SELECT u.*, {DB_NOW}, {DB_NOW}
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[]) u
                 ON CONFLICT DO NOTHING"
            ))
            .bind(col(|o| o.id.clone()))
            .bind(col(|o| o.target.clone()))
            .bind(col(|o| o.user.to_string()))
            .bind(col(|o| o.room.to_string()))
            .bind(out.iter().map(|o| o.first_seq as i64).collect::<Vec<_>>())
            .bind(col(|o| o.body.clone()))
            .execute(&mut *tx)
            .await?;
        }
        let held = sqlx::query(&format!(
            "UPDATE rooms SET notify_seq = GREATEST(notify_seq, $2), notify_lease = NULL,
               notify_from = CASE WHEN last_seq > $2 THEN COALESCE($4, {DB_NOW}) END
             WHERE id = $1 AND notify_lease = $3"
        ))
        .bind(due.room.id.to_string())
        .bind(seen as i64)
        .bind(due.lease)
        .bind(next_from)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !held {
            // Another notifier took the room: what was queued here is undone.
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_deliveries(&self, lease_ms: i64, limit: u32) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "WITH now AS (SELECT {DB_NOW} AS t),
             due AS (SELECT o.id, o.target FROM notify_outbox o, now WHERE o.next_at <= now.t
                     ORDER BY o.next_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED)
             UPDATE notify_outbox o SET next_at = (SELECT t FROM now) + $1,
                                        attempts = o.attempts + 1
             FROM due WHERE o.id = due.id AND o.target = due.target
             RETURNING o.id, o.target, o.user_id, o.room_id, o.first_seq, o.body, o.attempts"
        ))
        .bind(lease_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(read_delivery)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn delivered(&self, id: &str, target: &str, attempts: u32) -> StoreResult<()> {
        sqlx::query("DELETE FROM notify_outbox WHERE id = $1 AND target = $2 AND attempts = $3")
            .bind(id)
            .bind(target)
            .bind(attempts as i32)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_delivery(
        &self,
        id: &str,
        target: &str,
        attempts: u32,
        delay_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "UPDATE notify_outbox SET next_at = {DB_NOW} + $4
             WHERE id = $1 AND target = $2 AND attempts = $3"
        ))
        .bind(id)
        .bind(target)
        .bind(attempts as i32)
        .bind(delay_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn subscribe_push(&self, user: Id, sub: &PushSubscription) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The user's row lock orders two subscriptions of one user made at once.
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(user.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO push_subscriptions (endpoint, user_id, p256dh, auth, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (endpoint) DO UPDATE SET user_id = $2, p256dh = $3, auth = $4,
                                                  created_at = $5",
        )
        .bind(&sub.endpoint)
        .bind(user.to_string())
        .bind(&sub.p256dh)
        .bind(&sub.auth)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM push_subscriptions WHERE endpoint IN (
               SELECT endpoint FROM push_subscriptions WHERE user_id = $1
               ORDER BY created_at DESC, endpoint OFFSET $2)",
        )
        .bind(user.to_string())
        .bind(i64::from(PUSH_SUBSCRIPTIONS_PER_USER))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unsubscribe_push(&self, user: Option<Id>, endpoint: &str) -> StoreResult<bool> {
        let n = sqlx::query(
            "DELETE FROM push_subscriptions WHERE endpoint = $1 AND ($2::text IS NULL OR user_id = $2)",
        )
        .bind(endpoint)
        .bind(user.map(|u| u.to_string()))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn push_subscriptions(&self, users: &[Id]) -> StoreResult<Vec<(Id, PushSubscription)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT user_id, endpoint, p256dh, auth FROM push_subscriptions
             WHERE user_id = ANY($1) ORDER BY user_id, created_at, endpoint",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(user, endpoint, p256dh, auth)| {
                Ok((
                    parse_id(&user)?,
                    PushSubscription {
                        endpoint,
                        p256dh,
                        auth,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn push_subscription(
        &self,
        user: Id,
        endpoint: &str,
    ) -> StoreResult<Option<PushSubscription>> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT endpoint, p256dh, auth FROM push_subscriptions
             WHERE endpoint = $1 AND user_id = $2",
        )
        .bind(endpoint)
        .bind(user.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(endpoint, p256dh, auth)| PushSubscription {
            endpoint,
            p256dh,
            auth,
        }))
    }
}
