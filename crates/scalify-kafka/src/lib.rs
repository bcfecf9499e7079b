//! # scalify-kafka — the durable pipeline (Kafka between the nodes and PostgreSQL)
//!
//! With `--kafka-brokers`, a node no longer writes messages to the database itself:
//!
//! ```text
//!  send ─▶ Ledger (Redis) ─▶ Kafka (idempotent, acks=all) ─▶ recent window ─▶ ack + broadcast
//!            seq, idempotency        delivery report              (Redis)
//!                                          │
//!                                          ▼
//!                 persister consumer group ─▶ PostgreSQL (batched, idempotent) ─▶ commit offsets,
//!                                                                                trim the window
//! ```
//!
//! - [`ledger::Ledger`] gives each send its room's next seq (a Redis counter, seeded from the
//!   database) and remembers (sender, client_id) so a retry gets the same message.
//! - [`ingest::Ingest`] produces the message keyed by room id (one room = one partition = one
//!   order) and retries until the broker confirms it; only then is the message put in the
//!   room's recent window and acked.
//! - [`store::DurableStore`] is a [`scalify_store::Store`]: accounts and rooms go to
//!   PostgreSQL as before, `append` goes through the pipeline, and history/sync merge the
//!   recent window with the database so they return every acked message however far the
//!   persister lags.
//! - [`persister::Persister`] is the consumer group that writes batches to PostgreSQL, pauses
//!   on database errors, and resumes from the first unwritten offset; `continuity` checks
//!   that no partition's records reach it with a hole (and steps back over one).
//! - [`producer`] is the producer under `Ingest`, its delivery reports served on the tokio
//!   runtime; [`record`] is the record format; [`topics`] creates the topics.

pub mod continuity;
pub mod fence;
pub mod ingest;
pub mod ledger;
pub mod persister;
pub mod producer;
pub mod record;
pub mod store;
pub mod topics;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// How to reach the Kafka cluster and which topics to use. Shared by nodes and persisters.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The messages topic.
    pub topic: String,
    /// Where records the persister cannot decode go, with the reason in a header.
    pub dead_letter_topic: String,
    /// Partitions of the messages topic when it has to be created. Rooms are spread over them
    /// (by key hash); persisters share them, so this bounds how many persisters do work.
    pub partitions: i32,
    /// Replication factor when creating topics (use 3 on a production cluster).
    pub replication: i32,
    /// `client.id` reported to the brokers (the node or persister id is appended).
    pub client_id: String,
    /// Consumer group of the persisters.
    pub group: String,
    /// Extra librdkafka settings, e.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`. They override our defaults, except
    /// the consumer settings the persister's offset handling rests on.
    pub options: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic: "scalify.messages".into(),
            dead_letter_topic: "scalify.messages.dlq".into(),
            partitions: 6,
            replication: 1,
            client_id: "scalify".into(),
            group: "scalify-persister".into(),
            options: BTreeMap::new(),
        }
    }

    /// Adds one librdkafka setting written `key=value` (what `--kafka-option` takes).
    pub fn add_option(&mut self, kv: &str) -> Result<(), String> {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("kafka option '{kv}' is not key=value"))?;
        self.options
            .insert(k.trim().to_owned(), v.trim().to_owned());
        Ok(())
    }

    /// librdkafka settings common to every client.
    pub(crate) fn client(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("{}-{role}", self.client_id))
            // librdkafka logs through `log`; errors reach us through results and callbacks.
            .set("log_level", "3");
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }

    /// [`KafkaConfig::client`] with our defaults for settings an operator may tune: each one
    /// applies unless `--kafka-option` sets that key.
    pub(crate) fn client_with_defaults(
        &self,
        role: &str,
        defaults: &[(&str, &str)],
    ) -> ClientConfig {
        let mut c = self.client(role);
        for (k, v) in defaults {
            if !self.options.contains_key(*k) {
                c.set(*k, *v);
            }
        }
        c
    }
}

/// Errors of the durable pipeline, mapped to store errors at the [`scalify_store::Store`] boundary.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// Redis, Kafka or PostgreSQL cannot be reached now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The broker has not confirmed the message within the ack timeout; it keeps trying, and a
    /// retry with the same client_id returns it once confirmed.
    #[error("{0}")]
    NotYetConfirmed(String),
    /// A room has too many messages waiting for the persister.
    #[error("the persister is behind: {0}")]
    Backlog(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The room's seq epoch changed between a message's allocation and its deposit: Redis lost
    /// its data meanwhile. The message is not acked (the persister may refuse it).
    #[error("{0}")]
    Fenced(String),
    #[error("Kafka: {0}")]
    Kafka(String),
}

impl From<DurableError> for scalify_store::StoreError {
    fn from(e: DurableError) -> Self {
        match e {
            DurableError::Unavailable(m) => scalify_store::StoreError::Unavailable(m),
            e @ (DurableError::NotYetConfirmed(_)
            | DurableError::Backlog(_)
            | DurableError::Fenced(_)) => scalify_store::StoreError::Retry(e.to_string()),
            other => scalify_store::StoreError::Backend(other.to_string()),
        }
    }
}

/// Exponential backoff from 50 ms to `max`.
pub(crate) fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(10))).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_key_value_pairs() {
        let mut config = KafkaConfig::new("localhost:9092");
        assert!(config.add_option(" sasl.username = chat ").is_ok());
        assert!(config.add_option("a=b=c").is_ok());
        assert_eq!(
            config.options.get("sasl.username").map(String::as_str),
            Some("chat")
        );
        assert_eq!(config.options.get("a").map(String::as_str), Some("b=c"));
        assert!(config.add_option("no-equals-sign").is_err());
    }

    #[test]
    fn an_operator_option_overrides_a_default_and_the_rest_still_apply() {
        let mut config = KafkaConfig::new("localhost:9092");
        config
            .options
            .insert("session.timeout.ms".into(), "45000".into());
        let c = config.client_with_defaults(
            "t",
            &[("session.timeout.ms", "10000"), ("fetch.wait.max.ms", "50")],
        );
        assert_eq!(c.get("session.timeout.ms"), Some("45000"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(c.get("client.id"), Some("scalify-t"));
    }
}
