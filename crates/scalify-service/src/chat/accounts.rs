//! Accounts: registration, login, the token a session carries — and the throttles that keep
//! password guessing and mass registration slow (see [`ThrottleConfig`]).
//!
//! Every attempt is counted before its password is checked and taken back if it succeeds, so
//! parallel guesses cannot all pass before the first failure is recorded; a throttled attempt
//! is refused before any hashing, so a flood of them costs the server almost nothing. The audit
//! trail (target `audit`) has one line per login, failed login and registration.

use std::net::IpAddr;

use scalify_core::ErrorCode;

use super::*;

impl Chat {
    /// Creates an account for a client at address `from`.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<Session, ChatError> {
        let username = Username::parse(username)?;
        let password = Password::parse(password)?;
        let address = format!("register:addr:{from}");
        self.admit_attempt(
            &address,
            &self.config.throttle.registrations_per_address,
            "too many registrations from this address",
        )
        .await?;
        let auth = self.auth.clone();
        let hashed = match self.hashing.enter().await {
            Ok(_slot) => tokio::task::spawn_blocking(move || auth.hash_password(password.expose()))
                .await
                .map_err(|_| ChatError::internal())
                .and_then(|h| h),
            Err(e) => Err(e),
        };
        let hash = match hashed {
            Ok(hash) => hash,
            Err(e) => {
                // The server's failure, not the client's attempt.
                self.take_back(&address, false).await;
                return Err(e);
            }
        };
        let user = self
            .store
            .create_user(&username, &hash)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => ChatError::conflict("username is taken"),
                other => store_error(other),
            })?;
        let user = UserRef {
            id: user.id,
            username: user.username.to_string(),
        };
        tracing::info!(target: "audit", event = "register", user = %user.id, name = %user.username, %from);
        Ok(Session {
            token: self.auth.issue(&user)?,
            user,
        })
    }

    /// Bad credentials answer `unauthorized` with one message, whether or not the user exists,
    /// and take the same time either way; too many of them answer `rate_limited` with the
    /// seconds to wait, again whether or not the user exists.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<Session, ChatError> {
        let name = Username::parse(username).ok();
        let throttle = &self.config.throttle;
        let slow_down = "too many failed logins";
        let account = name.as_ref().map(|n| format!("login:user:{n}"));
        let address = format!("login:addr:{from}");
        if let Some(key) = &account {
            self.admit_attempt(key, &throttle.login_per_account, slow_down)
                .await?;
        }
        if let Err(e) = self
            .admit_attempt(&address, &throttle.login_per_address, slow_down)
            .await
        {
            if let Some(key) = &account {
                self.take_back(key, false).await;
            }
            return Err(e);
        }
        let result = self.check_password(name.as_ref(), password).await;
        match &result {
            Ok(session) => {
                if let Some(key) = &account {
                    self.take_back(key, true).await;
                }
                self.take_back(&address, false).await;
                tracing::info!(target: "audit", event = "login", user = %session.user.id, name = %session.user.username, %from);
            }
            Err(e) if e.code == ErrorCode::Unauthorized => {
                metrics::counter!("scalify_logins_failed_total").increment(1);
                // The name as parsed only: what the client typed could forge log lines.
                let name = name.as_ref().map_or("(invalid)", |n| n.as_str());
                tracing::info!(target: "audit", event = "login_failed", name, %from);
            }
            Err(_) => {
                // Busy or broken: the server's failure, not the client's attempt.
                if let Some(key) = &account {
                    self.take_back(key, false).await;
                }
                self.take_back(&address, false).await;
            }
        }
        result
    }

    async fn check_password(
        &self,
        name: Option<&Username>,
        password: &str,
    ) -> Result<Session, ChatError> {
        let creds = match name {
            Some(name) => self.store.credentials(name).await.map_err(store_error)?,
            None => None,
        };
        let auth = self.auth.clone();
        let password = password.to_owned();
        let stored = creds.as_ref().map(|c| c.password_hash.clone());
        let ok = {
            let _slot = self.hashing.enter().await?;
            tokio::task::spawn_blocking(move || auth.verify_password(&password, stored.as_deref()))
                .await
                .map_err(|_| ChatError::internal())?
        };
        match creds {
            Some(c) if ok => {
                let user = UserRef {
                    id: c.user.id,
                    username: c.user.username.to_string(),
                };
                Ok(Session {
                    token: self.auth.issue(&user)?,
                    user,
                })
            }
            _ => Err(ChatError::new(
                ErrorCode::Unauthorized,
                "invalid username or password",
            )),
        }
    }

    /// Counts an attempt under `key`, or refuses it with the time to wait. When the cluster's
    /// log cannot be reached, this node's own log counts instead: throttling goes on per node
    /// rather than stopping, and logins do not fail because Redis does.
    async fn admit_attempt(
        &self,
        key: &str,
        policy: &Backoff,
        refusal: &str,
    ) -> Result<(), ChatError> {
        if policy.is_disabled() {
            return Ok(());
        }
        let admitted = match self.attempts.attempt(key, policy).await {
            Ok(admitted) => admitted,
            Err(e) => {
                tracing::warn!(error = %e, "attempt log unreachable; throttling on this node alone");
                self.local_attempts
                    .attempt(key, policy)
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        admitted.map_err(|wait_ms| {
            metrics::counter!("scalify_attempts_throttled_total").increment(1);
            ChatError::new(ErrorCode::RateLimited, refusal).retry_after_ms(wait_ms)
        })
    }

    async fn take_back(&self, key: &str, forget: bool) {
        if let Err(e) = self.attempts.take_back(key, forget).await {
            tracing::warn!(error = %e, "attempt log unreachable");
            let _ = self.local_attempts.take_back(key, forget).await;
        }
    }

    /// The user a bearer token names.
    pub fn authenticate(&self, token: &str) -> Result<UserRef, ChatError> {
        self.auth.verify(token)
    }
}
