//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection through tasks and channels
//! and to handle upgrade from polling to ws

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use smallvec::smallvec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::future::FutureExt as _;

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use crate::{
    DisconnectReason, Socket, body::ResponseBody, config::EngineIoConfig, engine::EngineIo,
    errors::Error, handler::EngineIoHandler, socket::InternalRx, transport::make_open_packet,
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let (mut parts, body) = req.into_parts();
    let req = Request::from_parts(parts.clone(), body);

    let ws_key = parts
        .headers
        .get("Sec-WebSocket-Key")
        .ok_or(Error::InvalidWebSocketKey)?
        .clone();

    // ScalifyChat fork: the session keeps these parts for its whole life; hyper's upgrade
    // handle in them is of no use once the upgrade is taken from `req`, and it would keep the
    // upgrade's shared state alive as long.
    parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // Nor is the handshake's nonce; and a header map left empty need not be kept (~650 B).
    parts.headers.remove(http::header::SEC_WEBSOCKET_KEY);
    if parts.headers.is_empty() {
        parts.headers = http::HeaderMap::new();
    }

    // ScalifyChat fork: the connection's task lives as long as the connection, and a task is as
    // large as its future's largest state plus its captured variables. So the upgrade and the
    // Engine.IO handshake (the request, its parts, the handshake futures) run in a boxed future
    // that is freed once the session is open, and only the session itself stays in the task.
    let open = Box::pin(async move {
        let conn = hyper::upgrade::on(req)
            .await
            .map(hyper_util::rt::TokioIo::new);
        let conn = match conn {
            Ok(conn) => conn,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("ws upgrade error: {}", _e);
                return None;
            }
        };
        match open_session(engine.clone(), conn, protocol, sid, parts).await {
            Ok(session) => Some(session),
            Err(Error::MultipleWebsocketRequests) => None,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed with error: {_e}");
                if let Some(sid) = sid {
                    engine.close_session(sid, DisconnectReason::TransportError);
                }
                None
            }
        }
    });
    tokio::spawn(async move {
        // `let else`, not `if let`: an `if let`'s scrutinee would keep its room in the task.
        let Some(session) = open.await else { return };
        run_session(session).await;
        #[cfg(feature = "tracing")]
        tracing::debug!(?sid, "ws closed");
    });

    Ok(ws_response(&ws_key))
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Read packets from the websocket and handle them, it will block until the connection is closed
pub async fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = Box::pin(open_session(engine, conn, protocol, sid, req_data)).await?;
    run_session(session).await;
    Ok(())
}

/// An open websocket session, ready to be served by [`run_session`].
struct Session<H: EngineIoHandler, S> {
    engine: Arc<EngineIo<H>>,
    ws: WebSocketStream<S>,
    socket: Arc<Socket<H::Data>>,
}

/// The websocket handshake, and the Engine.IO one: an open packet for a new session, or the
/// probe exchange of a session upgrading from polling.
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
async fn open_session<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<Session<H, S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, S>(&socket, &mut ws);
                match tokio::time::timeout(engine.config.upgrade_timeout, upgrade_fut)
                    .with_cancellation_token(&socket.cancellation_token)
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                // Its heartbeat task runs since the session started on polling.
                Ok(Session { engine, ws, socket })
            }
        }
    } else {
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        init_handshake(socket.id, &mut ws, &engine.config).await?;
        // A no-op for a v4 session: `run_session` keeps its heartbeat.
        socket
            .clone()
            .spawn_heartbeat(engine.config.ping_interval, engine.config.ping_timeout);
        Ok(Session { engine, ws, socket })
    }
}

/// Serves an open session until it ends, then closes it.
///
/// ScalifyChat fork: one task per websocket session reads, writes and (for sessions that
/// started on websocket) runs the heartbeat. Upstream spawns a writer task and a heartbeat task
/// beside this one and splits the stream behind a `BiLock`: ~4 KB per idle connection.
async fn run_session<H: EngineIoHandler, S>(mut session: Session<H, S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The fields are used in place, not moved out: an async fn keeps its arguments for its whole
    // life, so moved-out copies would double the task's size.
    let heartbeat = session
        .socket
        .heartbeat_in_session()
        .then(|| Heartbeat::new(session.engine.config.ping_interval));
    let (engine, socket) = (&session.engine, &session.socket);
    match serve_session(engine, &mut session.ws, socket, heartbeat).await {
        SessionEnd::Failed(ref e) => {
            let reason =
                Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

            #[cfg(feature = "tracing")]
            tracing::debug!("error when handling packet: {:?}", e);
            engine.close_session(socket.id, reason);
        }
        SessionEnd::ClientClosed => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws transport was closed");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
        }
        SessionEnd::Cancelled => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "socket is closing");
        }
        SessionEnd::Abandoned => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "socket closed while a write was blocked");
            return;
        }
    }

    // Close politely, but a peer that reads nothing cannot hold the task (and its connection)
    // forever. Boxed: the task keeps no room for it while the session runs.
    let ws = &mut session.ws;
    let close = Box::pin(tokio::time::timeout(session.engine.config.ping_timeout, async {
        ws.flush().await.ok();
        ws.close(None).await.ok();
    }));
    close.await.ok();
}

/// Why [`serve_session`] returned.
enum SessionEnd {
    /// The session was closed by the server (or is closing): nothing left to report.
    Cancelled,
    /// The session was closed while a write to the peer stayed blocked (longer than the ping
    /// timeout); the peer gets no close frame, the connection is simply dropped.
    Abandoned,
    /// The client sent a close packet or frame, or the stream ended.
    ClientClosed,
    /// A transport or protocol error (heartbeat timeout included).
    Failed(Error),
}

/// The server side of the Engine.IO heartbeat, for a session served by one task: send a ping
/// every `interval`, expect the pong within `ping_timeout`. Same schedule as the reference
/// JavaScript server (first ping one interval after the handshake).
struct Heartbeat {
    interval: std::time::Duration,
    awaiting_pong: bool,
}

impl Heartbeat {
    fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            awaiting_pong: false,
        }
    }
}

/// Reads client packets, writes queued packets and keeps the heartbeat of one websocket
/// session, until the session ends one way or another.
async fn serve_session<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    ws: &mut WebSocketStream<S>,
    socket: &Arc<Socket<H::Data>>,
    mut heartbeat: Option<Heartbeat>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cancel = &socket.cancellation_token;
    // A polling request that was in progress during the upgrade may still hold the lock.
    let Some(mut internal_rx) = socket.internal_rx.lock().with_cancellation_token(cancel).await
    else {
        #[cfg(feature = "tracing")]
        tracing::debug!(sid = %socket.id, "session closed before the ws transport started");
        return SessionEnd::Cancelled;
    };
    let InternalRx { buffered_rx, .. } = &mut *internal_rx;

    let ping_timeout = engine.config.ping_timeout;
    let first_ping = heartbeat
        .as_ref()
        .map_or(std::time::Duration::from_secs(86_400 * 365), |h| h.interval);
    let timer = tokio::time::sleep(first_ping);
    tokio::pin!(timer);

    // Writes are boxed futures: they are short-lived, and inline they would make every idle
    // session's task hundreds of bytes larger.
    // Not `biased`: the branches are polled in random order, so a steady stream of packets to
    // write cannot starve the client's own packets, nor the other way round.
    loop {
        // What to write this turn: the packets received, and whatever else is queued.
        let first = tokio::select! {
            items = buffered_rx.recv() => match items {
                Some(packets) => Some(*packets),
                None => return SessionEnd::Cancelled,
            },
            _ = cancel.cancelled() => {
                // What was queued before the close (acks of requests in flight, the disconnect
                // packet) still goes out.
                let write = write_queued(ws, socket, None, buffered_rx);
                if !Box::pin(write_or_give_up(write, cancel, ping_timeout)).await {
                    return SessionEnd::Abandoned;
                }
                return SessionEnd::Cancelled;
            }
            () = socket.volatile.notify.notified() => socket.volatile.take(),
            msg = ws.next() => match msg {
                None => return SessionEnd::ClientClosed,
                Some(Err(e)) => return SessionEnd::Failed(e.into()),
                Some(Ok(msg)) => match on_client_message(engine, socket, msg) {
                    Ok(Inbound::Continue) => None,
                    Ok(Inbound::Pong) => {
                        // Counted for a closing server's last round trip; passed on to the
                        // heartbeat task of a session upgraded from polling.
                        socket.pong_received();
                        match heartbeat.as_mut() {
                            Some(h) if h.awaiting_pong => {
                                h.awaiting_pong = false;
                                let next = tokio::time::Instant::now() + h.interval;
                                timer.as_mut().reset(next);
                            }
                            // Some clients send a pong first, and a session upgraded from
                            // polling has its heartbeat in a task: nothing to do.
                            _ => {}
                        }
                        None
                    }
                    Ok(Inbound::Closed) => return SessionEnd::Cancelled,
                    Err(e) => return SessionEnd::Failed(e),
                },
            },
            () = &mut timer, if heartbeat.is_some() => {
                let Some(h) = heartbeat.as_mut() else { continue };
                if h.awaiting_pong {
                    return SessionEnd::Failed(Error::HeartbeatTimeout);
                }
                if socket.heartbeat_paused() {
                    // A closing server makes its last round trip with pings of its own.
                    timer.as_mut().reset(tokio::time::Instant::now() + h.interval);
                    continue;
                }
                #[cfg(feature = "tracing")]
                tracing::trace!(sid = ?socket.id, "emitting ping");
                h.awaiting_pong = true;
                timer.as_mut().reset(tokio::time::Instant::now() + ping_timeout);
                // Behind what is queued, like every other packet (a full queue: the client is
                // not reading, as upstream's heartbeat concludes too).
                if socket.queue_ping().is_err() {
                    return SessionEnd::Failed(Error::HeartbeatTimeout);
                }
                None
            }
        };
        if let Some(first) = first {
            let write = write_queued(ws, socket, Some(first), buffered_rx);
            if !Box::pin(write_or_give_up(write, cancel, ping_timeout)).await {
                return SessionEnd::Abandoned;
            }
        }
    }
}

/// Writes `first`, then every packet still queued, then flushes.
async fn write_queued<D, S>(
    ws: &mut WebSocketStream<S>,
    socket: &Socket<D>,
    first: Option<engineioxide_core::PacketBuf>,
    queue: &mut tokio::sync::mpsc::Receiver<crate::socket::QueuedPackets>,
) where
    D: Default + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some(packets) = first {
        write_packets(ws, socket, packets).await;
    }
    while let Ok(packets) = queue.try_recv() {
        write_packets(ws, socket, *packets).await;
    }
    ws.flush().await.ok();
}

/// Runs a write to the peer. If the session is closed meanwhile, the write still gets `grace`
/// to finish — a closing server's last packets (acks of in-flight requests, the disconnect)
/// must go out — and is then given up, so a peer that reads nothing cannot hold the session.
/// Returns whether the write finished.
async fn write_or_give_up(
    write: impl Future<Output = ()>,
    cancel: &tokio_util::sync::CancellationToken,
    grace: std::time::Duration,
) -> bool {
    let mut write = std::pin::pin!(write);
    tokio::select! {
        biased;
        () = &mut write => return true,
        () = cancel.cancelled() => {}
    }
    tokio::time::timeout(grace, write).await.is_ok()
}

/// What a client message asks of the session loop.
enum Inbound {
    Continue,
    Pong,
    /// The client sent a close packet; the session is already closed.
    Closed,
}

/// Hands one client message to the handler.
fn on_client_message<H: EngineIoHandler>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    msg: Message,
) -> Result<Inbound, Error> {
    match msg {
        Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
            Packet::Close => {
                #[cfg(feature = "tracing")]
                tracing::debug!("[sid={}] closing session", socket.id);
                engine.close_session(socket.id, DisconnectReason::TransportClose);
                Ok(Inbound::Closed)
            }
            Packet::Pong | Packet::Ping => Ok(Inbound::Pong),
            Packet::Message(msg) => {
                engine.handler.on_message(msg, socket.clone());
                socket.message_handled();
                Ok(Inbound::Continue)
            }
            p => Err(Error::BadPacket(p)),
        },
        Message::Binary(mut data) => {
            if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                // The first byte is the message type, which we don't need.
                data = data.split_off(1);
            }
            engine.handler.on_binary(data, socket.clone());
            socket.message_handled();
            Ok(Inbound::Continue)
        }
        Message::Close(_) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("websocket closed, closing session");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
            Ok(Inbound::Closed)
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = ?socket.id, "unexpected ws message");
            Ok(Inbound::Continue)
        }
    }
}

/// Queues packets on the websocket (written out by the next flush).
async fn write_packets<D, S>(
    ws: &mut WebSocketStream<S>,
    socket: &Socket<D>,
    packets: engineioxide_core::PacketBuf,
) where
    D: Default + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    for item in packets {
        let res = match item {
            Packet::Binary(bin) | Packet::BinaryV3(bin) => {
                if socket.protocol == ProtocolVersion::V3 {
                    // v3 protocol requires packet type as the first byte.
                    let mut buff = Vec::with_capacity(bin.len() + 1);
                    buff.push(0x04);
                    buff.extend(bin);
                    ws.feed(Message::Binary(buff.into())).await
                } else {
                    ws.feed(Message::Binary(bin)).await
                }
            }
            // A Noop packet may be left over from an upgrade from polling: discard it.
            Packet::Noop => Ok(()),
            item => ws.feed(Message::Text(String::from(item).into())).await,
        };
        if let Err(_e) = res {
            #[cfg(feature = "tracing")]
            tracing::debug!("[sid={}] error sending packet: {}", socket.id, _e);
        }
    }
}
/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.send(Message::Text(packet.into())).await?;
    Ok(())
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    socket
        .internal_tx
        .send(Box::new(smallvec![Packet::Noop]))
        .await
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}
