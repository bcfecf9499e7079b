//! # scalify-testkit — what the Rust tests share
//!
//! Tests run against the real services of the machine (or those `scripts/test.sh` starts),
//! each in a space of its own that is removed when the test ends, passed or failed:
//!
//! - [`FreshDb`]: a new database on `SCALIFY_TEST_DATABASE_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! - [`RedisPrefix`]: a key prefix on `SCALIFY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`);
//! - [`brokers`]: the Kafka-API broker of the run, `SCALIFY_TEST_KAFKA_BROKERS` (required by the
//!   tests that use it; `scripts/test.sh` starts one).
//!
//! A dev-dependency only: it depends on no ScalifyChat crate, so every crate's tests can use it.

use sqlx::Connection;

/// The PostgreSQL server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("SCALIFY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis the tests share (each under a prefix of its own).
pub fn redis_url() -> String {
    std::env::var("SCALIFY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Kafka-API broker of the test run.
pub fn brokers() -> String {
    std::env::var("SCALIFY_TEST_KAFKA_BROKERS").expect(
        "SCALIFY_TEST_KAFKA_BROKERS is not set: run ./scripts/test.sh (it starts a broker), or point it at one",
    )
}

/// `prefix_<ulid>`: a name no other test uses (topics, groups, databases, keys).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A new, empty database on the test server, dropped when the test finishes.
pub struct FreshDb {
    name: String,
    pub url: String,
}

impl FreshDb {
    pub async fn create() -> FreshDb {
        let admin = admin_url();
        let name = unique("scalify_test");
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("the test PostgreSQL server (SCALIFY_TEST_DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b)
            .expect("a database URL ends with /<database>");
        FreshDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

/// The sessions of `conn`'s database (other than `conn`'s own) that wait for a lock: writes a
/// test holds back with a lock of its own.
pub async fn lock_waiters(conn: &mut sqlx::PgConnection) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
    )
    .fetch_all(conn)
    .await
    .expect("pg_stat_activity")
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        // Drop runs outside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A Redis key prefix of the test's own. Its keys are removed when the guard drops, at the end
/// of the test, passed or failed: the shared Redis of a developer's machine keeps nothing.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        RedisPrefix(unique("t"))
    }
}

impl Default for RedisPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        // A test's keys are few: one KEYS over its own prefix is fine (and simpler than SCAN).
        let Ok(keys) = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query::<Vec<String>>(&mut conn)
        else {
            return;
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
        }
    }
}

/// The S3-compatible server of the test run, `SCALIFY_TEST_S3_ENDPOINT` (required by the tests
/// that use it; `scripts/test.sh` starts one).
pub fn s3_endpoint() -> String {
    std::env::var("SCALIFY_TEST_S3_ENDPOINT").expect(
        "SCALIFY_TEST_S3_ENDPOINT is not set: run ./scripts/test.sh (it starts an S3-compatible server), or point it at one",
    )
}

/// A new bucket on the test S3 server, with a name no other test uses. The test server takes
/// any credentials, so the request is not signed.
pub async fn s3_bucket() -> String {
    let bucket = unique("scalify").replace('_', "-");
    let url = format!("{}/{bucket}", s3_endpoint().trim_end_matches('/'));
    let status = reqwest::Client::new()
        .put(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating bucket {url}: {e}"))
        .status();
    assert!(status.is_success(), "creating bucket {url}: {status}");
    bucket
}
