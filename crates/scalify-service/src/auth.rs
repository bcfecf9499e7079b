//! Passwords (argon2id) and session tokens (JWT, HS256 pinned).

use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};
use jsonwebtoken::{Algorithm as JwtAlg, DecodingKey, EncodingKey, Header, Validation};
use scalify_core::{now_ms, ChatError, Id, UserRef};
use serde::{Deserialize, Serialize};

/// OWASP's minimum for argon2id: 19 MiB of memory, 2 passes, 1 lane.
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;
const ISSUER: &str = "scalify";

pub struct Auth {
    argon2: Argon2<'static>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    token_ttl: Duration,
    /// A real hash of a random password: login for an unknown user verifies against it, so
    /// "no such user" costs the same time as "wrong password".
    dummy_hash: String,
}

/// The password-hashing slots. Each argon2id hash takes 19 MiB and tens of ms of CPU, so they
/// run a few at a time (one per core); a request waits for a slot only briefly, then is refused
/// (`rate_limited`, retry after a second): the queue cannot grow without bound, and a flood of
/// logins cannot make a real user wait for seconds behind it.
pub struct HashGate {
    slots: tokio::sync::Semaphore,
    wait: Duration,
}

impl HashGate {
    pub fn new(slots: usize, wait: Duration) -> Self {
        HashGate {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            wait,
        }
    }

    /// A slot, held while the permit lives.
    pub async fn enter(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ChatError> {
        match tokio::time::timeout(self.wait, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ChatError::internal()),
            Err(_) => {
                metrics::counter!("scalify_password_checks_refused_total").increment(1);
                Err(ChatError::new(
                    scalify_core::ErrorCode::RateLimited,
                    "the server is busy checking passwords; try again in a moment",
                )
                .retry_after_ms(1000))
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    /// The session the token belongs to: the token is good while the session exists.
    sid: String,
    iss: String,
    iat: i64,
    exp: i64,
}

impl Auth {
    /// `secret` signs tokens; it must be at least 32 bytes.
    pub fn new(secret: &[u8], token_ttl: Duration) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the token secret must be at least 32 bytes".into());
        }
        let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
            .map_err(|e| format!("argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(Id::new().to_string().as_bytes(), &salt)
            .map_err(|e| format!("argon2: {e}"))?
            .to_string();
        // Pinned to HS256: a token claiming any other algorithm (none, RS256, …) is rejected.
        let mut validation = Validation::new(JwtAlg::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        Ok(Auth {
            argon2,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            token_ttl,
            dummy_hash,
        })
    }

    /// Hashes a password. CPU-heavy (tens of ms): call from a blocking thread.
    pub fn hash_password(&self, password: &str) -> Result<String, ChatError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                ChatError::internal()
            })
    }

    /// Verifies a password against a stored hash, or against the dummy hash when the user does
    /// not exist (`None`), so both failures take the same time. CPU-heavy.
    pub fn verify_password(&self, password: &str, stored: Option<&str>) -> bool {
        let hash = stored.unwrap_or(&self.dummy_hash);
        let Ok(parsed) = PasswordHash::new(hash) else {
            tracing::error!("stored password hash is malformed");
            return false;
        };
        let ok = self
            .argon2
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && stored.is_some()
    }

    /// How long a token (and its session) lives.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// A token for `user`'s session `session`.
    pub fn issue(&self, user: &UserRef, session: &str) -> Result<String, ChatError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: user.id.to_string(),
            name: user.username.clone(),
            sid: session.to_owned(),
            iss: ISSUER.into(),
            iat: now,
            exp: now + self.token_ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::new(JwtAlg::HS256), &claims, &self.encoding).map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            ChatError::internal()
        })
    }

    /// The user and session a token names, if its signature, algorithm, issuer and expiry
    /// check out (whether the session still exists is the store's to say).
    pub fn verify(&self, token: &str) -> Result<(UserRef, String), ChatError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ChatError::unauthorized())?;
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ChatError::unauthorized())?;
        Ok((
            UserRef {
                id,
                username: data.claims.name,
            },
            data.claims.sid,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(ttl: u64) -> Auth {
        Auth::new(&[7u8; 32], Duration::from_secs(ttl)).unwrap()
    }

    #[tokio::test]
    async fn a_full_hash_gate_refuses_after_its_wait_instead_of_queueing() {
        let gate = HashGate::new(1, Duration::from_millis(20));
        let held = gate.enter().await.unwrap();
        let refused = gate.enter().await.unwrap_err();
        assert_eq!(refused.code, scalify_core::ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_secs, Some(1));
        drop(held);
        assert!(gate.enter().await.is_ok());
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let a = auth(60);
        let h = a.hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(a.verify_password("correct horse", Some(&h)));
        assert!(!a.verify_password("wrong horse", Some(&h)));
        assert!(!a.verify_password("correct horse", None));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let a = auth(60);
        let user = UserRef {
            id: Id::new(),
            username: "alice".into(),
        };
        let t = a.issue(&user, "s1").unwrap();
        assert_eq!(a.verify(&t).unwrap(), (user, "s1".to_owned()));
        let other = Auth::new(&[8u8; 32], Duration::from_secs(60)).unwrap();
        assert!(
            other.verify(&t).is_err(),
            "a token signed with another key passed"
        );
        assert!(a.verify("not.a.token").is_err());
    }

    #[test]
    fn alg_none_and_expired_tokens_are_rejected() {
        let a = auth(60);
        // Header {"alg":"none","typ":"JWT"}, claims for a fresh user, empty signature.
        let claims = format!(
            r#"{{"sub":"{}","name":"x","sid":"s","iss":"scalify","iat":0,"exp":99999999999}}"#,
            Id::new()
        );
        let b64 = |s: &str| {
            use base64_like::encode;
            encode(s.as_bytes())
        };
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert!(a.verify(&none).is_err());

        let expired = Auth::new(&[7u8; 32], Duration::from_secs(0)).unwrap();
        let user = UserRef {
            id: Id::new(),
            username: "alice".into(),
        };
        let mut claims = Claims {
            sub: user.id.to_string(),
            name: "alice".into(),
            sid: "s".into(),
            iss: ISSUER.into(),
            iat: 0,
            exp: 0,
        };
        // A token of an earlier version, without a session, is refused.
        #[derive(Serialize)]
        struct Sessionless<'a> {
            sub: &'a str,
            name: &'a str,
            iss: &'a str,
            iat: i64,
            exp: i64,
        }
        let old = Sessionless {
            sub: &claims.sub,
            name: "alice",
            iss: ISSUER,
            iat: 0,
            exp: 99_999_999_999,
        };
        let t = jsonwebtoken::encode(&Header::new(JwtAlg::HS256), &old, &a.encoding).unwrap();
        assert!(a.verify(&t).is_err());

        claims.exp = now_ms() / 1000 - 3600;
        let t =
            jsonwebtoken::encode(&Header::new(JwtAlg::HS256), &claims, &expired.encoding).unwrap();
        assert!(a.verify(&t).is_err());
    }

    /// Minimal unpadded base64url, enough to forge a test token.
    mod base64_like {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(input: &[u8]) -> String {
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
