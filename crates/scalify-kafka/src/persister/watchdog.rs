//! The watchdog: lag without progress for `stuck_after` re-creates the consumer; it watches
//! the whole group through a client of its own, replaced when that one cannot answer.

use super::*;

/// How often the watchdog looks at the group's progress.
pub(super) const WATCH_EVERY: Duration = Duration::from_secs(3);

pub(crate) fn observer(kafka: &KafkaConfig) -> Result<BaseConsumer, DurableError> {
    kafka
        .client("watchdog")
        .set("group.id", &kafka.group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| DurableError::Kafka(format!("cannot create the watchdog's client: {e}")))
}

/// The group's progress on the topic, as the watchdog last saw it changing.
pub(super) struct Progress {
    pub(super) committed: i64,
    pub(super) since: Instant,
    /// When the watchdog last replaced its own client (at most once per `stuck_after`, so a
    /// broker that is down does not cost a new client every check).
    pub(super) observer_renewed: Option<Instant>,
}

impl Persister {
    /// The watchdog: true when the topic has unwritten messages but the group's committed
    /// offsets have not moved for [`PersisterConfig::stuck_after`]. Then this member re-creates
    /// its consumer and so rejoins the group: it catches clients that never recover after a
    /// broker restart (rust-rdkafka #597) and a group left without a working assignment (seen
    /// with a test broker when a member is killed mid-rebalance).
    pub(super) async fn group_stuck(&self, progress: &mut Progress) -> bool {
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let topic = self.kafka.topic.clone();
        let seen = tokio::task::spawn_blocking(
            move || -> Result<(i64, i64), rdkafka::error::KafkaError> {
                let timeout = Duration::from_secs(5);
                let md = observer.fetch_metadata(Some(&topic), timeout)?;
                let partitions: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic)
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition(&topic, *p);
                }
                let committed = observer.committed_offsets(tpl, timeout)?;
                let (mut done, mut lag) = (0i64, 0i64);
                for p in partitions {
                    let (low, high) = observer.fetch_watermarks(&topic, p, timeout)?;
                    let at = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => low,
                    };
                    done += at;
                    lag += (high - at).max(0);
                }
                Ok((done, lag))
            },
        )
        .await;
        let (committed, lag) = match seen {
            Ok(Ok(v)) => v,
            // The broker cannot be asked: that is stuck too, if it lasts. The next check asks
            // through a new client, in case the fault is this one's connections.
            failed => {
                if let Ok(Err(e)) = failed {
                    tracing::warn!(error = %e, "the watchdog cannot read the group's progress");
                }
                if progress
                    .observer_renewed
                    .is_none_or(|t| t.elapsed() >= self.config.stuck_after)
                {
                    progress.observer_renewed = Some(Instant::now());
                    self.renew_observer();
                }
                (progress.committed, 1)
            }
        };
        // This member's own view too: the high watermarks its fetches returned (the
        // statistics callback). A broker whose ListOffsets answer is off (the test broker's
        // memory engine answers the last batch's base offset + 1) still shows the lag here.
        let own_lag: i64 = self
            .status
            .lock()
            .map(|s| s.lag.values().sum())
            .unwrap_or_default();
        let lag = lag.max(own_lag);
        if lag == 0 || committed != progress.committed {
            progress.committed = committed;
            progress.since = Instant::now();
            return false;
        }
        progress.since.elapsed() > self.config.stuck_after
    }

    pub(super) fn renew_observer(&self) {
        let fresh = match observer(&self.kafka) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                tracing::error!(error = %e, "cannot re-create the watchdog's client");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *self.observer.lock().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        // Its close may wait for the broker.
        tokio::task::spawn_blocking(move || drop(old));
    }
}
