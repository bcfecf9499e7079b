//! Web Push: a notification is encrypted to the browser's keys (RFC 8291, `aes128gcm`, by
//! `web-push-native`) and POSTed to its push service's endpoint (RFC 8030) with a VAPID
//! `Authorization` (RFC 8292): a JWT signed by the node's key, for the endpoint's origin.
//!
//! Every node of a cluster must sign with the same key: browsers subscribed with its public
//! half, and a push service refuses a post signed by another.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use scalify_store::notify::PushSubscription;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::p256::PublicKey;

use crate::Outcome;

/// How long a push service keeps a notification for a browser that is offline (the `TTL`
/// header), and how long the VAPID token is valid (RFC 8292 allows at most 24 hours).
const PUSH_TTL: Duration = Duration::from_secs(12 * 3600);

/// The node's VAPID key, and the contact the push services may write to (`sub`).
pub struct Vapid {
    key: ES256KeyPair,
    subject: String,
    public_key: String,
}

/// How a push service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Sent,
    /// `404`/`410`: the subscription expired or was revoked; it is removed.
    Gone,
    /// A `4xx` that retrying cannot change (a payload it cannot take, a bad key).
    Refused,
    /// Try again later (a network error, `429`, `5xx`).
    Failed,
}

impl From<PushOutcome> for Outcome {
    fn from(o: PushOutcome) -> Self {
        match o {
            PushOutcome::Sent => Outcome::Sent,
            PushOutcome::Gone | PushOutcome::Refused => Outcome::Refused,
            PushOutcome::Failed => Outcome::Failed,
        }
    }
}

impl Vapid {
    /// From a private key: base64url of the 32-byte P-256 scalar, or a PKCS#8 PEM.
    pub fn from_private_key(key: &str, subject: &str) -> anyhow::Result<Self> {
        let key = key.trim();
        let pair = if key.starts_with("-----BEGIN") {
            ES256KeyPair::from_pem(key)
        } else {
            let raw = URL_SAFE_NO_PAD
                .decode(key.trim_end_matches('='))
                .map_err(|_| {
                    anyhow::anyhow!("the VAPID private key is neither base64url nor PEM")
                })?;
            ES256KeyPair::from_bytes(&raw)
        }
        .map_err(|e| {
            anyhow::anyhow!(
                "the VAPID private key is not a P-256 key (PEM: PKCS#8, `BEGIN PRIVATE KEY`): {e}"
            )
        })?;
        Self::new(pair, subject)
    }

    fn new(key: ES256KeyPair, subject: &str) -> anyhow::Result<Self> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            anyhow::bail!("vapid_subject must be a mailto: or https:// URL (RFC 8292)");
        }
        let public_key =
            URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
        Ok(Vapid {
            key,
            subject: subject.to_owned(),
            public_key,
        })
    }

    /// The key in `path` (base64url), generated there (readable by its owner only) if the
    /// file does not exist.
    pub fn load_or_generate(path: &Path, subject: &str) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(key) => Self::from_private_key(&key, subject)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ES256KeyPair::generate();
                write_private(path, &URL_SAFE_NO_PAD.encode(key.to_bytes()))?;
                tracing::warn!(path = %path.display(), "generated a VAPID key for Web Push into the data directory");
                Self::new(key, subject)
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// The public key (uncompressed point, base64url): the browsers' `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header for a post to `endpoint` (RFC 8292 §3): a JWT whose `aud` is
    /// the endpoint's origin, and the public key.
    pub fn authorization(&self, endpoint: &reqwest::Url) -> anyhow::Result<String> {
        let origin = endpoint.origin().ascii_serialization();
        let claims = Claims::create(PUSH_TTL.into())
            .with_audience(origin)
            .with_subject(&self.subject);
        let token = self
            .key
            .sign(claims)
            .map_err(|e| anyhow::anyhow!("cannot sign the VAPID token: {e}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }

    pub(crate) async fn post(
        &self,
        http: &reqwest::Client,
        sub: &PushSubscription,
        body: &str,
    ) -> PushOutcome {
        let request = match self.request(sub, body) {
            Ok(r) => r,
            Err(RequestError::Subscription(e)) => {
                tracing::info!(error = %e, "a push subscription cannot be used; removed");
                return PushOutcome::Gone;
            }
            Err(RequestError::Ours(e)) => {
                tracing::warn!(error = %e, "cannot make a push request");
                return PushOutcome::Failed;
            }
        };
        match http.execute(request).await {
            Ok(r) if r.status().is_success() => PushOutcome::Sent,
            Ok(r) => match r.status().as_u16() {
                404 | 410 => PushOutcome::Gone,
                408 | 429 | 500..=599 => PushOutcome::Failed,
                s => {
                    tracing::info!(status = s, "a push service refused a notification");
                    PushOutcome::Refused
                }
            },
            Err(e) => {
                // The endpoint is a capability: kept out of the logs.
                tracing::debug!(error = %e.without_url(), "push service unreachable");
                PushOutcome::Failed
            }
        }
    }

    /// The encrypted post for `sub`.
    fn request(
        &self,
        sub: &PushSubscription,
        body: &str,
    ) -> Result<reqwest::Request, RequestError> {
        use RequestError::{Ours, Subscription};
        let bad = |e: String| Subscription(e);
        let url = reqwest::Url::parse(&sub.endpoint).map_err(|e| bad(format!("endpoint: {e}")))?;
        let p256dh = URL_SAFE_NO_PAD
            .decode(sub.p256dh.trim_end_matches('='))
            .map_err(|e| bad(format!("p256dh: {e}")))?;
        let ua_public =
            PublicKey::from_sec1_bytes(&p256dh).map_err(|e| bad(format!("p256dh: {e}")))?;
        let auth = URL_SAFE_NO_PAD
            .decode(sub.auth.trim_end_matches('='))
            .map_err(|e| bad(format!("auth: {e}")))?;
        if auth.len() != 16 {
            return Err(bad("auth is not 16 bytes".into()));
        }
        let auth = web_push_native::Auth::clone_from_slice(&auth);
        let payload = web_push_native::encrypt(body.as_bytes().to_vec(), &ua_public, &auth)
            .map_err(|e| Ours(format!("encrypting: {e}")))?;
        let authorization = self
            .authorization(&url)
            .map_err(|e| Ours(e.to_string()))?
            .parse()
            .map_err(|_| Ours("the VAPID header is not a header value".into()))?;
        let mut request = reqwest::Request::new(reqwest::Method::POST, url);
        let headers = request.headers_mut();
        headers.insert("TTL", PUSH_TTL.as_secs().into());
        headers.insert(
            "Urgency",
            reqwest::header::HeaderValue::from_static("normal"),
        );
        headers.insert(
            reqwest::header::CONTENT_ENCODING,
            reqwest::header::HeaderValue::from_static("aes128gcm"),
        );
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(reqwest::header::AUTHORIZATION, authorization);
        *request.body_mut() = Some(payload.into());
        Ok(request)
    }
}

/// Why a push request could not be made: the subscription is unusable (removed), or the
/// fault is this node's (tried again).
enum RequestError {
    Subscription(String),
    Ours(String),
}

/// Resolves a push service's host to its public addresses only: a name that answers with a
/// private address (by design or by rebinding after the subscription was checked) gets no
/// connection.
pub(crate) struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| scalify_core::is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_generated_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("scalify-vapid-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("vapid-private-key");
        let first = Vapid::load_or_generate(&path, "mailto:ops@example.com").expect("generated");
        let again = Vapid::load_or_generate(&path, "mailto:ops@example.com").expect("read");
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(first.public_key())
                .map(|k| k.len())
                .ok(),
            Some(65)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pkcs8_pem_and_a_base64url_scalar_are_accepted_and_agree() {
        // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
        let pem = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgW58NRKVbFAA0TBFR
XbTsXU9bkB9A9oJ2iQ1jSBa5RxqhRANCAASQz0q4PiF+NIhglJ94JJbj4BoGgTS+
AfaU9eGPXkQ5ZbPUmqMRwuaHOcCtJtqvFRiXLvYqh/0iewWjhBC6TB+d
-----END PRIVATE KEY-----
";
        let from_pem = Vapid::from_private_key(pem, "mailto:ops@example.com").expect("a PEM");
        let raw = URL_SAFE_NO_PAD.encode(from_pem.key.to_bytes());
        let from_raw = Vapid::from_private_key(&raw, "mailto:ops@example.com").expect("base64url");
        assert_eq!(from_pem.public_key(), from_raw.public_key());
        assert!(Vapid::from_private_key("not a key", "mailto:ops@example.com").is_err());
    }

    #[test]
    fn the_vapid_audience_is_the_endpoints_origin_with_its_port() {
        let v = Vapid::new(ES256KeyPair::generate(), "mailto:ops@example.com").expect("key");
        let url = reqwest::Url::parse("http://127.0.0.1:8123/push/abc").expect("url");
        let header = v.authorization(&url).expect("signed");
        let token = header
            .strip_prefix("vapid t=")
            .and_then(|h| h.split(',').next())
            .expect("a token");
        let claims = v
            .key
            .public_key()
            .verify_token::<web_push_native::jwt_simple::claims::NoCustomClaims>(token, None)
            .expect("verifies");
        assert!(claims
            .audiences
            .is_some_and(|a| a.contains(&std::collections::HashSet::from([
                "http://127.0.0.1:8123".to_string()
            ]))));
        assert!(Vapid::new(ES256KeyPair::generate(), "ops@example.com").is_err());
    }
}
