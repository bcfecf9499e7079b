//! Creating the topics the pipeline needs (if absent), so a fresh cluster works with no
//! manual step. An existing topic is left as it is (its partition count included).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;

use crate::{DurableError, KafkaConfig};

/// Creates the messages topic (with [`KafkaConfig::partitions`]) and the dead-letter topic.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), DurableError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client("admin")
        .create()
        .map_err(|e| DurableError::Kafka(format!("cannot create the admin client: {e}")))?;
    let replication = config.replication.max(1);
    let topics = [
        (&config.topic, config.partitions.max(1)),
        (&config.dead_letter_topic, 1),
    ]
    .map(|(name, partitions)| {
        topic_settings(replication).iter().fold(
            NewTopic::new(name, partitions, TopicReplication::Fixed(replication)),
            |topic, (k, v)| topic.set(k, v),
        )
    });
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // While no broker answers, librdkafka keeps trying (so a node started before its brokers
    // comes up with them); say so, or the start looks hung.
    let mut create = std::pin::pin!(admin.create_topics(topics.iter(), &options));
    let created = loop {
        tokio::select! {
            created = &mut create => break created,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::warn!(brokers = %config.brokers, "waiting for the Kafka brokers to answer (creating the topics)");
            }
        }
    };
    let results = created
        .map_err(|e| DurableError::Unavailable(format!("Kafka: cannot create topics: {e}")))?;
    for r in results {
        match r {
            Ok(topic) => tracing::info!(%topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(DurableError::Kafka(format!(
                    "cannot create topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// The topic-level settings the topics are created with. With `acks=all` a write is acked
/// once every in-sync replica has it, and the in-sync set may shrink to the leader alone:
/// `min.insync.replicas=2` makes such a write fail instead, so an acked message is on two
/// brokers. Only with three replicas or more, so that one broker may be down meanwhile.
pub fn topic_settings(replication: i32) -> &'static [(&'static str, &'static str)] {
    if replication >= 3 {
        &[("min.insync.replicas", "2")]
    } else {
        &[]
    }
}

/// What `scalify doctor` says of a topic's replication factor, when it is a risk.
pub fn replication_warning(replication: usize) -> Option<String> {
    (replication < 3).then(|| {
        format!(
            "replication factor {replication}: losing a broker loses acked messages; fine for development, use 3 (min.insync.replicas=2) in production"
        )
    })
}

/// What `scalify doctor` reports: the brokers answer, and how the messages topic looks; and a
/// warning when the topic (or the one a start would create) keeps fewer than three replicas.
pub async fn probe(config: &KafkaConfig) -> Result<(String, Option<String>), String> {
    let consumer: rdkafka::producer::BaseProducer = config
        .client("doctor")
        .create()
        .map_err(|e| format!("invalid Kafka settings: {e}"))?;
    let topic = config.topic.clone();
    let configured = config.replication.max(1) as usize;
    tokio::task::spawn_blocking(move || {
        let md = consumer
            .client()
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| format!("the brokers did not answer within 5 s: {e}"))?;
        let brokers = md.brokers().len();
        let found = md.topics().iter().find(|t| t.name() == topic);
        Ok(match found {
            Some(t) if t.error().is_none() => {
                let replicas = t.partitions().first().map_or(0, |p| p.replicas().len());
                (
                    format!(
                        "{brokers} broker(s); topic {topic} has {} partition(s), {replicas} replica(s)",
                        t.partitions().len()
                    ),
                    replication_warning(replicas),
                )
            }
            _ => (
                format!(
                    "{brokers} broker(s); topic {topic} does not exist yet (created on first start with {configured} replica(s))"
                ),
                replication_warning(configured),
            ),
        })
    })
    .await
    .map_err(|e| format!("check failed: {e}"))?
}

/// Checks the librdkafka settings (`--kafka-option` included) without connecting: an unknown
/// property or an invalid value is reported the way `scalify config check` reports the rest.
pub fn validate(config: &KafkaConfig) -> Result<(), String> {
    config
        .client("check")
        .create::<rdkafka::producer::BaseProducer>()
        .map(|_| ())
        .map_err(|e| format!("invalid Kafka settings: {e}"))
}

/// A client kept for readiness checks: do the brokers answer a metadata request for the
/// messages topic within a second?
pub struct BrokerCheck {
    client: Arc<rdkafka::producer::BaseProducer>,
    topic: String,
}

impl BrokerCheck {
    pub fn new(config: &KafkaConfig) -> Result<Self, DurableError> {
        Ok(BrokerCheck {
            client: Arc::new(
                config
                    .client("readiness")
                    .create()
                    .map_err(|e| DurableError::Kafka(format!("invalid Kafka settings: {e}")))?,
            ),
            topic: config.topic.clone(),
        })
    }

    pub async fn check(&self) -> Result<(), String> {
        let (client, topic) = (self.client.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(1))
                .map(|_| ())
                .map_err(|e| format!("Kafka: {e}"))
        })
        .await
        .map_err(|e| format!("Kafka check failed: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_replicas_or_more_need_two_in_sync_and_fewer_are_warned_of() {
        assert_eq!(topic_settings(1), &[]);
        assert_eq!(topic_settings(2), &[]);
        assert_eq!(topic_settings(3), &[("min.insync.replicas", "2")]);
        assert_eq!(topic_settings(5), &[("min.insync.replicas", "2")]);
        assert!(replication_warning(1).is_some_and(|w| w.contains("replication factor 1")));
        assert!(replication_warning(3).is_none());
    }
}
