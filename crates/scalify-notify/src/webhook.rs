//! The operator's webhook: each notification is POSTed as JSON (a
//! [`crate::summary::Summary`]), signed so the receiver knows it comes from this cluster.
//!
//! - `X-Scalify-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body with the shared secret
//!   (`SCALIFY_NOTIFY_WEBHOOK_SECRET`), as GitHub and Stripe sign theirs;
//! - `X-Scalify-Delivery: <id>`: the notification's id, the same on every retry — a receiver
//!   that sees an id twice has already handled it;
//! - `X-Scalify-Attempt: <n>`.
//!
//! Any `2xx` is success; anything else, or no answer within [`crate::REQUEST_TIMEOUT`], is
//! tried again later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Outcome;

/// Shortest secret accepted: 16 bytes, so the signature cannot be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

/// Where notifications are posted, and the secret they are signed with.
pub struct Webhook {
    url: reqwest::Url,
    secret: Vec<u8>,
}

impl Webhook {
    pub fn new(url: &str, secret: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("notify_webhook_url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("notify_webhook_url must be http:// or https://");
        }
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "SCALIFY_NOTIFY_WEBHOOK_SECRET must be set, at least {MIN_SECRET_BYTES} bytes, when notify_webhook_url is"
            );
        }
        Ok(Webhook {
            url,
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// `sha256=<hex of HMAC-SHA256(secret, body)>`.
    pub fn signature(&self, body: &str) -> String {
        signature(&self.secret, body.as_bytes())
    }

    pub(crate) async fn post(
        &self,
        http: &reqwest::Client,
        id: &str,
        attempt: u32,
        body: &str,
    ) -> Outcome {
        let sent = http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Scalify-Signature", self.signature(body))
            .header("X-Scalify-Delivery", id)
            .header("X-Scalify-Attempt", attempt.to_string())
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Sent,
            Ok(r) => {
                tracing::debug!(status = %r.status(), id, "webhook refused a notification");
                Outcome::Failed
            }
            Err(e) => {
                // The URL may carry a token: kept out of the logs.
                tracing::debug!(error = %e.without_url(), id, "webhook unreachable");
                Outcome::Failed
            }
        }
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_webhook_needs_a_url_and_a_long_enough_secret() {
        assert!(Webhook::new("https://ops.example.com/hook", "0123456789abcdef").is_ok());
        assert!(Webhook::new("https://ops.example.com/hook", "short").is_err());
        assert!(Webhook::new("ftp://ops.example.com/hook", "0123456789abcdef").is_err());
        assert!(Webhook::new("not a url", "0123456789abcdef").is_err());
    }
}
