//! Waiting for the services a node or a persister needs at start: a process started before
//! its services (a host booting, `docker compose up`, a restart during an outage) comes up when
//! they do, as a running node rides out their outages, instead of exiting.

use anyhow::Context;
use scalify_store::postgres::{PgConfig, PgStore};
use scalify_store::StoreError;

/// Why a start-up attempt to reach a service failed.
enum Unreached {
    /// Down, starting up or full: worth another attempt.
    ForNow(String),
    /// A wrong address, database, password: no use waiting.
    ForGood(anyhow::Error),
}

/// Runs `attempt` until it reaches `what`, waiting with backoff (250 ms doubling to 5 s, each
/// wait logged) while it fails [`Unreached::ForNow`]. `None` when `shutdown` resolved
/// meanwhile (also during an attempt).
async fn wait_for<T, F, Fut>(
    what: &str,
    mut attempt: F,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Unreached>>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut wait = std::time::Duration::from_millis(250);
    loop {
        let reached = tokio::select! {
            reached = attempt() => reached,
            () = &mut shutdown => break,
        };
        let error = match reached {
            Ok(it) => return Ok(Some(it)),
            Err(Unreached::ForNow(why)) => why,
            Err(Unreached::ForGood(e)) => return Err(e),
        };
        tracing::warn!(error = %error, retry_in = ?wait, "waiting for {what}");
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
    tracing::info!("stopped while waiting for {what}");
    Ok(None)
}

/// Opens the PostgreSQL store, waiting ([`wait_for`]) while the server cannot be reached,
/// is starting up or has no connection free. A database that does not exist, a wrong
/// password or a failed migration ends the start at once.
pub async fn wait_for_postgres(
    config: &PgConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<PgStore>> {
    let attempt = || async {
        match PgStore::open(config.clone()).await {
            Ok(store) => {
                tracing::info!("store ready (PostgreSQL, migrations applied)");
                Ok(store)
            }
            Err(StoreError::Unavailable(why)) => Err(Unreached::ForNow(why)),
            Err(e) => Err(Unreached::ForGood(
                anyhow::Error::new(e).context("opening the PostgreSQL store"),
            )),
        }
    };
    wait_for("PostgreSQL", attempt, shutdown).await
}

/// Waits ([`wait_for`]) until Redis answers a PING: while nothing answers (or it is loading
/// its data). A wrong password or an invalid URL ends the start at once. The connections the
/// node and the persister then open expect it to answer.
pub async fn wait_for_redis(
    url: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<()>> {
    let client = redis::Client::open(url).context("the Redis URL")?;
    let attempt = || async {
        let ping = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
            Ok(Ok(())) => Ok(()),
            Err(_) => Err(Unreached::ForNow("no answer within 2 s".into())),
            Ok(Err(e))
                if e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.kind()
                        == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) =>
            {
                Err(Unreached::ForNow(format!("cannot connect to Redis: {e}")))
            }
            Ok(Err(e)) => Err(Unreached::ForGood(
                anyhow::Error::new(e).context("connecting to Redis"),
            )),
        }
    };
    wait_for("Redis", attempt, shutdown).await
}
