//! The `Store` contract on the SQLite engine, a fresh database file per test, plus what only
//! an embedded engine has: its file survives a reopen.

mod contract;

use std::sync::Arc;

use contract::{msg, user};
use scalify_core::{RoomName, Username};
use scalify_store::sqlite::{SqliteConfig, SqliteStore};
use scalify_store::Store;

fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn usernames_and_room_names_are_unique() {
    let (_d, store) = fresh();
    contract::usernames_and_room_names_are_unique(store).await;
}

#[tokio::test]
async fn concurrent_appends_get_gap_free_seqs_and_idempotency_holds() {
    let (_d, store) = fresh();
    contract::concurrent_appends_get_gap_free_seqs_and_idempotency_holds(store).await;
}

#[tokio::test]
async fn history_pages_backwards_in_ascending_order() {
    let (_d, store) = fresh();
    contract::history_pages_backwards_in_ascending_order(store).await;
}

#[tokio::test]
async fn admin_role() {
    let (_d, store) = fresh();
    contract::admin_role(store).await;
}

#[tokio::test]
async fn membership_and_listing() {
    let (_d, store) = fresh();
    contract::membership_and_listing(store).await;
}

#[tokio::test]
async fn acked_appends_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let room;
    {
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let alice = user(&store, "alice").await;
        room = contract::public_room(&store, "r", &alice).await;
        for i in 0..10 {
            store
                .append(msg(&room, &alice, &format!("c{i}"), "x"))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    assert_eq!(store.after(&room, 0, 100).await.unwrap().len(), 10);
    // seq continues after reopen: the writer's cache is rebuilt from the database.
    let alice = store
        .user_by_name(&Username::parse("alice").unwrap())
        .await
        .unwrap()
        .unwrap();
    let room = store
        .room(&RoomName::parse("r").unwrap())
        .await
        .unwrap()
        .unwrap();
    let a = store
        .append(msg(&room, &alice, "c-new", "y"))
        .await
        .unwrap();
    assert_eq!(a.message.seq, 11);
    // Idempotency survives the restart: a retry of a send acked before it is not stored again.
    let retry = store
        .append(msg(&room, &alice, "c3", "x (retried)"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.message.seq, retry.message.text.as_str()), (4, "x"));
    assert_eq!(store.after(&room, 0, 100).await.unwrap().len(), 11);
}
