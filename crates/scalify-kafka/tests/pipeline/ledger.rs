//! The ledger (Redis): seq allocation, the idempotency window, its limit, and a script Redis
//! forgot.

use super::*;

#[tokio::test]
async fn ledger_allocates_seeds_repeats_and_windows() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    let c1 = ClientId::parse("a").unwrap();
    // The first allocation seeds the counter from the database's newest seq.
    let got = ledger
        .allocate(room, sender, &c1, draft(), || async { Ok((41, 1)) })
        .await
        .unwrap();
    assert_eq!(got, Allocation::Fresh(42, 1));
    let seeded_again = std::sync::atomic::AtomicBool::new(false);
    let got = ledger
        .allocate(room, sender, &c1, draft(), || async {
            seeded_again.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok((0, 9))
        })
        .await
        .unwrap();
    assert!(
        matches!(got, Allocation::Unconfirmed(42, _)),
        "same client_id, not deposited yet: same seq, and its record ({got:?})"
    );
    assert!(!seeded_again.load(std::sync::atomic::Ordering::SeqCst));
    let got = allocate(&ledger, room, sender, "b").await.unwrap();
    assert_eq!(got, Allocation::Fresh(43, 1));

    // The window keeps confirmed messages by seq until trimmed.
    let name = RoomName::parse("w").unwrap();
    let who = UserRef {
        id: sender,
        username: "alice".into(),
    };
    for seq in [42, 43] {
        let m = message(&name, seq, &who, &format!("c{seq}"));
        ledger
            .deposit(room, &m, 1, record::encode_in(room, &m, 1))
            .await
            .unwrap();
    }
    assert_eq!(ledger.window_max_seq(room).await.unwrap(), Some(43));
    let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(ledger.after(room, 41, 10).await.unwrap()), [42, 43]);
    assert_eq!(seqs(ledger.after(room, 42, 10).await.unwrap()), [43]);
    assert_eq!(seqs(ledger.before(room, Some(43), 10).await.unwrap()), [42]);
    assert_eq!(seqs(ledger.before(room, None, 1).await.unwrap()), [43]);
    assert_eq!(ledger.at(room, 42).await.unwrap().map(|m| m.seq), Some(42));
    // The rooms that have a window (what the persister rescues after records went missing).
    assert_eq!(ledger.windowed_rooms().await.unwrap(), [room]);
    ledger.trim(&[(room, 42)]).await.unwrap();
    assert_eq!(seqs(ledger.after(room, 0, 10).await.unwrap()), [43]);
}

/// Records of one room reach the topic out of seq order: a batch that wrote seq 11 trims 11,
/// and seq 10 (on its way to the database in a later batch) stays readable.
#[tokio::test]
async fn trimming_drops_exactly_the_seqs_written() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let room = Id::new();
    let name = RoomName::parse("w").unwrap();
    let who = UserRef {
        id: Id::new(),
        username: "alice".into(),
    };
    seed_counter(&ledger, room).await;
    for seq in [9, 10, 11, 12, 13] {
        let m = message(&name, seq, &who, &format!("c{seq}"));
        ledger
            .deposit(room, &m, 1, record::encode_in(room, &m, 1))
            .await
            .unwrap();
    }
    ledger.trim(&[(room, 11), (room, 9)]).await.unwrap();
    let seqs = |v: Vec<Message>| v.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(ledger.after(room, 0, 10).await.unwrap()), [10, 12, 13]);
    ledger.trim(&[(room, 13), (room, 12)]).await.unwrap();
    assert_eq!(seqs(ledger.after(room, 0, 10).await.unwrap()), [10]);
}

/// A retry finds the record of a message whose producer never confirmed it (the node died
/// or stopped, or Redis's answer was lost): exactly the record allocated, until its deposit.
#[tokio::test]
async fn an_unconfirmed_allocation_keeps_its_record_until_deposited() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    let name = RoomName::parse("w").unwrap();
    let who = UserRef {
        id: sender,
        username: "alice".into(),
    };
    let mut m = message(&name, 0, &who, "x");
    let draft = Arc::new(record::draft(room, &m));
    let cid = ClientId::parse("x").unwrap();
    let got = ledger
        .allocate(room, sender, &cid, draft.clone(), || async { Ok((6, 1)) })
        .await
        .unwrap();
    assert_eq!(got, Allocation::Fresh(7, 1));
    m.seq = 7;
    // The record kept is the one produced: with its seq and epoch.
    let record = record::encode_in(room, &m, 1);
    let again = ledger
        .allocate(room, sender, &cid, draft.clone(), || async { Ok((0, 0)) })
        .await
        .unwrap();
    assert_eq!(again, Allocation::Unconfirmed(7, record.clone()));
    assert_eq!(record::decode(&record).unwrap().epoch, 1);
    ledger.deposit(room, &m, 1, record).await.unwrap();
    let confirmed = ledger
        .allocate(room, sender, &cid, draft, || async { Ok((0, 0)) })
        .await
        .unwrap();
    assert_eq!(confirmed, Allocation::Repeat(7));
}

#[tokio::test]
async fn ledger_refuses_sends_when_the_window_is_full() {
    let prefix = RedisPrefix::new();
    let mut config = LedgerConfig::new(prefix.0.as_str());
    config.window_max = 2;
    let ledger = ledger_with(config).await;
    let (room, sender) = (Id::new(), Id::new());
    let name = RoomName::parse("w").unwrap();
    let who = UserRef {
        id: sender,
        username: "alice".into(),
    };
    for i in 1..=2u64 {
        let Allocation::Fresh(seq, epoch) = allocate(&ledger, room, sender, &format!("c{i}"))
            .await
            .unwrap()
        else {
            panic!("expected a fresh seq")
        };
        let m = message(&name, seq, &who, &format!("c{i}"));
        ledger
            .deposit(room, &m, epoch, record::encode_in(room, &m, epoch))
            .await
            .unwrap();
    }
    let err = allocate(&ledger, room, sender, "c3").await.unwrap_err();
    assert!(err.to_string().contains("persister is behind"), "{err}");
}

#[tokio::test]
async fn ledger_reloads_its_script_after_redis_forgets_it() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    assert_eq!(
        allocate(&ledger, room, sender, "a").await.unwrap(),
        Allocation::Fresh(1, 1)
    );
    // What a Redis restart does to loaded scripts.
    let mut conn = redis_conn().await;
    let _: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        allocate(&ledger, room, sender, "b").await.unwrap(),
        Allocation::Fresh(2, 1)
    );
}

/// Redis losing a room's counter between a message's allocation and its deposit (a restart
/// without persistence, FLUSHALL): the deposit is refused — the message must not be acked,
/// its seq may be given again — and stays refused once the room is seeded in a new epoch.
#[tokio::test]
async fn a_deposit_after_the_rooms_counter_was_lost_is_refused() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    let name = RoomName::parse("w").unwrap();
    let who = UserRef {
        id: sender,
        username: "alice".into(),
    };
    let Allocation::Fresh(seq, epoch) = allocate(&ledger, room, sender, "a").await.unwrap() else {
        panic!("expected a fresh seq")
    };
    assert_eq!((seq, epoch), (1, 1));
    let m = message(&name, seq, &who, "a");
    // The loss: every key of this test's prefix goes.
    let mut conn = redis_conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = ledger
        .deposit(room, &m, 1, record::encode_in(room, &m, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, scalify_kafka::DurableError::Fenced(_)),
        "{err}"
    );
    // A seed read in epoch 1 is refused once the cluster has moved on.
    set_cluster_epoch(&prefix.0, 2).await;
    let stale = allocate_seeded(&ledger, room, sender, "b", (0, 1))
        .await
        .unwrap_err();
    assert!(stale.to_string().contains("lost its data while"), "{stale}");
    // Seeded again, in epoch 2, from a database that has nothing yet: seq 1 is given again,
    // and the first message's deposit is still refused.
    let again = allocate_seeded(&ledger, room, sender, "b", (0, 2))
        .await
        .unwrap();
    assert_eq!(again, Allocation::Fresh(1, 2));
    let err = ledger
        .deposit(room, &m, 1, record::encode_in(room, &m, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, scalify_kafka::DurableError::Fenced(_)),
        "{err}"
    );
    assert_eq!(ledger.after(room, 0, 10).await.unwrap(), []);
    let b = message(&name, 1, &who, "b");
    ledger
        .deposit(room, &b, 2, record::encode_in(room, &b, 2))
        .await
        .unwrap();
    assert_eq!(ledger.after(room, 0, 10).await.unwrap(), [b]);
}

/// A counter seeded before epochs existed has no epoch: the next allocation seeds it (keeping
/// its value, raised to the database's if lower) and stamps it, so that a later loss of Redis's
/// data is caught for this room too.
#[tokio::test]
async fn a_counter_from_before_epochs_is_stamped_by_its_next_allocation() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}:seq:{{{room}}}", prefix.0))
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    let got = allocate_seeded(&ledger, room, sender, "a", (4, 1))
        .await
        .unwrap();
    assert_eq!(got, Allocation::Fresh(11, 1));
    let epoch: Option<String> = redis::cmd("GET")
        .arg(format!("{}:seqepoch:{{{room}}}", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(epoch.as_deref(), Some("1"));
}

/// A room whose counter alone is gone (its epoch key kept) is seeded again, not refused on
/// every send.
#[tokio::test]
async fn a_room_that_lost_only_its_counter_is_seeded_again() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    assert_eq!(
        allocate(&ledger, room, sender, "a").await.unwrap(),
        Allocation::Fresh(1, 1)
    );
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:seq:{{{room}}}", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    let got = allocate_seeded(&ledger, room, sender, "b", (5, 1))
        .await
        .unwrap();
    assert_eq!(got, Allocation::Fresh(6, 1));
}

/// A window read is accepted only in a ready epoch that still holds right after it: a read
/// that meets an emptied Redis (its epoch key gone) is refused, not answered from the empty
/// window; the next read, in the new epoch whose fence has passed, is accepted.
#[tokio::test]
async fn a_window_read_that_meets_a_lost_redis_is_refused() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let kafka = one_partition_topic("fence").await;
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:seqepoch", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    let fence = scalify_kafka::fence::Fence::new(ledger.clone(), store.clone(), &kafka).unwrap();
    let first = fence.ready().await.unwrap();
    let room = Id::new();
    let read = ledger.read_after(room, 0, 10).await.unwrap();
    assert_eq!(fence.confirm(read.epoch.as_deref()).await.unwrap(), first);
    // The loss: the epoch key goes, as with FLUSHALL.
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:seqepoch", prefix.0))
        .query_async(&mut conn)
        .await
        .unwrap();
    let read = ledger.read_after(room, 0, 10).await.unwrap();
    let err = fence.confirm(read.epoch.as_deref()).await.unwrap_err();
    assert!(err.to_string().contains("lost its data"), "{err}");
    let read = ledger.read_after(room, 0, 10).await.unwrap();
    let second = fence.confirm(read.epoch.as_deref()).await.unwrap();
    assert!(second > first, "{second} after {first}");
}
