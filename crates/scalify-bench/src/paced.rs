//! The open-loop scenarios (`fanout`, `pairs`): senders at a fixed offered rate, each send stamped with its scheduled time, and the warm-up and per-half-second timeline they share.

use super::*;

pub(super) fn tick(
    bar: &ProgressBar,
    secs: u64,
    counters: Arc<Counters>,
    label: &'static str,
) -> tokio::task::JoinHandle<()> {
    let bar = bar.clone();
    tokio::spawn(async move {
        let mut last = 0;
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = counters.acked.load(Ordering::Relaxed);
            bar.inc(1);
            bar.set_message(format!("{label} {}/s", now - last));
            last = now;
        }
    })
}

/// Paced senders: each sends at `rate / senders` per second to `room_of(i)` until the deadline.
pub(super) fn paced_senders(
    senders: Vec<Arc<Conn>>,
    room_of: impl Fn(usize) -> String,
    rate: u64,
    size: usize,
    duration: Duration,
    counters: Arc<Counters>,
) -> Vec<tokio::task::JoinHandle<Vec<Timed>>> {
    let count = senders.len().max(1);
    let per_sender = (rate as f64 / count as f64).max(0.001);
    let start = Instant::now();
    senders
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let room = room_of(i);
            let counters = counters.clone();
            tokio::spawn(async move {
                let mut pacer = Pacer::with_phase(per_sender, start, i as f64 / count as f64);
                let end = start + duration;
                // Each send reports its ack here and ends: keeping a JoinHandle per send instead
                // held every finished task's memory (~700 B) until the run's end, and freeing
                // them all then took the load generator's CPU while the last acks arrived.
                let (done, mut results) = tokio::sync::mpsc::unbounded_channel::<Timed>();
                let mut n = 0u64;
                loop {
                    let at = pacer.next_send();
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    n += 1;
                    // The carried timestamp is the scheduled send time (open loop).
                    let lag = Instant::now().saturating_duration_since(at).as_micros() as u64;
                    let mut text = client::timed_text(size);
                    let sched = crate::now_micros().saturating_sub(lag);
                    text.replace_range(..text.find(';').unwrap_or(0), &format!("t={sched}"));
                    let arg =
                        json!({ "room": room, "text": text, "client_id": format!("p{i}-{n}") });
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    let (conn, counters) = (conn.clone(), counters.clone());
                    let scheduled = at.saturating_duration_since(start);
                    let done = done.clone();
                    tokio::spawn(async move {
                        let t0 = Instant::now();
                        match conn.call("send", arg, ACK_TIMEOUT).await {
                            Ok(r) if r.ok() => {
                                counters.acked.fetch_add(1, Ordering::Relaxed);
                                let us = (t0.elapsed() + Duration::from_micros(lag)).as_micros();
                                let _ = done.send(Timed {
                                    scheduled,
                                    latency_us: (us as u64).max(1),
                                });
                            }
                            _ => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                // Every send holds a sender of the channel: it closes when the last one ends.
                drop(done);
                let mut acked = Vec::with_capacity(n as usize);
                while let Some(timed) = results.recv().await {
                    acked.push(timed);
                }
                acked
            })
        })
        .collect()
}

pub(super) async fn fanout(
    ctx: &Ctx,
    receivers: usize,
    senders: usize,
    rate: u64,
    size: usize,
) -> anyhow::Result<Report> {
    let room = ctx.room("fanout");
    let recv = connect_all(ctx, receivers, 0, 64).await?;
    for c in &recv {
        join(c, &room).await?;
    }
    let send: Vec<Arc<Conn>> = connect_all(ctx, senders.max(1), receivers, 64)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
    for c in &send {
        join(c, &room).await?;
    }
    let run = PacedRun {
        label: "fanout",
        params: format!("receivers={receivers} senders={senders} rate={rate}/s size={size}"),
        rate,
        size,
        deliveries_per_ack: receivers as u64,
    };
    run.measure(ctx, send, recv, |_| room.clone()).await
}

pub(super) async fn pairs_scenario(
    ctx: &Ctx,
    pairs: usize,
    rate: u64,
    size: usize,
) -> anyhow::Result<Report> {
    // Connection 2k sends to pair k; connection 2k+1 receives. Users alternate, so the two
    // ends of a pair are different users (when --users >= 2) and, with several --url, nodes.
    let a: Vec<Arc<Conn>> = connect_all(ctx, pairs, 0, 64)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
    let b = connect_all(ctx, pairs, pairs, 64).await?;
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        let room = ctx.room(&format!("p{k}"));
        join(x, &room).await?;
        join(y, &room).await?;
    }
    let run = PacedRun {
        label: "pairs",
        params: format!("pairs={pairs} rate={rate}/s size={size}"),
        rate,
        size,
        deliveries_per_ack: 1,
    };
    run.measure(ctx, a, b, |k| ctx.room(&format!("p{k}"))).await
}

/// The measuring half of the open-loop scenarios: paced senders, then the receivers' counts.
pub(super) struct PacedRun {
    pub(super) label: &'static str,
    pub(super) params: String,
    pub(super) rate: u64,
    pub(super) size: usize,
    /// How many receiver deliveries each acked message should produce.
    pub(super) deliveries_per_ack: u64,
}

impl PacedRun {
    pub(super) async fn measure(
        self,
        ctx: &Ctx,
        senders: Vec<Arc<Conn>>,
        receivers: Vec<Conn>,
        room_of: impl Fn(usize) -> String,
    ) -> anyhow::Result<Report> {
        let first = warm_up(&senders, &room_of).await?;
        let counters = Arc::new(Counters::default());
        let bar = progress(ctx, self.label);
        let cpu0 = procfs::sample(&ctx.args.server_pid);
        let started = Instant::now();
        let ticker = tick(&bar, ctx.args.duration, counters.clone(), "acked");
        let duration = Duration::from_secs(ctx.args.duration);
        let tasks = paced_senders(
            senders.clone(),
            room_of,
            self.rate,
            self.size,
            duration,
            counters.clone(),
        );
        let mut ack = new_hist();
        let mut timeline = Timeline::new(TIMELINE_WINDOW);
        for t in tasks {
            for timed in t.await? {
                let _ = ack.record(timed.latency_us);
                timeline.record(&timed);
            }
        }
        let elapsed = started.elapsed();
        // Let the last deliveries land before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu1 = procfs::sample(&ctx.args.server_pid);
        ticker.abort();
        bar.finish_and_clear();
        let mut latency = new_hist();
        let mut delivered = 0;
        for c in receivers {
            let d = c.close().await;
            delivered += d.count;
            latency.add(d.latency)?;
        }
        for c in senders {
            if let Ok(c) = Arc::try_unwrap(c) {
                c.close().await;
            }
        }
        let mut r = Report::new(self.label, self.params, elapsed);
        r.sent = counters.sent.load(Ordering::Relaxed);
        r.acked = counters.acked.load(Ordering::Relaxed);
        r.errors = counters.errors.load(Ordering::Relaxed);
        r.delivered = delivered;
        r.expected = Some(r.acked * self.deliveries_per_ack);
        r.ack_latency = report::Latency::of(&ack);
        r.ack_p99_timeline_ms = Some(timeline.p99_ms());
        r.first_send_latency = report::Latency::of(&first);
        r.delivery_latency = report::Latency::of(&latency);
        r.set_server(cpu0, cpu1);
        Ok(r)
    }
}

/// Before the measured run, each sender sends one message to its room and waits for the ack:
/// the first send to a room does one-time work (a durable node seeds the room's seq counter
/// from the database) that a run of fresh rooms would otherwise count hundreds of times in
/// its first half-second. Returns those sends' latencies (reported on their own line); their
/// text carries no timestamp, so receivers do not count them as deliveries.
pub(super) async fn warm_up(
    senders: &[Arc<Conn>],
    room_of: &impl Fn(usize) -> String,
) -> anyhow::Result<Histogram<u64>> {
    let mut sends = Vec::with_capacity(senders.len());
    for (i, conn) in senders.iter().enumerate() {
        let conn = conn.clone();
        let arg = json!({ "room": room_of(i), "text": "warm-up", "client_id": format!("w{i}") });
        sends.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ack = conn.call("send", arg, ACK_TIMEOUT).await?;
            if !ack.ok() {
                bail!("warm-up send refused: {ack}");
            }
            Ok(t0.elapsed().as_micros() as u64)
        }));
    }
    let mut first = new_hist();
    for s in sends {
        let _ = first.record(s.await??.max(1));
    }
    Ok(first)
}

/// One acked send of an open-loop run: when it was scheduled (since the run's start) and its
/// send→ack latency.
pub(super) struct Timed {
    pub(super) scheduled: Duration,
    pub(super) latency_us: u64,
}

/// Send→ack latency by when the send was scheduled, in fixed windows: tells a tail spread
/// over the whole run (queueing) from one made of a few bad moments (stalls).
pub(super) struct Timeline {
    pub(super) window: Duration,
    pub(super) windows: Vec<Histogram<u64>>,
}

impl Timeline {
    pub(super) fn new(window: Duration) -> Self {
        Timeline {
            window,
            windows: Vec::new(),
        }
    }

    pub(super) fn record(&mut self, t: &Timed) {
        let i = (t.scheduled.as_micros() / self.window.as_micros().max(1)) as usize;
        while self.windows.len() <= i {
            self.windows.push(new_hist());
        }
        let _ = self.windows[i].record(t.latency_us);
    }

    /// Each window's p99 in ms (0 for a window without acked sends).
    pub(super) fn p99_ms(&self) -> Vec<f64> {
        self.windows
            .iter()
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
            .collect()
    }
}
