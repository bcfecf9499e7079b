//! Fan-out over Redis pub/sub: one channel per room, a subscriber that follows the rooms this node
//! has members in, and a publisher task that batches into pipelines.

use super::*;

/// Events waiting to be published. Beyond it (Redis stalled) new events are dropped for
/// other nodes — their members recover messages with `sync` — instead of growing memory.
pub(super) const OUTBOX_DEPTH: usize = 16 * 1024;
/// Most PUBLISH commands sent as one pipeline.
pub(super) const PUBLISH_BATCH: usize = 256;

/// Sends queued events to Redis, in order, as pipelines: one round trip for everything that
/// queued up while the previous one was in flight. Sends never wait for Redis — their ack
/// means committed, and local members already have the message.
pub(super) async fn publisher_task(
    mut conn: ConnectionManager,
    mut queued: mpsc::Receiver<(String, Vec<u8>)>,
    stop: CancellationToken,
) {
    // Log once per outage, not once per message.
    let mut failing = false;
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            n = queued.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if n == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        for (channel, envelope) in batch.drain(..) {
            pipe.cmd("PUBLISH").arg(channel).arg(envelope).ignore();
        }
        match pipe.exec_async(&mut conn).await {
            Ok(()) => {
                metrics::counter!("scalify_redis_published_total").increment(n as u64);
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("publishing to Redis again");
                }
            }
            Err(e) => {
                metrics::counter!("scalify_redis_publish_failures_total").increment(n as u64);
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, dropped = n, "cannot publish to Redis; members on other nodes will recover missed messages with sync");
                }
            }
        }
    }
}

/// Most channels named in one SUBSCRIBE when (re)subscribing many rooms.
pub(super) const SUBSCRIBE_CHUNK: usize = 500;
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct RedisFanout {
    pub(super) node: String,
    pub(super) prefix: String,
    pub(super) local: Arc<dyn LocalDelivery>,
    pub(super) publisher: ConnectionManager,
    /// Events waiting for the publisher task, already encoded as (channel, envelope).
    pub(super) outbox: mpsc::Sender<(String, Vec<u8>)>,
    /// Rooms with local members: the channels the subscriber must be on.
    pub(super) watched: Watched,
    /// The live subscriber connection's command half, if connected.
    pub(super) sink: Mutex<Option<PubSubSink>>,
    pub(super) subscribed: AtomicBool,
    pub(super) stop: CancellationToken,
}

impl RedisFanout {
    /// Starts the fan-out, its publisher and its subscriber on `tasks` (the node's
    /// supervisor); both run until [`Fanout::shutdown`].
    pub fn start(
        config: &RedisConfig,
        client: redis::Client,
        publisher: ConnectionManager,
        node: &str,
        local: Arc<dyn LocalDelivery>,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let (outbox, queued) = mpsc::channel(OUTBOX_DEPTH);
        let stop = CancellationToken::new();
        tasks.spawn(publisher_task(publisher.clone(), queued, stop.clone()));
        let fanout = Arc::new(RedisFanout {
            node: node.to_owned(),
            prefix: config.prefix.clone(),
            local,
            publisher,
            outbox,
            watched: Watched::default(),
            sink: Mutex::new(None),
            subscribed: AtomicBool::new(false),
            stop,
        });
        tasks.spawn(fanout.clone().subscriber(client));
        fanout
    }

    pub(super) fn channel(&self, room: &RoomName) -> String {
        format!("{}:room:{}", self.prefix, room)
    }

    pub(super) fn current_sink(&self) -> Option<PubSubSink> {
        self.sink.lock().ok().and_then(|s| s.clone())
    }

    pub(super) fn set_sink(&self, sink: Option<PubSubSink>) {
        if let Ok(mut s) = self.sink.lock() {
            *s = sink;
        }
    }

    /// The subscriber connection's life: connect, subscribe every watched room, hand each
    /// message to local delivery; on loss, reconnect with backoff.
    pub(super) async fn subscriber(self: Arc<Self>, client: redis::Client) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe_session(&client).await {
                Ok(()) => return, // stopped
                Err(e) => {
                    metrics::counter!("scalify_redis_disconnects_total").increment(1);
                    self.subscribed.store(false, Ordering::Release);
                    self.set_sink(None);
                    tracing::warn!(error = %e, retry_in = ?backoff, "Redis subscriber connection lost; members on other nodes will recover missed messages with sync");
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscriber connection, until it fails (`Err`) or the fan-out stops (`Ok`).
    pub(super) async fn subscribe_session(
        &self,
        client: &redis::Client,
    ) -> Result<(), FanoutError> {
        let pubsub = tokio::select! {
            () = self.stop.cancelled() => return Ok(()),
            r = client.get_async_pubsub() => r.map_err(unavailable)?,
        };
        let (mut sink, mut stream) = pubsub.split();
        // Publish the sink before reading the watched set: a room watched from now on is
        // subscribed by `watch` itself, one watched before is in the snapshot below.
        self.set_sink(Some(sink.clone()));
        let rooms: Vec<String> = self.watched.all().iter().map(|r| self.channel(r)).collect();
        for chunk in rooms.chunks(SUBSCRIBE_CHUNK) {
            sink.subscribe(chunk).await.map_err(unavailable)?;
        }
        self.subscribed.store(true, Ordering::Release);
        tracing::info!(rooms = rooms.len(), "Redis subscriber connected");
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                msg = stream.next() => match msg {
                    Some(msg) => self.on_message(msg.get_payload_bytes()),
                    None => return Err(FanoutError::Unavailable("connection closed".into())),
                },
            }
        }
    }

    pub(super) fn on_message(&self, bytes: &[u8]) {
        // Our own message, already delivered locally: Redis echoes every PUBLISH to the
        // publisher's subscription too. Recognised by the envelope's first line alone, before
        // any decoding (the payload's JSON check is the costly part, and under load half of
        // what a node receives is its own).
        if origin(bytes) == Some(self.node.as_bytes()) {
            metrics::counter!("scalify_redis_received_total", "outcome" => "own").increment(1);
            return;
        }
        match decode(bytes) {
            Ok(event) if self.watched.contains(&event.room) => {
                metrics::counter!("scalify_redis_received_total", "outcome" => "delivered")
                    .increment(1);
                self.local.deliver(&event)
            }
            Ok(_) => {
                // A room this node has no member in: only a message racing an unsubscribe
                // should ever land here (the cluster tests require zero).
                metrics::counter!("scalify_redis_received_total", "outcome" => "unwatched")
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!("scalify_redis_received_total", "outcome" => "undecodable")
                    .increment(1);
                tracing::warn!(error = %e, "undecodable fan-out message dropped")
            }
        }
    }
}

#[async_trait]
impl Fanout for RedisFanout {
    async fn publish(&self, event: RoomEvent) -> Result<(), FanoutError> {
        // Local members first: they must not depend on Redis being up.
        if self.watched.contains(&event.room) {
            self.local.deliver(&event);
        }
        self.outbox
            .try_send((self.channel(&event.room), encode(&self.node, &event)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    FanoutError::Unavailable("Redis publish queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    FanoutError::Unavailable("fan-out is shut down".into())
                }
            })
    }

    async fn watch(&self, room: &RoomName) -> Result<(), FanoutError> {
        self.watched.add(room);
        // Without a connection the room is subscribed when the subscriber reconnects.
        let mut sink = self
            .current_sink()
            .ok_or_else(|| FanoutError::Unavailable("Redis subscriber not connected".into()))?;
        sink.subscribe(self.channel(room))
            .await
            .map_err(unavailable)
    }

    async fn unwatch(&self, room: &RoomName) -> Result<(), FanoutError> {
        // Unsubscribe first: messages Redis sent before confirming still find the room
        // watched (and no one to deliver to), instead of counting as misrouted.
        let result = match self.current_sink() {
            Some(mut sink) => sink
                .unsubscribe(self.channel(room))
                .await
                .map_err(unavailable),
            None => Ok(()),
        };
        self.watched.remove(room);
        self.local.room_released(room);
        result
    }

    async fn watched_anywhere(&self, rooms: &[RoomName]) -> Result<Vec<bool>, FanoutError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        // A node subscribes a room's channel while it has connections in it, and Redis drops
        // the subscriptions of a node that dies with its connection.
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB");
        for room in rooms {
            cmd.arg(self.channel(room));
        }
        let mut conn = self.publisher.clone();
        let counts: Vec<(String, i64)> = cmd.query_async(&mut conn).await.map_err(unavailable)?;
        if counts.len() != rooms.len() {
            return Err(FanoutError::Unavailable(
                "PUBSUB NUMSUB answered for other channels".into(),
            ));
        }
        // This node's own rooms count even while its subscriber reconnects.
        Ok(counts
            .into_iter()
            .zip(rooms)
            .map(|((_, n), room)| n > 0 || self.watched.contains(room))
            .collect())
    }

    async fn ready(&self) -> Result<(), FanoutError> {
        if !self.subscribed.load(Ordering::Acquire) {
            return Err(FanoutError::Unavailable(
                "Redis subscriber not connected".into(),
            ));
        }
        let mut conn = self.publisher.clone();
        tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| FanoutError::Unavailable("Redis did not answer PING within 1 s".into()))?
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn shutdown(&self) {
        self.stop.cancel();
    }
}
