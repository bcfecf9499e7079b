//! Producing messages to Kafka: an idempotent producer (`enable.idempotence=true`,
//! `acks=all`) whose sends are retried until the broker confirms them.
//!
//! Why retry forever instead of failing the send: by the time a message is produced its seq
//! has been allocated, and a seq that is never produced would be a hole in the room. So the
//! message keeps being offered to the broker (across broker restarts, and across producer
//! re-creations after a fatal error) until it is confirmed or the node shuts down; the sender
//! gets an error ack if that takes longer than the ack timeout, and a retry with the same
//! client_id returns the message once it is confirmed. How many may wait is bounded
//! ([`IngestConfig::max_pending`]), so a long broker outage costs bounded memory and sends
//! beyond it are refused at once.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::producer::AsyncProducer;
use crate::{backoff, DurableError, KafkaConfig};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// How long a sender waits for the broker's confirmation before getting an error ack
    /// ("retry with the same client_id"). The message keeps being produced meanwhile.
    pub ack_timeout: Duration,
    /// Most messages waiting for the broker at once on this node.
    pub max_pending: usize,
    /// librdkafka `linger.ms`: how long the producer waits to fill a batch. 5 ms (librdkafka's
    /// own default, and the Java client's since Kafka 4.0): at 10,000 msgs/s fewer, larger
    /// batches took send→ack p99 from 23–24 to 16–17 ms and the node from 0.66–0.69 to
    /// 0.58–0.65 cores; at 1,000 msgs/s p50 rises from 2.5–3.2 to 6.1–6.4 ms, p99 from 5.6–6.2
    /// to 8.7–8.9 ms (three alternated runs each, docs/performance.md). For the
    /// lowest latency at low rates, `--kafka-option linger.ms=1`.
    pub linger_ms: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            ack_timeout: Duration::from_secs(10),
            max_pending: 50_000,
            linger_ms: 5,
        }
    }
}

/// One attempt's deadline inside the broker client; the retry loop around it never gives up.
const ATTEMPT_TIMEOUT_MS: u32 = 15_000;
/// After this many failed attempts of one message with no successful delivery for this long,
/// the producer is re-created (rust-rdkafka #661: producers that never recover).
const STUCK_ATTEMPTS: u32 = 3;
const STUCK_FOR: Duration = Duration::from_secs(10);

pub struct Ingest {
    config: KafkaConfig,
    ingest: IngestConfig,
    /// The producer and its generation (bumped at each re-creation, so concurrent failures
    /// re-create it once).
    producer: RwLock<(u64, Arc<AsyncProducer>)>,
    pending: Arc<Semaphore>,
    /// Time of the last confirmed delivery, ms since start.
    last_success: AtomicI64,
    started: Instant,
    stop: CancellationToken,
    /// Where each producer's report pump runs (the node's supervisor).
    tasks: TaskTracker,
}

fn producer_config(config: &KafkaConfig, ingest: &IngestConfig) -> rdkafka::ClientConfig {
    let linger = ingest.linger_ms.to_string();
    let attempt_timeout = ATTEMPT_TIMEOUT_MS.to_string();
    let queue = (ingest.max_pending.max(1000) * 2).to_string();
    let mut c = config.client_with_defaults(
        "producer",
        &[
            ("linger.ms", &linger),
            ("message.timeout.ms", &attempt_timeout),
            ("queue.buffering.max.messages", &queue),
            // Keyed by room id: the default partitioner hashes keys consistently across
            // clients (murmur2, as the Java client does), so any node sends a room to the same
            // partition.
            ("partitioner", "murmur2_random"),
            // Every ack waits on this connection, and librdkafka keeps up to five requests in
            // flight on it: with Nagle on, a request written while the previous one is
            // unanswered waits for its ACK. The Java client sets TCP_NODELAY too. Against
            // tansu at 3,000 msgs/s this alone took ack p50 from 8.1–8.8 to 7.0–7.1 ms
            // (docs/performance.md).
            ("socket.nagle.disable", "true"),
        ],
    );
    // What "acked means in Kafka, once" rests on: not overridable by `--kafka-option`.
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

impl Ingest {
    /// The producer's report pump (and a re-created producer's) runs on `tasks`.
    pub fn new(
        config: KafkaConfig,
        ingest: IngestConfig,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, DurableError> {
        let producer = AsyncProducer::create(&producer_config(&config, &ingest), &tasks)
            .map_err(|e| DurableError::Kafka(format!("cannot create the producer: {e}")))?;
        Ok(Arc::new(Ingest {
            pending: Arc::new(Semaphore::new(ingest.max_pending.max(1))),
            config,
            ingest,
            producer: RwLock::new((0, producer)),
            last_success: AtomicI64::new(0),
            started: Instant::now(),
            stop: CancellationToken::new(),
            tasks,
        }))
    }

    pub fn ack_timeout(&self) -> Duration {
        self.ingest.ack_timeout
    }

    /// A place among the messages waiting for the broker, or an error at once if full.
    pub fn reserve(&self) -> Result<OwnedSemaphorePermit, DurableError> {
        self.pending.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("scalify_kafka_produce_refused_total").increment(1);
            DurableError::Backlog(format!(
                "{} messages are waiting for the Kafka broker on this node",
                self.ingest.max_pending
            ))
        })
    }

    fn current(&self) -> (u64, Arc<AsyncProducer>) {
        match self.producer.read() {
            Ok(p) => (p.0, p.1.clone()),
            Err(poisoned) => {
                let p = poisoned.into_inner();
                (p.0, p.1.clone())
            }
        }
    }

    /// Replaces the producer unless someone already did since `generation`.
    fn recreate(&self, generation: u64, why: &str) {
        let fresh = match AsyncProducer::create(
            &producer_config(&self.config, &self.ingest),
            &self.tasks,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot re-create the Kafka producer");
                return;
            }
        };
        let mut slot = match self.producer.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slot.0 == generation {
            tracing::warn!(%why, "re-creating the Kafka producer");
            metrics::counter!("scalify_kafka_producer_recreated_total").increment(1);
            *slot = (generation + 1, fresh);
        }
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Produces one record and returns once the broker has confirmed it (partition, offset).
    /// Retries until confirmed; fails only when the node is shutting down.
    pub async fn produce(&self, key: &str, payload: &[u8]) -> Result<(i32, i64), DurableError> {
        let mut attempt: u32 = 0;
        loop {
            let (generation, producer) = self.current();
            let started = Instant::now();
            let error: KafkaError = match producer.send(&self.config.topic, key, payload) {
                Ok(report) => match report.await {
                    Ok(Ok(delivered)) => {
                        metrics::histogram!("scalify_kafka_produce_seconds")
                            .record(started.elapsed().as_secs_f64());
                        self.last_success.store(self.now_ms(), Ordering::Relaxed);
                        return Ok(delivered);
                    }
                    Ok(Err(e)) => e,
                    Err(_) => KafkaError::Canceled,
                },
                Err(e) => e,
            };
            metrics::counter!("scalify_kafka_produce_errors_total").increment(1);
            attempt += 1;
            tracing::warn!(error = %error, attempt, "Kafka produce failed; retrying");
            if let Some((code, reason)) = producer.client().fatal_error() {
                self.recreate(generation, &format!("fatal error {code:?}: {reason}"));
            } else if attempt >= STUCK_ATTEMPTS
                && self.now_ms() - self.last_success.load(Ordering::Relaxed)
                    > STUCK_FOR.as_millis() as i64
            {
                self.recreate(generation, "no delivery confirmed for a while");
            }
            tokio::select! {
                () = self.stop.cancelled() => {
                    return Err(DurableError::Unavailable(
                        "shutting down before the broker confirmed the message".into(),
                    ))
                }
                () = tokio::time::sleep(backoff(attempt, Duration::from_secs(2))) => {}
            }
        }
    }

    /// Gives up on messages still unconfirmed (called once graceful shutdown's deadline has
    /// passed), then flushes what librdkafka still holds, then ends the report pump.
    pub async fn close(&self, flush_for: Duration) {
        self.stop.cancel();
        let (_, producer) = self.current();
        let flushing = producer.clone();
        let _ = tokio::task::spawn_blocking(move || flushing.flush(flush_for)).await;
        producer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_tune_the_producer_but_cannot_weaken_its_acks() {
        let mut config = KafkaConfig::new("localhost:9092");
        for (k, v) in [
            ("acks", "1"),
            ("enable.idempotence", "false"),
            ("linger.ms", "2"),
            ("socket.nagle.disable", "false"),
        ] {
            config.options.insert(k.into(), v.into());
        }
        let c = producer_config(&config, &IngestConfig::default());
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("linger.ms"), Some("2"));
        assert_eq!(c.get("socket.nagle.disable"), Some("false"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));

        let c = producer_config(
            &KafkaConfig::new("localhost:9092"),
            &IngestConfig::default(),
        );
        assert_eq!(c.get("linger.ms"), Some("5"));
        assert_eq!(c.get("socket.nagle.disable"), Some("true"));
    }
}
