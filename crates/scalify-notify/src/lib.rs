//! # scalify-notify — telling away users what they missed
//!
//! When a member has no connection open on any node and a message that notifies them (their
//! room's level: `all`, or `mentions` — every DM message counts) stays unread for the
//! notification delay, they get one notification for the room: how many messages, who wrote
//! the first, how it starts. Two workers do it, on every node:
//!
//! - the [`Notifier::schedule`] pass claims rooms whose first unseen message is older than the
//!   delay (a lease in the database, so one node takes each room), sums up the unseen
//!   messages for each member who is away, and queues one notification per target — in the
//!   same transaction that marks those messages seen. A node killed mid-way loses its lease and
//!   another node does the room again; nothing is queued twice.
//! - the [`Notifier::deliver`] pass takes due notifications from the queue (leased too),
//!   checks again that the user has neither read the room nor come online, and posts them:
//!   to the signed webhook ([`webhook`]) and to each Web Push subscription ([`push`]). A
//!   failure is retried with backoff; a push service's `404`/`410` removes the subscription.
//!
//! Sends never wait for any of it: messages are only marked (`rooms.notify_from`) as they are
//! stored.

pub mod push;
pub mod summary;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use scalify_core::Id;

use futures_util::StreamExt;
use scalify_service::Chat;
use scalify_store::notify::{
    Delivery, DueRoom, NotifyStore, Outgoing, PUSH_TARGET, WEBHOOK_TARGET,
};
use tokio_util::sync::CancellationToken;

pub use push::Vapid;
pub use webhook::Webhook;

/// Rooms one schedule pass claims at most: few enough that the last is done long before the
/// claim's lease runs out.
const ROOMS_PER_PASS: u32 = 20;
/// Messages of a room one notification tells of at most; a longer burst makes another.
pub const MESSAGES_PER_PASS: u32 = 1000;
/// Members of a room read at a time (a room's members are all looked at, page by page).
const RECIPIENTS_PER_PAGE: u32 = 1000;
/// How long a notifier waits for a seq missing below newer messages (in durable mode, one
/// given but not yet confirmed by the broker) before it looks past it.
pub const GAP_PATIENCE_MS: i64 = 30_000;
/// How long a claimed room stays a node's: beyond it, another node may take it.
const ROOM_LEASE: Duration = Duration::from_secs(15);
/// How long a taken delivery stays a node's: longer than a request may take.
const DELIVERY_LEASE: Duration = Duration::from_secs(60);
/// Deliveries one pass takes, and how many run at once.
const DELIVERIES_PER_PASS: u32 = 64;
const CONCURRENT_DELIVERIES: usize = 16;
/// A failed delivery is tried again after 1 s, 2 s, 4 s… up to this, and given up after
/// [`MAX_ATTEMPTS`] tries (about 25 minutes).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
pub const MAX_ATTEMPTS: u32 = 12;
/// One HTTP request to a webhook or a push service.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node's notifier does.
#[derive(Clone)]
pub struct NotifyConfig {
    /// How long a notifying message stays unread before its member, away, is told.
    pub delay: Duration,
    pub webhook: Option<Arc<Webhook>>,
    pub vapid: Option<Arc<Vapid>>,
    /// Push endpoints may resolve to private addresses (see
    /// `scalify_service::PushConfig::allow_private_endpoints`).
    pub allow_private_endpoints: bool,
}

/// A node's notifier: its schedule and delivery passes.
pub struct Notifier {
    chat: Arc<Chat>,
    store: Arc<dyn NotifyStore>,
    config: NotifyConfig,
    /// For the operator's webhook, wherever it is.
    http: reqwest::Client,
    /// For the push services users named: refuses to connect to private addresses, whatever
    /// DNS answers, unless they are allowed.
    push_http: reqwest::Client,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Worth trying again (a network error, a 5xx, a 429).
    Failed,
    /// Never going to succeed (the subscription is gone, the request was refused).
    Refused,
}

impl Notifier {
    pub fn new(
        chat: Arc<Chat>,
        store: Arc<dyn NotifyStore>,
        config: NotifyConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let client = || {
            reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ScalifyChat/", env!("CARGO_PKG_VERSION")))
        };
        let http = client().build()?;
        let push_http = if config.allow_private_endpoints {
            client().build()?
        } else {
            client().dns_resolver(Arc::new(push::PublicOnly)).build()?
        };
        Ok(Arc::new(Notifier {
            chat,
            store,
            config,
            http,
            push_http,
        }))
    }

    /// How often the passes run: often enough that a notification is late by a fraction of
    /// the delay at most.
    pub fn tick(&self) -> Duration {
        (self.config.delay / 4).clamp(Duration::from_millis(200), Duration::from_secs(1))
    }

    /// Runs the schedule pass every [`Notifier::tick`] until `cancel`.
    pub async fn run_schedule(self: Arc<Self>, cancel: CancellationToken) {
        self.run_every(cancel, |n| async move { n.schedule().await })
            .await
    }

    /// Runs the delivery pass every [`Notifier::tick`] until `cancel`; a delivery in flight
    /// then is given back when its lease runs out.
    pub async fn run_delivery(self: Arc<Self>, cancel: CancellationToken) {
        self.run_every(cancel, |n| async move { n.deliver().await })
            .await
    }

    async fn run_every<F, Fut>(self: Arc<Self>, cancel: CancellationToken, pass: F)
    where
        F: Fn(Arc<Self>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<usize>>,
    {
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A full pass means more is waiting: go on without waiting for the tick.
            loop {
                let outcome = tokio::select! {
                    () = cancel.cancelled() => return,
                    r = pass(self.clone()) => r,
                };
                match outcome {
                    Ok(n) => {
                        if std::mem::replace(&mut failing, false) {
                            tracing::info!("notifications work again");
                        }
                        if n < ROOMS_PER_PASS as usize {
                            break;
                        }
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %e, "notifications stalled; retrying");
                        }
                        break;
                    }
                }
            }
        }
    }

    /// One schedule pass: claims due rooms and queues their notifications. Returns how many
    /// rooms it claimed.
    pub async fn schedule(&self) -> anyhow::Result<usize> {
        let delay = self.config.delay.as_millis() as i64;
        let due = self
            .store
            .claim_due_rooms(delay, ROOM_LEASE.as_millis() as i64, ROOMS_PER_PASS)
            .await?;
        let n = due.len();
        for room in due {
            if let Err(e) = self.schedule_room(&room).await {
                // The lease runs out and the room is looked at again.
                metrics::counter!("scalify_notify_errors_total", "stage" => "schedule")
                    .increment(1);
                tracing::warn!(room = %room.room.name, error = %e, "cannot schedule notifications");
            }
        }
        Ok(n)
    }

    async fn schedule_room(&self, due: &DueRoom) -> anyhow::Result<()> {
        let messages = self
            .chat
            .stored_after(&due.room, due.seen, MESSAGES_PER_PASS)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let now = scalify_core::now_ms();
        let (looked, next_from) = unseen(
            &messages,
            due.seen,
            now,
            self.config.delay.as_millis() as i64,
        );
        // The room is due: its first unseen message has waited the delay. The notification
        // tells of every message since the last look, so a burst makes one notification, and
        // what comes after it waits the delay again — at most one per room and delay.
        let seen = looked.last().map_or(due.seen, |m| m.seq);
        let out = if looked.is_empty() {
            Vec::new()
        } else {
            self.notifications(due, looked, seen).await?
        };
        let queued = out.len();
        if self.store.finish_room(due, seen, next_from, &out).await? {
            metrics::counter!("scalify_notifications_queued_total").increment(queued as u64);
        } else {
            tracing::info!(room = %due.room.name, "another node took the room over; its notifications are its own");
        }
        Ok(())
    }

    /// The notifications `looked` (the unseen messages of a due room) make: one per member
    /// who is away and has something to be told, for each target.
    async fn notifications(
        &self,
        due: &DueRoom,
        looked: &[scalify_core::Message],
        seen: u64,
    ) -> anyhow::Result<Vec<Outgoing>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .recipients(due.room.id, seen, after, RECIPIENTS_PER_PAGE)
                .await?;
            after = page.last().map(|r| r.user.id);
            let summaries: Vec<_> = page
                .iter()
                .filter_map(|r| summary::summarize(&due.room, looked, r))
                .collect();
            self.queue(due, summaries, &mut out).await?;
            if page.len() < RECIPIENTS_PER_PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Queues each of `summaries` whose user is away, for each of their targets.
    async fn queue(
        &self,
        due: &DueRoom,
        summaries: Vec<summary::Summary>,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()> {
        if summaries.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = summaries.iter().map(|s| s.user.id).collect();
        let online = self
            .chat
            .connected_anywhere(&ids)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let away: Vec<_> = summaries
            .into_iter()
            .zip(online)
            .filter_map(|(s, online)| {
                if online {
                    metrics::counter!("scalify_notifications_skipped_total", "reason" => "online")
                        .increment(1);
                }
                (!online).then_some(s)
            })
            .collect();
        let mut subscriptions = std::collections::HashMap::<_, Vec<String>>::new();
        if self.config.vapid.is_some() {
            let users: Vec<_> = away.iter().map(|s| s.user.id).collect();
            for (user, sub) in self.store.push_subscriptions(&users).await? {
                subscriptions.entry(user).or_default().push(sub.endpoint);
            }
        }
        for s in away {
            let body = serde_json::to_string(&s)?;
            let webhook = self
                .config
                .webhook
                .is_some()
                .then(|| WEBHOOK_TARGET.to_owned());
            let pushes = subscriptions
                .remove(&s.user.id)
                .unwrap_or_default()
                .into_iter()
                .map(|endpoint| format!("{PUSH_TARGET}{endpoint}"));
            out.extend(webhook.into_iter().chain(pushes).map(|target| Outgoing {
                id: s.id.clone(),
                target,
                user: s.user.id,
                room: due.room.id,
                first_seq: s.first_seq,
                body: body.clone(),
            }));
        }
        Ok(())
    }

    /// One delivery pass: takes due notifications and posts them. Returns how many it took.
    pub async fn deliver(&self) -> anyhow::Result<usize> {
        let taken = self
            .store
            .claim_deliveries(DELIVERY_LEASE.as_millis() as i64, DELIVERIES_PER_PASS)
            .await?;
        let n = taken.len();
        let needless = self.needless(&taken).await?;
        let needless = &needless;
        futures_util::stream::iter(taken)
            .for_each_concurrent(CONCURRENT_DELIVERIES, |d| async move {
                let o = &d.outgoing;
                let reason = needless.get(&(o.user, o.room, o.first_seq)).copied();
                if let Err(e) = self.deliver_one(&d, reason).await {
                    // Its lease runs out and it is taken again.
                    metrics::counter!("scalify_notify_errors_total", "stage" => "deliver")
                        .increment(1);
                    tracing::warn!(id = %d.outgoing.id, error = %e, "cannot settle a notification");
                }
            })
            .await;
        Ok(n)
    }

    /// Delivers `d`, unless `needless` says why it need not go out any more.
    async fn deliver_one(
        &self,
        d: &Delivery,
        needless: Option<&'static str>,
    ) -> anyhow::Result<()> {
        let o = &d.outgoing;
        let target = if o.target == WEBHOOK_TARGET {
            "webhook"
        } else {
            "push"
        };
        // Taken again and again without an answer (the checks below keep failing, or the
        // node dies while posting): given up like a delivery that kept failing.
        if d.attempts > MAX_ATTEMPTS + 3 {
            return self.give_up(d, target).await;
        }
        if let Some(reason) = needless {
            metrics::counter!("scalify_notifications_skipped_total", "reason" => reason)
                .increment(1);
            self.store.delivered(&o.id, &o.target, d.attempts).await?;
            return Ok(());
        }
        let outcome = match (o.target.strip_prefix(PUSH_TARGET), &self.config) {
            (
                None,
                NotifyConfig {
                    webhook: Some(w), ..
                },
            ) if o.target == WEBHOOK_TARGET => w.post(&self.http, &o.id, d.attempts, &o.body).await,
            (Some(endpoint), NotifyConfig { vapid: Some(v), .. }) => {
                // The user's still: an endpoint moves to whoever subscribes it last.
                match self.store.push_subscription(o.user, endpoint).await? {
                    Some(sub) => {
                        let outcome = v.post(&self.push_http, &sub, &o.body).await;
                        if outcome == push::PushOutcome::Gone {
                            self.store.unsubscribe_push(Some(o.user), endpoint).await?;
                            metrics::counter!("scalify_push_subscriptions_removed_total")
                                .increment(1);
                        }
                        outcome.into()
                    }
                    // Unsubscribed (or moved to another user) since it was queued.
                    None => Outcome::Refused,
                }
            }
            // This node cannot deliver to that target (its configuration differs from the
            // node that queued it): left for another, and given up if none can.
            _ => Outcome::Failed,
        };
        metrics::counter!("scalify_notification_deliveries_total", "target" => target, "outcome" => match outcome {
            Outcome::Sent => "sent",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        })
        .increment(1);
        match outcome {
            Outcome::Failed if d.attempts < MAX_ATTEMPTS => {
                let delay = retry_delay(d.attempts);
                self.store
                    .retry_delivery(&o.id, &o.target, d.attempts, delay.as_millis() as i64)
                    .await?;
            }
            Outcome::Failed => self.give_up(d, target).await?,
            Outcome::Sent | Outcome::Refused => {
                self.store.delivered(&o.id, &o.target, d.attempts).await?
            }
        }
        Ok(())
    }

    async fn give_up(&self, d: &Delivery, target: &'static str) -> anyhow::Result<()> {
        tracing::warn!(id = %d.outgoing.id, target, attempts = d.attempts, "notification given up");
        metrics::counter!("scalify_notifications_dropped_total", "target" => target).increment(1);
        self.store
            .delivered(&d.outgoing.id, &d.outgoing.target, d.attempts)
            .await?;
        Ok(())
    }

    /// Why each notification of `taken` need not go out any more, if it need not: its user
    /// read the room that far, left it, or is connected now. Once per notification, not per
    /// target, and one Redis round trip for the whole pass.
    async fn needless(
        &self,
        taken: &[Delivery],
    ) -> anyhow::Result<HashMap<(Id, Id, u64), &'static str>> {
        let mut reasons = HashMap::new();
        let mut pending = Vec::new();
        let keys: HashSet<_> = taken
            .iter()
            .map(|d| (d.outgoing.user, d.outgoing.room, d.outgoing.first_seq))
            .collect();
        for key @ (user, room, first_seq) in keys {
            match self.store.last_read(room, user).await? {
                Some(read) if read < first_seq => pending.push(key),
                Some(_) => drop(reasons.insert(key, "read")),
                None => drop(reasons.insert(key, "left")),
            }
        }
        let users: Vec<Id> = pending.iter().map(|(user, _, _)| *user).collect();
        let online = self
            .chat
            .connected_anywhere(&users)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        for (key, online) in pending.into_iter().zip(online) {
            if online {
                reasons.insert(key, "online");
            }
        }
        Ok(reasons)
    }
}

/// Of the messages after `seen` (ascending), those a look may tell of now, and when the room
/// is to be looked at again (`next_from`, as `finish_room` takes it).
///
/// Seqs are told of in order, without a gap: in durable mode a seq may be given and not yet
/// readable while later ones are (the broker has not confirmed it), and a look that went past
/// it would never tell of it. The look stops before such a gap and comes back a second later
/// — unless the message after the gap has waited [`GAP_PATIENCE_MS`] beyond the delay, when
/// the missing seq is taken for one that will never be (a send that failed) and passed over.
pub fn unseen(
    messages: &[scalify_core::Message],
    seen: u64,
    now: i64,
    delay_ms: i64,
) -> (&[scalify_core::Message], Option<i64>) {
    let mut expected = seen + 1;
    for (end, m) in messages.iter().enumerate() {
        if m.seq != expected && m.ts > now - delay_ms - GAP_PATIENCE_MS {
            // Back in a second: due again when "stored" that long before the delay ends.
            return (&messages[..end], Some(now - delay_ms + 1000));
        }
        expected = m.seq + 1;
    }
    // A full page: the rest is due at once.
    let next = (messages.len() == MESSAGES_PER_PASS as usize).then_some(0);
    (messages, next)
}

/// The wait before try `attempts + 1`: 1 s after the first, doubling, at most
/// [`MAX_RETRY_DELAY`].
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(20)).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, ts: i64) -> scalify_core::Message {
        use scalify_core::{ClientId, Id, MessageText, RoomName, UserRef};
        let new = scalify_core::NewMessage::plain(
            Id::new(),
            RoomName::from_trusted("r".into()),
            UserRef {
                id: Id::new(),
                username: "ann".into(),
            },
            MessageText::from_trusted("hi".into()),
            ClientId::from_trusted(format!("c{seq}")),
        );
        scalify_core::Message::from_new(new, Id::new(), seq, ts)
    }

    #[test]
    fn a_look_stops_before_a_missing_seq_and_comes_back_unless_it_waited_too_long() {
        let (now, delay) = (1_000_000, 60_000);
        let seqs = |m: &[scalify_core::Message]| m.iter().map(|m| m.seq).collect::<Vec<_>>();
        // 5, 6, then 8 without 7 (given, not yet confirmed): told of 5 and 6, back in a second.
        let messages = [
            at(5, now - 70_000),
            at(6, now - 65_000),
            at(8, now - 61_000),
        ];
        let (looked, next) = unseen(&messages, 4, now, delay);
        assert_eq!(seqs(looked), vec![5, 6]);
        assert_eq!(next, Some(now - delay + 1000));
        // Missing right after what was seen: nothing told yet.
        let (looked, _) = unseen(&messages[2..], 6, now, delay);
        assert!(looked.is_empty());
        // 7 never came, and 8 has waited the delay and half a minute more: passed over.
        let old = [
            at(5, now - 200_000),
            at(8, now - delay - GAP_PATIENCE_MS - 1),
        ];
        let (looked, next) = unseen(&old, 4, now, delay);
        assert_eq!(seqs(looked), vec![5, 8]);
        assert_eq!(next, None);
        // No gap: all of it.
        let (looked, next) = unseen(&messages[..2], 4, now, delay);
        assert_eq!((looked.len(), next), (2, None));
    }

    #[test]
    fn retries_back_off_from_a_second_to_ten_minutes() {
        let waits: Vec<u64> = (1..=MAX_ATTEMPTS)
            .map(|a| retry_delay(a).as_secs())
            .collect();
        assert_eq!(&waits[..4], &[1, 2, 4, 8]);
        assert_eq!(*waits.last().unwrap_or(&0), 600);
        let total: u64 = waits[..MAX_ATTEMPTS as usize - 1].iter().sum();
        assert!((1200..1800).contains(&total), "{total} s");
    }
}
