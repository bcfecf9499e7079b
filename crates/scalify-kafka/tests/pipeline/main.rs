//! The pipeline's engines against the real services: Redis (the ledger), PostgreSQL (the
//! persister's idempotent batch write) and a Kafka-compatible broker (the node's producer
//! confirms each send once; poison records go to the dead-letter topic and their partition
//! keeps flowing). `scripts/test.sh` starts the broker and sets `SCALIFY_TEST_KAFKA_BROKERS`.
//! One test binary, its subjects in modules of their own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use scalify_core::{ClientId, Id, Message, MessageText, RoomKind, RoomName, UserRef, Username};
use scalify_kafka::ingest::{Ingest, IngestConfig};
use scalify_kafka::ledger::{Allocation, Ledger, LedgerConfig};
use scalify_kafka::persister::{Persister, PersisterConfig, PersisterStatus};
use scalify_kafka::{record, topics, KafkaConfig};
use scalify_store::postgres::{PgConfig, PgStore};
use scalify_store::Store;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use scalify_testkit::{brokers, redis_url, unique, FreshDb, RedisPrefix};

mod ingest;
mod ledger;
mod resume;
mod sink;
mod support;
mod writers;

use support::*;
