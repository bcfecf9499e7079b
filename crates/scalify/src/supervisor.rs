//! The node's background work and the one owner of its life.
//!
//! Every long-running piece of a node that is not a request — the presence keeper, the
//! broadcaster of late-confirmed messages, a persister (with its watchdog) and its status
//! announcer, a persister's HTTP endpoints — is a [`Service`], started by the node's
//! [`Supervisor`], which logs and counts a failure (`scalify_service_failures_total{service}`)
//! and stops them all on the one graceful-shutdown path ([`Supervisor::shutdown`]).
//!
//! The engines' background tasks — the Redis fan-out's publisher and subscriber, the Kafka
//! producer's report pump — run on the supervisor's [`Supervisor::tasks`] too. They are not
//! services because they must outlive them: the services stop first (a persister writes what
//! it has read, a late confirmation is broadcast), then the engines close, which ends their
//! tasks, and the supervisor waits for those last. The writers behind the stores (a SQLite
//! thread, the PostgreSQL and Redis-ledger pipeliners) are each a store's connection rather
//! than work of the node: they end when their store is dropped.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for the engines' tasks once the engines are closed.
const ENGINE_TASKS_GRACE: Duration = Duration::from_secs(5);

/// A long-running piece of a node.
#[async_trait]
pub trait Service: Send + 'static {
    /// How logs and metrics name it.
    fn name(&self) -> &'static str;
    /// Runs until `cancel` is cancelled (then finishes its work in hand and returns), or until
    /// it has nothing left to do.
    async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()>;
}

/// Starts [`Service`]s and the engines' tasks, and stops them together.
pub struct Supervisor {
    services: JoinSet<()>,
    cancel: CancellationToken,
    engine_tasks: TaskTracker,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor {
            services: JoinSet::new(),
            cancel: CancellationToken::new(),
            engine_tasks: TaskTracker::new(),
        }
    }

    /// Where the engines run their background tasks. Each such task ends by itself when its
    /// engine is closed.
    pub fn tasks(&self) -> &TaskTracker {
        &self.engine_tasks
    }

    /// Runs `service` until [`Supervisor::shutdown`]. A service that fails is logged and
    /// counted; the node keeps serving (a failed service is not restarted: the ones that can
    /// recover — the persister re-creating its consumer — do so inside).
    pub fn start(&mut self, service: Box<dyn Service>) {
        let name = service.name();
        let cancel = self.cancel.child_token();
        self.services.spawn(async move {
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

    /// Stops every service and waits until each has returned; then closes the engines
    /// (`close_engines`) and waits for the engines' tasks to end.
    pub async fn shutdown(mut self, close_engines: impl Future<Output = ()>) {
        self.cancel.cancel();
        while let Some(ended) = self.services.join_next().await {
            if let Err(e) = ended {
                metrics::counter!("scalify_service_failures_total", "service" => "panicked")
                    .increment(1);
                tracing::error!(error = %e, "a service panicked");
            }
        }
        close_engines.await;
        self.engine_tasks.close();
        if tokio::time::timeout(ENGINE_TASKS_GRACE, self.engine_tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                running = self.engine_tasks.len(),
                "engine tasks still running after their engines closed"
            );
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
        s.shutdown(async {}).await;
        assert_eq!(stopped.load(Ordering::SeqCst), 2);
    }

    /// The engines close after the services stop, and their tasks are waited for after that:
    /// a task that ends only when its engine closes is neither cut short nor left running.
    #[tokio::test]
    async fn engine_tasks_end_after_the_services_and_the_engines() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut s = Supervisor::new();
        let engine = CancellationToken::new();
        let (closed, task_order) = (engine.clone(), order.clone());
        s.tasks().spawn(async move {
            closed.cancelled().await;
            task_order.lock().unwrap().push("engine task");
        });
        struct Recording(Arc<std::sync::Mutex<Vec<&'static str>>>);
        #[async_trait]
        impl Service for Recording {
            fn name(&self) -> &'static str {
                "recording"
            }
            async fn run(self: Box<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
                cancel.cancelled().await;
                self.0.lock().unwrap().push("service");
                Ok(())
            }
        }
        s.start(Box::new(Recording(order.clone())));
        tokio::task::yield_now().await;
        let close_order = order.clone();
        s.shutdown(async move {
            close_order.lock().unwrap().push("engines closed");
            engine.cancel();
        })
        .await;
        assert_eq!(
            *order.lock().unwrap(),
            ["service", "engines closed", "engine task"]
        );
    }
}
