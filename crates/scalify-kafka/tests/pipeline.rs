//! The pipeline's engines against the real services: Redis (the ledger), PostgreSQL (the
//! persister's idempotent batch write) and a Kafka-compatible broker (the node's producer
//! confirms each send once; poison records go to the dead-letter topic and their partition
//! keeps flowing). `scripts/test.sh` starts the broker
//! and sets `SCALIFY_TEST_KAFKA_BROKERS`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use scalify_core::{ClientId, Id, Message, MessageText, RoomKind, RoomName, UserRef, Username};
use scalify_kafka::ingest::{Ingest, IngestConfig};
use scalify_kafka::ledger::{Allocation, Ledger, LedgerConfig};
use scalify_kafka::persister::{Persister, PersisterConfig, PersisterStatus};
use scalify_kafka::{record, topics, KafkaConfig};
use scalify_store::postgres::{PgConfig, PgStore};
use scalify_store::Store;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use scalify_testkit::{brokers, redis_url, unique, FreshDb, RedisPrefix};

/// The test database's store, migrations applied.
async fn open(db: &FreshDb) -> Arc<PgStore> {
    Arc::new(PgStore::open(PgConfig::new(&db.url)).await.unwrap())
}

/// A consumer of `topic` in a group of its own, from the topic's first record.
fn reader_from_the_start(topic: &str) -> StreamConsumer {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    reader
}

async fn ledger(prefix: &RedisPrefix) -> Ledger {
    ledger_with(LedgerConfig::new(prefix.0.as_str())).await
}

async fn ledger_with(config: LedgerConfig) -> Ledger {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    Ledger::new(conn, config)
}

fn message(room: &RoomName, seq: u64, sender: &UserRef, client_id: &str) -> Message {
    Message {
        id: Id::new(),
        room: room.clone(),
        seq,
        sender: sender.clone(),
        text: MessageText::parse(&format!("text {seq}"), 4096).unwrap(),
        client_id: ClientId::parse(client_id).unwrap(),
        ts: scalify_core::now_ms(),
    }
}

/// Allocates for `client_id` in a room whose database has no message yet.
async fn allocate(
    ledger: &Ledger,
    room: Id,
    sender: Id,
    client_id: &str,
) -> Result<Allocation, scalify_kafka::DurableError> {
    let cid = ClientId::parse(client_id).unwrap();
    ledger
        .allocate(room, sender, &cid, || async { Ok(0) })
        .await
}

#[tokio::test]
async fn ledger_allocates_seeds_repeats_and_windows() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    let c1 = ClientId::parse("a").unwrap();
    // The first allocation seeds the counter from the database's newest seq.
    let got = ledger
        .allocate(room, sender, &c1, || async { Ok(41) })
        .await
        .unwrap();
    assert_eq!(got, Allocation::Fresh(42));
    let seeded_again = std::sync::atomic::AtomicBool::new(false);
    let got = ledger
        .allocate(room, sender, &c1, || async {
            seeded_again.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(0)
        })
        .await
        .unwrap();
    assert_eq!(got, Allocation::Repeat(42), "same client_id: same seq");
    assert!(!seeded_again.load(std::sync::atomic::Ordering::SeqCst));
    let got = allocate(&ledger, room, sender, "b").await.unwrap();
    assert_eq!(got, Allocation::Fresh(43));

    // The window keeps confirmed messages by seq until trimmed.
    let name = RoomName::parse("w").unwrap();
    let who = UserRef {
        id: sender,
        username: "alice".into(),
    };
    for seq in [42, 43] {
        ledger
            .deposit(
                room,
                seq,
                record::encode(room, &message(&name, seq, &who, &format!("c{seq}"))),
            )
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
        let Allocation::Fresh(seq) = allocate(&ledger, room, sender, &format!("c{i}"))
            .await
            .unwrap()
        else {
            panic!("expected a fresh seq")
        };
        ledger
            .deposit(
                room,
                seq,
                record::encode(room, &message(&name, seq, &who, &format!("c{i}"))),
            )
            .await
            .unwrap();
    }
    let err = allocate(&ledger, room, sender, "c3").await.unwrap_err();
    assert!(err.to_string().contains("persister is behind"), "{err}");
}

/// Alice and the public room `general` she is in.
async fn general_room(store: &PgStore) -> (RoomName, scalify_core::Room, UserRef) {
    let user = store
        .create_user(&Username::parse("alice").unwrap(), "x")
        .await
        .unwrap();
    let name = RoomName::parse("general").unwrap();
    let room = store
        .create_room(&name, RoomKind::Public, &[user.id])
        .await
        .unwrap();
    let who = UserRef {
        id: user.id,
        username: "alice".into(),
    };
    (name, room, who)
}

/// A one-partition topic of the test's own (`<name>_…`), with its dead-letter topic and a
/// consumer group of its own, created on the shared broker.
async fn one_partition_topic(name: &str) -> KafkaConfig {
    one_partition_topic_on(&brokers(), name).await
}

/// The same on the broker at `brokers`.
async fn one_partition_topic_on(brokers: &str, name: &str) -> KafkaConfig {
    topic_on(brokers, name, 1).await
}

/// A topic of `partitions` partitions of the test's own, with its dead-letter topic and a
/// consumer group of its own, created on the broker at `brokers`.
async fn topic_on(brokers: &str, name: &str, partitions: i32) -> KafkaConfig {
    let mut kafka = KafkaConfig::new(brokers);
    kafka.topic = unique(name);
    kafka.dead_letter_topic = format!("{}.dlq", kafka.topic);
    kafka.group = unique("group");
    kafka.partitions = partitions;
    topics::ensure_topics(&kafka).await.unwrap();
    kafka
}

/// The persister's log, shown with a failing test's output.
fn show_persister_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("scalify_kafka=info")
        .with_test_writer()
        .try_init();
}

/// Commits `offset` of partition 0 for the topic's consumer group, as a persister that wrote
/// everything before it would have.
fn commit_offset(kafka: &KafkaConfig, offset: i64) {
    let committer = group_client(kafka);
    let mut at = rdkafka::TopicPartitionList::new();
    at.add_partition_offset(&kafka.topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    committer
        .commit(&at, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
}

/// A persister running until `stop` is cancelled, with its live status.
struct RunningPersister {
    status: Arc<Mutex<PersisterStatus>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), scalify_kafka::DurableError>>,
    /// The Redis prefix it made for itself, if the test gave it no ledger.
    _prefix: Option<RedisPrefix>,
}

impl RunningPersister {
    async fn start(kafka: &KafkaConfig, config: PersisterConfig, store: &Arc<PgStore>) -> Self {
        let prefix = RedisPrefix::new();
        let ledger = ledger(&prefix).await;
        let mut running = Self::start_with(kafka, config, store, ledger);
        running._prefix = Some(prefix);
        running
    }

    /// With the test's own ledger (its recent windows).
    fn start_with(
        kafka: &KafkaConfig,
        config: PersisterConfig,
        store: &Arc<PgStore>,
        ledger: Ledger,
    ) -> Self {
        let persister = Persister::new(kafka.clone(), config, store.clone(), ledger).unwrap();
        let status = persister.status();
        let stop = CancellationToken::new();
        let task = tokio::spawn(persister.run(stop.clone()));
        RunningPersister {
            status,
            stop,
            task,
            _prefix: None,
        }
    }

    /// Leaves the group cleanly (committing what was written).
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn persist_is_idempotent_and_reports_conflicts() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let batch: Vec<(Id, Message)> = (1..=3)
        .map(|s| (room.id, message(&name, s, &who, &format!("c{s}"))))
        .collect();
    let first = store.persist(&batch).await.unwrap();
    assert_eq!((first.inserted, first.redelivered), (3, 0));
    let again = store.persist(&batch).await.unwrap();
    assert_eq!((again.inserted, again.redelivered), (0, 3));
    assert!(again.conflicts.is_empty());
    assert_eq!(store.room(&name).await.unwrap().unwrap().last_seq, 3);
    // Another message claiming seq 2, and another claiming client_id c3: refused, reported.
    let clash_seq = message(&name, 2, &who, "other");
    let clash_key = message(&name, 4, &who, "c3");
    let out = store
        .persist(&[(room.id, clash_seq.clone()), (room.id, clash_key.clone())])
        .await
        .unwrap();
    assert_eq!(out.inserted, 0);
    let mut ids: Vec<Id> = out.conflicts.iter().map(|m| m.id).collect();
    ids.sort();
    let mut want = vec![clash_seq.id, clash_key.id];
    want.sort();
    assert_eq!(ids, want);
    let stored = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|m| m.id).collect::<Vec<_>>(),
        batch.iter().map(|(_, m)| m.id).collect::<Vec<_>>()
    );
}

/// The fast path writes rows in `COPY`'s text format, where backslash, tab, newline and `\N`
/// mean something: every such byte must come back exactly as sent. A batch mixing new rows
/// with one already stored takes the slow path and still writes the new ones.
#[tokio::test]
async fn persist_keeps_every_byte_and_mixes_new_with_redelivered_rows() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let texts = [
        "back\\slash \\N \\t not a tab",
        "tab\there\nnewline\r\ncrlf",
        "\\",
        "ünïcödé — 🦀 \u{7f} end\\",
    ];
    let batch: Vec<(Id, Message)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut m = message(&name, i as u64 + 1, &who, &format!("c\\N {i}\\"));
            m.text = MessageText::parse(t, 4096).unwrap();
            (room.id, m)
        })
        .collect();
    let first = store.persist(&batch[..2]).await.unwrap();
    assert_eq!((first.inserted, first.redelivered), (2, 0));
    // Rows 1–2 again with 3–4: the stored two are skipped, the new two written.
    let mixed = store.persist(&batch).await.unwrap();
    assert_eq!((mixed.inserted, mixed.redelivered), (2, 2));
    assert!(mixed.conflicts.is_empty());
    assert_eq!(store.room(&name).await.unwrap().unwrap().last_seq, 4);
    let stored = store.after(&room, 0, 10).await.unwrap();
    let want: Vec<&Message> = batch.iter().map(|(_, m)| m).collect();
    assert_eq!(stored.iter().collect::<Vec<_>>(), want);
}

#[tokio::test]
async fn poison_records_are_dead_lettered_and_the_partition_keeps_flowing() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let kafka = one_partition_topic("poison").await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let key = room.id.to_string();
    let m1 = message(&name, 1, &who, "c1");
    let m2 = message(&name, 2, &who, "c2");
    let records: Vec<(String, Vec<u8>)> = vec![
        (key.clone(), record::encode(room.id, &m1)),
        (key.clone(), b"{not json".to_vec()),
        ("another-room".into(), record::encode(room.id, &m2)),
        (key.clone(), record::encode(room.id, &m2)),
    ];
    for (k, v) in &records {
        producer
            .send(
                FutureRecord::to(&kafka.topic).key(k).payload(v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let persister = RunningPersister::start(&kafka, PersisterConfig::new("test"), &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = store.after(&room, 0, 10).await.unwrap();
        if stored.len() == 2 {
            assert_eq!(
                stored.iter().map(|m| m.id).collect::<Vec<_>>(),
                [m1.id, m2.id]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the valid records after the poison were not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both bad records are on the dead-letter topic, with why.
    let mut reasons: Vec<String> = dead_letters(&kafka, 2)
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    reasons.sort();
    assert!(
        reasons[0].contains("not a JSON message record"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("is not its room id"), "{reasons:?}");
    let dead = persister.status.lock().unwrap().dead_lettered;
    assert_eq!(dead, 2);
    persister.stop().await;

    // The group's next persister starts before the committed offset and reads the poison
    // records again: they are not dead-lettered a second time. One more message, written once
    // the records before it were handled, says when to look.
    let m3 = message(&name, 3, &who, "c3");
    producer
        .send(
            FutureRecord::to(&kafka.topic)
                .key(&key)
                .payload(&record::encode(room.id, &m3)),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let again = RunningPersister::start(&kafka, PersisterConfig::new("test"), &store).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while again.status.lock().unwrap().persisted < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message after the restart was not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (persisted, dead) = {
        let s = again.status.lock().unwrap();
        (s.persisted, s.dead_lettered)
    };
    assert_eq!(
        (persisted, dead),
        (1, 0),
        "written once, nothing dead-lettered again"
    );
    let stored = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|m| m.id).collect::<Vec<_>>(),
        [m1.id, m2.id, m3.id]
    );
    again.stop().await;
}

/// The first `n` records of the topic's dead-letter topic: (the `reason` header, payload).
async fn dead_letters(kafka: &KafkaConfig, n: usize) -> Vec<(String, Vec<u8>)> {
    let dlq = reader_from_the_start(&kafka.dead_letter_topic);
    let mut letters = Vec::new();
    while letters.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("dead letters expected")
            .unwrap();
        let reason = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "reason")
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
            .unwrap_or_default();
        letters.push((reason, m.payload().unwrap_or_default().to_vec()));
    }
    letters
}

/// A record that decodes but that the database refuses (here a CHECK constraint the test adds;
/// in production, say, a value PostgreSQL cannot store) fails its whole batch's COPY: the
/// persister writes that batch row by row, dead-letters the refused one with the database's
/// reason, stores the others, and the partition keeps flowing.
#[tokio::test]
async fn a_record_the_database_refuses_is_dead_lettered_and_its_batch_is_written() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT test_refuses CHECK (text <> 'refuse me')")
        .execute(&mut admin)
        .await
        .unwrap();
    let kafka = one_partition_topic("refused").await;

    // Three records enqueued together: one broker batch, one persister batch.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "500")
        .create()
        .unwrap();
    let key = room.id.to_string();
    let m1 = message(&name, 1, &who, "c1");
    let mut m2 = message(&name, 2, &who, "c2");
    m2.text = MessageText::parse("refuse me", 4096).unwrap();
    let m3 = message(&name, 3, &who, "c3");
    let m4 = message(&name, 4, &who, "c4");
    let payloads = [&m1, &m2, &m3, &m4].map(|m| record::encode(room.id, m));
    let send = |i: usize| {
        producer.send(
            FutureRecord::to(&kafka.topic)
                .key(&key)
                .payload(&payloads[i]),
            Duration::from_secs(10),
        )
    };
    for delivered in futures_util::future::join_all([send(0), send(1), send(2)]).await {
        delivered.map_err(|(e, _)| e).unwrap();
    }

    let persister = RunningPersister::start(&kafka, PersisterConfig::new("test"), &store).await;
    let stored_ids = |n: usize| {
        let (store, room) = (store.clone(), room.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let stored = store.after(&room, 0, 10).await.unwrap();
                if stored.len() >= n || tokio::time::Instant::now() > deadline {
                    return stored.iter().map(|m| m.id).collect::<Vec<_>>();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(stored_ids(2).await, [m1.id, m3.id], "the batch around it");
    let letters = dead_letters(&kafka, 1).await;
    assert!(
        letters[0].0.contains("database refused the message")
            && letters[0].0.contains("test_refuses"),
        "{:?}",
        letters[0].0
    );
    assert_eq!(letters[0].1, payloads[1]);

    // The partition keeps flowing.
    send(3).await.map_err(|(e, _)| e).unwrap();
    assert_eq!(stored_ids(3).await, [m1.id, m3.id, m4.id]);
    // The status is updated once the batch's trim is done, just after its commit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts = {
            let s = persister.status.lock().unwrap();
            (s.persisted, s.dead_lettered)
        };
        if counts == (3, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "persisted, dead-lettered: {counts:?}, expected (3, 1)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    persister.stop().await;
}

#[tokio::test]
async fn ledger_reloads_its_script_after_redis_forgets_it() {
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    let (room, sender) = (Id::new(), Id::new());
    assert_eq!(
        allocate(&ledger, room, sender, "a").await.unwrap(),
        Allocation::Fresh(1)
    );
    // What a Redis restart does to loaded scripts.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let _: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        allocate(&ledger, room, sender, "b").await.unwrap(),
        Allocation::Fresh(2)
    );
}

/// The node's producer ([`Ingest`], its delivery reports served on the tokio runtime): many
/// concurrent sends are each confirmed once, a key keeps its partition and its order, and the
/// broker holds exactly the confirmed records. Nothing else polls the producer here, so a
/// report that the runtime is not woken for would time the test out.
#[tokio::test]
async fn ingest_confirms_concurrent_sends_once_each_in_key_order() {
    let mut kafka = KafkaConfig::new(brokers());
    kafka.topic = unique("ingest");
    kafka.partitions = 3;
    topics::ensure_topics(&kafka).await.unwrap();
    let ingest = Ingest::new(kafka.clone(), IngestConfig::default()).unwrap();

    const KEYS: usize = 20;
    const PER_KEY: usize = 50;
    let mut senders = Vec::new();
    for k in 0..KEYS {
        let ingest = ingest.clone();
        senders.push(tokio::spawn(async move {
            let key = format!("room-{k}");
            let mut confirmed = Vec::new();
            for i in 0..PER_KEY {
                let payload = format!("{key}/{i}");
                confirmed.push(ingest.produce(&key, payload.as_bytes()).await.unwrap());
            }
            confirmed
        }));
    }
    let mut all = Vec::new();
    for task in senders {
        let confirmed = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("every send confirmed within 30 s")
            .unwrap();
        assert!(
            confirmed.iter().all(|(p, _)| *p == confirmed[0].0),
            "one key, one partition: {confirmed:?}"
        );
        assert!(
            confirmed.windows(2).all(|w| w[0].1 < w[1].1),
            "one key's sends in order: {confirmed:?}"
        );
        all.extend(confirmed);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        KEYS * PER_KEY,
        "each confirmation is its own record"
    );

    // The broker holds exactly those records, each payload once.
    let reader = reader_from_the_start(&kafka.topic);
    let mut payloads = std::collections::BTreeSet::new();
    let mut read = 0;
    while read < KEYS * PER_KEY {
        let m = tokio::time::timeout(Duration::from_secs(20), reader.recv())
            .await
            .expect("every confirmed record is on the topic")
            .unwrap();
        payloads.insert(m.payload().unwrap_or_default().to_vec());
        read += 1;
    }
    assert_eq!(payloads.len(), KEYS * PER_KEY, "no record twice");
    ingest.close(Duration::from_secs(5)).await;
}

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

/// Waits until `room` holds as many messages as `expected` (failing at `deadline`), then checks
/// they are `expected`, each once, in order.
async fn await_stored_once_in_order(
    store: &PgStore,
    room: &scalify_core::Room,
    expected: &[Message],
    deadline: tokio::time::Instant,
) {
    loop {
        let stored = store
            .after(room, 0, expected.len() as u32 + 1)
            .await
            .unwrap();
        if stored.len() == expected.len() {
            assert_once_in_order(&stored, expected);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room {}: {} of {} stored; seqs {:?}",
            room.name,
            stored.len(),
            expected.len(),
            stored.iter().map(|m| m.seq).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store holds exactly `expected`, each once, in seq order (ids compared).
fn assert_once_in_order(stored: &[Message], expected: &[Message]) {
    assert!(
        stored
            .iter()
            .map(|m| m.id)
            .eq(expected.iter().map(|m| m.id)),
        "every message once, in order; stored seqs {:?}",
        stored.iter().map(|m| m.seq).collect::<Vec<_>>()
    );
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
    // Only the unwritten ones were inserted (the others read again were found stored).
    assert_eq!(
        persister.status.lock().unwrap().persisted,
        len + more - written
    );
    persister.stop().await;
}

/// A broker of the test's own, stored in SQLite (`tansu.db` in a temporary directory), so a
/// test can stop it, change its log and start it again on the same port.
struct PrivateBroker {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateBroker {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("tansu"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut broker = PrivateBroker {
            dir,
            port,
            child: None,
        };
        broker.run();
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| {
            format!(
                "{}/.cargo/bin/tansu",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let url = format!("tcp://{}", self.brokers());
        let child = std::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(self.brokers()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private broker did not listen on {}", self.brokers());
    }

    /// kill -9.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    let ingest = Ingest::new(kafka.clone(), IngestConfig::default()).unwrap();
    let messages: Vec<Message> = (1..=10)
        .map(|s| message(&name, s, &who, &format!("c{s}")))
        .collect();
    for m in &messages {
        let payload = record::encode(room.id, m);
        ingest
            .produce(&room.id.to_string(), &payload)
            .await
            .unwrap();
        ledger.deposit(room.id, m.seq, payload).await.unwrap();
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
        // Done: seq 7..=10 written from the broker (the window trimmed up to 10).
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

/// Produces each message of `records` (room id, message) as a node does — keyed by room, by an
/// idempotent producer, a key's records in the order given — and returns where each landed.
async fn produce_in_order(
    topic: &str,
    records: &[(Id, &Message)],
) -> Vec<rdkafka::producer::future_producer::Delivery> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let producer = &producer;
    // Enqueued in order as `join_all` polls them; confirmed together.
    let sends = records.iter().map(|(room, m)| async move {
        let payload = record::encode(*room, m);
        let key = room.to_string();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap()
    });
    futures_util::future::join_all(sends).await
}

/// The group's committed offset of every partition `delivered` wrote to is just past the
/// last record delivered there.
fn assert_committed_at_the_end(
    kafka: &KafkaConfig,
    delivered: &[rdkafka::producer::future_producer::Delivery],
) {
    for (p, end) in partition_ends(delivered) {
        assert_eq!(committed_offset(kafka, p), Some(end), "partition {p}");
    }
}

/// Per partition `delivered` wrote to, the offset just past the last record delivered there.
fn partition_ends(
    delivered: &[rdkafka::producer::future_producer::Delivery],
) -> std::collections::BTreeMap<i32, i64> {
    let mut ends = std::collections::BTreeMap::new();
    for d in delivered {
        let e = ends.entry(d.partition).or_insert(0i64);
        *e = (*e).max(d.offset + 1);
    }
    ends
}

/// Waits until the group's committed offset of every partition `delivered` wrote to is just
/// past the last record delivered there (the persister commits what it stored every second).
async fn await_committed_at_the_end(
    kafka: &KafkaConfig,
    delivered: &[rdkafka::producer::future_producer::Delivery],
    deadline: tokio::time::Instant,
) {
    for (p, end) in partition_ends(delivered) {
        loop {
            // Off the test's one runtime thread, which the persister shares.
            let k = kafka.clone();
            let committed = tokio::task::spawn_blocking(move || committed_offset(&k, p))
                .await
                .unwrap();
            if committed == Some(end) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "partition {p}: committed {committed:?}, its end is {end}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A client of the topic's consumer group that does not join it: for reading and setting the
/// group's committed offsets.
fn group_client(kafka: &KafkaConfig) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group)
        .create()
        .unwrap()
}

/// The group's committed offset of partition `p`, if any.
fn committed_offset(kafka: &KafkaConfig, p: i32) -> Option<i64> {
    let reader = group_client(kafka);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&kafka.topic, p);
    let committed = reader
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match committed.find_partition(&kafka.topic, p)?.offset() {
        rdkafka::Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// How many sessions of the connection's database wait for a lock.
async fn held_writes(conn: &mut sqlx::PgConnection) -> usize {
    scalify_testkit::lock_waiters(conn).await.len()
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
