//! `scalify doctor`: checks every dependency the configuration names, the way `serve` would
//! use it, and prints one plain line per check. Nothing is changed (no migration, no secret is
//! generated), except a probe file in the data directory that is removed again.

use std::time::Duration;

use scalify_fanout::redis::RedisConfig;
use scalify_store::postgres::PgConfig;

use crate::config::Settings;

struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, what: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("ok    {what}: {detail}"),
            Err(why) => {
                self.failed += 1;
                println!("FAIL  {what}: {why}");
            }
        }
    }

    /// A risk worth knowing that does not stop the node from working.
    fn warn(&mut self, what: &str, why: &str) {
        println!("warn  {what}: {why}");
    }
}

/// Runs every check; returns how many failed.
pub async fn run(settings: &Settings) -> usize {
    let mut r = Report { failed: 0 };
    r.line(
        "configuration",
        settings
            .check()
            .map(|()| "valid".into())
            .map_err(|e| e.to_string()),
    );
    r.line("listen address", listen(settings).await);
    match &settings.postgres {
        Some(pg) => r.line("PostgreSQL", postgres(pg).await),
        None => r.line("SQLite data directory", data_dir(settings)),
    }
    if let Some(redis) = &settings.redis {
        r.line("Redis", self::redis(redis).await);
        if settings.kafka.is_some() {
            match eviction_policy(redis).await {
                Ok(policy) => match scalify_kafka::ledger::eviction_verdict(&policy) {
                    Ok(None) => r.line("Redis eviction", Ok(policy)),
                    Ok(Some(w)) => r.warn("Redis eviction", &w),
                    Err(e) => r.line("Redis eviction", Err(e.to_string())),
                },
                Err(e) => r.line("Redis eviction", Err(e)),
            }
        }
    }
    if let Some(kafka) = &settings.kafka {
        let what = format!("Kafka ({})", kafka.config.brokers);
        match scalify_kafka::topics::probe(&kafka.config).await {
            Ok((detail, warning)) => {
                r.line(&what, Ok(detail));
                if let Some(w) = warning {
                    r.warn(&what, &w);
                }
            }
            Err(e) => r.line(&what, Err(e)),
        }
    }
    match &settings.uploads.s3 {
        Some(s3) => r.line(
            "object storage",
            match scalify_files::Files::s3(s3) {
                Ok(files) => files
                    .check()
                    .await
                    .map(|()| format!("bucket {} at {} answers", s3.bucket, s3.endpoint))
                    .map_err(|e| format!("bucket {} at {}: {e}", s3.bucket, s3.endpoint)),
                Err(e) => Err(e.to_string()),
            },
        ),
        None if settings.redis.is_some() => r.warn(
            "uploads",
            "kept in this node's data directory: the other nodes do not see them (use --s3-endpoint, or share <data-dir>/files)",
        ),
        None => r.line(
            "uploads",
            Ok(format!(
                "kept in {}",
                settings.data_dir.join("files").display()
            )),
        ),
    }
    r.line(
        "token secret",
        match (settings.has_token_secret(), settings.redis.is_some()) {
            (true, _) => Ok("configured".into()),
            (false, false) => Ok(format!(
                "not configured: generated into {} on first start (fine for one node)",
                settings.data_dir.join("token-secret").display()
            )),
            (false, true) => Err("a cluster needs SCALIFY_TOKEN_SECRET (or token_secret in the config file), the same on every node".into()),
        },
    );
    if r.failed == 0 {
        println!("all checks passed");
    }
    r.failed
}

async fn listen(s: &Settings) -> Result<String, String> {
    match tokio::net::TcpListener::bind(s.listen).await {
        Ok(_) => Ok(format!("{} is free", s.listen)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{} is already in use (another scalify, or another program, listens there)",
            s.listen
        )),
        Err(e) => Err(format!("cannot listen on {}: {e}", s.listen)),
    }
}

fn data_dir(s: &Settings) -> Result<String, String> {
    let dir = &s.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(".doctor-probe");
    std::fs::write(&probe, b"ok").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(format!("{} is writable", dir.display()))
}

async fn postgres(pg: &PgConfig) -> Result<String, String> {
    use sqlx::Connection;
    let connect = sqlx::PgConnection::connect(&pg.url);
    let mut conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Err(_) => return Err("no answer within 5 s (is the host right? a firewall?)".into()),
        Ok(Err(e)) => return Err(plain(format!("cannot connect: {e}"))),
        Ok(Ok(c)) => c,
    };
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("connected, but a query failed: {e}"))?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .ok()
        .flatten();
    Ok(match applied {
        Some(v) => format!("reachable (server {version}); schema at migration {v}"),
        None => format!("reachable (server {version}); schema not created yet (serve or `scalify migrate` creates it)"),
    })
}

/// A connection to Redis within 3 s, or why not.
async fn redis_connection(c: &RedisConfig) -> Result<::redis::aio::MultiplexedConnection, String> {
    let client = ::redis::Client::open(c.url.as_str()).map_err(|e| format!("invalid URL: {e}"))?;
    let connect = client.get_multiplexed_async_connection();
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Err(_) => Err("no answer within 3 s".into()),
        Ok(Err(e)) => Err(plain(format!("cannot connect: {e}"))),
        Ok(Ok(c)) => Ok(c),
    }
}

async fn redis(c: &RedisConfig) -> Result<String, String> {
    let mut conn = redis_connection(c).await?;
    let info: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("connected, but INFO failed: {e}"))?;
    let version = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("redis_version:")
                .or_else(|| l.strip_prefix("valkey_version:"))
        })
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    Ok(format!(
        "reachable (server {version}); key prefix '{}'",
        c.prefix
    ))
}

/// Redis's `maxmemory-policy` (from `INFO memory`, which works where `CONFIG` is disabled).
async fn eviction_policy(c: &RedisConfig) -> Result<String, String> {
    let mut conn = redis_connection(c).await?;
    let info: String = ::redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("INFO memory failed: {e}"))?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))
        .map_or("noeviction", str::trim)
        .to_owned())
}

/// Adds the likely cause to the errors people meet most.
fn plain(e: String) -> String {
    let hint = if e.contains("Connection refused") {
        " — nothing listens at that address: is the server running, and are host and port right?"
    } else if e.contains("password authentication failed") {
        " — wrong user or password in the URL"
    } else if e.contains("does not exist") {
        " — the database does not exist: create it (CREATE DATABASE ...) or fix the URL"
    } else if e.contains("failed to lookup address") || e.contains("Name or service not known") {
        " — the host name does not resolve"
    } else {
        ""
    };
    format!("{e}{hint}")
}
