//! A Kafka producer whose delivery reports are served on the tokio runtime.
//!
//! rust-rdkafka's `FutureProducer` serves delivery reports on a thread of its own: librdkafka's
//! broker thread queues the report, wakes that poll thread, which completes the message's
//! future, which wakes a tokio worker — two thread hand-offs per report. Here librdkafka calls
//! us when its queue of reports becomes non-empty (`rd_kafka_queue_cb_event_enable`, the hook
//! meant for language bindings, which rust-rdkafka's `StreamConsumer` uses the same way); the
//! callback only wakes `pump`, a tokio task that serves the reports — one hand-off, and one
//! fewer thread competing for the cores on the ack path. The pump runs on the node's
//! supervisor ([`TaskTracker`]), which waits for it on shutdown after the producer is closed.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::client::Client;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Message};
use tokio::sync::{oneshot, Notify};
use tokio_util::task::TaskTracker;

/// What a delivery report says: (partition, offset), or why the message failed.
pub type Delivered = Result<(i32, i64), KafkaError>;

/// Completes each message's channel from its delivery report.
pub struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<oneshot::Sender<Delivered>>;

    fn delivery(&self, result: &DeliveryResult<'_>, done: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        // The sender may have stopped waiting: nothing to do then.
        let _ = done.send(outcome);
    }
}

/// Most reports served in one go before the pump yields to other tasks.
const SERVE_BATCH: usize = 64;

pub struct AsyncProducer {
    producer: BaseProducer<Reports>,
    /// Our reference to the producer's main queue (where its delivery reports land).
    queue: *mut rdsys::rd_kafka_queue_t,
    /// What the non-empty callback wakes (librdkafka holds a pointer to it).
    wake: Arc<Notify>,
    /// Set by [`AsyncProducer::close`]: the pump serves what is queued and ends.
    closed: Arc<AtomicBool>,
}

// SAFETY: `queue` is a librdkafka queue handle; librdkafka's queue functions are thread-safe,
// and the handle is released only in `drop`.
unsafe impl Send for AsyncProducer {}
unsafe impl Sync for AsyncProducer {}

/// Called by librdkafka (on one of its threads) when the report queue becomes non-empty.
unsafe extern "C" fn queue_nonempty(_: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` of `AsyncProducer::wake`, which outlives the callback's
    // registration (unregistered in `drop` before the `Arc` is released).
    let wake = unsafe { &*(opaque as *const Notify) };
    wake.notify_one();
}

impl AsyncProducer {
    /// Creates the producer and starts its pump on `tasks`. The pump ends when the producer
    /// is closed or dropped.
    pub fn create(config: &ClientConfig, tasks: &TaskTracker) -> Result<Arc<Self>, KafkaError> {
        let producer: BaseProducer<Reports> = config.create_with_context(Reports)?;
        let wake = Arc::new(Notify::new());
        // SAFETY: the returned queue reference is ours until `rd_kafka_queue_destroy` in drop;
        // the callback's opaque pointer stays valid until it is unregistered there.
        let queue = unsafe {
            let queue = rdsys::rd_kafka_queue_get_main(producer.client().native_ptr());
            rdsys::rd_kafka_queue_cb_event_enable(
                queue,
                Some(queue_nonempty),
                Arc::as_ptr(&wake) as *mut c_void,
            );
            queue
        };
        let this = Arc::new(AsyncProducer {
            producer,
            queue,
            wake,
            closed: Arc::new(AtomicBool::new(false)),
        });
        tasks.spawn(pump(
            Arc::downgrade(&this),
            Arc::clone(&this.wake),
            Arc::clone(&this.closed),
        ));
        // Reports queued before the callback was registered would never trigger it.
        this.wake.notify_one();
        Ok(this)
    }

    /// Queues a record; the receiver gets its delivery report.
    pub fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<oneshot::Receiver<Delivered>, KafkaError> {
        let (done, report) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(done))
            .key(key)
            .payload(payload);
        self.producer.send(record).map_err(|(e, _)| e)?;
        Ok(report)
    }

    pub fn client(&self) -> &Client<Reports> {
        self.producer.client()
    }

    /// Waits (blocking) until every queued record has a delivery report, or `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }

    /// Ends the pump once it has served the reports queued now (a flush before it serves
    /// the rest itself). Records queued later get no report.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn pending_reports(&self) -> usize {
        // SAFETY: `queue` is valid until drop.
        unsafe { rdsys::rd_kafka_queue_length(self.queue) }
    }

    /// Serves up to [`SERVE_BATCH`] queued events; true if more are waiting.
    fn serve(&self) -> bool {
        for _ in 0..SERVE_BATCH {
            if self.pending_reports() == 0 {
                return false;
            }
            // A zero timeout serves at most one event and never blocks.
            self.producer.poll(Duration::ZERO);
        }
        self.pending_reports() > 0
    }
}

impl Drop for AsyncProducer {
    fn drop(&mut self) {
        // SAFETY: unregister before `wake` is freed; then release our queue reference. The
        // producer itself (purge, flush, destroy) drops after this, with its own reference.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
        // Let the pump see that we are gone.
        self.wake.notify_one();
    }
}

/// Serves the producer's delivery reports whenever librdkafka says some arrived; ends when
/// the producer is closed or dropped.
///
/// The callback fires only when the queue goes from empty to non-empty, and `Notify` keeps
/// one wake-up for a pump that is not waiting yet, so a report is never left unserved: either
/// the pump sees it while draining, or the queue was empty and the callback wakes it again.
async fn pump(producer: Weak<AsyncProducer>, wake: Arc<Notify>, closed: Arc<AtomicBool>) {
    loop {
        wake.notified().await;
        let closing = closed.load(Ordering::Acquire);
        loop {
            let more = match producer.upgrade() {
                Some(p) => p.serve(),
                None => return,
            };
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        if closing {
            return;
        }
    }
}
