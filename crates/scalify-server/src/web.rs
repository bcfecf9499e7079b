//! The web UI, embedded in the binary at build time (see `build.rs`): `GET /` (and a room's
//! address, `/r/{room}` or `/dm/{username}`) serves the app, `GET /assets/*` its hashed
//! (immutable) files. No runtime file access, no CDN.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "$OUT_DIR/web"]
struct Assets;

/// The page may load only its own scripts and styles and talk only to its own origin: even an
/// injection bug could not pull in or run foreign code, or send data to another host. `'self'`
/// covers the app's own WebSocket (`ws:`/`wss:` to the same host, CSP level 3, which every
/// current browser implements), so no WebSocket host is allowed beyond it. `blob:` images are
/// the room's pictures, which the page fetches with its token and shows from memory.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(path: &str, cache: &'static str) -> Response {
    match Assets::get(path) {
        Some(f) => {
            let mime = f.metadata.mimetype().to_owned();
            let mut res = (StatusCode::OK, f.data.into_owned()).into_response();
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&mime) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        None => crate::error::ApiError::from(scalify_core::ChatError::not_found("no such file"))
            .into_response(),
    }
}

pub async fn index() -> Response {
    let mut res = file("index.html", "no-cache");
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

pub async fn asset(Path(path): Path<String>) -> Response {
    file(
        &format!("assets/{path}"),
        "public, max-age=31536000, immutable",
    )
}

/// The service worker that shows Web Push notifications. Served from the root so its scope
/// is the whole app; never cached long, so a new version reaches browsers at their next visit.
pub async fn service_worker() -> Response {
    file("sw.js", "no-cache")
}
