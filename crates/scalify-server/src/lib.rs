//! # scalify-server — the transports
//!
//! Thin handlers that turn HTTP requests ([`rest`]) and Socket.IO events ([`socket`]) into
//! calls on [`scalify_service::Chat`] and its answers back into the wire contract of
//! `docs/protocol.md`. [`App::build`] wires the engines together; [`run`] serves an app on a
//! listener until a shutdown future resolves, then shuts down gracefully:
//!
//! 1. refuse new sends and new Socket.IO sessions (HTTP 503, so clients reconnect elsewhere;
//!    `/readyz` answers 503 too), finish in-flight sends — their acks go out;
//! 2. flush the store;
//! 3. close every Socket.IO connection (their departures are announced): what is queued for
//!    a connection goes out first — a long-polling client is served until it has taken it;
//! 4. stop accepting connections, and return.
//!
//! The node's background services and the closing of its engines ([`Chat::close`]) are its
//! owner's: `scalify::Node::run` stops them after this returns.

mod error;
pub mod metrics;
pub mod recent;
pub mod rest;
pub mod socket;
mod web;

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use scalify_core::{Id, TrustedProxies};
use scalify_fanout::redis::{
    RedisAttempts, RedisConfig, RedisFanout, RedisPresence, RedisRegistry,
};
use scalify_fanout::{Fanout, FanoutError, LocalDelivery, LocalFanout, Sequencer};
use scalify_service::auth::Auth;
use scalify_service::{Chat, ChatConfig, ClusterLinks};
use scalify_store::Store;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use error::ApiError;

/// Transport limits. Field docs are the user-facing documentation.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest Socket.IO payload accepted, on WebSocket and polling alike, and largest REST body.
    pub max_payload_bytes: usize,
    /// Packets buffered per connection for a client that reads slowly. When full, the client
    /// misses live events (it recovers them with `sync`) and its next heartbeat fails, which
    /// disconnects it: a client that never reads cannot grow server memory.
    pub max_buffered_packets: usize,
    /// Initial read buffer of each WebSocket connection. Chat frames are small; a larger
    /// buffer is allocated per connection whether or not it is used.
    pub ws_read_buffer_bytes: usize,
    /// Engine.IO heartbeat: how often the server pings, and how long it waits for the pong.
    /// A client that does not answer (or whose send buffer is full) is disconnected.
    pub ping_interval: std::time::Duration,
    pub ping_timeout: std::time::Duration,
    /// After a shutdown signal, how long closed connections may take to finish before the
    /// server stops waiting for them (a client that stopped reading never finishes).
    pub shutdown_grace: std::time::Duration,
    /// Origins allowed to open Socket.IO connections from a browser (`Origin` header).
    /// Empty: same-origin only. Requests without `Origin` (non-browser clients) are allowed.
    pub allowed_origins: Vec<String>,
    /// Proxies (load balancers) whose `X-Forwarded-For` names the client's address, which
    /// logins and registrations are throttled by. Empty: the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// Whether `/metrics` is served on the client-facing listener: only when the node has no
    /// internal listener for it (`--internal-listen`).
    pub metrics_on_main: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_payload_bytes: 64 * 1024,
            max_buffered_packets: 1024,
            ws_read_buffer_bytes: 1024,
            ping_interval: std::time::Duration::from_secs(25),
            ping_timeout: std::time::Duration::from_secs(20),
            shutdown_grace: std::time::Duration::from_secs(5),
            allowed_origins: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            metrics_on_main: true,
        }
    }
}

/// How a node reaches the other nodes of its cluster.
#[derive(Debug, Clone, Default)]
pub enum Cluster {
    /// A single node: events go straight to its own connections, presence is its own counts.
    #[default]
    Embedded,
    /// Nodes share a Redis: per-room pub/sub channels carry events, presence lives in Redis.
    Redis(RedisConfig),
}

/// A wired-up node: the service and the Socket.IO server that delivers its events.
pub struct App {
    pub chat: Arc<Chat>,
    pub io: SocketIo,
    router: axum::Router,
    shutdown_grace: std::time::Duration,
    /// A connection whose peer has not taken data for this long is closed.
    stuck_after: std::time::Duration,
}

impl App {
    /// Wires the store and the cluster engines into a service and its transports. With
    /// [`Cluster::Redis`], fails if Redis cannot be reached now (later outages are survived).
    /// The engines' own tasks (the Redis publisher and subscriber) run on `tasks`.
    pub async fn build(
        store: Arc<dyn Store>,
        cluster: &Cluster,
        auth: Auth,
        chat_config: ChatConfig,
        transport: TransportConfig,
        tasks: &TaskTracker,
    ) -> Result<App, FanoutError> {
        metrics::handle();
        let (layer, io) = socket::build_io(&transport);
        let delivery = Arc::new(socket::Delivery::new(io.clone()));
        let sequencer = Sequencer::new(delivery.clone());
        let local = sequencer.clone() as Arc<dyn LocalDelivery>;
        // Tells this process's messages and presence entries apart from other nodes'.
        let node = Id::new().to_string();
        let (fanout, links): (Arc<dyn Fanout>, Option<ClusterLinks>) = match cluster {
            Cluster::Embedded => (Arc::new(LocalFanout::new(local)), None),
            Cluster::Redis(config) => {
                let (client, conn) = scalify_fanout::redis::connect(config).await?;
                tracing::info!(%node, prefix = %config.prefix, "cluster mode: Redis fan-out and presence");
                (
                    RedisFanout::start(config, client, conn.clone(), &node, local, tasks),
                    Some(ClusterLinks {
                        presence: Arc::new(RedisPresence::new(config, conn.clone(), &node)),
                        registry: Arc::new(RedisRegistry::new(config, conn.clone())),
                        attempts: Arc::new(RedisAttempts::new(config, conn)),
                    }),
                )
            }
        };
        let chat = Chat::new(node, store, fanout, links, auth, chat_config);
        delivery.serve(&chat);
        if chat.watch_control().await.is_err() {
            // Redis fan-out resubscribes every watched room when it reconnects.
            tracing::warn!("not listening to the control room yet; retried when Redis reconnects");
        }
        socket::register(&io, &chat, sequencer);
        // Every HTTP request's logs carry a span: method, path (never the query: it may hold a
        // Socket.IO session id) and, per request, a sequence number.
        let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info_span!("http", id, method = %req.method(), path = %req.uri().path())
            },
        );
        let router = rest::router(chat.clone(), &transport)
            .layer(layer)
            .layer(trace)
            .layer(axum::middleware::map_request_with_state(
                Arc::new(transport.allowed_origins.clone()),
                socket::detach_request_head,
            ))
            .layer(axum::middleware::from_fn_with_state(
                chat.clone(),
                socket::refuse_new_sessions_while_closing,
            ));
        Ok(App {
            chat,
            io,
            router,
            shutdown_grace: transport.shutdown_grace,
            stuck_after: transport.ping_interval + transport.ping_timeout,
        })
    }

    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully (see the
/// crate docs for the steps).
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let chat = app.chat.clone();
    let io = app.io.clone();
    let grace = app.shutdown_grace;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            "shutting down: refusing new sends and connections, finishing in-flight sends"
        );
        chat.drain().await;
        tracing::info!("in-flight sends done, store flushed; closing connections");
        let _ = drained_tx.send(());
        // Closing waits for each transport to flush; a peer that stopped reading never lets
        // it, so closing is bounded by the grace period too.
        if tokio::time::timeout(grace, io.close()).await.is_err() {
            tracing::warn!("some connections did not close within the grace period");
        }
        // Only now: a long-polling client takes its last acks with a request of its own,
        // which a server that stopped accepting (and closes idle keep-alive connections)
        // would never see.
        let _ = stop_tx.send(true);
    });
    // Connections get `grace` after the drain to finish closing; a peer that stopped reading
    // would otherwise hold the shutdown forever.
    let drain_done = async move {
        if drained_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut stop_accepting = stop_rx.clone();
    // Acks and events are small writes that must leave at once: no Nagle delay.
    // TCP_USER_TIMEOUT: a peer that stops reading (zero window) for longer than a heartbeat
    // round is closed by the kernel. Engine.IO cannot do it alone: its writer task blocks on
    // the stuck socket, and the session's disconnect waits for that task.
    let stuck_after = app.stuck_after;
    let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(e) = socket2::SockRef::from(&*tcp).set_tcp_user_timeout(Some(stuck_after)) {
            tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    });
    let serve = axum::serve(
        listener,
        app.router
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_accepting.wait_for(|s| *s).await;
    });
    let served = tokio::select! {
        served = serve.into_future() => served,
        () = drain_done => {
            tracing::warn!(?grace, "connections still open after the grace period; stopping anyway");
            Ok(())
        }
    };
    // The server returns once every connection is gone; make sure the drain finished too.
    if let Err(e) = drain.await {
        tracing::error!(error = %e, "shutdown task failed");
    }
    app.chat.drain().await;
    served
}
