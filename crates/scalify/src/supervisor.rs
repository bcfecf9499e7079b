//! The node's background services and the one owner of their lives.
//!
//! Every long-running piece of a node that is not a request — the presence keeper, the
//! broadcaster of late-confirmed messages, a persister and its status announcer, a persister's
//! HTTP endpoints — is a [`Service`], started by the node's [`Supervisor`], which logs and
//! counts a failure (`scalify_service_failures_total{service}`) and stops them all on the one
//! graceful-shutdown path ([`Supervisor::shutdown`]).
//!
//! An engine's own I/O tasks (the SQLite and PostgreSQL writers, the Redis publisher and
//! subscriber, the Kafka producer's report pump and the ledger's pipeliner) are not services:
//! each belongs to its engine, lives exactly as long as it, and ends when the engine is closed
//! or dropped.

use async_trait::async_trait;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A long-running piece of a node.
#[async_trait]
pub trait Service: Send + 'static {
    /// How logs and metrics name it.
    fn name(&self) -> &'static str;
    /// Runs until `cancel` is cancelled (then finishes its work in hand and returns), or until
    /// it has nothing left to do.
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()>;
}

/// Starts [`Service`]s and stops them together.
pub struct Supervisor {
    tasks: JoinSet<()>,
    cancel: CancellationToken,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Runs `service` until [`Supervisor::shutdown`]. A service that fails is logged and
    /// counted; the node keeps serving (a failed service is not restarted: the ones that can
    /// recover — the persister re-creating its consumer — do so inside).
    pub fn start(&mut self, service: Box<dyn Service>) {
        let name = service.name();
        let cancel = self.cancel.child_token();
        self.tasks.spawn(async move {
            tracing::debug!(service = name, "service started");
            match service.run(cancel).await {
                Ok(()) => tracing::debug!(service = name, "service stopped"),
                Err(e) => {
                    metrics::counter!("scalify_service_failures_total", "service" => name)
                        .increment(1);
                    tracing::error!(service = name, error = %format!("{e:#}"), "service failed");
                }
            }
        });
    }

    /// Stops every service and waits until each has returned.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(e) = ended {
                metrics::counter!("scalify_service_failures_total", "service" => "panicked")
                    .increment(1);
                tracing::error!(error = %e, "a service panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counting {
        stopped: Arc<AtomicUsize>,
        fail: bool,
    }

    #[async_trait]
    impl Service for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
            if self.fail {
                anyhow::bail!("broken");
            }
            cancel.cancelled().await;
            self.stopped.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn shutdown_stops_every_service_and_waits_for_it() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut s = Supervisor::new();
        for fail in [false, true, false] {
            s.start(Box::new(Counting {
                stopped: stopped.clone(),
                fail,
            }));
        }
        // A failed service does not stop the others.
        tokio::task::yield_now().await;
        s.shutdown().await;
        assert_eq!(stopped.load(Ordering::SeqCst), 2);
    }
}
