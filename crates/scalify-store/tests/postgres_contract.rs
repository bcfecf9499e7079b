//! The `Store` contract on the PostgreSQL engine (a real server: `SCALIFY_TEST_DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`), a fresh database per test, plus
//! what only a shared database has: several nodes writing to one room.

mod contract;

use std::collections::HashSet;

use contract::{msg, user};
use scalify_store::postgres::{PgConfig, PgStore};
use scalify_store::Store;
use scalify_testkit::FreshDb;

/// The test database's store, migrations applied.
async fn open(db: &FreshDb) -> std::sync::Arc<PgStore> {
    std::sync::Arc::new(PgStore::open(PgConfig::new(&db.url)).await.unwrap())
}

#[tokio::test]
async fn usernames_and_room_names_are_unique() {
    let db = FreshDb::create().await;
    contract::usernames_and_room_names_are_unique(open(&db).await).await;
}

#[tokio::test]
async fn concurrent_appends_get_gap_free_seqs_and_idempotency_holds() {
    let db = FreshDb::create().await;
    contract::concurrent_appends_get_gap_free_seqs_and_idempotency_holds(open(&db).await).await;
}

#[tokio::test]
async fn history_pages_backwards_in_ascending_order() {
    let db = FreshDb::create().await;
    contract::history_pages_backwards_in_ascending_order(open(&db).await).await;
}

#[tokio::test]
async fn admin_role() {
    let db = FreshDb::create().await;
    contract::admin_role(open(&db).await).await;
}

#[tokio::test]
async fn owners_removal_and_blocks() {
    let db = FreshDb::create().await;
    contract::owners_removal_and_blocks(open(&db).await).await;
}

#[tokio::test]
async fn sessions_and_account_deletion() {
    let db = FreshDb::create().await;
    contract::sessions_and_account_deletion(open(&db).await).await;
}

#[tokio::test]
async fn ensure_room_adds_members_only_to_a_room_of_its_kind() {
    let db = FreshDb::create().await;
    contract::ensure_room_adds_members_only_to_a_room_of_its_kind(open(&db).await).await;
}

#[tokio::test]
async fn notifications_claims_outbox_and_push_subscriptions() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    contract::notifications_claims_outbox_and_push_subscriptions(store.clone(), store).await;
}

#[tokio::test]
async fn read_markers_and_unread_counts() {
    let db = FreshDb::create().await;
    contract::read_markers_and_unread_counts(open(&db).await).await;
}

#[tokio::test]
async fn mentions_levels_receipts_and_settings() {
    let db = FreshDb::create().await;
    contract::mentions_levels_receipts_and_settings(open(&db).await).await;
}

#[tokio::test]
async fn membership_and_listing() {
    let db = FreshDb::create().await;
    contract::membership_and_listing(open(&db).await).await;
}

#[tokio::test]
async fn migrations_apply_once() {
    let db = FreshDb::create().await;
    let config = PgConfig::new(&db.url);
    assert_eq!(PgStore::migrate_only(&config).await.unwrap(), 12);
    assert_eq!(PgStore::migrate_only(&config).await.unwrap(), 0);
}

/// Three "nodes" (stores with their own pools and writers) send into two rooms at once; every
/// client_id is sent twice, to different nodes. Seqs stay gap-free per room and each client_id
/// is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_writing_one_room_keep_seq_gap_free_and_sends_idempotent() {
    let db = FreshDb::create().await;
    let nodes = [open(&db).await, open(&db).await, open(&db).await];
    let alice = user(&*nodes[0], "alice").await;
    let mut rooms = Vec::new();
    for name in ["one", "two"] {
        rooms.push(contract::public_room(&*nodes[0], name, &alice).await);
    }
    let mut tasks = Vec::new();
    for i in 0..600 {
        let room = &rooms[i % 2];
        for copy in 0..2 {
            let node = nodes[(i + copy) % 3].clone();
            let m = msg(room, &alice, &format!("c{i}"), &format!("m{i}"));
            tasks.push(tokio::spawn(async move { node.append(m).await.unwrap() }));
        }
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.unwrap().duplicate {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 600);
    for room in &rooms {
        let stored = nodes[1].after(room, 0, 1000).await.unwrap();
        assert_eq!(
            stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
            (1..=300).collect::<Vec<u64>>()
        );
        let ids: HashSet<_> = stored.iter().map(|m| m.client_id.as_str()).collect();
        assert_eq!(ids.len(), 300);
        let room = nodes[2].room(&room.name).await.unwrap().unwrap();
        assert_eq!(room.last_seq, 300);
    }
}

/// An append whose room does not exist fails alone; its batch neighbours commit.
#[tokio::test]
async fn a_bad_append_does_not_fail_its_batch() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let alice = user(&*store, "alice").await;
    let room = contract::public_room(&*store, "r", &alice).await;
    let ghost = scalify_core::Room {
        id: scalify_core::Id::new(),
        ..room.clone()
    };
    let mut tasks = Vec::new();
    for i in 0..50 {
        let r = if i == 25 { &ghost } else { &room };
        let (s, m) = (store.clone(), msg(r, &alice, &format!("c{i}"), "x"));
        tasks.push(tokio::spawn(async move { s.append(m).await }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 49);
    assert_eq!(store.after(&room, 0, 100).await.unwrap().len(), 49);
}

/// What `serve` and `persister` wait for at start (`Unavailable`: nothing answers, or the
/// server is starting up) and what ends their start at once (a database that does not exist:
/// waiting will not create it).
#[tokio::test]
async fn opening_tells_an_unreachable_server_from_a_wrong_database() {
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let unreachable = PgStore::open(PgConfig::new(format!(
        "postgres://postgres@127.0.0.1:{port}/x"
    )))
    .await
    .err();
    assert!(
        matches!(unreachable, Some(scalify_store::StoreError::Unavailable(_))),
        "{unreachable:?}"
    );

    let admin = scalify_testkit::admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    let missing = PgStore::open(PgConfig::new(format!("{base}/scalify_no_such_database")))
        .await
        .err();
    assert!(
        matches!(&missing, Some(scalify_store::StoreError::Backend(why)) if why.contains("does not exist")),
        "{missing:?}"
    );
}

/// A server that refuses a connection because it is out of slots (SQLSTATE 53300, here a
/// role's `CONNECTION LIMIT 0`) is "unavailable" — waited for at start — not a wrong setting;
/// once it has a slot the store opens.
#[tokio::test]
async fn a_server_out_of_connection_slots_is_unavailable_then_opens() {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;

    let db = FreshDb::create().await;
    let role = format!("scalify_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let db_name = db.url.rsplit_once('/').map(|(_, n)| n.to_string()).unwrap();
    let mut admin = sqlx::PgConnection::connect(&scalify_testkit::admin_url())
        .await
        .unwrap();
    // Not a superuser (those are not held to connection limits); the database's owner, so
    // the store's migrations may create its tables.
    for sql in [
        format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"),
        format!("ALTER DATABASE {db_name} OWNER TO {role}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    let as_role = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .username(&role)
        .to_url_lossy()
        .to_string();

    // The server's own answer, 53300, is "unavailable"...
    let direct = sqlx::PgConnection::connect(&as_role)
        .await
        .expect_err("a role allowed no connection connected");
    assert_eq!(sqlstate(&direct).as_deref(), Some("53300"), "{direct:?}");
    assert!(
        matches!(
            scalify_store::StoreError::from(direct),
            scalify_store::StoreError::Unavailable(_)
        ),
        "53300 is not unavailable"
    );
    // ...and so is what the store sees: sqlx's pool itself retries 53300 (and 57P03) until its
    // acquire timeout; either way not the `Backend` error that ends a start.
    let refused = PgStore::open(PgConfig::new(&as_role)).await.err();
    assert!(
        matches!(&refused, Some(scalify_store::StoreError::Unavailable(_))),
        "{refused:?}"
    );

    sqlx::query(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .execute(&mut admin)
        .await
        .unwrap();
    let store = PgStore::open(PgConfig::new(&as_role)).await;
    assert!(store.is_ok(), "{:?}", store.err());
    drop(store);

    // Leave nothing behind: the database (its tables are the role's), then the role.
    for sql in [
        format!("DROP DATABASE {db_name} WITH (FORCE)"),
        format!("DROP ROLE {role}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
}

/// The server terminates the store's connections (an administrator's `pg_terminate_backend`,
/// a failover: SQLSTATE 57P01 on the next use): an operation soon works again on new
/// connections, and whatever fails meanwhile is "unavailable" — what the persister pauses and
/// retries on — never a refused operation (the persister dead-letters what the database
/// refuses). Here no operation fails at all: sqlx's pool pings a connection before handing it
/// out and replaces a dead one.
#[tokio::test]
async fn connections_the_server_terminated_are_unavailable_then_replaced() {
    use sqlx::Connection;

    let db = FreshDb::create().await;
    let store = open(&db).await;
    let name = scalify_core::Username::parse("alice").unwrap();
    let alice = store.create_user(&name, "x").await.unwrap();

    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity, pg_terminate_backend(pid) \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(terminated >= 1, "the store had no connection to terminate");

    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let found = store.user_by_name(&name).await;
        let done = found.is_ok();
        outcomes.push(found);
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for outcome in &outcomes {
        match outcome {
            Ok(found) => assert_eq!(found.as_ref().map(|u| u.id), Some(alice.id)),
            Err(scalify_store::StoreError::Unavailable(_)) => {}
            Err(e) => panic!("a terminated connection reported as {e:?}: {outcomes:?}"),
        }
    }
    assert!(
        outcomes.last().is_some_and(|o| o.is_ok()),
        "the pool did not replace the terminated connections: {outcomes:?}"
    );
}

/// An administrator's termination as the server reports it — SQLSTATE 57P01, which sqlx
/// passes on when the session reads the server's answer (here the session ends itself; a
/// write waiting on a lock sees the connection closed instead, the test below) — is
/// "unavailable", what the persister pauses and retries on, not refused data.
#[tokio::test]
async fn the_servers_termination_notice_is_unavailable() {
    use sqlx::Connection;

    let db = FreshDb::create().await;
    let mut session = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let ended = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut session)
        .await
        .expect_err("a session outlived its own termination");
    assert_eq!(sqlstate(&ended).as_deref(), Some("57P01"), "{ended:?}");
    match scalify_store::StoreError::from(ended) {
        scalify_store::StoreError::Unavailable(_) => {}
        other => panic!("57P01 reported as {other:?}"),
    }
}

/// The SQLSTATE of an error the server sent, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The server ends a connection while a write waits on it (an administrator's
/// `pg_terminate_backend` of a stuck backend, a failover): the write is "unavailable" — what
/// the persister pauses and retries on — not refused (what it dead-letters), nothing of it is
/// stored, and writing it again stores it once. (sqlx reports this as the connection closed,
/// an I/O error, rather than the server's SQLSTATE 57P01; either is "unavailable".)
#[tokio::test]
async fn a_write_whose_connection_the_server_ends_is_unavailable_then_written_once() {
    use sqlx::Connection;

    let db = FreshDb::create().await;
    let store = open(&db).await;
    let alice = user(&*store, "alice").await;
    let room = contract::public_room(&*store, "r", &alice).await;
    let new = msg(&room, &alice, "c1", "held");
    let row = (
        room.id,
        scalify_core::Message::from_new(new, scalify_core::Id::new(), 1, scalify_core::now_ms()),
    );

    // The write waits for a lock an administrator holds; then its backend is terminated.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut admin).await.unwrap();
    sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut admin)
        .await
        .unwrap();
    let write = {
        let (store, row) = (store.clone(), row.clone());
        tokio::spawn(async move { store.persist(std::slice::from_ref(&row)).await })
    };
    let mut held = None;
    for _ in 0..100 {
        held = scalify_testkit::lock_waiters(&mut admin)
            .await
            .first()
            .copied();
        if held.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let held = held.expect("the write never waited for the lock");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(held)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), write)
        .await
        .expect("the write did not end with its connection")
        .unwrap();
    match &outcome {
        Err(scalify_store::StoreError::Unavailable(_)) => {}
        other => panic!("a write whose connection the server ended reported as {other:?}"),
    }
    sqlx::query("ROLLBACK").execute(&mut admin).await.unwrap();

    assert!(store.after(&room, 0, 10).await.unwrap().is_empty());
    let again = store.persist(std::slice::from_ref(&row)).await.unwrap();
    assert_eq!(again.inserted, 1);
    let stored = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|m| (m.seq, m.client_id.as_str()))
            .collect::<Vec<_>>(),
        [(1, "c1")]
    );
}

/// A TCP relay to the database that, once armed, drops the connection where the server's
/// answer to a `COMMIT` would pass (its CommandComplete tag): the commit is carried out and the
/// client never hears of it.
async fn commit_cutting_relay(
    db_url: &str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (head, tail) = db_url.rsplit_once('@').unwrap();
    let (hostport, database) = tail.split_once('/').unwrap();
    let upstream = hostport.to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{head}@{}/{database}", listener.local_addr().unwrap());
    let armed = std::sync::Arc::new(AtomicBool::new(false));
    let flag = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let flag = flag.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                // The last bytes seen, so a tag split across two reads is still found.
                let mut carry: Vec<u8> = Vec::new();
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    carry.extend_from_slice(&buf[..n]);
                    let tagged = carry.windows(7).any(|w| w == b"COMMIT\0");
                    if tagged && flag.swap(false, Ordering::AcqRel) {
                        break;
                    }
                    carry.drain(..carry.len().saturating_sub(6));
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    (url, armed)
}

/// The answer to a COMMIT is lost (the connection drops after the server committed): the
/// sender is told the outcome is unknown — never "not stored" — and its retry with the same
/// client_id returns the stored message, stored once.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_unknown_and_its_retry_returns_the_message() {
    let db = FreshDb::create().await;
    let (url, armed) = commit_cutting_relay(&db.url).await;
    let store = std::sync::Arc::new(PgStore::open(PgConfig::new(&url)).await.unwrap());
    let alice = user(&*store, "alice").await;
    let room = contract::public_room(&*store, "r", &alice).await;
    armed.store(true, std::sync::atomic::Ordering::Release);
    let first = store.append(msg(&room, &alice, "c1", "hello")).await;
    assert!(
        !armed.load(std::sync::atomic::Ordering::Acquire),
        "the relay never saw the commit's answer"
    );
    match &first {
        Err(scalify_store::StoreError::Retry(why)) => {
            assert!(why.contains("may be stored"), "{why}")
        }
        other => panic!("a commit with no answer reported as {other:?}"),
    }
    let retry = store
        .append(msg(&room, &alice, "c1", "hello"))
        .await
        .unwrap();
    assert!(
        retry.duplicate,
        "the commit was carried out: the retry finds it"
    );
    assert_eq!(retry.message.seq, 1);
    assert_eq!(store.after(&room, 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn changes_are_log_entries_applied_to_their_message() {
    let db = FreshDb::create().await;
    contract::changes_are_log_entries_applied_to_their_message(open(&db).await).await;
}

/// The persisters write a room's records in topic order, which is not always seq order: a
/// change written before the message it changes is replayed over it when it comes, so the
/// state is what writing in seq order gives — an edit and a reaction hold, a deletion erases.
#[tokio::test]
async fn changes_persisted_before_their_message_apply_when_it_comes() {
    use scalify_core::MessageKind as K;
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let ann = user(&*store, "ann").await;
    let bob = user(&*store, "bob").await;
    let room = contract::public_room(&*store, "r", &ann).await;
    store.add_member(room.id, bob.id).await.unwrap();
    // Sequenced as the durable pipeline does, before any is written.
    let at = |seq: u64, new: scalify_core::NewMessage| {
        (
            room.id,
            scalify_core::Message::stored(&new, scalify_core::Id::new(), seq, seq as i64),
        )
    };
    let first = at(1, msg(&room, &ann, "m1", "first draft"));
    let second = at(2, msg(&room, &ann, "m2", "to be deleted"));
    let changes = [
        at(
            3,
            contract::change(&room, &ann, "e1", K::Edit, "final", &first.1),
        ),
        at(
            4,
            contract::change(&room, &bob, "r1", K::Reaction, "👍", &first.1),
        ),
        at(
            5,
            contract::change(&room, &ann, "r2", K::Reaction, "🎉", &first.1),
        ),
        at(
            6,
            contract::change(&room, &ann, "u1", K::Unreaction, "🎉", &first.1),
        ),
        at(
            7,
            contract::change(&room, &ann, "e2", K::Edit, "secret edit", &second.1),
        ),
        at(
            8,
            contract::change(&room, &ann, "d1", K::Delete, "", &second.1),
        ),
    ];
    // The changes first (as a batch, then one of them again: a redelivery), the messages after.
    store.persist(&changes).await.unwrap();
    store.persist(&changes[..1]).await.unwrap();
    store
        .persist(&[second.clone(), first.clone()])
        .await
        .unwrap();
    let all = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(all.len(), 8);
    let mut rows = all.clone();
    scalify_store::bundle_reactions(
        &mut rows,
        store.reactions(room.id, 1..=8, bob.id).await.unwrap(),
    );
    assert_eq!(
        (rows[0].text.as_str(), rows[0].edited_at),
        ("final", Some(3))
    );
    assert_eq!(rows[0].reactions.len(), 1);
    assert_eq!(rows[0].reactions["👍"].count, 1);
    assert!(rows[1].deleted && rows[1].text.as_str().is_empty());
    let texts: Vec<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert!(
        !texts
            .iter()
            .any(|t| t.contains("secret") || t.contains("to be deleted")),
        "{texts:?}"
    );
    // The same as a replay of the log.
    let mut replay = scalify_core::Timeline::default();
    for m in &all {
        replay.apply(m);
    }
    assert_eq!(replay.get(1, bob.id).unwrap().reactions, rows[0].reactions);
    assert_eq!(replay.get(1, bob.id).unwrap().text, rows[0].text);
}

#[tokio::test]
async fn attachments_stay_until_their_message_is_deleted() {
    let db = FreshDb::create().await;
    contract::attachments_stay_until_their_message_is_deleted(open(&db).await).await;
}

/// The persisters' path (`COPY`) keeps files too, and a deletion written before its message
/// (records reach the topic out of seq order) still erases it.
#[tokio::test]
async fn persisted_attachments_are_kept_and_erased() {
    use scalify_core::{Message, MessageKind as K};
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let ann = user(&*store, "ann").await;
    let room = contract::public_room(&*store, "files", &ann).await;
    let row = |new, seq| {
        (
            room.id,
            Message::from_new(new, scalify_core::Id::new(), seq, 1),
        )
    };
    let mut kept = msg(&room, &ann, "f1", "tab\there \\ and a newline\n");
    kept.attachment = Some(contract::attachment("say \"hi\" ½.png"));
    let kept = row(kept, 1);
    let mut erased = msg(&room, &ann, "f2", "gone");
    erased.attachment = Some(contract::attachment("gone.png"));
    let erased = row(erased, 2);
    let deletion = row(
        contract::change(&room, &ann, "d1", K::Delete, "", &erased.1),
        3,
    );
    store.persist(&[kept.clone(), deletion]).await.unwrap();
    store.persist(std::slice::from_ref(&erased)).await.unwrap();
    let read = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(read[0].attachment, kept.1.attachment);
    assert_eq!(read[0].text, kept.1.text);
    assert!(read[1].deleted);
    assert_eq!(read[1].attachment, None);
}

#[tokio::test]
async fn search_finds_current_text_in_readable_rooms() {
    let db = FreshDb::create().await;
    contract::search_finds_current_text_in_readable_rooms(open(&db).await).await;
}

/// The same, with every query common (so searched in the newest messages first) and a window
/// of them so small that most pages continue in the full-text index below it.
#[tokio::test]
async fn search_continues_below_the_recent_window_in_the_index() {
    let db = FreshDb::create().await;
    let mut config = PgConfig::new(&db.url);
    config.search_common = 1;
    config.search_window = 2;
    let store = std::sync::Arc::new(PgStore::open(config).await.unwrap());
    contract::search_finds_current_text_in_readable_rooms(store).await;
}

#[tokio::test]
async fn search_pages_give_every_hit_once() {
    let db = FreshDb::create().await;
    contract::search_pages_give_every_hit_once(open(&db).await).await;
}

/// The same with every query common and a window of three messages: pages cross from the
/// window into the index below it.
#[tokio::test]
async fn search_pages_give_every_hit_once_across_the_window() {
    let db = FreshDb::create().await;
    let mut config = PgConfig::new(&db.url);
    config.search_common = 1;
    config.search_window = 3;
    let store = std::sync::Arc::new(PgStore::open(config).await.unwrap());
    contract::search_pages_give_every_hit_once(store).await;
}
