//! What the pipeline tests share: topics and readers, a persister run in the background, a broker
//! of its own for the drills that stop one, and the checks on what got stored and committed.

use super::*;

/// The test database's store, migrations applied.
pub(super) async fn open(db: &FreshDb) -> Arc<PgStore> {
    Arc::new(PgStore::open(PgConfig::new(&db.url)).await.unwrap())
}

/// A consumer of `topic` in a group of its own, from the topic's first record.
pub(super) fn reader_from_the_start(topic: &str) -> StreamConsumer {
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    reader
}

pub(super) async fn ledger(prefix: &RedisPrefix) -> Ledger {
    ledger_with(LedgerConfig::new(prefix.0.as_str())).await
}

/// A ledger on the test's key prefix, its cluster in seq epoch 1 (what a node's fence begins).
pub(super) async fn ledger_with(config: LedgerConfig) -> Ledger {
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let prefix = config.prefix.clone();
    let ledger = Ledger::new(conn, config);
    set_cluster_epoch(&prefix, 1).await;
    ledger
}

/// A plain connection to the test Redis, for what a test does behind the ledger's back.
pub(super) async fn redis_conn() -> redis::aio::ConnectionManager {
    let client = redis::Client::open(redis_url()).unwrap();
    redis::aio::ConnectionManager::new(client).await.unwrap()
}

/// Puts the cluster of key prefix `prefix` in seq epoch `n` (as a fence does after a loss).
pub(super) async fn set_cluster_epoch(prefix: &str, n: u64) {
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:seqepoch"))
        .arg(format!("{n}:0=0"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

pub(super) fn message(room: &RoomName, seq: u64, sender: &UserRef, client_id: &str) -> Message {
    let new = scalify_core::NewMessage::plain(
        Id::new(),
        room.clone(),
        sender.clone(),
        MessageText::parse(&format!("text {seq}"), 4096).unwrap(),
        ClientId::parse(client_id).unwrap(),
    );
    Message::from_new(new, Id::new(), seq, scalify_core::now_ms())
}

/// Allocates for `client_id` in a room whose database has no message yet.
pub(super) async fn allocate(
    ledger: &Ledger,
    room: Id,
    sender: Id,
    client_id: &str,
) -> Result<Allocation, scalify_kafka::DurableError> {
    allocate_seeded(ledger, room, sender, client_id, (0, 1)).await
}

/// Allocates for `client_id`, a room without a counter being seeded at `seed` (the newest
/// stored seq, the epoch).
pub(super) async fn allocate_seeded(
    ledger: &Ledger,
    room: Id,
    sender: Id,
    client_id: &str,
    seed: (u64, u64),
) -> Result<Allocation, scalify_kafka::DurableError> {
    let cid = ClientId::parse(client_id).unwrap();
    ledger
        .allocate(room, sender, &cid, draft(), || async move { Ok(seed) })
        .await
}

/// Gives `room` a seq counter (at 0, in seq epoch 1) as a node's first send does: a deposit
/// needs one.
pub(super) async fn seed_counter(ledger: &Ledger, room: Id) {
    let got = allocate(ledger, room, Id::new(), "seed").await.unwrap();
    assert_eq!(got, Allocation::Fresh(1, 1));
}

/// Some message's record without its seq (what allocation keeps until the deposit).
pub(super) fn draft() -> Arc<record::Draft> {
    let who = UserRef {
        id: Id::new(),
        username: "alice".into(),
    };
    Arc::new(record::draft(
        Id::new(),
        &message(&RoomName::parse("w").unwrap(), 1, &who, "d"),
    ))
}

/// Alice and the public room `general` she is in.
pub(super) async fn general_room(store: &PgStore) -> (RoomName, scalify_core::Room, UserRef) {
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
pub(super) async fn one_partition_topic(name: &str) -> KafkaConfig {
    one_partition_topic_on(&brokers(), name).await
}

/// The same on the broker at `brokers`.
pub(super) async fn one_partition_topic_on(brokers: &str, name: &str) -> KafkaConfig {
    topic_on(brokers, name, 1).await
}

/// A topic of `partitions` partitions of the test's own, with its dead-letter topic and a
/// consumer group of its own, created on the broker at `brokers`.
pub(super) async fn topic_on(brokers: &str, name: &str, partitions: i32) -> KafkaConfig {
    let mut kafka = KafkaConfig::new(brokers);
    kafka.topic = unique(name);
    kafka.dead_letter_topic = format!("{}.dlq", kafka.topic);
    kafka.group = unique("group");
    kafka.partitions = partitions;
    topics::ensure_topics(&kafka).await.unwrap();
    kafka
}

/// The persister's log, shown with a failing test's output.
pub(super) fn show_persister_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("scalify_kafka=info")
        .with_test_writer()
        .try_init();
}

/// Commits `offset` of partition 0 for the topic's consumer group, as a persister that wrote
/// everything before it would have.
pub(super) fn commit_offset(kafka: &KafkaConfig, offset: i64) {
    let committer = group_client(kafka);
    let mut at = rdkafka::TopicPartitionList::new();
    at.add_partition_offset(&kafka.topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    committer
        .commit(&at, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
}

/// A persister running until `stop` is cancelled, with its live status.
pub(super) struct RunningPersister {
    pub(super) status: Arc<Mutex<PersisterStatus>>,
    pub(super) stop: CancellationToken,
    pub(super) task: tokio::task::JoinHandle<Result<(), scalify_kafka::DurableError>>,
    /// The Redis prefix it made for itself, if the test gave it no ledger.
    pub(super) _prefix: Option<RedisPrefix>,
}

impl RunningPersister {
    pub(super) async fn start(
        kafka: &KafkaConfig,
        config: PersisterConfig,
        store: &Arc<PgStore>,
    ) -> Self {
        let prefix = RedisPrefix::new();
        let ledger = ledger(&prefix).await;
        let mut running = Self::start_with(kafka, config, store, ledger);
        running._prefix = Some(prefix);
        running
    }

    /// With the test's own ledger (its recent windows).
    pub(super) fn start_with(
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
    pub(super) async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The first `n` records of the topic's dead-letter topic: (the `reason` header, payload).
pub(super) async fn dead_letters(kafka: &KafkaConfig, n: usize) -> Vec<(String, Vec<u8>)> {
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

/// Waits until `room` holds as many messages as `expected` (failing at `deadline`), then checks
/// they are `expected`, each once, in order.
pub(super) async fn await_stored_once_in_order(
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
pub(super) fn assert_once_in_order(stored: &[Message], expected: &[Message]) {
    assert!(
        stored
            .iter()
            .map(|m| m.id)
            .eq(expected.iter().map(|m| m.id)),
        "every message once, in order; stored seqs {:?}",
        stored.iter().map(|m| m.seq).collect::<Vec<_>>()
    );
}

/// A broker of the test's own, stored in SQLite (`tansu.db` in a temporary directory), so a
/// test can stop it, change its log and start it again on the same port.
pub(super) struct PrivateBroker {
    pub(super) dir: std::path::PathBuf,
    pub(super) port: u16,
    pub(super) child: Option<std::process::Child>,
}

impl PrivateBroker {
    pub(super) fn start() -> Self {
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

    pub(super) fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(super) fn run(&mut self) {
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
    pub(super) fn kill(&mut self) {
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

/// Produces each message of `records` (room id, message) as a node does — keyed by room, by an
/// idempotent producer, a key's records in the order given — and returns where each landed.
pub(super) async fn produce_in_order(
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
pub(super) fn assert_committed_at_the_end(
    kafka: &KafkaConfig,
    delivered: &[rdkafka::producer::future_producer::Delivery],
) {
    for (p, end) in partition_ends(delivered) {
        assert_eq!(committed_offset(kafka, p), Some(end), "partition {p}");
    }
}

/// Per partition `delivered` wrote to, the offset just past the last record delivered there.
pub(super) fn partition_ends(
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
pub(super) async fn await_committed_at_the_end(
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
pub(super) fn group_client(kafka: &KafkaConfig) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group)
        .create()
        .unwrap()
}

/// The group's committed offset of partition `p`, if any.
pub(super) fn committed_offset(kafka: &KafkaConfig, p: i32) -> Option<i64> {
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
pub(super) async fn held_writes(conn: &mut sqlx::PgConnection) -> usize {
    scalify_testkit::lock_waiters(conn).await.len()
}
