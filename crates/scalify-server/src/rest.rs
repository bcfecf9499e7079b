//! REST: accounts, rooms, history and bot sends. Every handler is a few lines: extract, call
//! [`Chat`], shape the answer. Errors leave through [`ApiError`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use scalify_core::{ChatError, HistoryQuery, TrustedProxies, UserRef};
use scalify_service::{Authenticated, Change, Chat, Session};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::TransportConfig;

type AppState = Arc<Chat>;
type ApiResult = Result<Response, ApiError>;

/// Every REST route as (method, path). `docs/openapi.yaml` documents exactly these, and the
/// test `openapi_documents_every_route` checks both that and that each one is served.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/auth/register"),
    ("post", "/api/auth/login"),
    ("post", "/api/auth/logout"),
    ("post", "/api/auth/logout-all"),
    ("get", "/api/me"),
    ("delete", "/api/me"),
    ("put", "/api/me/password"),
    ("get", "/api/me/settings"),
    ("put", "/api/me/settings"),
    ("get", "/api/admin/overview"),
    ("get", "/api/rooms"),
    ("post", "/api/rooms"),
    ("get", "/api/rooms/{room}/members"),
    ("post", "/api/rooms/{room}/members"),
    ("delete", "/api/rooms/{room}/members/{username}"),
    ("post", "/api/rooms/{room}/leave"),
    ("put", "/api/rooms/{room}/read"),
    ("put", "/api/rooms/{room}/notifications"),
    ("get", "/api/blocks"),
    ("post", "/api/blocks"),
    ("delete", "/api/blocks/{username}"),
    ("get", "/api/rooms/{room}/messages"),
    ("post", "/api/rooms/{room}/messages"),
    ("patch", "/api/rooms/{room}/messages/{id}"),
    ("delete", "/api/rooms/{room}/messages/{id}"),
    ("post", "/api/rooms/{room}/messages/{id}/reactions"),
    ("delete", "/api/rooms/{room}/messages/{id}/reactions"),
    ("post", "/api/dms"),
    ("get", "/api/search"),
    ("post", "/api/rooms/{room}/uploads"),
    ("get", "/api/rooms/{room}/uploads/{id}"),
    ("get", "/api/rooms/{room}/uploads/{id}/preview"),
    ("get", "/api/push/vapid-public-key"),
    ("post", "/api/push/subscriptions"),
    ("delete", "/api/push/subscriptions"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

pub fn router(chat: Arc<Chat>, transport: &TransportConfig) -> Router {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/logout-all", post(logout_all))
        .route("/api/me", get(me).delete(delete_me))
        .route("/api/me/password", put(change_password))
        .route("/api/me/settings", get(settings).put(update_settings))
        .route("/api/admin/overview", get(admin_overview))
        .route("/api/rooms", get(list_rooms).post(create_room))
        .route("/api/rooms/{room}/members", get(members).post(add_member))
        .route(
            "/api/rooms/{room}/members/{username}",
            axum::routing::delete(remove_member),
        )
        .route("/api/rooms/{room}/leave", post(leave_room))
        .route("/api/rooms/{room}/read", put(mark_read))
        .route("/api/rooms/{room}/notifications", put(set_notifications))
        .route("/api/blocks", get(blocks).post(block))
        .route("/api/blocks/{username}", axum::routing::delete(unblock))
        .route("/api/rooms/{room}/messages", get(history).post(send))
        .route(
            "/api/rooms/{room}/messages/{id}",
            axum::routing::patch(edit_message).delete(delete_message),
        )
        .route(
            "/api/rooms/{room}/messages/{id}/reactions",
            post(react).delete(unreact),
        )
        .route("/api/dms", post(open_dm))
        .route("/api/search", get(search))
        // An upload's size is the service's limit (`--upload-max-bytes`), checked as it streams.
        .route(
            "/api/rooms/{room}/uploads",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/rooms/{room}/uploads/{id}", get(download))
        .route(
            "/api/rooms/{room}/uploads/{id}/preview",
            get(download_preview),
        )
        .route("/api/push/vapid-public-key", get(vapid_public_key))
        .route(
            "/api/push/subscriptions",
            post(subscribe_push).delete(unsubscribe_push),
        )
        .route("/sw.js", get(crate::web::service_worker))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(crate::web::index))
        // A room's and a DM's own address in the web app: the same page, which opens them.
        .route("/r/{room}", get(crate::web::index))
        .route("/dm/{username}", get(crate::web::index))
        .route("/assets/{*path}", get(crate::web::asset))
        .merge(if transport.metrics_on_main {
            Router::new().route("/metrics", get(metrics))
        } else {
            Router::new()
        })
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(transport.max_payload_bytes))
        .layer(axum::Extension(Arc::new(transport.trusted_proxies.clone())))
        .layer(axum::middleware::map_response(private_answers))
        .with_state(chat)
}

/// Every answer is its caller's alone: a browser or a proxy must not keep it (a token, a
/// private room's messages), and no browser may read it as another content type. The web app's
/// files set their own caching, which stays.
async fn private_answers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    res
}

/// The signed-in user, from `Authorization: Bearer <token>` whose session is open.
pub struct AuthUser(pub UserRef);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, chat: &AppState) -> Result<Self, ApiError> {
        let AuthSession(a) = AuthSession::from_request_parts(parts, chat).await?;
        Ok(AuthUser(a.user))
    }
}

/// The signed-in user and the session of their token (for signing out, password changes).
pub struct AuthSession(pub Authenticated);

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, chat: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ChatError::unauthorized)?;
        Ok(AuthSession(chat.authenticate(token.trim()).await?))
    }
}

/// The client's address, which logins and registrations are throttled by: the peer of the TCP
/// connection, or what `X-Forwarded-For` says when that peer is a trusted proxy
/// (`--trusted-proxies`). A request that did not come over a socket (an in-process call) counts
/// as coming from `0.0.0.0`.
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let trusted = parts.extensions.get::<Arc<TrustedProxies>>();
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientAddr(match trusted {
            Some(t) => t.client(peer, forwarded),
            None => peer,
        }))
    }
}

/// A JSON body whose rejections (bad JSON, wrong types, too large) answer in our error format.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_rejection(rejection).into()),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ChatError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ChatError::too_large("request body is too large")
    } else {
        ChatError::bad_request(r.body_text())
    }
}

fn query_rejection(r: QueryRejection) -> ChatError {
    ChatError::bad_request(r.body_text())
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn register(
    State(chat): State<AppState>,
    ClientAddr(from): ClientAddr,
    Body(c): Body<Credentials>,
) -> ApiResult {
    let session: Session = chat.register(&c.username, &c.password, from).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

async fn login(
    State(chat): State<AppState>,
    ClientAddr(from): ClientAddr,
    Body(c): Body<Credentials>,
) -> ApiResult {
    let session = chat.login(&c.username, &c.password, from).await?;
    Ok(Json(session).into_response())
}

async fn logout(State(chat): State<AppState>, AuthSession(a): AuthSession) -> ApiResult {
    chat.logout(&a).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn logout_all(State(chat): State<AppState>, AuthSession(a): AuthSession) -> ApiResult {
    chat.logout_all(&a).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(chat): State<AppState>,
    AuthSession(a): AuthSession,
    ClientAddr(from): ClientAddr,
    Body(p): Body<PasswordChange>,
) -> ApiResult {
    chat.change_password(&a, &p.current_password, &p.new_password, from)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Deletion {
    password: String,
}

async fn delete_me(
    State(chat): State<AppState>,
    AuthSession(a): AuthSession,
    ClientAddr(from): ClientAddr,
    Body(d): Body<Deletion>,
) -> ApiResult {
    chat.delete_account(&a, &d.password, from).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn leave_room(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
) -> ApiResult {
    chat.leave_room(&user, &room).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct ReadRequest {
    seq: i64,
}

async fn mark_read(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    Body(r): Body<ReadRequest>,
) -> ApiResult {
    let marker = chat.mark_read(&user, &room, r.seq).await?;
    Ok(Json(json!(marker)).into_response())
}

#[derive(Deserialize)]
struct LevelRequest {
    level: String,
}

async fn set_notifications(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    Body(r): Body<LevelRequest>,
) -> ApiResult {
    let choice = chat.set_notifications(&user, &room, &r.level).await?;
    Ok(Json(json!(choice)).into_response())
}

async fn vapid_public_key(State(chat): State<AppState>) -> ApiResult {
    let key = chat.vapid_public_key()?;
    Ok(Json(json!({ "key": key })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushSubscriptionRequest {
    endpoint: String,
    keys: scalify_service::PushKeys,
    /// `PushSubscription.toJSON()` carries it; push services set no expiry in practice.
    #[serde(rename = "expirationTime", default)]
    _expiration_time: Option<serde_json::Value>,
}

async fn subscribe_push(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Body(r): Body<PushSubscriptionRequest>,
) -> ApiResult {
    chat.subscribe_push(&user, &r.endpoint, &r.keys).await?;
    Ok((StatusCode::CREATED, Json(json!({ "endpoint": r.endpoint }))).into_response())
}

#[derive(Deserialize)]
struct PushEndpoint {
    endpoint: String,
}

async fn unsubscribe_push(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Body(r): Body<PushEndpoint>,
) -> ApiResult {
    if chat.unsubscribe_push(&user, &r.endpoint).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(scalify_core::ChatError::not_found("no such subscription").into())
    }
}

async fn settings(State(chat): State<AppState>, AuthUser(user): AuthUser) -> ApiResult {
    let settings = chat.settings(user.id).await?;
    Ok(Json(json!(settings)).into_response())
}

async fn update_settings(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Body(patch): Body<scalify_service::SettingsPatch>,
) -> ApiResult {
    let settings = chat.update_settings(&user, patch).await?;
    Ok(Json(json!(settings)).into_response())
}

async fn remove_member(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path((room, username)): Path<(String, String)>,
) -> ApiResult {
    chat.remove_member(&user, &room, &username).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct BlockRequest {
    username: String,
}

async fn block(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Body(b): Body<BlockRequest>,
) -> ApiResult {
    chat.block(&user, &b.username, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unblock(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(username): Path<String>,
) -> ApiResult {
    chat.block(&user, &username, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn blocks(State(chat): State<AppState>, AuthUser(user): AuthUser) -> ApiResult {
    let users = chat.blocks(&user).await?;
    Ok(Json(json!({ "blocks": users })).into_response())
}

async fn me(State(chat): State<AppState>, AuthUser(user): AuthUser) -> ApiResult {
    let admin = chat.is_admin(&user).await?;
    let limits = json!({
        "max_message_bytes": chat.max_text_bytes(),
        "max_upload_bytes": chat.upload_limit(),
    });
    Ok(Json(json!({ "user": user, "admin": admin, "limits": limits })).into_response())
}

/// The admin dashboard's data (admins only): nodes, rates, busiest rooms, this node's
/// dependencies and its recent warnings and errors.
async fn admin_overview(State(chat): State<AppState>, AuthUser(user): AuthUser) -> ApiResult {
    let o = chat.overview(&user).await?;
    let checks = checks_body(&o.checks);
    Ok(Json(json!({
        "node": o.node,
        "nodes": o.nodes,
        "messages_per_sec": o.messages_per_sec,
        "busiest": o.busiest,
        "checks": checks,
        "persisters": o.persisters,
        "errors": crate::recent::recent(),
    }))
    .into_response())
}

async fn list_rooms(State(chat): State<AppState>, AuthUser(user): AuthUser) -> ApiResult {
    let rooms: Vec<_> = chat
        .list_rooms(&user)
        .await?
        .iter()
        .map(|l| {
            let mut r = json!(l.room);
            r["member"] = json!(l.member);
            if let Some(peer) = &l.peer {
                r["peer"] = json!(peer);
            }
            if let Some(read) = &l.read {
                r["last_read"] = json!(read.last_read);
                r["unread"] = json!(read.unread);
                r["mentions"] = json!(read.mentions);
                r["notifications"] = json!(read.level);
            }
            r
        })
        .collect();
    Ok(Json(json!({ "rooms": rooms })).into_response())
}

#[derive(Deserialize)]
struct NewRoom {
    name: String,
    kind: String,
    #[serde(default)]
    members: Vec<String>,
}

async fn create_room(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Body(r): Body<NewRoom>,
) -> ApiResult {
    let room = chat
        .create_room(&user, &r.name, &r.kind, &r.members)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "room": room }))).into_response())
}

async fn members(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
) -> ApiResult {
    let members = chat.members(&user, &room).await?;
    let owner = chat.room_owner(&user, &room).await?;
    Ok(Json(json!({ "members": members, "owner": owner })).into_response())
}

#[derive(Deserialize)]
struct NewMember {
    username: String,
}

async fn add_member(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    Body(m): Body<NewMember>,
) -> ApiResult {
    let (room, member) = chat.add_member(&user, &room, &m.username).await?;
    Ok(Json(json!({ "room": room, "user": member })).into_response())
}

#[derive(Deserialize)]
struct NewDm {
    username: String,
}

async fn open_dm(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Body(d): Body<NewDm>,
) -> ApiResult {
    let room = chat.dm(&user, &d.username).await?;
    Ok(Json(json!({ "room": room })).into_response())
}

#[derive(Deserialize)]
struct HistoryParams {
    before_seq: Option<i64>,
    limit: Option<i64>,
}

async fn history(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> ApiResult {
    let Query(p) = params.map_err(query_rejection)?;
    let query = HistoryQuery::new(p.before_seq, p.limit)?;
    let (messages, has_more) = chat.history(&user, &room, query).await?;
    Ok(Json(json!({ "messages": messages, "has_more": has_more })).into_response())
}

#[derive(Deserialize)]
struct SearchParams {
    #[serde(default)]
    q: String,
    room: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

async fn search(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> ApiResult {
    let Query(p) = params.map_err(query_rejection)?;
    let found = chat
        .search(&user, &p.q, p.room.as_deref(), p.before.as_deref(), p.limit)
        .await?;
    Ok(Json(found).into_response())
}

#[derive(Deserialize)]
struct UploadParams {
    name: Option<String>,
}

/// A file for the room, streamed from the request body as it comes (`?name=` names it; any
/// `Content-Type` is ignored: the server tells the type from the bytes).
///
/// Runs as its own task, like a send: a client that hangs up fails the body, and the upload
/// is then removed rather than left half-written.
async fn upload(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    params: Result<Query<UploadParams>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let Query(p) = params.map_err(query_rejection)?;
    let name = p
        .name
        .ok_or_else(|| ChatError::bad_request("name is required (?name=<file name>)"))?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client that waits for `100 Continue` sends its body only once the server reads it: if
    // nothing was read, nothing is coming, and reading now would ask for all of it just to
    // refuse it.
    let waits = headers.contains_key(header::EXPECT);
    let service = chat.clone();
    let upload = chat
        .spawn(async move {
            use futures_util::StreamExt;
            let mut body = body.into_data_stream();
            let read = std::sync::atomic::AtomicBool::new(false);
            let watched = (&mut body).inspect(|_| read.store(true, Ordering::Relaxed));
            let result = service.upload(&user, &room, &name, length, watched).await;
            // Not while shutting down: the client reconnects anyway, and shutdown waits.
            if result.is_err()
                && (!waits || read.load(Ordering::Relaxed))
                && !service.is_closing()
                && length.is_none_or(|n| n <= DRAIN_BYTES)
            {
                drain(&mut body).await;
            }
            result
        })
        .await
        .map_err(|_| ChatError::internal())??;
    Ok((StatusCode::CREATED, Json(json!({ "upload": upload }))).into_response())
}

/// Most bytes of a refused upload read and dropped so that its client, still sending, gets
/// to read the answer: HTTP clients that are cut off mid-request report a reset instead.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// Reads and drops the rest of `body`: up to [`DRAIN_BYTES`], for at most 10 s.
async fn drain(body: &mut axum::body::BodyDataStream) {
    use futures_util::StreamExt;
    let mut left = DRAIN_BYTES;
    let reading = async {
        while let Some(Ok(chunk)) = body.next().await {
            match left.checked_sub(chunk.len() as u64) {
                Some(rest) => left = rest,
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), reading).await;
}

async fn download(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path((room, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(file_response(
        chat.download(&user, &room, &id, false).await?,
    ))
}

async fn download_preview(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path((room, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(file_response(chat.download(&user, &room, &id, true).await?))
}

/// A stored file as an answer that no browser runs: the type the server found (images) or
/// one no browser interprets, `nosniff`, a sandboxing CSP in case it is opened as a page
/// anyway, and a `Content-Disposition` that offers anything but an image for saving.
fn file_response(file: scalify_service::Download) -> Response {
    let disposition = format!(
        "{}; filename=\"{}\"; filename*=UTF-8''{}",
        if file.inline { "inline" } else { "attachment" },
        ascii_file_name(&file.name),
        percent_encode(&file.name)
    );
    let mut res = axum::body::Body::from_stream(file.body).into_response();
    let h = res.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, file.content_type);
    set(header::CONTENT_LENGTH, file.size.to_string());
    set(header::CONTENT_DISPOSITION, disposition);
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox".to_owned(),
    );
    set(header::CACHE_CONTROL, "private, max-age=3600".to_owned());
    res
}

/// `name` for clients that only read `filename=`: ASCII, without quotes or backslashes.
fn ascii_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// RFC 8187's `filename*` value: every byte but its attr-chars percent-encoded.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct NewMessage {
    /// May be left out by a message that carries a file.
    #[serde(default)]
    text: String,
    client_id: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    attachment: Option<String>,
}

/// A send from a bot or backend: the same rules and broadcast as the socket `send`.
///
/// The send runs as its own task: axum drops this handler if the client hangs up, and a
/// message committed by then must still be published to the room.
async fn send(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    Body(m): Body<NewMessage>,
) -> ApiResult {
    let service = chat.clone();
    let message = chat
        .spawn(async move {
            service
                .send_full(
                    &user,
                    &room,
                    &m.text,
                    &m.client_id,
                    m.reply_to.as_deref(),
                    m.attachment.as_deref(),
                )
                .await
        })
        .await
        .map_err(|_| ChatError::internal())??;
    Ok((StatusCode::CREATED, Json(json!({ "message": message }))).into_response())
}

#[derive(Deserialize)]
struct EditBody {
    text: String,
    client_id: String,
}

#[derive(Deserialize)]
struct DeleteBody {
    client_id: String,
}

#[derive(Deserialize)]
struct ReactionBody {
    emoji: String,
    client_id: String,
}

/// Runs a change as its own task (like [`send`]: committed means published), answering with
/// the log entry it appended.
async fn run_change(
    chat: AppState,
    user: UserRef,
    (room, id): (String, String),
    change: Change,
    client_id: String,
    status: StatusCode,
) -> ApiResult {
    let service = chat.clone();
    let message = chat
        .spawn(async move { service.change(&user, &room, &id, change, &client_id).await })
        .await
        .map_err(|_| ChatError::internal())??;
    Ok((status, Json(json!({ "message": message }))).into_response())
}

async fn edit_message(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(at): Path<(String, String)>,
    Body(b): Body<EditBody>,
) -> ApiResult {
    run_change(
        chat,
        user,
        at,
        Change::Edit(b.text),
        b.client_id,
        StatusCode::OK,
    )
    .await
}

async fn delete_message(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(at): Path<(String, String)>,
    Body(b): Body<DeleteBody>,
) -> ApiResult {
    run_change(chat, user, at, Change::Delete, b.client_id, StatusCode::OK).await
}

async fn react(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(at): Path<(String, String)>,
    Body(b): Body<ReactionBody>,
) -> ApiResult {
    run_change(
        chat,
        user,
        at,
        Change::React(b.emoji),
        b.client_id,
        StatusCode::CREATED,
    )
    .await
}

async fn unreact(
    State(chat): State<AppState>,
    AuthUser(user): AuthUser,
    Path(at): Path<(String, String)>,
    Body(b): Body<ReactionBody>,
) -> ApiResult {
    run_change(
        chat,
        user,
        at,
        Change::Unreact(b.emoji),
        b.client_id,
        StatusCode::OK,
    )
    .await
}

/// The operator's endpoints — `/metrics`, `/healthz`, `/readyz` — for a listener of their
/// own (`--internal-listen`), which clients never reach.
pub fn operator_router(chat: Arc<Chat>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(chat)
}

/// Prometheus metrics of this process.
async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// Liveness. `node` tells which process answered (useful behind a load balancer).
async fn healthz(State(chat): State<AppState>) -> Response {
    Json(json!({ "status": "ok", "node": chat.node() })).into_response()
}

async fn readyz(State(chat): State<AppState>) -> Response {
    readiness_response(&chat.readiness().await)
}

/// `/readyz`'s answer from (name, error) checks — a node's and a persister's alike: 200 with
/// `{"ready": true, "checks": …}` when none failed, 503 otherwise.
pub fn readiness_response(checks: &[(&'static str, Option<String>)]) -> Response {
    let ready = checks.iter().all(|(_, e)| e.is_none());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "checks": checks_body(checks) })),
    )
        .into_response()
}

/// Dependency checks as `/readyz` and the admin overview show them:
/// `{"store": {"ok": true}, "fanout": {"ok": false, "error": "…"}}`.
fn checks_body(
    checks: &[(&'static str, Option<String>)],
) -> serde_json::Map<String, serde_json::Value> {
    checks
        .iter()
        .map(|(name, e)| {
            let v = match e {
                None => json!({ "ok": true }),
                Some(err) => json!({ "ok": false, "error": err }),
            };
            ((*name).to_owned(), v)
        })
        .collect()
}

async fn not_found() -> ApiError {
    ChatError::not_found("no such endpoint").into()
}
