//! Socket.IO: the realtime half of the wire contract (`docs/protocol.md`).
//!
//! A connection authenticates in the handshake (`auth: {token}`); every event takes one object
//! and answers through its ack with `{ok: true, ...}` or `{ok: false, error: {code, message}}`.
//! Handlers parse the argument, call [`Chat`], and shape the ack; that is all they do.
//!
//! One file for every event (a little over 600 lines): the handlers are the table of the
//! realtime contract, each a few lines of parse → call → ack, and read best side by side.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use scalify_core::{ChatError, HistoryQuery, Id, Message, Room, RoomName, SyncRequest, UserRef};
use scalify_fanout::{LocalDelivery, RoomEvent, Sequencer};
use scalify_service::{Authenticated, Change, Chat, SyncedRoom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::layer::SocketIoLayer;
use socketioxide::{ParserError, SocketIo, TransportType};

use crate::error::error_body;
use crate::TransportConfig;

/// Builds the Socket.IO server with its limits set on both transports: socketioxide's
/// `max_payload` covers polling, and the WebSocket message/frame limits are set explicitly
/// (their defaults are 64 MiB / 16 MiB).
pub fn build_io(t: &TransportConfig) -> (SocketIoLayer, SocketIo) {
    SocketIo::builder()
        .max_payload(t.max_payload_bytes as u64)
        .ws_max_message_size(t.max_payload_bytes)
        .ws_max_frame_size(t.max_payload_bytes)
        .max_buffer_size(t.max_buffered_packets)
        .ws_read_buffer_size(t.ws_read_buffer_bytes)
        .ping_interval(t.ping_interval)
        .ping_timeout(t.ping_timeout)
        .transports([TransportType::Polling, TransportType::Websocket])
        .build_layer()
}

/// The request headers Engine.IO reads while it handles a request: `sec-websocket-key` to
/// accept an upgrade, `content-type` of a polling POST.
const ENGINE_HEADERS: [axum::http::HeaderName; 2] = [
    axum::http::header::SEC_WEBSOCKET_KEY,
    axum::http::header::CONTENT_TYPE,
];

/// Keeps only a small, detached copy of a Socket.IO request's head.
///
/// Engine.IO keeps the request's parts for the whole life of a connection (for `req_parts()`).
/// hyper parses a request head zero-copy: header values and the URI point into the
/// connection's 8–16 KiB read buffer, which those parts would pin (measured at 16 KiB of the
/// ~31 KiB an idle WebSocket connection cost). So the URI is copied, axum's copy of it removed,
/// and only the headers Engine.IO reads are kept (copied): a header map costs ~650 B for a
/// connection's life, a browser's dozen headers more. The origin check is made here, on the
/// request itself, and a refused request is marked `OriginRefused` for the Socket.IO
/// handshake to refuse with a `connect_error` the client understands.
pub async fn detach_request_head(
    axum::extract::State(allowed_origins): axum::extract::State<Arc<Vec<String>>>,
    mut req: axum::extract::Request,
) -> axum::extract::Request {
    if !req.uri().path().starts_with("/socket.io") {
        return req;
    }
    if !origin_allowed(req.headers(), &allowed_origins) {
        req.extensions_mut().insert(OriginRefused);
    }
    let mut headers = axum::http::HeaderMap::new();
    for name in &ENGINE_HEADERS {
        if let Some(value) = req.headers().get(name) {
            if let Ok(value) = axum::http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.insert(name.clone(), value);
            }
        }
    }
    *req.headers_mut() = headers;
    req.extensions_mut().remove::<axum::extract::OriginalUri>();
    if let Ok(uri) = axum::http::Uri::try_from(req.uri().to_string()) {
        *req.uri_mut() = uri;
    }
    req
}

/// Refuses a new Engine.IO session (a handshake: no `sid` in the query) once the node has
/// begun to shut down, with HTTP 503 — a transport error to socket.io-client, which then
/// reconnects with its backoff (behind a load balancer: to another node). A refusal in the
/// Socket.IO handshake instead (`connect_error`) would leave the client disconnected for good.
/// Sessions already open are served until they close: a long-polling client takes its last
/// acks with requests of its own.
pub async fn refuse_new_sessions_while_closing(
    axum::extract::State(chat): axum::extract::State<Arc<Chat>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let handshake = req.uri().path().starts_with("/socket.io")
        && !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")));
    if handshake && chat.is_closing() {
        let e = ChatError::new(
            scalify_core::ErrorCode::Internal,
            "server is shutting down; connect again",
        );
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(error_body(&e)),
        )
            .into_response();
    }
    next.run(req).await
}

/// Marks a Socket.IO request from a browser origin that may not connect: decided once, by
/// [`detach_request_head`], and acted on by the handshake.
#[derive(Clone, Copy, Debug)]
struct OriginRefused;

/// The socket room every connection of a user is in: their inbox (`RoomName::inbox`), which
/// also lets a room event skip that user.
fn user_room(id: Id) -> String {
    RoomName::inbox(id).to_string()
}

/// The local connections in `room`, or `None` once the Socket.IO server has closed (its
/// namespace is gone; a connection's last events — its departure, say — may still be
/// delivered then, to nobody). `SocketIo::to` would panic instead.
fn in_room(
    io: &SocketIo,
    room: String,
) -> Option<socketioxide::operators::BroadcastOperators<socketioxide::adapter::LocalAdapter>> {
    io.of("/").map(|ns| ns.to(room))
}

/// The socket room of the connections whose users turned read receipts off: `receipt`
/// events skip it.
const NO_RECEIPTS: &str = "receipts:off";

/// The socket room of every connection opened with one session's token: signing out closes
/// them all.
fn session_room(session: &str) -> String {
    format!("session:{session}")
}

/// Writes fan-out events to this node's connections: one serialization per event, whatever
/// the number of recipients (socketioxide encodes a broadcast once and shares the bytes).
pub struct Delivery {
    io: SocketIo,
    /// The service, told of ended sessions (set once it exists; held weakly, as the
    /// namespace holds it).
    chat: std::sync::OnceLock<std::sync::Weak<Chat>>,
}

impl Delivery {
    pub fn new(io: SocketIo) -> Self {
        Delivery {
            io,
            chat: std::sync::OnceLock::new(),
        }
    }

    /// The service this delivery serves.
    pub fn serve(&self, chat: &Arc<Chat>) {
        let _ = self.chat.set(Arc::downgrade(chat));
    }

    /// Closes this node's connections of the ended sessions an event names.
    fn close_sessions(&self, event: &RoomEvent) {
        #[derive(serde::Deserialize)]
        struct Ended {
            sessions: Vec<String>,
        }
        let Ok(ended) = serde_json::from_str::<Ended>(event.payload.get()) else {
            tracing::warn!("undecodable sessions_ended event");
            return;
        };
        if let Some(chat) = self.chat.get().and_then(std::sync::Weak::upgrade) {
            chat.forget_sessions(&ended.sessions);
        }
        for session in ended.sessions {
            let Some(op) = in_room(&self.io, session_room(&session)) else {
                return;
            };
            let close = async move {
                if let Err(e) = op.disconnect().await {
                    tracing::debug!(error = ?e, "closing a signed-out session's connections");
                }
            };
            tokio::spawn(close);
        }
    }

    /// Takes a removed member's connections on this node out of the room, tells them
    /// (`room_removed`), and has the service forget the membership.
    fn remove_member(&self, event: &RoomEvent) {
        #[derive(serde::Deserialize)]
        struct Removed {
            room: String,
            room_id: Id,
            user: Id,
        }
        let Some((r, room)) = serde_json::from_str::<Removed>(event.payload.get())
            .ok()
            .and_then(|r| RoomName::parse(&r.room).ok().map(|room| (r, room)))
        else {
            tracing::warn!("undecodable room_removed event");
            return;
        };
        let io = self.io.clone();
        let chat = self.chat.get().and_then(std::sync::Weak::upgrade);
        tokio::spawn(async move {
            if let Some(op) = in_room(&io, user_room(r.user)) {
                op.leave(room.to_string()).await;
            }
            let payload = serde_json::json!({ "room": room });
            if let Some(op) = in_room(&io, user_room(r.user)) {
                if let Err(e) = op.emit("room_removed", &payload).await {
                    tracing::debug!(error = %e, "telling a removed member");
                }
            }
            if let Some(chat) = chat {
                chat.member_gone(&room, r.room_id, r.user).await;
            }
        });
    }
}

impl Delivery {
    /// A user changed their settings: the service notes them, their connections on this node
    /// enter or leave [`NO_RECEIPTS`], then the event reaches those connections as usual.
    fn settings_changed(&self, event: &RoomEvent) {
        let Some(user) = event.room.inbox_user() else {
            return;
        };
        let Ok(settings) = serde_json::from_str::<scalify_core::Settings>(event.payload.get())
        else {
            tracing::warn!("undecodable settings event");
            return;
        };
        if let Some(chat) = self.chat.get().and_then(std::sync::Weak::upgrade) {
            chat.settings_changed(user, settings);
        }
        if let Some(op) = in_room(&self.io, user_room(user)) {
            // The local adapter completes these at once.
            let change = async move {
                if settings.read_receipts {
                    op.leave(NO_RECEIPTS).await;
                } else {
                    op.join(NO_RECEIPTS).await;
                }
            };
            if futures_util::FutureExt::now_or_never(Box::pin(change)).is_none() {
                tracing::warn!("a receipts room change did not complete at once");
            }
        }
    }

    /// Writes an event to every connection of this node (a new public room, for everyone's
    /// list of rooms to join).
    fn to_everyone(&self, event: &RoomEvent) {
        let Some(op) = self.io.of("/") else {
            return;
        };
        let payload = event.payload.clone();
        let name = event.kind.event_name();
        tokio::spawn(async move {
            if let Err(e) = op.emit(name, &*payload).await {
                tracing::debug!(error = %e, event = name, "some connections could not take an event");
            }
        });
    }
}

impl LocalDelivery for Delivery {
    fn deliver(&self, event: &RoomEvent) {
        let kind = event.kind.event_name();
        metrics::counter!("scalify_events_delivered_total", "kind" => kind).increment(1);
        match event.kind {
            scalify_fanout::EventKind::SessionsEnded => return self.close_sessions(event),
            scalify_fanout::EventKind::MemberRemoved => return self.remove_member(event),
            scalify_fanout::EventKind::RoomCreated => return self.to_everyone(event),
            scalify_fanout::EventKind::Settings => self.settings_changed(event),
            scalify_fanout::EventKind::BudgetSpent => {
                if let Some(chat) = self.chat.get().and_then(std::sync::Weak::upgrade) {
                    chat.spent_elsewhere(event.payload.get());
                }
                return;
            }
            _ => {}
        }
        if let scalify_fanout::EventKind::Message { ts, .. } = event.kind {
            // Commit to local delivery (across nodes: the origin node's clock).
            let delay_ms = scalify_core::now_ms().saturating_sub(ts).max(0);
            metrics::histogram!("scalify_fanout_delay_seconds").record(delay_ms as f64 / 1000.0);
        }
        let Some(mut op) = in_room(&self.io, event.room.as_str().to_owned()) else {
            tracing::debug!(room = %event.room, "the Socket.IO server has closed; event dropped");
            return;
        };
        if let Some(user) = event.except_user {
            op = op.except(user_room(user));
        }
        if event.kind == scalify_fanout::EventKind::Receipt {
            op = op.except(NO_RECEIPTS);
        }
        let emit = op.emit(event.kind.event_name(), &*event.payload);
        // With the local adapter the broadcast completes on first poll; finishing it here keeps
        // the order the sequencer chose. Anything else is finished on the runtime.
        let room = event.room.clone();
        let report = move |r: Result<(), socketioxide::BroadcastError>| {
            if let Err(e) = r {
                // Full per-socket buffers: those clients miss the live event and recover it
                // with `sync`; their failing heartbeat disconnects them.
                tracing::debug!(%room, error = %e, "some recipients could not take an event");
            }
        };
        match futures_util::FutureExt::now_or_never(Box::pin(emit)) {
            Some(r) => report(r),
            None => tracing::error!("broadcast did not complete synchronously; event dropped"),
        }
    }
}

/// What one connection carries between events.
struct Conn {
    user: UserRef,
    /// The transport at handshake (the `transport` label of the connections gauge).
    transport: &'static str,
    /// The rooms this connection joined; `None` once it disconnected. Held by `join`, `leave`
    /// and the disconnect handler across their presence changes, so that a join answered after
    /// the disconnect ran cannot add a room (and a presence) nobody would ever take away.
    rooms: tokio::sync::Mutex<Option<HashSet<RoomName>>>,
}

/// Parses an event's one argument: it must be a JSON object of the expected shape.
fn parse<T: DeserializeOwned>(data: Result<Value, ParserError>) -> Result<T, ChatError> {
    let value = data.map_err(|_| ChatError::bad_request("the event takes one JSON object"))?;
    if !value.is_object() {
        return Err(ChatError::bad_request("the event takes one JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ChatError::bad_request(e.to_string()))
}

/// What a successful event answers with, besides `ok: true` (`docs/protocol.md`).
///
/// Typed, so that an ack is serialized once, straight from the service's values: building a
/// `serde_json::Value` first cost a copy of every string of the message (~6 % of a send).
#[derive(Serialize)]
#[serde(untagged)]
enum Reply {
    Joined {
        room: Room,
        online: Vec<UserRef>,
        last_read: u64,
        unread: u32,
        mentions: u32,
        notifications: scalify_core::NotifyLevel,
        #[serde(skip_serializing_if = "Option::is_none")]
        receipts: Option<Vec<scalify_service::Receipt>>,
    },
    Read(scalify_service::ReadMarker),
    Sent {
        message: Message,
    },
    History {
        messages: Vec<Message>,
        has_more: bool,
    },
    Synced {
        rooms: BTreeMap<RoomName, SyncedRoom>,
    },
    Done {},
}

/// An ack: `{ok: true, ...reply}` or `{ok: false, error: {code, message}}`.
#[derive(Serialize)]
struct Ack<'a, T: Serialize> {
    ok: bool,
    #[serde(flatten)]
    body: &'a T,
}

fn answer(ack: AckSender, event: &'static str, result: Result<Reply, ChatError>) {
    let sent = match &result {
        Ok(reply) => {
            tracing::debug!(event, "answered ok");
            ack.send(&Ack {
                ok: true,
                body: reply,
            })
        }
        Err(e) => {
            tracing::debug!(event, code = e.code.as_str(), "answered with an error");
            metrics::counter!("scalify_requests_rejected_total", "transport" => "socket", "code" => e.code.as_str())
                .increment(1);
            ack.send(&Ack {
                ok: false,
                body: &error_body(e),
            })
        }
    };
    if let Err(e) = sent {
        // The client's buffer is full (it is not reading) or it is gone. It times out and
        // retries; with the same client_id a retried send is not duplicated.
        tracing::warn!(event, error = %e, "ack not delivered");
    }
}

/// Whether a request may open a connection: not from a browser, from the server's own origin,
/// or from an allowed one.
fn origin_allowed(headers: &axum::http::HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok()) else {
        return true; // not a browser: nothing to hijack
    };
    if allowed.iter().any(|a| a == "*" || a == origin) {
        return true;
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

/// Why a handshake was refused; its text is the `connect_error` message the client sees.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Deserialize)]
struct RoomArg {
    room: String,
}

#[derive(Deserialize)]
struct SendArg {
    room: String,
    /// May be left out by a message that carries a file.
    #[serde(default)]
    text: String,
    client_id: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    attachment: Option<String>,
}

/// `edit`, `delete`, `react` and `unreact`: the message `id` of `room`, and what changes.
#[derive(Deserialize)]
struct ChangeArg {
    room: String,
    id: String,
    client_id: String,
    /// `edit`'s new text.
    #[serde(default)]
    text: Option<String>,
    /// `react`'s and `unreact`'s emoji.
    #[serde(default)]
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct ReadArg {
    room: String,
    seq: i64,
}

#[derive(Deserialize)]
struct HistoryArg {
    room: String,
    before_seq: Option<i64>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct SyncArg {
    rooms: serde_json::Map<String, Value>,
}

/// Registers the default namespace: the handshake check and every event handler.
///
/// Event handlers are attached in the handshake middleware, before socketioxide sends the
/// CONNECT packet: a client may emit the moment it sees CONNECT, and socketioxide runs the
/// connect handler only after sending it, so handlers attached there would race the client's
/// first events (measured: `join` right after connecting went unanswered).
///
/// The namespace holds the service weakly: the service reaches the Socket.IO server (to
/// deliver), so a strong reference back would keep both alive forever, and the store would
/// never be dropped (and SQLite never checkpointed) at shutdown. Each connection holds it
/// strongly while it lives.
pub fn register(io: &SocketIo, chat: &Arc<Chat>, sequencer: Arc<Sequencer>) {
    let service = Arc::downgrade(chat);
    let authenticate = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let (service, sequencer) = (service.clone(), sequencer.clone());
        async move {
            let chat = service
                .upgrade()
                .ok_or(Refused("server is shutting down"))?;
            if s.req_parts().extensions.get::<OriginRefused>().is_some() {
                return Err(Refused("origin not allowed"));
            }
            let token = auth
                .ok()
                .and_then(|a| a.get("token").and_then(Value::as_str).map(str::to_owned));
            let Authenticated { user, session } = chat
                .token_claims(token.as_deref().unwrap_or(""))
                .map_err(|_| Refused("unauthorized"))?;
            // In the session's socket room and watching the user's inbox *before* the store
            // says the session is open: a sign-out committed after that answer finds this
            // connection and closes it, on whichever node.
            s.join(user_room(user.id));
            s.join(session_room(&session));
            chat.connection_opened(&user)
                .await
                .map_err(|_| Refused("too many connections"))?;
            let claims = Authenticated {
                user: user.clone(),
                session,
            };
            if let Err(e) = chat.check_session(&claims).await {
                chat.connection_closed(&user).await;
                // A store that cannot answer is not a signed-out session: the client retries
                // instead of signing its user out.
                return Err(Refused(
                    if e.code == scalify_core::ErrorCode::Unauthorized {
                        "unauthorized"
                    } else {
                        "server unavailable; connect again"
                    },
                ));
            }
            // The settings are read once the inbox is watched: a change committed after the
            // read arrives as an event, which moves this connection (already in the user's
            // socket room) — and is checked for once more after acting on the read. A store
            // that cannot answer (a session verified recently still connects) leaves the
            // connection without receipts until it reconnects: never with receipts its user
            // turned off.
            let receipts = chat
                .settings_at_connect(user.id)
                .await
                .is_ok_and(|settings| settings.read_receipts);
            if !receipts {
                s.join(NO_RECEIPTS);
            }
            match chat.cached_settings(user.id) {
                Some(now) if now.read_receipts && !receipts => s.leave(NO_RECEIPTS),
                Some(now) if !now.read_receipts && receipts => s.join(NO_RECEIPTS),
                _ => {}
            }
            tracing::debug!(sid = %s.id, user = %user.username, "connected");
            let transport = match s.transport_type() {
                TransportType::Websocket => "websocket",
                TransportType::Polling => "polling",
            };
            metrics::gauge!("scalify_connections", "transport" => transport).increment(1.0);
            metrics::counter!("scalify_connections_opened_total", "transport" => transport)
                .increment(1);
            let conn = Arc::new(Conn {
                user,
                transport,
                rooms: tokio::sync::Mutex::new(Some(HashSet::new())),
            });
            attach_handlers(&s, chat, sequencer, conn);
            Ok::<(), Refused>(())
        }
    };
    let on_connect = |_: SocketRef| async {};
    io.ns(
        "/",
        socketioxide::handler::ConnectHandler::with(on_connect, authenticate),
    );
}

/// Everything an event handler of one connection needs.
struct Session {
    chat: Arc<Chat>,
    sequencer: Arc<Sequencer>,
    conn: Arc<Conn>,
    /// The connection's span: every event's logs carry the connection (Engine.IO session id)
    /// and the user. One per connection, not per event: creating a span formats its fields
    /// for the log layer, measured at ~7 % of a send's CPU when done per event.
    span: tracing::Span,
}

type EventArg = Result<Value, ParserError>;

/// The client events (`docs/protocol.md`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum ClientEvent {
    Join,
    Leave,
    Send,
    History,
    Sync,
    Typing,
    Read,
    Edit,
    Delete,
    React,
    Unreact,
}

impl ClientEvent {
    /// Every event with its name on the wire.
    const ALL: [(Self, &'static str); 11] = [
        (Self::Join, "join"),
        (Self::Leave, "leave"),
        (Self::Send, "send"),
        (Self::History, "history"),
        (Self::Sync, "sync"),
        (Self::Typing, "typing"),
        (Self::Read, "read"),
        (Self::Edit, "edit"),
        (Self::Delete, "delete"),
        (Self::React, "react"),
        (Self::Unreact, "unreact"),
    ];

    /// The event and its name, if `name` is one.
    fn parse(name: &str) -> Option<(Self, &'static str)> {
        Self::ALL.into_iter().find(|(_, n)| *n == name)
    }

    /// Runs the event's handler on its argument.
    async fn handle(self, h: Arc<Session>, s: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
        match self {
            Self::Join => join(h, s, d).await,
            Self::Leave => leave(h, s, d).await,
            Self::Send => send(h, s, d).await,
            Self::History => history(h, s, d).await,
            Self::Sync => sync(h, s, d).await,
            Self::Typing => typing(h, s, d).await,
            Self::Read => read(h, s, d).await,
            Self::Edit | Self::Delete | Self::React | Self::Unreact => change(h, self, d).await,
        }
    }
}

/// Registers the connection's event handler: every event runs its handler on the event's
/// argument and answers its ack, and is admitted as in flight, so graceful shutdown waits for
/// in-flight events and their acks (once it has begun, events are refused at once).
///
/// One socketioxide handler (its fallback) serves every event: a handler per event would give
/// each connection its own map of seven boxed handlers, ~500 B of an idle connection's cost.
fn attach_handlers(s: &SocketRef, chat: Arc<Chat>, sequencer: Arc<Sequencer>, conn: Arc<Conn>) {
    let span = tracing::info_span!("conn", sid = %s.id, user = %conn.user.username);
    let session = Arc::new(Session {
        chat,
        sequencer,
        conn,
        span,
    });
    let events = session.clone();
    s.on_fallback(
        move |s: SocketRef, Event(name): Event, TryData(d): TryData<Value>, ack: AckSender| {
            use tracing::Instrument;
            let session = events.clone();
            let chat = session.chat.clone();
            let span = session.span.clone();
            let event = ClientEvent::parse(&name);
            let event_name = event.map_or("unknown", |(_, n)| n);
            // Refused here, before this returns, once the server is closing: the refusal is
            // then queued before the transport reads the client's next packet, so the last
            // round trip before the close packet covers it (docs/protocol.md, "Shutdown").
            let Some(admitted) = chat.admit() else {
                answer(ack, event_name, Err(ChatError::shutting_down()));
                return futures_util::future::Either::Left(std::future::ready(()));
            };
            let work = async move {
                match event {
                    Some((event, _)) => event.handle(session, s, d).await,
                    None => {
                        let name: String = name.chars().take(64).collect();
                        Err(ChatError::bad_request(format!("unknown event '{name}'")))
                    }
                }
            };
            futures_util::future::Either::Right(
                async move {
                    answer(ack, event_name, work.await);
                    drop(admitted);
                }
                .instrument(span),
            )
        },
    );
    s.on_disconnect(move || async move {
        let Session { chat, conn, .. } = &*session;
        metrics::gauge!("scalify_connections", "transport" => conn.transport).decrement(1.0);
        let mut rooms = conn.rooms.lock().await;
        for room in rooms.take().unwrap_or_default() {
            chat.connection_left(&room, &conn.user).await;
        }
        chat.connection_closed(&conn.user).await;
    });
}

async fn join(h: Arc<Session>, s: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let arg: RoomArg = parse(d)?;
    let room = h.chat.join(&h.conn.user, &arg.room).await?;
    let mut rooms = h.conn.rooms.lock().await;
    let Some(joined) = rooms.as_mut() else {
        // The membership stands (it is the user's, not the connection's); the connection
        // that asked is gone, and so is whoever would read this answer.
        return Err(ChatError::new(
            scalify_core::ErrorCode::Internal,
            "the connection closed during the join",
        ));
    };
    let first = joined.insert(room.name.clone());
    // Subscribe first (this connection to the room's local events, this node to the room's
    // channel), then read last_seq: every seq above it arrives live, none is missed in
    // between. Delivery expects seq last_seq + 1 next.
    let online = if first {
        s.join(room.name.to_string());
        h.chat.connection_joined(&room, &h.conn.user).await
    } else {
        h.chat.online(&room.name).await
    };
    drop(rooms);
    let (last_seq, read) = h.chat.joined_state(&h.conn.user, &room).await?;
    if first {
        h.sequencer.seed(&room.name, last_seq);
    }
    // Courtesy data: a join that cannot list them still succeeds.
    let receipts = match h.chat.receipts(&h.conn.user, &room).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(room = %room.name, error = %e.message, "join answered without receipts");
            None
        }
    };
    let room = Room { last_seq, ..room };
    Ok(Reply::Joined {
        room,
        online,
        last_read: read.last_read,
        unread: read.unread,
        mentions: read.mentions,
        notifications: read.level,
        receipts,
    })
}

async fn leave(h: Arc<Session>, s: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let arg: RoomArg = parse(d)?;
    let name = RoomName::parse(&arg.room)?;
    let mut rooms = h.conn.rooms.lock().await;
    if rooms.as_mut().is_some_and(|r| r.remove(&name)) {
        s.leave(name.to_string());
        h.chat.connection_left(&name, &h.conn.user).await;
    }
    Ok(Reply::Done {})
}

async fn send(h: Arc<Session>, _: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let started = Instant::now();
    let arg: SendArg = parse(d)?;
    let message = h
        .chat
        .send_full(
            &h.conn.user,
            &arg.room,
            &arg.text,
            &arg.client_id,
            arg.reply_to.as_deref(),
            arg.attachment.as_deref(),
        )
        .await?;
    metrics::histogram!("scalify_send_ack_seconds").record(started.elapsed().as_secs_f64());
    Ok(Reply::Sent { message })
}

async fn change(h: Arc<Session>, event: ClientEvent, d: EventArg) -> Result<Reply, ChatError> {
    let arg: ChangeArg = parse(d)?;
    let need = |field: Option<String>, name: &str| {
        field.ok_or_else(|| ChatError::bad_request(format!("{name} is required")))
    };
    let change = match event {
        ClientEvent::Edit => Change::Edit(need(arg.text, "text")?),
        ClientEvent::React => Change::React(need(arg.emoji, "emoji")?),
        ClientEvent::Unreact => Change::Unreact(need(arg.emoji, "emoji")?),
        _ => Change::Delete,
    };
    let message = h
        .chat
        .change(&h.conn.user, &arg.room, &arg.id, change, &arg.client_id)
        .await?;
    Ok(Reply::Sent { message })
}

async fn history(h: Arc<Session>, _: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let arg: HistoryArg = parse(d)?;
    let query = HistoryQuery::new(arg.before_seq, arg.limit)?;
    let (messages, has_more) = h.chat.history(&h.conn.user, &arg.room, query).await?;
    Ok(Reply::History { messages, has_more })
}

async fn sync(h: Arc<Session>, _: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let arg: SyncArg = parse(d)?;
    let mut rooms = Vec::with_capacity(arg.rooms.len());
    for (name, seq) in arg.rooms {
        let seq = seq.as_i64().ok_or_else(|| {
            ChatError::bad_request(format!("last_seq of '{name}' must be an integer"))
        })?;
        rooms.push((name, seq));
    }
    let rooms = h.chat.sync(&h.conn.user, SyncRequest::new(rooms)?).await?;
    Ok(Reply::Synced { rooms })
}

async fn read(h: Arc<Session>, _: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let arg: ReadArg = parse(d)?;
    let marker = h.chat.mark_read(&h.conn.user, &arg.room, arg.seq).await?;
    Ok(Reply::Read(marker))
}

async fn typing(h: Arc<Session>, _: SocketRef, d: EventArg) -> Result<Reply, ChatError> {
    let arg: RoomArg = parse(d)?;
    h.chat.typing(&h.conn.user, &arg.room).await?;
    Ok(Reply::Done {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalify_core::{ClientId, MessageText, RoomKind};
    use serde_json::json;

    /// A connection's last events (its departure, announced from its disconnect handler) can
    /// reach delivery after the Socket.IO server closed: they go to nobody, without a panic.
    #[tokio::test]
    async fn delivering_after_the_server_closed_is_a_no_op() {
        let (_layer, io) = SocketIo::new_layer();
        let delivery = Delivery::new(io);
        let room = RoomName::parse("general").unwrap();
        for kind in [
            scalify_fanout::EventKind::Presence,
            scalify_fanout::EventKind::SessionsEnded,
            scalify_fanout::EventKind::MemberRemoved,
        ] {
            let payload = json!({"sessions": ["s"], "room": "general", "room_id": Id::new(), "user": Id::new()});
            delivery.deliver(&RoomEvent::new(room.clone(), kind, &payload, None).unwrap());
        }
        tokio::task::yield_now().await;
    }

    fn ack(reply: &Reply) -> Value {
        serde_json::to_value(Ack {
            ok: true,
            body: reply,
        })
        .unwrap()
    }

    /// The acks of `docs/protocol.md`, field for field: `ok` beside the reply's own fields.
    #[test]
    fn acks_carry_ok_beside_the_reply_fields() {
        let ann = UserRef {
            id: Id::new(),
            username: "ann".into(),
        };
        let room = Room {
            id: Id::new(),
            name: RoomName::parse("general").unwrap(),
            kind: RoomKind::Public,
            last_seq: 7,
        };
        let new = scalify_core::NewMessage::plain(
            room.id,
            room.name.clone(),
            ann.clone(),
            MessageText::parse("hi", 4096).unwrap(),
            ClientId::parse("c1").unwrap(),
        );
        let message = Message::from_new(new, Id::new(), 7, 1_764_300_000_000);
        let m = serde_json::to_value(&message).unwrap();

        assert_eq!(ack(&Reply::Done {}), json!({ "ok": true }));
        assert_eq!(
            ack(&Reply::Sent {
                message: message.clone()
            }),
            json!({ "ok": true, "message": m })
        );
        assert_eq!(
            ack(&Reply::Joined {
                room: room.clone(),
                online: vec![ann.clone()],
                last_read: 5,
                unread: 2,
                mentions: 1,
                notifications: scalify_core::NotifyLevel::Mentions,
                receipts: None,
            }),
            json!({ "ok": true, "online": [ann], "last_read": 5, "unread": 2, "mentions": 1,
                    "notifications": "mentions",
                    "room": { "id": room.id, "name": "general", "kind": "public", "last_seq": 7 } })
        );
        assert_eq!(
            ack(&Reply::Read(scalify_service::ReadMarker {
                room: room.name.clone(),
                last_read: 5,
            })),
            json!({ "ok": true, "room": "general", "last_read": 5 })
        );
        assert_eq!(
            ack(&Reply::History {
                messages: vec![message.clone()],
                has_more: false,
            }),
            json!({ "ok": true, "messages": [m], "has_more": false })
        );
        let rooms = BTreeMap::from([(
            room.name.clone(),
            SyncedRoom {
                messages: vec![message],
                truncated: true,
            },
        )]);
        assert_eq!(
            ack(&Reply::Synced { rooms }),
            json!({ "ok": true, "rooms": { "general": { "messages": [m], "truncated": true } } })
        );
        let refused = serde_json::to_value(Ack {
            ok: false,
            body: &error_body(&ChatError::bad_request("no")),
        })
        .unwrap();
        assert_eq!(
            refused,
            json!({ "ok": false, "error": { "code": "bad_request", "message": "no" } })
        );
    }
}
