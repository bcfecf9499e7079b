//! Web Push subscriptions (RFC 8030): a browser hands its push service's endpoint and the
//! keys its notifications are encrypted to (RFC 8291); the node's notifier posts there when
//! its user is away. The node's VAPID key (RFC 8292) signs those posts; browsers subscribe
//! with its public half.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use scalify_store::notify::{NotifyStore, PushSubscription};

use super::*;

/// Longest endpoint accepted (push services' URLs are a few hundred bytes).
pub const MAX_ENDPOINT_BYTES: usize = 1024;

/// How a node offers Web Push.
#[derive(Clone)]
pub struct PushConfig {
    pub store: Arc<dyn NotifyStore>,
    /// The VAPID public key, an uncompressed P-256 point in base64url: the browser's
    /// `applicationServerKey`.
    pub vapid_public_key: String,
    /// Endpoints may be plain `http://` and name private or loopback hosts (a push service
    /// inside the operator's network, or a test's). Off, an endpoint is `https://` on a
    /// public name, so users cannot make the node post into its own network.
    pub allow_private_endpoints: bool,
}

/// The keys of a subscription as the browser gives them (`PushSubscription.toJSON().keys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

impl Chat {
    /// Offers Web Push on this node; set once, when the node is assembled.
    pub fn enable_push(&self, config: PushConfig) {
        let _ = self.push.set(config);
    }

    fn push(&self) -> Result<&PushConfig, ChatError> {
        self.push.get().ok_or_else(|| {
            ChatError::not_found(
                "Web Push is not enabled on this server (see docs/notifications.md)",
            )
        })
    }

    /// The key browsers subscribe with.
    pub fn vapid_public_key(&self) -> Result<String, ChatError> {
        Ok(self.push()?.vapid_public_key.clone())
    }

    /// Subscribes `user`'s browser at `endpoint`.
    pub async fn subscribe_push(
        &self,
        user: &UserRef,
        endpoint: &str,
        keys: &PushKeys,
    ) -> Result<(), ChatError> {
        self.charge(user, Cost::One)?;
        let push = self.push()?;
        let endpoint = check_endpoint(endpoint, push.allow_private_endpoints)?;
        check_key(&keys.p256dh, "keys.p256dh", |k| k.len() == 65 && k[0] == 4)?;
        check_key(&keys.auth, "keys.auth", |k| k.len() == 16)?;
        push.store
            .subscribe_push(
                user.id,
                &PushSubscription {
                    endpoint,
                    p256dh: keys.p256dh.clone(),
                    auth: keys.auth.clone(),
                },
            )
            .await
            .map_err(store_error)
    }

    /// Removes `user`'s subscription at `endpoint`; false if they had none there.
    pub async fn unsubscribe_push(
        &self,
        user: &UserRef,
        endpoint: &str,
    ) -> Result<bool, ChatError> {
        self.charge(user, Cost::One)?;
        let push = self.push()?;
        if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(ChatError::bad_request("endpoint is missing or too long"));
        }
        push.store
            .unsubscribe_push(Some(user.id), &normalized(endpoint))
            .await
            .map_err(store_error)
    }

    /// Which of `users` have a connection open on some node.
    pub async fn connected_anywhere(&self, users: &[Id]) -> Result<Vec<bool>, ChatError> {
        let inboxes: Vec<RoomName> = users.iter().map(|u| RoomName::inbox(*u)).collect();
        self.fanout.watched_anywhere(&inboxes).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot tell who is connected");
            ChatError::internal()
        })
    }

    /// Up to `limit` stored messages of `room` after `seq`, oldest first (the notifier's
    /// read; no member check).
    pub async fn stored_after(
        &self,
        room: &Room,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<Message>, ChatError> {
        self.store
            .after(room, seq, limit)
            .await
            .map_err(store_error)
    }
}

fn check_key(value: &str, field: &str, ok: impl Fn(&[u8]) -> bool) -> Result<(), ChatError> {
    match URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')) {
        Ok(k) if ok(&k) => Ok(()),
        _ => Err(ChatError::bad_request(format!(
            "{field} is not a key the browser gave (base64url, RFC 8291)"
        ))),
    }
}

/// An endpoint is an absolute `https://` URL on a public host (see
/// [`PushConfig::allow_private_endpoints`]); returns it as the HTTP client will read it
/// (WHATWG URL rules), which is what is checked and stored.
fn check_endpoint(endpoint: &str, allow_private: bool) -> Result<String, ChatError> {
    let bad = |why: &str| Err(ChatError::bad_request(format!("endpoint {why}")));
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return bad("is too long");
    }
    let Ok(url) = url::Url::parse(endpoint) else {
        return bad("must be a URL");
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return bad("must be an https:// URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry credentials");
    }
    let public = match url.host() {
        None => return bad("must name a host"),
        Some(url::Host::Ipv4(ip)) => scalify_core::is_public_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => scalify_core::is_public_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name.contains('.')
                && ![
                    "localhost",
                    "local",
                    "internal",
                    "localdomain",
                    "home.arpa",
                    "lan",
                ]
                .iter()
                .any(|tld| name == *tld || name.ends_with(&format!(".{tld}")))
        }
    };
    if !public && !allow_private {
        return bad("must be on a public host");
    }
    let normalized = url.to_string();
    if normalized.len() > MAX_ENDPOINT_BYTES {
        return bad("is too long");
    }
    Ok(normalized)
}

/// `endpoint` as [`check_endpoint`] stores it, or as given if it is no URL.
fn normalized(endpoint: &str) -> String {
    url::Url::parse(endpoint).map_or_else(|_| endpoint.to_owned(), |u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_on_public_hosts_unless_private_ones_are_allowed() {
        let ok = "https://fcm.googleapis.com/fcm/send/abc:def";
        assert_eq!(check_endpoint(ok, false).ok().as_deref(), Some(ok));
        assert_eq!(
            check_endpoint("https://Push.Example.COM/a%20b", false)
                .ok()
                .as_deref(),
            Some("https://push.example.com/a%20b")
        );
        for bad in [
            "http://push.example.com/x",
            "https://127.0.0.1/x",
            "https://127.1/x",
            "https://0177.0.0.1/x",
            "https://0x7f.0.0.1/x",
            "https://2130706433/x",
            "https://127.0.0.1./x",
            "https://%31%32%37.0.0.1/x",
            "https://127.0.0.1\\x.example.com/",
            "https://100.100.100.200/latest/meta-data",
            "https://169.254.169.254/x",
            "https://10.1.2.3:8443/x",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[64:ff9b::a00:1]/x",
            "https://localhost/x",
            "https://LOCALHOST./x",
            "https://db.internal/x",
            "https://printer.local/x",
            "https://intranet/x",
            "https://user@push.example.com/x",
            "https://user:pw@push.example.com/x",
            "ftp://push.example.com/x",
            "",
        ] {
            assert!(check_endpoint(bad, false).is_err(), "{bad} was accepted");
        }
        assert!(check_endpoint("http://127.0.0.1:9999/push/1", true).is_ok());
        assert!(check_endpoint("ftp://127.0.0.1/x", true).is_err());
    }

    #[test]
    fn keys_must_be_what_a_browser_gives() {
        let p256dh = URL_SAFE_NO_PAD.encode([4u8; 65]);
        assert!(check_key(&p256dh, "p", |k| k.len() == 65 && k[0] == 4).is_ok());
        assert!(check_key("not base64!", "p", |_| true).is_err());
        let short = URL_SAFE_NO_PAD.encode([4u8; 64]);
        assert!(check_key(&short, "p", |k| k.len() == 65).is_err());
    }
}
