//! Accounts: registration, login, the token a session carries.

use super::*;

impl Chat {
    pub async fn register(&self, username: &str, password: &str) -> Result<Session, ChatError> {
        let username = Username::parse(username)?;
        let password = Password::parse(password)?;
        let auth = self.auth.clone();
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ChatError::internal())?;
        let hash = tokio::task::spawn_blocking(move || auth.hash_password(password.expose()))
            .await
            .map_err(|_| ChatError::internal())??;
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
        Ok(Session {
            token: self.auth.issue(&user)?,
            user,
        })
    }

    /// Bad credentials answer `unauthorized` with one message, whether or not the user exists,
    /// and take the same time either way.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session, ChatError> {
        let bad = || {
            ChatError::new(
                scalify_core::ErrorCode::Unauthorized,
                "invalid username or password",
            )
        };
        let creds = match Username::parse(username) {
            Ok(name) => self.store.credentials(&name).await.map_err(store_error)?,
            Err(_) => None,
        };
        let auth = self.auth.clone();
        let password = password.to_owned();
        let stored = creds.as_ref().map(|c| c.password_hash.clone());
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ChatError::internal())?;
        let ok =
            tokio::task::spawn_blocking(move || auth.verify_password(&password, stored.as_deref()))
                .await
                .map_err(|_| ChatError::internal())?;
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
            _ => Err(bad()),
        }
    }

    /// The user a bearer token names.
    pub fn authenticate(&self, token: &str) -> Result<UserRef, ChatError> {
        self.auth.verify(token)
    }
}
