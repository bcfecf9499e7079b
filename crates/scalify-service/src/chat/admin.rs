//! Administration: the node status and the cluster overview of the admin dashboard.

use super::*;

impl Chat {
    /// Admins are the accounts `--admins` named when the node started, and those granted the
    /// role in the store (`scalify admin grant`); both by user id, never by a name someone
    /// could register.
    pub async fn is_admin(&self, user: &UserRef) -> Result<bool, ChatError> {
        let named = self
            .config_admins
            .read()
            .map(|ids| ids.contains(&user.id))
            .unwrap_or(false);
        if named {
            return Ok(true);
        }
        self.store.is_admin(user.id).await.map_err(store_error)
    }

    /// Binds each name of `--admins` to the account that holds it now, by user id. A name
    /// with no account is an error, and so the node does not start: were it ignored, whoever
    /// registered the name before a later restart would become an admin.
    pub async fn resolve_admins(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        for name in &self.config.admins {
            let username = Username::parse(name).map_err(|e| {
                format!("--admins: '{name}' is not a valid username: {}", e.message)
            })?;
            match self.store.user_by_name(&username).await {
                Ok(Some(user)) => {
                    tracing::info!(name = %user.username, user = %user.id, "--admins: admin role for this account");
                    ids.insert(user.id);
                }
                Ok(None) => {
                    return Err(format!(
                        "--admins names '{name}', which is no account: register it first (start without it), or grant the role to an existing account with `scalify admin grant`"
                    ))
                }
                Err(e) => return Err(format!("--admins: cannot look '{name}' up: {e}")),
            }
        }
        if let Ok(mut admins) = self.config_admins.write() {
            *admins = ids;
        }
        Ok(())
    }

    pub fn node_status(&self) -> NodeStatus {
        let now = unix_secs();
        NodeStatus {
            node: self.node.clone(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            connections: self.inboxes.connection_count(),
            users: self.inboxes.room_count(),
            rooms: self.presence.room_count(),
            messages_per_sec: self.activity.rate(now, 10),
            busiest: self.activity.busiest(now, 10),
        }
    }

    /// The admin dashboard's data; `forbidden` unless `user` is an admin.
    pub async fn overview(&self, user: &UserRef) -> Result<Overview, ChatError> {
        if !self.is_admin(user).await? {
            return Err(ChatError::forbidden(
                "the admin dashboard is for admins only",
            ));
        }
        let me = self.node_status();
        let mut nodes = vec![me.clone()];
        if let Some(cluster) = &self.cluster {
            match cluster.registry.nodes().await {
                Ok(others) => nodes.extend(others.into_iter().filter(|n| n.node != me.node)),
                Err(e) => tracing::warn!(error = %e, "cannot list the cluster's nodes"),
            }
        }
        nodes.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.node.cmp(&b.node)));
        let mut persisters = Vec::new();
        if let Some(cluster) = &self.cluster {
            match cluster.registry.persisters().await {
                Ok(all) => persisters = all,
                Err(e) => tracing::warn!(error = %e, "cannot list the persisters"),
            }
        }
        persisters.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Overview {
            node: me.node,
            messages_per_sec: nodes.iter().map(|n| n.messages_per_sec).sum(),
            busiest: merge_busiest(nodes.iter().map(|n| n.busiest.clone()), 10),
            nodes,
            checks: self.readiness().await,
            persisters,
        })
    }
}
