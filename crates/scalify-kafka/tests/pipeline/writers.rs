//! Several writers, an abrupt stop, and writes the database holds.

use super::*;

/// Two writers share four partitions (a partition is written by one writer, its batches one
/// after another): a persister stopped abruptly mid-stream — its writes in flight dropped, the
/// offsets it stored committed as the consumer closes — must not have stored an offset past
/// an unwritten record, so the next one writes every message once, in order, and leaves the
/// group's committed offsets at the end of every partition.
#[tokio::test]
async fn writers_share_the_partitions_and_an_abrupt_stop_skips_nothing() {
    show_persister_log();
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (_, _, who) = general_room(&store).await;
    let kafka = topic_on(&brokers(), "writers", 4).await;

    const ROOMS: usize = 8;
    const PER_ROOM: u64 = 300;
    let mut rooms = Vec::new();
    for i in 0..ROOMS {
        let name = RoomName::parse(&format!("room-{i}")).unwrap();
        let room = store
            .create_room(&name, RoomKind::Public, &[who.id])
            .await
            .unwrap();
        let messages: Vec<Message> = (1..=PER_ROOM)
            .map(|s| message(&name, s, &who, &format!("c{s}")))
            .collect();
        rooms.push((room, messages));
    }
    // Rooms interleaved, each room's records in seq order (one key: one partition, in order).
    let interleaved: Vec<(Id, &Message)> = (0..PER_ROOM as usize)
        .flat_map(|s| rooms.iter().map(move |(room, m)| (room.id, &m[s])))
        .collect();
    let delivered = produce_in_order(&kafka.topic, &interleaved).await;
    let used: std::collections::BTreeSet<i32> = delivered.iter().map(|d| d.partition).collect();
    assert!(used.len() >= 2, "the rooms landed in partitions {used:?}");

    let config = || {
        let mut c = PersisterConfig::new("test");
        c.writers = 2;
        // Many small batches: several writes of each partition, both writers busy.
        c.batch_max = 40;
        c.batch_wait = Duration::from_millis(5);
        c
    };
    // Its own connection pool, as another process would have (the abort below drops its
    // writes; their database parts, tasks of their own, end by themselves).
    let first_store = open(&db).await;
    let first = RunningPersister::start(&kafka, config(), &first_store).await;
    let total = ROOMS as u64 * PER_ROOM;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.status.lock().unwrap().persisted < total / 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first persister wrote too little"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Abruptly: no final write, no clean leave (the consumer's close commits what was stored).
    first.task.abort();
    let _ = first.task.await;
    let stored_before: usize = {
        let mut n = 0;
        for (room, _) in &rooms {
            n += store
                .after(room, 0, PER_ROOM as u32 + 1)
                .await
                .unwrap()
                .len();
        }
        n
    };
    assert!(
        (stored_before as u64) < total,
        "the first persister wrote everything before it was stopped: nothing left to check"
    );

    let second = RunningPersister::start(&kafka, config(), &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (room, messages) in &rooms {
        await_stored_once_in_order(&store, room, messages, deadline).await;
    }
    // Every row may be stored before the second persister has read them all: the first one
    // wrote some whose offsets it never stored (aborted between its database commit and its
    // offset store). The second writes them again (stored once) and commits past them.
    await_committed_at_the_end(&kafka, &delivered, deadline).await;
    second.stop().await;

    // Every partition's committed offset is its end: what was written was stored, in order.
    assert_committed_at_the_end(&kafka, &delivered);
}

/// A batch write that PostgreSQL holds (here: a lock on the messages table) for longer than
/// `stuck_after`: the watchdog finds lag without progress, waits for the write at most
/// `stuck_after`, drops it and re-creates the consumer — it is not held until the database
/// answers (a connection gone silent would hold it for the TCP timeout). A stop is not held by
/// its write in flight either (a stop after a dropped write writes nothing more; the bound on
/// a stop's later writes is the next test's). Once the database lets writes through, every
/// message is stored once, in order, and the end of the partition committed.
#[tokio::test]
async fn a_write_held_by_the_database_holds_neither_the_watchdog_nor_a_stop() {
    show_persister_log();
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let kafka = one_partition_topic("held").await;
    let messages: Vec<Message> = (1..=120)
        .map(|s| message(&name, s, &who, &format!("h{s}")))
        .collect();
    let in_room: Vec<(Id, &Message)> = messages.iter().map(|m| (room.id, m)).collect();
    let delivered = produce_in_order(&kafka.topic, &in_room).await;

    // Every write waits for this lock until the transaction ends.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();

    let config = |stuck_after_secs| {
        let mut c = PersisterConfig::new("test");
        c.batch_max = 40;
        c.batch_wait = Duration::from_millis(5);
        c.stuck_after = Duration::from_secs(stuck_after_secs);
        c
    };
    let mut watcher = sqlx::PgConnection::connect(&db.url).await.unwrap();

    // Stopped while its first write is held and more is read behind it: each write is waited
    // for at most `stuck_after`, then the stop goes on.
    let first = RunningPersister::start(&kafka, config(2), &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while held_writes(&mut watcher).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first write never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = first.status.lock().unwrap().clone();
    assert_eq!((status.persisted, status.restarts), (0, 0));
    if tokio::time::timeout(Duration::from_secs(20), first.stop())
        .await
        .is_err()
    {
        // Let the held writes end, so the failure is reported instead of hanging the test.
        let _ = sqlx::query("ROLLBACK").execute(&mut holder).await;
        panic!("the persister's stop waited for a write the database held");
    }

    // With writes held, only a bounded wait for them lets the watchdog restart the consumer.
    let second = RunningPersister::start(&kafka, config(1), &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = second.status.lock().unwrap().clone();
        assert_eq!(status.persisted, 0, "a write went through the lock");
        if status.restarts >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watchdog restart while a write was held ({} so far)",
            status.restarts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    // Once the database lets writes through, every message is stored once, in order. (The
    // dropped writes' database parts commit on their own once the lock is gone, so the rows
    // may be there before this persister has written them again and committed past them.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    await_stored_once_in_order(&store, &room, &messages, deadline).await;
    await_committed_at_the_end(&kafka, &delivered, deadline).await;
    second.stop().await;
    assert_committed_at_the_end(&kafka, &delivered);
}

/// A stop whose writes in flight end well, then finds the write of what it read ahead held by
/// the database (a lock taken, a connection gone silent, in between), waits for that one at
/// most `stuck_after` too and ends; the offsets it commits pass nothing unwritten. Two rooms
/// in one partition; each room's row lock (what a batch write takes first) is held by a
/// transaction of the test's: the first batch (room A) is released while the stop waits for
/// it, the second (room B, read ahead) stays held. With the default two writers (a writer
/// then reads up to four batches ahead) and with one (one batch ahead).
#[tokio::test]
async fn a_stop_waits_for_a_held_write_of_what_it_read_ahead_at_most_stuck_after() {
    stop_waits_for_a_held_write(PersisterConfig::new("test").writers).await;
}

#[tokio::test]
async fn a_stop_waits_for_a_held_write_of_what_it_read_ahead_with_one_writer() {
    stop_waits_for_a_held_write(1).await;
}

async fn stop_waits_for_a_held_write(writers: usize) {
    show_persister_log();
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (a_name, a, who) = general_room(&store).await;
    let b_name = RoomName::parse("other").unwrap();
    let b = store
        .create_room(&b_name, RoomKind::Public, &[who.id])
        .await
        .unwrap();
    let kafka = one_partition_topic("stop-held").await;
    let in_a: Vec<Message> = (1..=40)
        .map(|s| message(&a_name, s, &who, &format!("a{s}")))
        .collect();
    let in_b: Vec<Message> = (1..=40)
        .map(|s| message(&b_name, s, &who, &format!("b{s}")))
        .collect();
    let records: Vec<(Id, &Message)> = in_a
        .iter()
        .map(|m| (a.id, m))
        .chain(in_b.iter().map(|m| (b.id, m)))
        .collect();
    let delivered = produce_in_order(&kafka.topic, &records).await;

    // A batch write waits for its rooms' rows until these transactions end.
    let mut holders = Vec::new();
    for room in [&a, &b] {
        let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::query("SELECT id FROM rooms WHERE id = $1 FOR UPDATE")
            .bind(room.id.to_string())
            .execute(&mut holder)
            .await
            .unwrap();
        holders.push(holder);
    }
    let mut hold_b = holders.pop().unwrap();
    let mut hold_a = holders.pop().unwrap();

    // Batches of exactly one room each: 40 records, cut by size (all are on the broker).
    let mut config = PersisterConfig::new("test");
    config.writers = writers;
    config.batch_max = 40;
    config.batch_wait = Duration::from_secs(1);
    // Long enough that the watchdog (checks every 3 s) does not drop the first write before
    // the stop comes; short enough that a bounded stop ends well within the test's 15 s.
    config.stuck_after = Duration::from_secs(5);
    let persister = RunningPersister::start(&kafka, config, &store).await;
    let mut watcher = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while held_writes(&mut watcher).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first write never reached room A's lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room B's batch is read behind the held one meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let status = persister.status.clone();
    let stopping = tokio::spawn(persister.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The write in flight goes through, well within `stuck_after`; the next one is held.
    sqlx::query("ROLLBACK").execute(&mut hold_a).await.unwrap();
    if tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .is_err()
    {
        let _ = sqlx::query("ROLLBACK").execute(&mut hold_b).await;
        panic!("the stop waited for the held write of what it had read ahead");
    }
    assert_eq!(status.lock().unwrap().persisted, 40, "room A's batch only");
    assert_eq!(
        held_writes(&mut watcher).await,
        1,
        "room B's write is still held"
    );
    assert_committed_at_the_end(&kafka, &delivered[..in_a.len()]);

    // Released: the dropped write's database part commits room B on its own (it runs on
    // after the drop); the next persister reads room B again, finds it stored, and commits
    // the partition's end.
    sqlx::query("ROLLBACK").execute(&mut hold_b).await.unwrap();
    let next = RunningPersister::start(&kafka, PersisterConfig::new("test"), &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    await_stored_once_in_order(&store, &a, &in_a, deadline).await;
    await_stored_once_in_order(&store, &b, &in_b, deadline).await;
    await_committed_at_the_end(&kafka, &delivered, deadline).await;
    next.stop().await;
    assert_committed_at_the_end(&kafka, &delivered);
}
