//! Durable mode's wiring (`--kafka-brokers`): the node's [`DurableStore`], the Kafka
//! readiness check, the broadcaster of late confirmations, and the persister — inside
//! `serve --persister` or alone as `scalify persister`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use scalify_core::Message;
use scalify_fanout::redis::RedisRegistry;
use scalify_fanout::Registry;
use scalify_kafka::fence::Fence;
use scalify_kafka::ingest::Ingest;
use scalify_kafka::ledger::{Ledger, LedgerConfig};
use scalify_kafka::persister::Persister;
use scalify_kafka::store::DurableStore;
use scalify_kafka::topics::{ensure_topics, BrokerCheck};
use scalify_service::{Chat, Dependency};
use scalify_store::postgres::PgStore;
use scalify_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{KafkaSettings, Settings};
use crate::startup::{wait_for_postgres, wait_for_redis};
use crate::supervisor::{Service, Supervisor};

/// The parts durable mode needs, from settings that `Settings::load` has validated.
fn parts(
    settings: &Settings,
) -> anyhow::Result<(
    &KafkaSettings,
    &scalify_fanout::redis::RedisConfig,
    &scalify_store::postgres::PgConfig,
)> {
    match (&settings.kafka, &settings.redis, &settings.postgres) {
        (Some(k), Some(r), Some(p)) => Ok((k, r, p)),
        _ => anyhow::bail!("durable mode needs --kafka-brokers, --redis-url and --database-url"),
    }
}

async fn ledger(settings: &Settings) -> anyhow::Result<(Ledger, redis::aio::ConnectionManager)> {
    let (kafka, redis, _) = parts(settings)?;
    let (_, conn) = scalify_fanout::redis::connect(redis)
        .await
        .context("connecting to Redis")?;
    let mut config = LedgerConfig::new(redis.prefix.clone());
    config.idempotency_ttl = kafka.idempotency_window;
    let ledger = Ledger::new(conn.clone(), config);
    if let Some(warning) = ledger
        .check_eviction()
        .await
        .context("checking Redis's eviction policy")?
    {
        tracing::warn!("{warning}");
    }
    Ok((ledger, conn))
}

/// The store of a durable node: PostgreSQL for accounts and rooms, the Kafka pipeline for
/// messages. Creates the topics if they are missing.
/// The producer's report pump runs on `tasks`.
pub async fn open_store(
    settings: &Settings,
    pg: Arc<PgStore>,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<DurableStore>> {
    let (kafka, _, _) = parts(settings)?;
    ensure_topics(&kafka.config)
        .await
        .context("creating the Kafka topics")?;
    let (ledger, _) = ledger(settings).await?;
    let ingest = Ingest::new(kafka.config.clone(), kafka.ingest.clone(), tasks.clone())?;
    let fence = Arc::new(Fence::new(ledger.clone(), pg.clone(), &kafka.config)?);
    // Learns the seq epoch (or begins one) now rather than on the first sends, which would
    // wait for it; a fence still waiting for the persisters is waited for by sends as usual.
    if let Err(e) = fence.ready().await {
        tracing::warn!(error = %e, "seq epoch not ready yet");
    }
    tracing::info!(brokers = %kafka.config.brokers, topic = %kafka.config.topic, "durable mode: messages go through Kafka");
    Ok(Arc::new(DurableStore::new(
        pg as Arc<dyn Store>,
        ledger,
        ingest,
        fence,
    )))
}

/// Hooks a durable store to its node: `/readyz` checks the brokers (the same check as a
/// persister's), and the returned service broadcasts late confirmations.
pub fn attach(
    store: &Arc<DurableStore>,
    chat: &Arc<Chat>,
    settings: &Settings,
) -> anyhow::Result<Option<Box<dyn Service>>> {
    let (kafka, _, _) = parts(settings)?;
    chat.add_check(Arc::new(KafkaCheck(BrokerCheck::new(&kafka.config)?)));
    Ok(store.late_confirms().map(|late| {
        Box::new(LateConfirms {
            late,
            chat: chat.clone(),
        }) as Box<dyn Service>
    }))
}

/// Broadcasts the messages the broker confirmed after their senders stopped waiting: without
/// it their rooms would only learn of them from `sync` or `history`.
struct LateConfirms {
    late: tokio::sync::mpsc::Receiver<Message>,
    chat: Arc<Chat>,
}

#[async_trait]
impl Service for LateConfirms {
    fn name(&self) -> &'static str {
        "late confirmations"
    }
    async fn run(mut self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        loop {
            let message = tokio::select! {
                m = self.late.recv() => m,
                () = cancel.cancelled() => return Ok(()),
            };
            let Some(message) = message else {
                return Ok(());
            };
            // Each on its own task (the store waits for no broadcast), which graceful
            // shutdown waits for.
            let chat = self.chat.clone();
            self.chat
                .spawn(async move { chat.publish_late(message).await });
        }
    }
}

struct KafkaCheck(BrokerCheck);

#[async_trait::async_trait]
impl Dependency for KafkaCheck {
    fn name(&self) -> &'static str {
        "kafka"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.check().await
    }
}

/// A persister, ready to run under the node's supervisor (the topics exist). Its status is
/// announced in Redis for the admin page every 2 s.
pub async fn persister(settings: &Settings, pg: Arc<PgStore>) -> anyhow::Result<Box<dyn Service>> {
    let (kafka, redis, _) = parts(settings)?;
    ensure_topics(&kafka.config)
        .await
        .context("creating the Kafka topics")?;
    let (ledger, conn) = ledger(settings).await?;
    let persister = Persister::new(kafka.config.clone(), kafka.persister.clone(), pg, ledger)?;
    let registry = RedisRegistry::new(redis, conn);
    tracing::info!(id = %kafka.persister.id, group = %kafka.config.group, "persister started");
    Ok(Box::new(PersisterService {
        persister,
        registry,
    }))
}

struct PersisterService {
    persister: Persister,
    registry: RedisRegistry,
}

#[async_trait]
impl Service for PersisterService {
    fn name(&self) -> &'static str {
        "persister"
    }
    /// Runs until `cancel` (then writes what it has read and leaves its group); meanwhile
    /// announces its status.
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let PersisterService {
            persister,
            registry,
        } = *self;
        let status = persister.status();
        let announcer = async {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = status.lock().ok().map(|s| s.clone());
                if let Some(now) = now {
                    if let Err(e) = registry.announce_persister(&now).await {
                        tracing::warn!(error = %e, "cannot announce the persister's status");
                    }
                }
            }
        };
        let (persisted, ()) = tokio::join!(persister.run(cancel.clone()), announcer);
        persisted.context("persister")
    }
}

/// `scalify persister`: a persister alone, with `/metrics`, `/healthz` and `/readyz`, until
/// `shutdown` is cancelled.
pub async fn run_persister(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (_, redis, pg_config) = parts(&settings)?;
    if wait_for_redis(&redis.url, shutdown.cancelled())
        .await?
        .is_none()
    {
        return Ok(());
    }
    let Some(pg) = wait_for_postgres(pg_config, shutdown.cancelled()).await? else {
        return Ok(());
    };
    let pg = Arc::new(pg);
    let persister = tokio::select! {
        p = persister(&settings, pg.clone()) => p?,
        () = shutdown.cancelled() => return Ok(()),
    };
    scalify_server::metrics::handle();
    let (kafka, _, _) = parts(&settings)?;
    let readiness = Arc::new((pg.clone(), BrokerCheck::new(&kafka.config)?));
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async { scalify_server::metrics::render() }),
        )
        .route(
            "/healthz",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"status": "ok", "role": "persister"}))
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let readiness = readiness.clone();
                async move {
                    let (pg, brokers) = &*readiness;
                    let store = pg.ping().await.err().map(|e| e.to_string());
                    let kafka = brokers.check().await.err();
                    scalify_server::rest::readiness_response(&[("store", store), ("kafka", kafka)])
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    println!("ScalifyChat persister is running; metrics at http://{addr}/metrics");
    let mut supervisor = Supervisor::new();
    supervisor.start(persister);
    supervisor.start(Box::new(crate::node::HttpEndpoints {
        name: "persister endpoints",
        listener,
        router,
    }));
    shutdown.cancelled().await;
    tracing::info!("stopping the persister: writing what it has read, committing offsets");
    supervisor.shutdown(async {}).await;
    tracing::info!("stopped cleanly");
    Ok(())
}
