//! Seq epochs: how a durable node notices that Redis lost its data, and when it may seed a
//! room's seq counter again.
//!
//! Redis holds each room's counter, and a counter seeded from the database alone may be
//! behind: messages the broker confirmed may not be written yet. So seeding waits for the
//! **fence**: the high watermark of every partition of the topic, read after the loss was
//! seen. Once the persister group's committed offsets reach it, the database holds every
//! message acked before the loss, and a seed from it is above every seq given before.
//!
//! The cluster's epoch lives in Redis (`<prefix>:seqepoch`: `<epoch>:<partition>=<offset>,…`).
//! A node that finds it missing — Redis lost its data, or this is the first start — takes a
//! new epoch from PostgreSQL (a sequence, so it outlives Redis), reads the watermarks and
//! sets it (the first node wins). A room seeded in an epoch is stamped with it, in Redis and
//! under the room's row lock in PostgreSQL ([`PgStore::claim_seq_epoch`]):
//!
//! - a message allocated before the loss and confirmed after it is not acked, because the
//!   deposit finds the room's counter gone or in another epoch;
//! - if such a message reaches the database after its room was seeded again, the persister
//!   refuses it (its epoch is older than the room's), so it cannot take a seq that now
//!   belongs to an acked message;
//! - one that reached the database before the seed is counted by the seed.
//!
//! Reads wait for the fence too: until the persisters have written what the lost recent
//! windows held, a read could miss an acked message.
//!
//! What this does not catch: Redis losing *some* writes while keeping the epoch key (a
//! failover to a replica that lags). Eviction, the other way to lose some keys, is refused at
//! start ([`crate::ledger::Ledger::check_eviction`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use scalify_core::Id;
use scalify_store::postgres::PgStore;
use tokio::sync::Mutex as AsyncMutex;

use crate::ledger::Ledger;
use crate::{DurableError, KafkaConfig};

/// Messages of a room whose idempotency keys are set again when its counter is seeded: more
/// than a room has sends in flight at once.
pub const REMEMBERED: u32 = 1000;

/// How often a node waiting for a fence asks the broker for the group's progress.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// A cluster seq epoch, as the epoch key holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub number: u64,
    /// Each partition's high watermark when the epoch began.
    pub watermarks: Vec<(i32, i64)>,
}

impl Epoch {
    pub fn encode(&self) -> String {
        let marks: Vec<String> = self
            .watermarks
            .iter()
            .map(|(p, o)| format!("{p}={o}"))
            .collect();
        format!("{}:{}", self.number, marks.join(","))
    }

    pub fn decode(raw: &str) -> Result<Epoch, DurableError> {
        let bad = || DurableError::Corrupt(format!("the seq epoch in Redis is {raw:?}"));
        let (number, marks) = raw.split_once(':').ok_or_else(bad)?;
        let number = number.parse().map_err(|_| bad())?;
        let watermarks = marks
            .split(',')
            .filter(|m| !m.is_empty())
            .map(|m| {
                let (p, o) = m.split_once('=')?;
                Some((p.parse().ok()?, o.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(Epoch { number, watermarks })
    }
}

/// What this node knows of the current epoch.
struct Known {
    raw: String,
    epoch: Epoch,
    /// The persisters have committed offsets up to its watermarks.
    drained: bool,
    checked: Option<Instant>,
}

pub struct Fence {
    ledger: Ledger,
    db: Arc<PgStore>,
    topic: String,
    /// A group-less view of the topic: watermarks and the persisters' committed offsets.
    observer: Arc<BaseConsumer>,
    /// The epoch last seen with its fence drained (the fast path of every read).
    ready: Mutex<Option<(String, u64)>>,
    known: AsyncMutex<Option<Known>>,
}

impl Fence {
    pub fn new(
        ledger: Ledger,
        db: Arc<PgStore>,
        kafka: &KafkaConfig,
    ) -> Result<Self, DurableError> {
        Ok(Fence {
            ledger,
            db,
            topic: kafka.topic.clone(),
            observer: Arc::new(crate::persister::observer(kafka)?),
            ready: Mutex::new(None),
            known: AsyncMutex::new(None),
        })
    }

    /// The current epoch's number once its fence has drained, or
    /// [`DurableError::Unavailable`] while the persisters are still writing what the topic
    /// held when Redis lost its data. Begins a new epoch if Redis has none.
    pub async fn ready(&self) -> Result<u64, DurableError> {
        let raw = self.ledger.cluster_epoch().await?;
        if let Some(raw) = &raw {
            let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((r, n)) = ready.as_ref() {
                if r == raw {
                    return Ok(*n);
                }
            }
        }
        let mut known = self.known.lock().await;
        let raw = match raw {
            Some(raw) => raw,
            None => self.begin().await?,
        };
        if known.as_ref().is_none_or(|k| k.raw != raw) {
            *known = Some(Known {
                epoch: Epoch::decode(&raw)?,
                raw: raw.clone(),
                drained: false,
                checked: None,
            });
        }
        let Some(k) = known.as_mut() else {
            return Err(DurableError::Unavailable("no seq epoch".into()));
        };
        if !k.drained && k.checked.is_none_or(|t| t.elapsed() >= CHECK_EVERY) {
            k.checked = Some(Instant::now());
            k.drained = self.drained(&k.epoch).await?;
            if k.drained {
                tracing::info!(
                    epoch = k.epoch.number,
                    "seq epoch ready: the persisters wrote what the topic held when it began"
                );
            }
        }
        if !k.drained {
            metrics::counter!("scalify_kafka_fenced_total").increment(1);
            return Err(DurableError::Unavailable(format!(
                "Redis lost its data: waiting until the persisters have written what the topic held then (seq epoch {}); retry",
                k.epoch.number
            )));
        }
        *self.ready.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((k.raw.clone(), k.epoch.number));
        Ok(k.epoch.number)
    }

    /// Confirms that a recent-window read whose cluster epoch key read `seen` (right after
    /// it, in the same round trip) was made in a ready epoch: one that still holds, with its
    /// fence passed. Otherwise the window read may be the empty one of after a loss.
    pub async fn confirm(&self, seen: Option<&str>) -> Result<u64, DurableError> {
        let known = |seen: &str| {
            let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
            ready.as_ref().filter(|(r, _)| r == seen).map(|(_, n)| *n)
        };
        if let Some(n) = seen.and_then(known) {
            return Ok(n);
        }
        // Not the epoch this node last saw ready: learn where the cluster stands (an error
        // while the fence is up), then judge the read by it.
        self.ready().await?;
        seen.and_then(known).ok_or_else(|| {
            DurableError::Unavailable("Redis lost its data during this read; retry".into())
        })
    }

    /// Stamps `room` with `epoch` in the database and returns its newest stored seq: the seed
    /// of its counter. The idempotency keys of its newest [`REMEMBERED`] messages are set
    /// again first (they are gone if Redis lost its data): a sender retrying a send that was
    /// in flight then gets the stored message, not a second copy.
    pub async fn claim(&self, room: Id, epoch: u64) -> Result<u64, DurableError> {
        let unavailable = |e| DurableError::Unavailable(format!("cannot seed the room's seq: {e}"));
        let seq = self
            .db
            .claim_seq_epoch(room, epoch)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                DurableError::Unavailable(
                    "the room is gone, or was seeded in a newer seq epoch meanwhile; retry".into(),
                )
            })?;
        let sends = self
            .db
            .recent_sends(room, REMEMBERED)
            .await
            .map_err(unavailable)?;
        self.ledger.remember(room, &sends).await?;
        Ok(seq)
    }

    /// Begins a new epoch (Redis has none) and returns the epoch key's value, this one or one
    /// another node set first.
    async fn begin(&self) -> Result<String, DurableError> {
        let number = self
            .db
            .next_seq_epoch()
            .await
            .map_err(|e| DurableError::Unavailable(format!("cannot take a seq epoch: {e}")))?;
        let (observer, topic) = (self.observer.clone(), self.topic.clone());
        let watermarks = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let mut marks = Vec::new();
            for p in partitions(&observer, &topic, timeout)? {
                let (_, high) = observer.fetch_watermarks(&topic, p, timeout)?;
                marks.push((p, high));
            }
            Ok::<_, rdkafka::error::KafkaError>(marks)
        })
        .await
        .map_err(|e| DurableError::Unavailable(format!("the watermark task failed: {e}")))?
        .map_err(|e| {
            DurableError::Unavailable(format!("cannot read the topic's watermarks: {e}"))
        })?;
        if watermarks.is_empty() {
            return Err(DurableError::Unavailable(format!(
                "the broker names no partition of {}",
                self.topic
            )));
        }
        let epoch = Epoch { number, watermarks };
        let raw = self.ledger.begin_cluster_epoch(&epoch.encode()).await?;
        if raw == epoch.encode() {
            tracing::warn!(
                epoch = number,
                watermarks = ?epoch.watermarks,
                "Redis holds no seq epoch (it lost its data, or this is the cluster's first start): began a new one; rooms are seeded again once the persisters reach these offsets"
            );
        }
        Ok(raw)
    }

    /// Whether the persister group's committed offsets reached the epoch's watermarks (a
    /// partition without a committed offset counts from its low watermark: records deleted by
    /// retention are not waited for).
    async fn drained(&self, epoch: &Epoch) -> Result<bool, DurableError> {
        let (observer, topic, marks) = (
            self.observer.clone(),
            self.topic.clone(),
            epoch.watermarks.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let mut tpl = TopicPartitionList::new();
            for (p, _) in &marks {
                tpl.add_partition(&topic, *p);
            }
            let committed = observer.committed_offsets(tpl, timeout)?;
            for (p, mark) in marks {
                let at = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => observer.fetch_watermarks(&topic, p, timeout)?.0,
                };
                if at < mark {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .map_err(|e| DurableError::Unavailable(format!("the fence check failed: {e}")))?
        .map_err(|e: rdkafka::error::KafkaError| {
            DurableError::Unavailable(format!("cannot read the persisters' progress: {e}"))
        })
    }
}

/// The topic's partitions, from the broker's metadata.
fn partitions(
    observer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
    let md = observer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip_and_bad_ones_are_refused() {
        let e = Epoch {
            number: 7,
            watermarks: vec![(0, 12), (1, 0), (5, 99)],
        };
        assert_eq!(Epoch::decode(&e.encode()).unwrap(), e);
        let none = Epoch {
            number: 1,
            watermarks: vec![],
        };
        assert_eq!(Epoch::decode(&none.encode()).unwrap(), none);
        for bad in ["", "7", "x:0=1", "7:0", "7:a=1", "7:0=b"] {
            assert!(Epoch::decode(bad).is_err(), "{bad}");
        }
    }
}
