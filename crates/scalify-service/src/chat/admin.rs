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

    /// Binds each name of `--admins` to the account that holds it now. A name with no
    /// account is ignored, with a warning: the role would otherwise go to whoever registers
    /// the name first.
    pub async fn resolve_admins(&self) {
        let mut ids = HashSet::new();
        for name in &self.config.admins {
            let account = match Username::parse(name) {
                Ok(username) => self.store.user_by_name(&username).await,
                Err(e) => {
                    tracing::warn!(name = %name, error = %e.message, "--admins: not a valid username; ignored");
                    continue;
                }
            };
            match account {
                Ok(Some(user)) => {
                    tracing::info!(name = %user.username, user = %user.id, "--admins: admin role for this account");
                    ids.insert(user.id);
                }
                Ok(None) => tracing::warn!(
                    name = %name,
                    "--admins names no account: ignored (register it and restart, or grant the role with `scalify admin grant`)"
                ),
                Err(e) => {
                    tracing::warn!(name = %name, error = %e, "--admins: cannot look the account up; ignored")
                }
            }
        }
        if let Ok(mut admins) = self.config_admins.write() {
            *admins = ids;
        }
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
