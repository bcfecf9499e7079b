//! [`Node`]: one ScalifyChat node assembled from its [`Settings`] — the composition root that
//! `scalify serve` and the in-process tests share.
//!
//! [`Node::build`] picks the engines the settings ask for (SQLite or PostgreSQL; in-process or
//! Redis fan-out; durable mode through Kafka, with or without a persister in the process),
//! waiting for the services they need; [`Node::run`] serves it on a listener until shutdown,
//! then stops it gracefully: the transports drain (docs/protocol.md, "Shutdown"), then the
//! background services stop, then the engines close.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use scalify_notify::{Notifier, NotifyConfig};
use scalify_server::{App, Cluster};
use scalify_service::auth::Auth;
use scalify_service::{Chat, Dependency, PushConfig, UploadConfig, RECEIPT_EVERY, SHARE_EVERY};
use scalify_store::notify::NotifyStore;
use scalify_store::sqlite::SqliteStore;
use scalify_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::durable;
use crate::startup::{wait_for_postgres, wait_for_redis};
use crate::supervisor::{Service, Supervisor};

/// A node ready to serve.
pub struct Node {
    app: App,
    /// Where the operator's endpoints are served, with `--internal-listen`.
    internal_addr: Option<std::net::SocketAddr>,
    /// Started by [`Node::run`], stopped after the transports have drained.
    services: Vec<Box<dyn Service>>,
    /// Runs the services and the engines' tasks (which start with the engines).
    supervisor: Supervisor,
    /// The data directory's lock, held until the node is dropped.
    _data_dir: std::fs::File,
}

impl Node {
    /// Opens the node's engines and prepares its services. Waits while Redis or PostgreSQL
    /// cannot be reached yet; `None` when `shutdown` is cancelled meanwhile (a SIGTERM during
    /// start-up stops the process as one while it serves does).
    pub async fn build(
        settings: &Settings,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Node>> {
        let data_dir = settings.lock_data_dir()?;
        let supervisor = Supervisor::new();
        let secret = settings.token_secret()?;
        let auth = Auth::new(&secret, settings.token_ttl).map_err(anyhow::Error::msg)?;
        if let Some(redis) = &settings.redis {
            if wait_for_redis(&redis.url, shutdown.cancelled())
                .await?
                .is_none()
            {
                return Ok(None);
            }
        }
        let pg = match &settings.postgres {
            Some(config) => match wait_for_postgres(config, shutdown.cancelled()).await? {
                Some(pg) => Some(Arc::new(pg)),
                None => return Ok(None),
            },
            None => None,
        };
        // Durable mode: messages through Kafka; PostgreSQL for the rest and for the persister.
        // Notifications are kept in the database of record: PostgreSQL (durable mode too),
        // else SQLite.
        let (store, durable, pg, notify_store): (Arc<dyn Store>, _, _, Arc<dyn NotifyStore>) =
            match (&settings.kafka, pg) {
                (Some(_), Some(pg)) => {
                    let durable = tokio::select! {
                        durable = durable::open_store(settings, pg.clone(), supervisor.tasks()) => durable?,
                        () = shutdown.cancelled() => return Ok(None),
                    };
                    (durable.clone(), Some(durable), Some(pg.clone()), pg)
                }
                (None, Some(pg)) => (pg.clone(), None, None, pg),
                (_, None) => {
                    let sqlite = open_sqlite_store(settings)?;
                    (sqlite.clone(), None, None, sqlite)
                }
            };
        let cluster = match &settings.redis {
            Some(redis) => {
                if settings.postgres.is_none() {
                    tracing::warn!("--redis-url without --database-url: each node keeps its own SQLite history; nodes will not share it");
                }
                Cluster::Redis(redis.clone())
            }
            None => Cluster::Embedded,
        };
        let app = App::build(
            store,
            &cluster,
            auth,
            settings.chat.clone(),
            settings.transport.clone(),
            supervisor.tasks(),
        )
        .await
        .context("connecting to Redis")?;
        app.chat
            .resolve_admins()
            .await
            .map_err(anyhow::Error::msg)?;
        let files = match &settings.uploads.s3 {
            Some(s3) => {
                let files = scalify_files::Files::s3(s3)?;
                app.chat.add_check(Arc::new(FileStoreCheck(files.clone())));
                tracing::info!(endpoint = %s3.endpoint, bucket = %s3.bucket, "uploads in S3-compatible storage");
                files
            }
            None => {
                if settings.redis.is_some() {
                    tracing::warn!(
                        "uploads are kept in this node's data directory: nodes of a cluster see each other's files only with --s3-endpoint, or with <data-dir>/files on storage they share (docs/cluster.md)"
                    );
                }
                scalify_files::Files::local(&settings.data_dir.join("files"))?
            }
        };
        app.chat.enable_uploads(UploadConfig {
            max_bytes: settings.uploads.max_bytes,
            max_pixels: settings.uploads.max_pixels,
            unattached_ttl: settings.uploads.expiry,
            ..UploadConfig::new(files)
        });
        let vapid = settings.vapid()?.map(Arc::new);
        if let Some(v) = &vapid {
            app.chat.enable_push(PushConfig {
                store: notify_store.clone(),
                vapid_public_key: v.public_key().to_owned(),
                allow_private_endpoints: settings.notify.allow_private_endpoints,
            });
        }
        let notifier = Notifier::new(
            app.chat.clone(),
            notify_store,
            NotifyConfig {
                delay: settings.notify.delay,
                webhook: settings.notify.webhook.clone(),
                vapid,
                allow_private_endpoints: settings.notify.allow_private_endpoints,
            },
        )?;
        let mut services: Vec<Box<dyn Service>> = vec![
            Box::new(PresenceKeeper(app.chat.clone())),
            Box::new(ReceiptSender(app.chat.clone())),
            Box::new(NotifySchedule(notifier.clone())),
            Box::new(NotifyDelivery(notifier)),
            Box::new(UploadSweeper(app.chat.clone())),
        ];
        if settings.redis.is_some() {
            services.push(Box::new(BudgetExchange(app.chat.clone())));
        }
        if let Some(d) = &durable {
            services.extend(durable::attach(d, &app.chat, settings)?);
        }
        if let (Some(k), Some(pg)) = (&settings.kafka, pg) {
            if k.embedded_persister {
                services.push(durable::persister(settings, pg).await?);
            }
        }
        let mut internal_addr = None;
        if let Some(addr) = settings.internal_listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--internal-listen)"))?;
            internal_addr = Some(listener.local_addr()?);
            services.push(Box::new(HttpEndpoints {
                name: "operator endpoints",
                listener,
                router: scalify_server::rest::operator_router(app.chat.clone()),
            }));
        }
        Ok(Some(Node {
            app,
            internal_addr,
            services,
            supervisor,
            _data_dir: data_dir,
        }))
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served apart from clients
    /// (`--internal-listen`), once bound.
    pub fn internal_addr(&self) -> Option<std::net::SocketAddr> {
        self.internal_addr
    }

    /// The node's chat service (tests reach into it).
    pub fn chat(&self) -> &Arc<Chat> {
        &self.app.chat
    }

    /// Serves the node on `listener` until `shutdown` is cancelled, then shuts it down: the
    /// transports drain (in-flight sends answered, the store flushed, connections closed),
    /// then the background services stop (a persister writes what it has read), then the
    /// engines close and their tasks end.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let chat = self.app.chat.clone();
        let mut supervisor = self.supervisor;
        for service in self.services {
            supervisor.start(service);
        }
        let served = scalify_server::run(listener, self.app, shutdown.cancelled_owned()).await;
        supervisor.shutdown(chat.close()).await;
        served.context("serving")?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// The configured store without waiting (PostgreSQL with `--database-url`, else SQLite in the
/// data directory), migrations applied: for the one-shot commands (`scalify admin`).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.postgres {
        Some(pg) => {
            let store = scalify_store::postgres::PgStore::open(pg.clone())
                .await
                .context("opening the PostgreSQL store")?;
            tracing::info!("store ready (PostgreSQL, migrations applied)");
            Ok(Arc::new(store))
        }
        None => open_sqlite(settings),
    }
}

/// SQLite in the data directory, migrations applied.
fn open_sqlite(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_sqlite_store(settings)?)
}

fn open_sqlite_store(settings: &Settings) -> anyhow::Result<Arc<SqliteStore>> {
    let sqlite = settings.sqlite_config()?;
    let store = SqliteStore::open(sqlite.clone())
        .with_context(|| format!("opening the store at {}", sqlite.path.display()))?;
    tracing::info!(path = %sqlite.path.display(), "store ready (SQLite, WAL)");
    Ok(Arc::new(store))
}

/// Decides who is told of which missed messages ([`Notifier::schedule`]), on every node; the
/// database's leases give each room to one of them.
struct NotifySchedule(Arc<Notifier>);

#[async_trait]
impl Service for NotifySchedule {
    fn name(&self) -> &'static str {
        "notification scheduler"
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.0.run_schedule(cancel).await;
        Ok(())
    }
}

/// Posts queued notifications to the webhook and the push services ([`Notifier::deliver`]).
struct NotifyDelivery(Arc<Notifier>);

#[async_trait]
impl Service for NotifyDelivery {
    fn name(&self) -> &'static str {
        "notification delivery"
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        self.0.run_delivery(cancel).await;
        Ok(())
    }
}

/// Renews this node's presence entries in Redis and expires those of nodes that died
/// ([`Chat::keep_presence`]); nothing to do on an embedded node.
struct PresenceKeeper(Arc<Chat>);

#[async_trait]
impl Service for PresenceKeeper {
    fn name(&self) -> &'static str {
        "presence keeper"
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        // It also stops by itself when the node starts draining.
        tokio::select! {
            () = self.0.clone().keep_presence() => {}
            () = cancel.cancelled() => {}
        }
        Ok(())
    }
}

/// Tells the cluster's other nodes, every [`SHARE_EVERY`], what this node's users spent of
/// their request budgets ([`Chat::share_budget_spending`]), so a user's budget holds across
/// the nodes.
struct BudgetExchange(Arc<Chat>);

#[async_trait]
impl Service for BudgetExchange {
    fn name(&self) -> &'static str {
        "budget exchange"
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(SHARE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => self.0.share_budget_spending().await,
            }
        }
    }
}

/// Sends the read receipts this node's users' read marks produced, coalesced: every
/// [`RECEIPT_EVERY`], and what is left when the node stops.
struct ReceiptSender(Arc<Chat>);

#[async_trait]
impl Service for ReceiptSender {
    fn name(&self) -> &'static str {
        "receipt sender"
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(RECEIPT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    self.0.send_receipts().await;
                    return Ok(());
                }
                _ = tick.tick() => self.0.send_receipts().await,
            }
        }
    }
}

/// HTTP endpoints on a listener of their own (the operator's, a persister's), served until the
/// supervisor stops them.
pub(crate) struct HttpEndpoints {
    pub(crate) name: &'static str,
    pub(crate) listener: TcpListener,
    pub(crate) router: axum::Router,
}

#[async_trait]
impl Service for HttpEndpoints {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
            .with_context(|| format!("serving the {}", self.name))
    }
}

/// Deletes the uploads no message took in time. Every node sweeps (deleting twice is
/// harmless); each sweep lists only the uploads still waiting.
struct UploadSweeper(Arc<Chat>);

#[async_trait]
impl Service for UploadSweeper {
    fn name(&self) -> &'static str {
        "upload sweeper"
    }
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let Some(every) = self.0.sweep_every() else {
            return Ok(());
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = self.0.sweep_uploads().await {
                        tracing::warn!(error = %e, "sweeping expired uploads failed; trying again later");
                    }
                }
            }
        }
    }
}

/// The S3-compatible file store answers (`/readyz`, the admin page).
struct FileStoreCheck(scalify_files::Files);

#[async_trait]
impl Dependency for FileStoreCheck {
    fn name(&self) -> &'static str {
        "object storage"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.check().await.map_err(|e| e.to_string())
    }
}
