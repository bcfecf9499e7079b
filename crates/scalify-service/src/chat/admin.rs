//! Administration: the node status and the cluster overview of the admin dashboard.

use super::*;

impl Chat {
    /// Admins are named in the configuration or granted in the store.
    pub async fn is_admin(&self, user: &UserRef) -> Result<bool, ChatError> {
        if self.config.admins.iter().any(|a| a == &user.username) {
            return Ok(true);
        }
        self.store.is_admin(user.id).await.map_err(store_error)
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
