//! The persister's writes: idempotent, byte-exact, and dead letters for what cannot be written.

use super::*;

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
    // Another message claiming seq 2: refused, reported.
    let clash_seq = message(&name, 2, &who, "other");
    let out = store
        .persist(std::slice::from_ref(&(room.id, clash_seq.clone())))
        .await
        .unwrap();
    assert_eq!(out.inserted, 0);
    assert_eq!(
        out.conflicts.iter().map(|m| m.id).collect::<Vec<_>>(),
        [clash_seq.id]
    );
    let stored = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|m| m.id).collect::<Vec<_>>(),
        batch.iter().map(|(_, m)| m.id).collect::<Vec<_>>()
    );
}

/// A message at a free seq whose (sender, client_id) an earlier message holds — sent again
/// after its idempotency key expired, and acked as new — is stored beside the first, with its
/// client_id as sent: an acked message is never refused for its client_id. Both it and the
/// first are found again by a redelivery.
#[tokio::test]
async fn a_resend_after_the_idempotency_window_is_stored_as_a_new_message() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let batch: Vec<(Id, Message)> = (1..=3)
        .map(|s| (room.id, message(&name, s, &who, &format!("c{s}"))))
        .collect();
    store.persist(&batch).await.unwrap();
    let resend = message(&name, 4, &who, "c2");
    let fresh = message(&name, 5, &who, "c5");
    let out = store
        .persist(&[(room.id, resend.clone()), (room.id, fresh.clone())])
        .await
        .unwrap();
    assert_eq!((out.inserted, out.resent), (2, 1), "{out:?}");
    assert!(out.conflicts.is_empty(), "{out:?}");
    assert_eq!(store.room(&name).await.unwrap().unwrap().last_seq, 5);
    let stored = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|m| (m.seq, m.client_id.as_str()))
            .collect::<Vec<_>>(),
        [(1, "c1"), (2, "c2"), (3, "c3"), (4, "c2"), (5, "c5")]
    );
    assert_eq!(stored[3], resend);
    let again = store
        .persist(&[(room.id, resend), (room.id, fresh)])
        .await
        .unwrap();
    assert_eq!((again.inserted, again.redelivered), (0, 2), "{again:?}");
    assert!(again.conflicts.is_empty());
}

/// Two messages of one batch at the same (room, seq) — a seq given twice after Redis lost its
/// counter — are one written and one reported, never one written and the other taken for it.
#[tokio::test]
async fn two_messages_at_one_seq_in_a_batch_are_one_written_and_one_conflict() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let first = message(&name, 5, &who, "a");
    let second = message(&name, 5, &who, "b");
    let out = store
        .persist(&[(room.id, first.clone()), (room.id, second.clone())])
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    let stored = store.after(&room, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let loser = if stored[0].id == first.id {
        &second
    } else {
        &first
    };
    assert_eq!(
        out.conflicts.iter().map(|m| m.id).collect::<Vec<_>>(),
        [loser.id],
        "the message not written is reported"
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
    // The status counts a batch once its windows are trimmed, a moment after its dead letters
    // are on the topic.
    let counted = tokio::time::Instant::now() + Duration::from_secs(30);
    while persister.status.lock().unwrap().dead_lettered < 2 {
        assert!(
            tokio::time::Instant::now() < counted,
            "the status never counted the dead letters"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(persister.status.lock().unwrap().dead_lettered, 2);
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

/// A record allocated before Redis lost its data that reaches the database after its room was
/// seeded again (stamped with a newer epoch) is refused and reported — its seq may belong to
/// an acked message of the new epoch — unless it is already stored (a redelivery). Records
/// without an epoch (written before epochs existed) are never refused for it.
#[tokio::test]
async fn records_of_an_older_epoch_than_their_room_are_fenced() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let m1 = message(&name, 1, &who, "c1");
    let m2 = message(&name, 2, &who, "c2");
    let out = store
        .persist_in_epochs(&[(room.id, m1.clone())], &[1])
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    // The room is seeded again in epoch 2: its counter starts from what is stored.
    assert_eq!(store.claim_seq_epoch(room.id, 2).await.unwrap(), Some(1));
    // An epoch never goes back: a seed read in an older one is refused.
    assert_eq!(store.claim_seq_epoch(room.id, 1).await.unwrap(), None);
    assert_eq!(store.claim_seq_epoch(room.id, 2).await.unwrap(), Some(1));
    let late = store
        .persist_in_epochs(&[(room.id, m1.clone()), (room.id, m2.clone())], &[1, 1])
        .await
        .unwrap();
    assert_eq!((late.inserted, late.redelivered), (0, 1));
    assert_eq!(
        late.fenced.iter().map(|m| m.id).collect::<Vec<_>>(),
        [m2.id]
    );
    // The new epoch's message at seq 2 is written; an epoch-less record is not fenced.
    let b = message(&name, 2, &who, "b");
    let m3 = message(&name, 3, &who, "c3");
    let out = store
        .persist_in_epochs(&[(room.id, b.clone()), (room.id, m3.clone())], &[2, 0])
        .await
        .unwrap();
    assert_eq!((out.inserted, out.fenced.len()), (2, 0));
    let stored: Vec<Id> = store
        .after(&room, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(stored, [m1.id, b.id, m3.id]);
    assert_eq!(store.room(&name).await.unwrap().unwrap().last_seq, 3);
    assert!(store.next_seq_epoch().await.unwrap() < store.next_seq_epoch().await.unwrap());
}

/// A record given its seq before Redis lost its room's counter, reaching the persister after
/// the room was seeded again: dead-lettered with the reason, and the new epoch's message at
/// that seq — acked, in the window, not in the database yet — stays in the window.
#[tokio::test]
async fn a_fenced_record_is_dead_lettered_and_leaves_the_new_epochs_message_in_the_window() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (name, room, who) = general_room(&store).await;
    let kafka = one_partition_topic("fenced").await;
    let prefix = RedisPrefix::new();
    let ledger = ledger(&prefix).await;
    set_cluster_epoch(&prefix.0, 2).await;

    // The room was seeded again in epoch 2 from an empty database; seq 1 of epoch 2 is acked
    // and in the window (its record not produced yet). Seq 1 of epoch 1 arrives now.
    assert_eq!(store.claim_seq_epoch(room.id, 2).await.unwrap(), Some(0));
    let got = allocate_seeded(&ledger, room.id, who.id, "new", (0, 2))
        .await
        .unwrap();
    assert_eq!(got, Allocation::Fresh(1, 2));
    let acked = message(&name, 1, &who, "new");
    ledger
        .deposit(room.id, &acked, 2, record::encode_in(room.id, &acked, 2))
        .await
        .unwrap();
    let old = message(&name, 1, &who, "old");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&kafka.topic)
                .key(&room.id.to_string())
                .payload(&record::encode_in(room.id, &old, 1)),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let persister =
        RunningPersister::start_with(&kafka, PersisterConfig::new("test"), &store, ledger.clone());
    let reasons = dead_letters(&kafka, 1).await;
    assert!(reasons[0].0.starts_with("fenced:"), "{reasons:?}");
    let counted = tokio::time::Instant::now() + Duration::from_secs(30);
    while persister.status.lock().unwrap().dead_lettered < 1 {
        assert!(tokio::time::Instant::now() < counted, "never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    persister.stop().await;
    assert_eq!(store.after(&room, 0, 10).await.unwrap(), []);
    assert_eq!(ledger.after(room.id, 0, 10).await.unwrap(), [acked]);
}

/// The dead-letter producer refusing records (here: a record over its size limit, which the
/// messages topic took) fails the batch after its database commit, and the persister pauses. Its pauses come back with nothing
/// written between them, so each waits longer: a few in ten seconds, not a tight loop of
/// pause, resume, fail.
#[tokio::test]
async fn a_dead_letter_topic_that_refuses_records_slows_the_pauses_down() {
    let db = FreshDb::create().await;
    let store = open(&db).await;
    let (_, room, _) = general_room(&store).await;
    let kafka = one_partition_topic("dlq-refuses").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let poison = vec![b'x'; 1_500_000];
    producer
        .send(
            FutureRecord::to(&kafka.topic)
                .key(&room.id.to_string())
                .payload(&poison),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let persister = RunningPersister::start(&kafka, PersisterConfig::new("test"), &store).await;
    let started = tokio::time::Instant::now();
    while persister.status.lock().unwrap().retries == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "never paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let retries = persister.status.lock().unwrap().retries;
    persister.stop().await;
    assert!(
        (3..=12).contains(&retries),
        "{retries} pauses in ten seconds"
    );
}
