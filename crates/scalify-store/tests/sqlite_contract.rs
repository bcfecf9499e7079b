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
async fn notifications_claims_outbox_and_push_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap());
    contract::notifications_claims_outbox_and_push_subscriptions(store.clone(), store).await;
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
async fn owners_removal_and_blocks() {
    let (_d, store) = fresh();
    contract::owners_removal_and_blocks(store).await;
}

#[tokio::test]
async fn sessions_and_account_deletion() {
    let (_d, store) = fresh();
    contract::sessions_and_account_deletion(store).await;
}

#[tokio::test]
async fn ensure_room_adds_members_only_to_a_room_of_its_kind() {
    let (_d, store) = fresh();
    contract::ensure_room_adds_members_only_to_a_room_of_its_kind(store).await;
}

#[tokio::test]
async fn read_markers_and_unread_counts() {
    let (_d, store) = fresh();
    contract::read_markers_and_unread_counts(store).await;
}

#[tokio::test]
async fn mentions_levels_receipts_and_settings() {
    let (_d, store) = fresh();
    contract::mentions_levels_receipts_and_settings(store).await;
}

#[tokio::test]
async fn membership_and_listing() {
    let (_d, store) = fresh();
    contract::membership_and_listing(store).await;
}

/// What a process killed right after its acks leaves: the files as they are at that instant,
/// copied while the store still runs (no flush, no checkpoint, no clean close).
#[tokio::test]
async fn acked_appends_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let copy = dir.path().join("crashed.db");
    let room;
    let _running = {
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let alice = user(&store, "alice").await;
        room = contract::public_room(&store, "r", &alice).await;
        for i in 0..10 {
            store
                .append(msg(&room, &alice, &format!("c{i}"), "x"))
                .await
                .unwrap();
        }
        for suffix in ["", "-wal"] {
            let from = format!("{}{suffix}", path.display());
            if std::path::Path::new(&from).exists() {
                std::fs::copy(&from, format!("{}{suffix}", copy.display())).unwrap();
            }
        }
        store
    };
    let store = SqliteStore::open(SqliteConfig::new(&copy)).unwrap();
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

/// The WAL's checkpoint sequence number: bytes 12..16 of its header, big-endian; SQLite adds
/// one each time it rewinds the WAL to write it from the beginning again.
fn wal_rewinds(db: &std::path::Path) -> u32 {
    use std::io::Read;
    // Only the header: the WAL of a failing run is hundreds of MB.
    let mut header = [0u8; 16];
    std::fs::File::open(db.with_extension("db-wal"))
        .and_then(|mut f| f.read_exact(&mut header))
        .unwrap();
    u32::from_be_bytes([header[12], header[13], header[14], header[15]])
}

/// Under load that never pauses, the WAL is still rewound and reused: with checkpoints on a
/// thread beside the writer it never was, and grew by ~120 MB/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_rewound_under_sustained_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(&path)).unwrap());
    let alice = user(&*store, "alice").await;
    let mut rooms = Vec::new();
    for r in 0..32 {
        rooms.push(contract::public_room(&*store, &format!("r{r}"), &alice).await);
    }
    let before = wal_rewinds(&path);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    let mut tasks = Vec::new();
    // 128 appenders keep the writer's queue non-empty: it commits batch after batch.
    for t in 0..128 {
        let (store, alice, room) = (store.clone(), alice.clone(), rooms[t % 32].clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let text = "x".repeat(200);
            while std::time::Instant::now() < until {
                store
                    .append(msg(&room, &alice, &format!("{t}-{n}"), &text))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut appended = 0;
    for t in tasks {
        appended += t.await.unwrap();
    }
    let rewinds = wal_rewinds(&path) - before;
    let wal_bytes = std::fs::metadata(path.with_extension("db-wal"))
        .unwrap()
        .len();
    // One checkpoint per 250 ms: ~10 in 2.5 s. A few may find a reader in the way.
    assert!(
        rewinds >= 3,
        "the WAL was rewound {rewinds} times during 2.5 s of load ({appended} appends, WAL {wal_bytes} bytes)"
    );
    let stored: usize = {
        let mut n = 0;
        for room in &rooms {
            n += store.after(room, 0, 100_000).await.unwrap().len();
        }
        n
    };
    assert_eq!(stored as u64, appended, "every acked append is stored once");
}

/// The upgrade that adds read markers starts every existing member with their rooms read:
/// a database from before it (members without a marker, the schema at version 4) opens with
/// each marker at its room's last seq, not with the whole history unread.
#[tokio::test]
async fn members_at_the_read_marker_upgrade_start_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let room = {
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let room = contract::public_room(&store, "r", &alice).await;
        assert!(store.add_member(room.id, bob.id).await.unwrap());
        for i in 0..3 {
            store
                .append(msg(&room, &alice, &format!("c{i}"), "x"))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
        room
    };
    // Back to the schema before the markers (and what came after them).
    let c = rusqlite::Connection::open(&path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c.execute_batch(
        "ALTER TABLE messages DROP COLUMN attachment;
         DROP TABLE messages_search;
         DROP INDEX messages_by_search_doc;
         ALTER TABLE messages DROP COLUMN search_doc;
         DROP TABLE reactions;
         DROP INDEX messages_by_id;
         DROP INDEX messages_changes;
         ALTER TABLE messages DROP COLUMN kind;
         ALTER TABLE messages DROP COLUMN ref_seq;
         ALTER TABLE messages DROP COLUMN edited_at;
         ALTER TABLE messages DROP COLUMN deleted_at;
         ALTER TABLE members DROP COLUMN last_read;
         DROP TABLE mentions;
         ALTER TABLE messages DROP COLUMN mentions;
         ALTER TABLE members DROP COLUMN notify_level;
         ALTER TABLE users DROP COLUMN read_receipts;
         ALTER TABLE users DROP COLUMN previews;
         DROP TABLE push_subscriptions;
         DROP TABLE notify_outbox;
         DROP INDEX rooms_notify_due;
         ALTER TABLE rooms DROP COLUMN notify_from;
         ALTER TABLE rooms DROP COLUMN notify_seq;
         ALTER TABLE rooms DROP COLUMN notify_lease;
         PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(c);
    let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let u = store
            .user_by_name(&Username::parse(name).unwrap())
            .await
            .unwrap()
            .unwrap();
        let (read, last_seq) = store.read_state(&room, u.id).await.unwrap().unwrap();
        assert_eq!((read.last_read, read.unread, last_seq), (3, 0, 3), "{name}");
        users.push(u);
    }
    // The messages from before the search index are in it, and new ones follow them.
    store
        .append(msg(&room, &users[0], "after", "x"))
        .await
        .unwrap();
    let query = scalify_core::SearchQuery::parse("x").unwrap();
    let page = scalify_core::SearchPage {
        before: None,
        limit: 10,
    };
    for u in &users {
        let found = store.search(u.id, &query, None, page).await.unwrap();
        let seqs: Vec<u64> = found.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [4, 3, 2, 1], "{}", u.username);
    }
}

#[tokio::test]
async fn changes_are_log_entries_applied_to_their_message() {
    let (_d, store) = fresh();
    contract::changes_are_log_entries_applied_to_their_message(store).await;
}

/// A deleted message's text is gone from the database's files, not only from its answers:
/// the message row and its edits are overwritten, and `secure_delete` zeroes the bytes the
/// overwrite frees — also on pages written to the file before the deletion; its words leave
/// the search index's pages (FTS5 `secure-delete`).
#[tokio::test]
async fn a_deleted_message_leaves_no_text_in_the_file() {
    use scalify_core::MessageKind as K;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let secret = "zebra-sekrit-4471";
    let (room, alice, first, long) = {
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let alice = user(&store, "alice").await;
        let room = contract::public_room(&store, "r", &alice).await;
        for i in 0..50 {
            store
                .append(msg(&room, &alice, &format!("f{i}"), &"filler ".repeat(20)))
                .await
                .unwrap();
        }
        let first = store
            .append(msg(&room, &alice, "s", &format!("the {secret} is out")))
            .await
            .unwrap()
            .message;
        let edit = contract::change(
            &room,
            &alice,
            "e",
            K::Edit,
            &format!("{secret}, again"),
            &first,
        );
        store.append(edit).await.unwrap();
        // Longer than a page: its text spills into overflow pages, which a deletion frees.
        let mut text = "long ".repeat(1200);
        text.push_str(secret);
        let mut new = msg(&room, &alice, "l", "x");
        new.text = scalify_core::MessageText::parse(&text, 1 << 20).unwrap();
        let long = store.append(new).await.unwrap().message;
        for i in 0..50 {
            store
                .append(msg(&room, &alice, &format!("g{i}"), &"filler ".repeat(20)))
                .await
                .unwrap();
        }
        (room, alice, first, long)
        // Closed: checkpointed, so the secret is in the main file.
    };
    let file = |p: &std::path::Path| {
        ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::read(format!("{}{s}", p.display())).ok())
            .flatten()
            .collect::<Vec<u8>>()
    };
    let holds = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(holds(&file(&path)), "the test looks where the text was");
    {
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        for (id, target) in [("d1", &first), ("d2", &long)] {
            store
                .append(contract::change(&room, &alice, id, K::Delete, "", target))
                .await
                .unwrap();
        }
    }
    assert!(
        !holds(&file(&path)),
        "the deleted text is still in the file"
    );
    // Nor are its words in the search index, which keeps words, not text.
    let word = b"sekrit";
    assert!(
        !file(&path).windows(word.len()).any(|w| w == word),
        "a deleted message's words are still in the search index"
    );
}

#[tokio::test]
async fn attachments_stay_until_their_message_is_deleted() {
    let (_d, store) = fresh();
    contract::attachments_stay_until_their_message_is_deleted(store).await;
}

#[tokio::test]
async fn search_finds_current_text_in_readable_rooms() {
    let (_d, store) = fresh();
    contract::search_finds_current_text_in_readable_rooms(store).await;
}

#[tokio::test]
async fn search_pages_give_every_hit_once() {
    let (_d, store) = fresh();
    contract::search_pages_give_every_hit_once(store).await;
}
