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
    let topics = [
        NewTopic::new(
            &config.topic,
            config.partitions.max(1),
            TopicReplication::Fixed(config.replication.max(1)),
        ),
        NewTopic::new(
            &config.dead_letter_topic,
            1,
            TopicReplication::Fixed(config.replication.max(1)),
        ),
    ];
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

/// What `scalify doctor` reports: the brokers answer, and how the messages topic looks.
pub async fn probe(config: &KafkaConfig) -> Result<String, String> {
    let consumer: rdkafka::producer::BaseProducer = config
        .client("doctor")
        .create()
        .map_err(|e| format!("invalid Kafka settings: {e}"))?;
    let topic = config.topic.clone();
    tokio::task::spawn_blocking(move || {
        let md = consumer
            .client()
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| format!("the brokers did not answer within 5 s: {e}"))?;
        let brokers = md.brokers().len();
        let found = md.topics().iter().find(|t| t.name() == topic);
        Ok(match found {
            Some(t) if t.error().is_none() => format!(
                "{brokers} broker(s); topic {topic} has {} partition(s)",
                t.partitions().len()
            ),
            _ => format!(
                "{brokers} broker(s); topic {topic} does not exist yet (created on first start)"
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
