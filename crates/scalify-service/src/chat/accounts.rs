//! Accounts: registration, sign-in and sign-out, password changes, deletion — and the throttles
//! that keep password guessing and mass registration slow (see [`ThrottleConfig`]).
//!
//! A token names a session, and is good while the session exists in the store: signing out
//! ends it, and every connection of an ended session, on any node, is closed at once (the
//! control-room event [`EventKind::SessionsEnded`], which every node receives).
//!
//! Every sign-in attempt is counted before its password is checked and taken back if it
//! succeeds, so parallel guesses cannot all pass before the first failure is recorded; a
//! throttled attempt is refused before any hashing, so a flood of them costs the server almost
//! nothing. The audit trail (target `audit`) has one line per account event.

use std::net::IpAddr;

use scalify_core::ErrorCode;
use scalify_store::EndSessions;

use super::*;

/// A verified token: its user and session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub user: UserRef,
    pub session: String,
}

impl Chat {
    /// Creates an account for a client at address `from`, signed in.
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
        let hash = match self.hash(password).await {
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
        let user = UserRef::from(user);
        tracing::info!(target: "audit", event = "register", user = %user.id, name = %user.username, %from);
        self.start_session(user).await
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
        let user = self.check_password(username, password, from).await?;
        tracing::info!(target: "audit", event = "login", user = %user.id, name = %user.username, %from);
        self.start_session(user).await
    }

    /// The user and session a token names, if its signature holds — without asking the store
    /// whether the session still exists ([`Chat::check_session`] does).
    pub fn token_claims(&self, token: &str) -> Result<Authenticated, ChatError> {
        let (user, session) = self.auth.verify(token)?;
        Ok(Authenticated { user, session })
    }

    /// Whether the session is still open (not signed out, not expired, account not deleted).
    /// While the store cannot be reached, a session this node verified within
    /// ten minutes (`SESSION_GRACE`) counts as open.
    pub async fn check_session(&self, a: &Authenticated) -> Result<(), ChatError> {
        let verified = || {
            self.verified_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        match self
            .store
            .session_user(&a.session, scalify_core::now_ms())
            .await
        {
            Ok(Some(user)) if user == a.user.id => {
                let now = std::time::Instant::now();
                let mut verified = verified();
                match verified.get_mut(&a.session) {
                    Some(seen) => seen.1 = now,
                    None => insert_bounded(&mut verified, a.session.clone(), (user, now)),
                }
                Ok(())
            }
            Ok(_) => {
                verified().remove(&a.session);
                Err(ChatError::unauthorized())
            }
            Err(e @ (StoreError::Unavailable(_) | StoreError::Backend(_))) => {
                let recent = verified()
                    .get(&a.session)
                    .is_some_and(|(user, at)| *user == a.user.id && at.elapsed() < SESSION_GRACE);
                if recent {
                    tracing::debug!(error = %e, "store unreachable; session verified recently");
                    Ok(())
                } else {
                    Err(store_error(e))
                }
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Forgets sessions that ended (on this node or another): they no longer count as
    /// verified while the store cannot be reached.
    pub fn forget_sessions(&self, sessions: &[String]) {
        let mut verified = self
            .verified_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for s in sessions {
            verified.remove(s);
        }
    }

    /// The user and session of a bearer token whose session is open.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, ChatError> {
        let a = self.token_claims(token)?;
        self.check_session(&a).await?;
        Ok(a)
    }

    /// Signs out: the session ends, and its connections on every node close.
    pub async fn logout(&self, a: &Authenticated) -> Result<(), ChatError> {
        let ended = self
            .store
            .end_sessions(a.user.id, EndSessions::One(a.session.clone()))
            .await
            .map_err(store_error)?;
        tracing::info!(target: "audit", event = "logout", user = %a.user.id, name = %a.user.username);
        self.close_sessions(ended).await;
        Ok(())
    }

    /// Signs out everywhere: every session of the user ends, this one too.
    pub async fn logout_all(&self, a: &Authenticated) -> Result<(), ChatError> {
        let ended = self
            .store
            .end_sessions(a.user.id, EndSessions::All)
            .await
            .map_err(store_error)?;
        tracing::info!(target: "audit", event = "logout_all", user = %a.user.id, name = %a.user.username, sessions = ended.len());
        self.close_sessions(ended).await;
        Ok(())
    }

    /// Changes the password, given the current one (throttled like a sign-in); every other
    /// session of the user ends, this one stays.
    pub async fn change_password(
        &self,
        a: &Authenticated,
        current: &str,
        new: &str,
        from: IpAddr,
    ) -> Result<(), ChatError> {
        let new = Password::parse(new)?;
        self.check_password(&a.user.username, current, from).await?;
        let hash = self.hash(new).await?;
        if !self
            .store
            .set_password(a.user.id, &hash)
            .await
            .map_err(store_error)?
        {
            return Err(ChatError::unauthorized());
        }
        let ended = self
            .store
            .end_sessions(a.user.id, EndSessions::AllBut(a.session.clone()))
            .await
            .map_err(store_error)?;
        tracing::info!(target: "audit", event = "password_changed", user = %a.user.id, name = %a.user.username, %from, sessions_ended = ended.len());
        self.close_sessions(ended).await;
        Ok(())
    }

    /// Deletes the account, given its password (throttled like a sign-in): every session ends
    /// and its connections close; the name stays taken; the messages stay.
    pub async fn delete_account(
        &self,
        a: &Authenticated,
        password: &str,
        from: IpAddr,
    ) -> Result<(), ChatError> {
        self.check_password(&a.user.username, password, from)
            .await?;
        let ended = self
            .store
            .delete_user(a.user.id)
            .await
            .map_err(store_error)?;
        tracing::info!(target: "audit", event = "account_deleted", user = %a.user.id, name = %a.user.username, %from);
        self.close_sessions(ended).await;
        Ok(())
    }

    async fn start_session(&self, user: UserRef) -> Result<Session, ChatError> {
        let session = Id::new().to_string();
        let ttl_ms = i64::try_from(self.auth.token_ttl().as_millis()).unwrap_or(i64::MAX);
        let expires_at = scalify_core::now_ms().saturating_add(ttl_ms);
        self.store
            .create_session(user.id, &session, expires_at)
            .await
            .map_err(store_error)?;
        Ok(Session {
            token: self.auth.issue(&user, &session)?,
            user,
        })
    }

    /// Tells every node to close the connections of the ended sessions (and forget them).
    async fn close_sessions(&self, sessions: Vec<String>) {
        if sessions.is_empty() {
            return;
        }
        self.forget_sessions(&sessions);
        let payload = serde_json::json!({ "sessions": sessions });
        self.publish(
            RoomName::control(),
            EventKind::SessionsEnded,
            &payload,
            None,
        )
        .await;
    }

    /// Hashes a new password in a hashing slot.
    async fn hash(&self, password: Password) -> Result<String, ChatError> {
        let auth = self.auth.clone();
        let _slot = self.hashing.enter().await?;
        tokio::task::spawn_blocking(move || auth.hash_password(password.expose()))
            .await
            .map_err(|_| ChatError::internal())?
    }

    /// Checks a user's password under the sign-in throttles (per account and per client
    /// address): the user, or `unauthorized` / `rate_limited`.
    async fn check_password(
        &self,
        username: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<UserRef, ChatError> {
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
        let result = self.verify_credentials(name.as_ref(), password).await;
        match &result {
            Ok(_) => {
                if let Some(key) = &account {
                    self.take_back(key, true).await;
                }
                self.take_back(&address, false).await;
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

    async fn verify_credentials(
        &self,
        name: Option<&Username>,
        password: &str,
    ) -> Result<UserRef, ChatError> {
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
            Some(c) if ok => Ok(c.user.into()),
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
}
