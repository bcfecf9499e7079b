//! The node's producer: each send confirmed once, in key order.

use super::*;

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
    let ingest = Ingest::new(kafka.clone(), IngestConfig::default(), TaskTracker::new()).unwrap();

    const KEYS: usize = 20;
    const PER_KEY: usize = 50;
    let mut senders = Vec::new();
    for k in 0..KEYS {
        let ingest = ingest.clone();
        senders.push(tokio::spawn(async move {
            let key = format!("room-{k}");
            // All of one key's sends in flight at once, handed to the producer in order (as a
            // room's sends from many connections are): the broker must keep that order.
            let payloads: Vec<String> = (0..PER_KEY).map(|i| format!("{key}/{i}")).collect();
            futures_util::future::join_all(
                payloads.iter().map(|p| ingest.produce(&key, p.as_bytes())),
            )
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
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
