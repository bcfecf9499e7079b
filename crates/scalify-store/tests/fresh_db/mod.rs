//! A fresh PostgreSQL database per test (on `SCALIFY_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the test ends. Shared by the
//! store's contract tests and the durable pipeline's tests (`#[path]`-included there).

use std::sync::Arc;

use scalify_store::postgres::{PgConfig, PgStore};
use sqlx::Connection;

pub fn admin_url() -> String {
    std::env::var("SCALIFY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, empty database on the test server, dropped when the test finishes.
pub struct FreshDb {
    name: String,
    pub url: String,
}

impl FreshDb {
    pub async fn create() -> FreshDb {
        let admin = admin_url();
        let name = format!(
            "scalify_test_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
        FreshDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn store(&self) -> Arc<PgStore> {
        Arc::new(PgStore::open(PgConfig::new(&self.url)).await.unwrap())
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
    .unwrap()
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let (admin, name) = (admin_url(), self.name.clone());
        // Drop runs outside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
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
