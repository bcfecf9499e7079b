//! `GET /metrics`: Prometheus text format. Engines record with the `metrics` facade
//! (`metrics::counter!`); this module installs the process-wide Prometheus recorder once and
//! renders it. Names follow Prometheus conventions (`scalify_…_total`); labels are
//! low-cardinality only (never a room or a user).

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` if another recorder was installed
/// first (an embedding application's own); `/metrics` then says so.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match builder().and_then(|b| b.install_recorder()) {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics is empty");
                None
            }
        })
        .as_ref()
}

pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

/// Latency buckets: sub-millisecond acks on a quiet node up to multi-second stalls, finer
/// around 10 ms (the durable mode's send→ack target at p99), so a p99 can be read off
/// `/metrics` within a few milliseconds.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
const BATCH: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1024.0, 2048.0, 5000.0,
];

fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH)
}

/// Help text for every metric ScalifyChat records (docs/operations.md lists them too).
fn describe() {
    describe_gauge!(
        "scalify_connections",
        "Open Socket.IO connections, by transport at handshake"
    );
    describe_counter!(
        "scalify_connections_opened_total",
        "Socket.IO connections accepted, by transport"
    );
    describe_gauge!(
        "scalify_rooms_local",
        "Rooms with at least one connection on this node"
    );
    describe_counter!(
        "scalify_messages_accepted_total",
        "Sends committed: outcome=stored (new), duplicate (idempotent repeat) or stored_late (durable mode: confirmed after its sender stopped waiting)"
    );
    describe_counter!(
        "scalify_events_delivered_total",
        "Room events handed to this node's connections, by kind (one per room broadcast)"
    );
    describe_counter!(
        "scalify_requests_rejected_total",
        "Socket events and REST requests answered with an error, by transport and error code"
    );
    describe_counter!("scalify_uploads_total", "Files stored by uploads");
    describe_counter!(
        "scalify_upload_bytes_total",
        "Bytes of the files stored by uploads"
    );
    describe_counter!(
        "scalify_uploads_expired_total",
        "Uploads no message took in time, deleted by the sweep"
    );
    describe_counter!(
        "scalify_upload_deletes_failed_total",
        "Files of deleted messages the file store failed to delete (logged with their key)"
    );
    describe_counter!(
        "scalify_rate_limited_total",
        "Requests refused by their user's budget, and connections over the per-user cap"
    );
    describe_histogram!(
        "scalify_send_ack_seconds",
        Unit::Seconds,
        "Socket send: from receiving the event to the ack (includes the durable commit)"
    );
    describe_histogram!(
        "scalify_fanout_delay_seconds",
        Unit::Seconds,
        "Message commit to delivery on this node (across nodes: origin node's clock)"
    );
    describe_histogram!(
        "scalify_store_batch_size",
        "Writes committed per store transaction (group commit), by engine"
    );
    describe_histogram!(
        "scalify_store_commit_seconds",
        Unit::Seconds,
        "Time to commit one store batch, by engine"
    );
    describe_counter!(
        "scalify_store_batch_failures_total",
        "Store batches that failed, by engine"
    );
    describe_counter!("scalify_redis_published_total", "Events published to Redis");
    describe_counter!(
        "scalify_redis_publish_failures_total",
        "Events that could not be published to Redis (other nodes recover them with sync)"
    );
    describe_counter!("scalify_redis_received_total", "Events received from Redis, by outcome: delivered, own (echo of ours), unwatched (a room without local members), undecodable");
    describe_counter!(
        "scalify_redis_disconnects_total",
        "Redis subscriber connections lost (each is followed by a reconnect with backoff)"
    );
    // Durable mode (Kafka).
    describe_histogram!(
        "scalify_kafka_produce_seconds",
        Unit::Seconds,
        "Kafka produce: from handing a message to the producer to the broker's delivery report"
    );
    describe_histogram!(
        "scalify_ledger_seconds",
        Unit::Seconds,
        "Redis round trips on a durable send's ack path, by op: allocate (the seq, once per send) and deposit (into the recent window, after the broker's confirmation)"
    );
    describe_counter!(
        "scalify_kafka_produced_total",
        "Messages the broker confirmed (and put in the recent window)"
    );
    describe_counter!(
        "scalify_kafka_produce_errors_total",
        "Failed produce attempts (each is retried until confirmed)"
    );
    describe_counter!(
        "scalify_kafka_produce_refused_total",
        "Sends refused at once because too many messages wait for the broker on this node"
    );
    describe_counter!(
        "scalify_kafka_ack_timeouts_total",
        "Sends answered with an error because the broker had not confirmed within the ack timeout"
    );
    describe_counter!(
        "scalify_kafka_producer_recreated_total",
        "Kafka producers re-created after a fatal error or a long stall"
    );
    describe_gauge!(
        "scalify_persister_lag_messages",
        "Messages of a partition not yet written to PostgreSQL, by partition"
    );
    describe_gauge!(
        "scalify_persister_paused",
        "1 while the persister is paused because PostgreSQL fails"
    );
    describe_counter!(
        "scalify_persister_retries_total",
        "Database probes made while paused"
    );
    describe_counter!(
        "scalify_persister_rows_total",
        "Messages the persister wrote to PostgreSQL"
    );
    describe_counter!(
        "scalify_persister_redelivered_total",
        "Messages read again that were already in PostgreSQL (skipped)"
    );
    describe_counter!(
        "scalify_persister_resent_total",
        "Messages written whose client_id an earlier message of the room holds (sent again after the idempotency window)"
    );
    describe_counter!(
        "scalify_persister_dead_letters_total",
        "Records sent to the dead-letter topic (undecodable or conflicting)"
    );
    describe_counter!(
        "scalify_persister_watchdog_restarts_total",
        "Kafka consumers re-created because there was lag and no progress"
    );
    describe_counter!(
        "scalify_persister_step_backs_total",
        "Seeks back after a record came past the offset expected (a broker that skipped records)"
    );
    describe_counter!(
        "scalify_persister_missing_records_total",
        "Offsets missing from the broker even from offset 0 (deleted by retention)"
    );
    describe_counter!(
        "scalify_persister_dropped_while_paused_total",
        "Records delivered while the persister was paused (fetched before the pause), dropped and read again after it"
    );
    describe_counter!(
        "scalify_persister_rescued_total",
        "Messages written from the recent windows after records went missing from the broker"
    );
    describe_histogram!(
        "scalify_persister_batch_size",
        "Messages per persister transaction"
    );
    describe_histogram!(
        "scalify_persister_commit_seconds",
        Unit::Seconds,
        "Time to write one persister batch to PostgreSQL"
    );
}
