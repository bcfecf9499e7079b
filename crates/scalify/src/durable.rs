//! Durable mode's wiring (`--kafka-brokers`): the node's [`DurableStore`], the Kafka
//! readiness check, and the persister — inside `serve --persister` or alone as
//! `scalify persister`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use scalify_fanout::redis::RedisPresence;
use scalify_fanout::ClusterPresence;
use scalify_kafka::ingest::Ingest;
use scalify_kafka::ledger::{Ledger, LedgerConfig};
use scalify_kafka::persister::Persister;
use scalify_kafka::store::DurableStore;
use scalify_kafka::topics::{ensure_topics, BrokerCheck};
use scalify_service::{Chat, Dependency};
use scalify_store::postgres::PgStore;
use scalify_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, Settings};

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
    let (_, redis, _) = parts(settings)?;
    let (_, conn) = scalify_fanout::redis::connect(redis)
        .await
        .context("connecting to Redis")?;
    Ok((
        Ledger::new(conn.clone(), LedgerConfig::new(redis.prefix.clone())),
        conn,
    ))
}

/// The store of a durable node: PostgreSQL for accounts and rooms, the Kafka pipeline for
/// messages. Creates the topics if they are missing.
pub async fn open_store(
    settings: &Settings,
    pg: Arc<PgStore>,
) -> anyhow::Result<Arc<DurableStore>> {
    let (kafka, _, _) = parts(settings)?;
    ensure_topics(&kafka.config)
        .await
        .context("creating the Kafka topics")?;
    let (ledger, _) = ledger(settings).await?;
    let ingest = Ingest::new(kafka.config.clone(), kafka.ingest.clone())?;
    tracing::info!(brokers = %kafka.config.brokers, topic = %kafka.config.topic, "durable mode: messages go through Kafka");
    Ok(Arc::new(DurableStore::new(
        pg as Arc<dyn Store>,
        ledger,
        ingest,
    )))
}

/// Hooks a durable store to its node: late confirmations are broadcast, and `/readyz`
/// checks the brokers (the same check as a persister's).
pub fn attach(
    store: &Arc<DurableStore>,
    chat: &Arc<Chat>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let (kafka, _, _) = parts(settings)?;
    let weak = Arc::downgrade(chat);
    let runtime = tokio::runtime::Handle::current();
    store.on_late_confirm(Box::new(move |m| {
        if let Some(chat) = weak.upgrade() {
            runtime.spawn(async move { chat.publish_late(m).await });
        }
    }));
    chat.add_check(Arc::new(KafkaCheck(BrokerCheck::new(&kafka.config)?)));
    Ok(())
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

/// Starts a persister; it runs until `stop` is cancelled. Its status is announced in Redis
/// for the admin page every 2 s.
pub async fn start_persister(
    settings: &Settings,
    pg: Arc<PgStore>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (kafka, redis, _) = parts(settings)?;
    ensure_topics(&kafka.config)
        .await
        .context("creating the Kafka topics")?;
    let (ledger, conn) = ledger(settings).await?;
    let persister = Persister::new(kafka.config.clone(), kafka.persister.clone(), pg, ledger)?;
    let status = persister.status();
    let id = kafka.persister.id.clone();
    let registry = RedisPresence::new(redis, conn, &id);
    let announcer_stop = stop.clone();
    let announcer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                () = announcer_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let json = status
                .lock()
                .ok()
                .and_then(|s| serde_json::to_string(&*s).ok());
            if let Some(json) = json {
                if let Err(e) = registry.announce_persister(&id, &json).await {
                    tracing::warn!(error = %e, "cannot announce the persister's status");
                }
            }
        }
    });
    tracing::info!(id = %kafka.persister.id, group = %kafka.config.group, "persister started");
    Ok(tokio::spawn(async move {
        if let Err(e) = persister.run(stop).await {
            tracing::error!(error = %e, "persister failed");
        }
        let _ = announcer.await;
    }))
}

/// `scalify persister`: a persister alone, with `/metrics`, `/healthz` and `/readyz`.
pub async fn run_persister(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (_, redis, pg_config) = parts(&settings)?;
    let mut shutdown = std::pin::pin!(shutdown);
    if crate::wait_for_redis(&redis.url, &mut shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let Some(pg) = crate::wait_for_postgres(pg_config, &mut shutdown).await? else {
        return Ok(());
    };
    let pg = Arc::new(pg);
    let stop = CancellationToken::new();
    let task = tokio::select! {
        task = start_persister(&settings, pg.clone(), stop.clone()) => task?,
        () = &mut shutdown => return Ok(()),
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
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await
    });
    shutdown.await;
    tracing::info!("stopping the persister: writing what it has read, committing offsets");
    stop.cancel();
    let _ = task.await;
    let _ = server.await;
    tracing::info!("stopped cleanly");
    Ok(())
}
