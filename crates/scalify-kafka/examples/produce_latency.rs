//! The broker's share of a durable ack: [`Ingest::produce`] alone — the node's own producer,
//! with its settings (idempotent, `acks=all`, linger, Nagle off) — at a fixed offered rate,
//! with no node, Redis, persister or socket client in the way. Its latency is the floor under
//! the send→ack figures of `scripts/bench.sh kafka-ack-*`.
//!
//! `cargo run --release -p scalify-kafka --example produce_latency -- BROKERS [rate] [seconds] [rooms] [bytes] [partitions]`
//!
//! Open loop, as the socket bench: each record's latency is counted from its *scheduled* send
//! time, so a stalled producer shows up as latency, not as a lower offered rate. Records are
//! keyed by one of `rooms` ids (the node keys by room) and go to a fresh topic of `partitions`
//! (the node's default: 6). `SCALIFY_KAFKA_OPTIONS="k=v,k=v"` adds librdkafka settings, as
//! `--kafka-option` does for a node. `CONSUME=1` also runs a plain consumer (a fresh group,
//! offsets committed each second, no database) reading the topic as it fills: what a
//! persister's fetches cost the producer's latency at the broker, without its PostgreSQL and
//! Redis work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use scalify_kafka::ingest::{Ingest, IngestConfig};
use scalify_kafka::{topics, KafkaConfig};
use tokio_util::task::TaskTracker;

/// Width of the windows of the p99 timeline, unless `WINDOW_MS` says otherwise (500 shows
/// periodic stalls the way `scalify bench`'s half-second timeline does).
const WINDOW_MS: u64 = 5000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let brokers = args
        .first()
        .ok_or("usage: produce_latency BROKERS [rate] [seconds] [rooms] [bytes] [partitions]")?;
    let number = |i: usize, default: u64| -> Result<u64, String> {
        args.get(i)
            .map(|a| a.parse().map_err(|_| format!("not a number: {a}")))
            .unwrap_or(Ok(default))
    };
    let (rate, secs, rooms, bytes, partitions) = (
        number(1, 1000)?.max(1),
        number(2, 10)?.max(1),
        number(3, 1000)?.max(1),
        number(4, 300)? as usize,
        number(5, 6)?.clamp(1, 10_000) as i32,
    );

    let mut config = KafkaConfig::new(brokers.as_str());
    config.topic = format!("bench.produce.{}", std::process::id());
    config.dead_letter_topic = format!("{}.dlq", config.topic);
    config.partitions = partitions;
    if let Ok(options) = std::env::var("SCALIFY_KAFKA_OPTIONS") {
        for kv in options.split(',').filter(|s| !s.is_empty()) {
            config.add_option(kv)?;
        }
    }
    topics::ensure_topics(&config).await?;
    let topic = config.topic.clone();
    let ingest = Ingest::new(config, IngestConfig::default(), TaskTracker::new())?;
    let consumed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if std::env::var("CONSUME").is_ok_and(|v| v == "1") {
        use rdkafka::consumer::{Consumer, StreamConsumer};
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers.as_str())
            .set("group.id", format!("{topic}.reader"))
            .set("auto.offset.reset", "earliest")
            // Offsets committed each second and fetches held at most 100 ms, as a
            // persister's are.
            .set("enable.auto.commit", "true")
            .set("fetch.wait.max.ms", "100")
            .set("auto.commit.interval.ms", "1000")
            .create()?;
        consumer.subscribe(&[&topic])?;
        let consumed = consumed.clone();
        tokio::spawn(async move {
            loop {
                if consumer.recv().await.is_ok() {
                    consumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    let keys: Arc<Vec<String>> = Arc::new((0..rooms).map(|r| format!("room-{r:08}")).collect());
    let payload: Arc<Vec<u8>> = Arc::new(vec![b'x'; bytes]);

    // Warm-up (connections, metadata, the idempotent producer's id), not counted.
    for key in keys.iter().take(10) {
        ingest.produce(key, &payload).await?;
    }

    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(u64, u64), String>>();
    let start = Instant::now();
    for n in 0..total {
        let due = start + interval.mul_f64(n as f64);
        // tokio's timer has 1 ms granularity: sends due within one millisecond go out
        // together, and that wait (under 1 ms) counts in their latency.
        tokio::time::sleep_until(due.into()).await;
        let (ingest, keys, payload, tx) =
            (ingest.clone(), keys.clone(), payload.clone(), tx.clone());
        tokio::spawn(async move {
            let key = &keys[(n % keys.len() as u64) as usize];
            let outcome = ingest
                .produce(key, &payload)
                .await
                .map(|_| (n, due.elapsed().as_micros() as u64))
                .map_err(|e| e.to_string());
            let _ = tx.send(outcome);
        });
    }
    drop(tx);
    // Per window of scheduled send time: whether the broker's share drifts as the topic
    // fills (the test broker's fetch work grows with what it stores; docs/performance.md).
    let window_ms = std::env::var("WINDOW_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .unwrap_or(WINDOW_MS);
    let per_window = ((rate * window_ms) / 1000).max(1) as usize;
    let mut windows: Vec<Vec<u64>> = vec![Vec::new(); (total as usize).div_ceil(per_window)];
    while let Some(outcome) = rx.recv().await {
        let (n, us) = outcome?;
        windows[n as usize / per_window].push(us);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut micros = windows.concat();
    micros.sort_unstable();
    let at = |q: f64| quantile_ms(&micros, q);
    println!(
        "produced {} records of {bytes} B over {rooms} keys in {elapsed:.2} s ({:.0}/s offered {rate}/s); \
         produce→confirm ms p50 {:.2} p90 {:.2} p99 {:.2} p999 {:.2} max {:.2}",
        micros.len(),
        micros.len() as f64 / elapsed,
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
    );
    let p99s: Vec<String> = windows
        .iter_mut()
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.sort_unstable();
            format!("{:.1}", quantile_ms(w, 0.99))
        })
        .collect();
    println!(
        "produce→confirm p99 per {} s (ms): {}",
        window_ms as f64 / 1000.0,
        p99s.join(" ")
    );
    if std::env::var("CONSUME").is_ok_and(|v| v == "1") {
        println!(
            "the consumer read {} records meanwhile",
            consumed.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    ingest.close(Duration::from_secs(2)).await;
    Ok(())
}

/// The `q` quantile of `sorted` (microseconds, ascending, not empty), in milliseconds.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}
