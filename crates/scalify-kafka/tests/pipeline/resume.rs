//! Where the persister resumes: a committed offset inside a broker batch, a hole in the offsets,
//! records read again, records the broker no longer has.

use super::*;

/// A group whose committed offset falls inside one of the broker's record batches (a
/// persister batch cut by `batch_max` mid-way through a produced batch, then a restart, a
/// rebalance or a seek back) resumes at exactly that offset: the rest of the broker batch is
/// written. A Kafka broker answers a fetch with the whole batch holding the offset; the test
/// broker's memory engine answers from the next batch on, which skipped the batch's rest
/// (both tests failed so before `scalify_kafka::continuity`).
#[tokio::test]
async fn a_committed_offset_inside_a_broker_batch_resumes_without_skipping() {
    // Ten records in one batch, committed at 5: the persister starts a little earlier.
    resume_inside_a_batch(10, 5, 5, 0).await;
}

/// The same, with the committed offset further into the batch than the persister first looks
/// back, and a later batch: it seeks further back until the batch holding the offset comes.
// On a multi-threaded runtime, as in the binary: the persister's waits for the broker
// (`block_in_place`) run there, and must not panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_the_offsets_is_stepped_back_over() {
    resume_inside_a_batch(2000, 1800, 1800, 1).await;
}

/// The same with no later record: nothing comes at all, the watchdog finds the persister
/// stuck (lag, no progress) and re-creates its consumer looking twice as far back, until the
/// batch comes.
#[tokio::test]
async fn an_offset_deep_in_the_last_batch_is_reached_by_the_watchdog() {
    resume_inside_a_batch(3000, 2500, 2500, 0).await;
}

/// A committed offset past what the database holds — the broker's log cut below it and filled
/// again with new messages (a broker that lost acknowledged data): the records before the
/// committed offset that the persister reads again are written, not taken as done.
#[tokio::test]
async fn records_read_again_below_the_committed_offset_are_written_if_missing() {
    resume_inside_a_batch(10, 5, 8, 0).await;
}

/// The same when the assignment cannot read the group's committed offset in time (here: it
/// may not wait at all): the partition starts where librdkafka finds it — at the committed
/// offset, which the test broker answers from the next batch on — and the persister reads the
/// committed offset again before judging the first record, so the record past it is stepped
/// back over. Without that second read the first record was taken as the start and the
/// batch's rest never written.
// On a multi-threaded runtime, as in the binary: the persister's waits for the broker
// (`block_in_place`) run there, and must not panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_unread_at_assignment_is_read_before_the_first_record() {
    resume_inside_a_batch_with(2000, 1800, 1800, 1, |c| {
        c.assignment_offsets_timeout = Duration::ZERO;
    })
    .await;
}

/// Produces `len` records in one batch (one room, seq 1..=len), writes the first `written` to
/// the database and commits offset `committed` for a fresh group, produces `more` records
/// afterwards, then runs a persister and checks that every message is stored once, in order.
async fn resume_inside_a_batch(len: u64, written: u64, committed: u64, more: u64) {
    resume_inside_a_batch_with(len, written, committed, more, |_| {}).await;
}

/// [`resume_inside_a_batch`] with the persister's configuration changed by `configure`.
async fn resume_inside_a_batch_with(
    len: u64,
    written: u64,
    committed: u64,
    more: u64,
    configure: impl FnOnce(&mut PersisterConfig),
) {
    show_persister_log();
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let kafka = one_partition_topic("midbatch").await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "500")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    let key = room.id.to_string();
    let messages: Vec<Message> = (1..=len + more)
        .map(|s| message(&name, s, &who, &format!("c{s}")))
        .collect();
    let payloads: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| record::encode(room.id, m))
        .collect();
    let mut offsets = Vec::new();
    // The first `len` enqueued together (one linger, one batch), the rest after they landed.
    for part in [&payloads[..len as usize], &payloads[len as usize..]] {
        let sends = part.iter().map(|p| {
            producer.send(
                FutureRecord::to(&kafka.topic).key(&key).payload(p),
                Duration::from_secs(10),
            )
        });
        for delivered in futures_util::future::join_all(sends).await {
            offsets.push(delivered.map_err(|(e, _)| e).unwrap().offset);
        }
    }
    assert_eq!(offsets, (0..(len + more) as i64).collect::<Vec<i64>>());

    // The group has written offsets 0..written (seq 1..=written).
    let rows: Vec<(Id, Message)> = messages[..written as usize]
        .iter()
        .map(|m| (room.id, m.clone()))
        .collect();
    store.persist(&rows).await.unwrap();
    commit_offset(&kafka, committed as i64);

    let mut config = PersisterConfig::new("test");
    config.stuck_after = Duration::from_secs(2);
    configure(&mut config);
    let persister = RunningPersister::start(&kafka, config, &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let all = messages.len() as u32;
    loop {
        let stored = store.after(&room, 0, all + 1).await.unwrap();
        if stored.len() == messages.len() {
            assert_once_in_order(&stored, &messages);
            break;
        }
        let seqs: Vec<u64> = stored
            .iter()
            .map(|m| m.seq)
            .skip(written as usize)
            .collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "seq {}..={} were not all written; after {written} stored: {:?}",
            written + 1,
            len + more,
            &seqs[..seqs.len().min(20)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the unwritten ones were inserted (the others read again were found stored). The
    // status counts a batch once its windows are trimmed, a moment after its rows are visible.
    let want = len + more - written;
    loop {
        let persisted = persister.status.lock().unwrap().persisted;
        if persisted >= want {
            assert_eq!(persisted, want);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the status counts {persisted} rows written, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    persister.stop().await;
}

/// Records deleted from the broker before the persister wrote them (retention outran a long
/// persister outage): their messages are still in the recent windows, and the persister
/// writes them from there before its trim would drop them. Without the rescue the database
/// kept seq 1, 2 and 7–10 and lost 3–6 for good.
#[tokio::test]
async fn records_deleted_from_the_broker_are_written_from_the_window() {
    show_persister_log();
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let mut broker = PrivateBroker::start();
    let kafka = one_partition_topic_on(&broker.brokers(), "retained").await;

    // Ten confirmed messages, each in the recent window as a node leaves it (seq 1..=10 at
    // offsets 0..=9); the first two written and committed.
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let ingest = Ingest::new(kafka.clone(), IngestConfig::default(), TaskTracker::new()).unwrap();
    let messages: Vec<Message> = (1..=10)
        .map(|s| message(&name, s, &who, &format!("c{s}")))
        .collect();
    seed_counter(&ledger, room.id).await;
    for m in &messages {
        let payload = record::encode_in(room.id, m, 1);
        ingest
            .produce(&room.id.to_string(), &payload)
            .await
            .unwrap();
        ledger.deposit(room.id, m, 1, payload).await.unwrap();
    }
    ingest.close(Duration::from_secs(2)).await;
    let rows: Vec<(Id, Message)> = messages[..2].iter().map(|m| (room.id, m.clone())).collect();
    store.persist(&rows).await.unwrap();
    commit_offset(&kafka, 2);

    // Retention: offsets 0..=5 (seq 1..=6) leave the broker's log.
    broker.kill();
    {
        let log = rusqlite::Connection::open(broker.dir.join("tansu.db")).unwrap();
        let deleted = log
            .execute("delete from record where offset_id < 6", [])
            .unwrap();
        assert_eq!(deleted, 6, "the broker's log as the test expects it");
        log.execute(
            "update watermark set low = 6 where high is not null and high >= 6",
            [],
        )
        .unwrap();
    }
    broker.run();

    let persister =
        RunningPersister::start_with(&kafka, PersisterConfig::new("test"), &store, ledger.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = store.after(&room, 0, 11).await.unwrap();
        let window = ledger.after(room.id, 0, 11).await.unwrap();
        // Done: seq 7..=10 written from the broker, 3..=6 from the window, every entry trimmed.
        if persister.status.lock().unwrap().persisted >= 4 && window.is_empty() {
            assert_once_in_order(&stored, &messages);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the persister did not finish: stored {:?}, window {:?}",
            stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
            window.iter().map(|m| m.seq).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    persister.stop().await;
}
