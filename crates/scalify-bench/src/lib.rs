//! # scalify-bench — the load generator behind every performance figure
//!
//! Drives one or more running nodes over the public wire contract only (REST for tokens,
//! Socket.IO over WebSocket for everything else), so the figures hold for any deployment.
//!
//! Scenarios ([`Scenario`]):
//! - `durable`: many concurrent senders, each with a window of sends in flight → acked sends/s
//!   and send→ack latency (an ack means committed).
//! - `fanout`: one room, R receivers, S senders at a fixed offered rate → deliveries/s and
//!   delivery latency (open loop: the send time carried in each message is the *scheduled*
//!   time, so a stalled server shows up as latency rather than as a lower offered rate).
//! - `pairs`: many 2-member rooms → 1:1 delivery latency and throughput.
//! - `idle`: N connections each joined to a room, opened in 5 steps and held → server RSS per
//!   connection (slope of RSS over connections after the first step), connects/s.
//!
//! Given `--server-pid`, it reads the servers' CPU seconds and RSS from /proc and reports
//! deliveries per server CPU-second, the figure that stays comparable on a noisy machine.

pub mod client;
mod pacing;
mod procfs;
mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::client::Conn;
pub use crate::pacing::Pacer;
pub use crate::report::Report;

/// µs since the Unix epoch (the clock both ends of a delivery measurement share).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Server base URL(s), comma-separated; connections are spread over them round-robin.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub url: Vec<String>,
    /// PIDs of the server processes, for CPU seconds and RSS from /proc.
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Seconds of measurement (after warm-up).
    #[arg(long, global = true, default_value_t = 10)]
    pub duration: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Users to register and share among the connections (each registration costs an
    /// argon2 hash on the server).
    #[arg(long, global = true, default_value_t = 20)]
    pub users: usize,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Many concurrent senders; acked (committed) sends/s and send→ack latency.
    Durable {
        /// Sending connections.
        #[arg(long, default_value_t = 64)]
        senders: usize,
        /// Sends in flight per connection.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Rooms the senders are spread over (each sender also receives its room's messages).
        #[arg(long, default_value_t = 64)]
        rooms: usize,
        /// Message text size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// One room, R receivers and S senders at a fixed offered rate.
    Fanout {
        #[arg(long, default_value_t = 100)]
        receivers: usize,
        #[arg(long, default_value_t = 4)]
        senders: usize,
        /// Messages per second offered, in total.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Many two-member rooms; each pair exchanges messages at a fixed rate.
    Pairs {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages per second offered, in total.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// N connections, each joined to a room, held open.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connections opened concurrently.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Rooms the connections are spread over.
        #[arg(long, default_value_t = 100)]
        rooms: usize,
    },
}

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

struct Ctx {
    args: BenchArgs,
    tokens: Vec<String>,
    run_id: String,
}

impl Ctx {
    fn url(&self, i: usize) -> &str {
        &self.args.url[i % self.args.url.len()]
    }
    fn token(&self, i: usize) -> &str {
        &self.tokens[i % self.tokens.len()]
    }
    fn room(&self, name: &str) -> String {
        format!("bench-{}-{name}", self.run_id)
    }
    async fn connect(&self, i: usize) -> anyhow::Result<Conn> {
        Conn::connect(self.url(i), self.token(i)).await
    }
}

/// Runs a scenario and returns its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    if args.url.is_empty() {
        bail!("--url needs at least one server");
    }
    raise_fd_limit();
    let run_id: String = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let tokens = register_users(&args.url[0], &run_id, args.users.max(1)).await?;
    let ctx = Ctx {
        args: args.clone(),
        tokens,
        run_id,
    };
    match args.scenario.clone() {
        Scenario::Durable {
            senders,
            window,
            rooms,
            size,
        } => durable(&ctx, senders, window, rooms, size).await,
        Scenario::Fanout {
            receivers,
            senders,
            rate,
            size,
        } => fanout(&ctx, receivers, senders, rate, size).await,
        Scenario::Pairs { pairs, rate, size } => pairs_scenario(&ctx, pairs, rate, size).await,
        Scenario::Idle {
            connections,
            concurrency,
            rooms,
        } => idle(&ctx, connections, concurrency, rooms).await,
    }
}

/// Tens of thousands of sockets need as many descriptors as the hard limit allows.
pub fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-files limit: {e}");
    }
}

async fn register_users(url: &str, run_id: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let res = http
            .post(format!("{url}/api/auth/register"))
            .json(
                &json!({ "username": format!("bench-{run_id}-{i}"), "password": "bench-password" }),
            )
            .send()
            .await
            .with_context(|| format!("registering a bench user at {url}"))?;
        let status = res.status();
        let body: serde_json::Value = res.json().await.context("register response")?;
        match body["token"].as_str() {
            Some(t) if status.is_success() => tokens.push(t.to_owned()),
            _ => bail!("registering a bench user failed: {status} {body}"),
        }
    }
    Ok(tokens)
}

async fn connect_all(
    ctx: &Ctx,
    n: usize,
    offset: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Conn>> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter((0..n).map(|i| ctx.connect(offset + i)))
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

async fn join(conn: &Conn, room: &str) -> anyhow::Result<()> {
    let r = conn
        .call("join", json!({ "room": room }), ACK_TIMEOUT)
        .await?;
    if !r.ok() {
        bail!("join failed: {r}");
    }
    Ok(())
}

fn progress(ctx: &Ctx, label: &str) -> ProgressBar {
    let bar = if ctx.args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(ctx.args.duration)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_owned());
    bar
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

/// Counters shared by sender tasks.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
}

async fn durable(
    ctx: &Ctx,
    senders: usize,
    window: usize,
    rooms: usize,
    size: usize,
) -> anyhow::Result<Report> {
    let rooms = rooms.clamp(1, senders.max(1));
    let conns = connect_all(ctx, senders, 0, 64).await?;
    for (i, c) in conns.iter().enumerate() {
        join(c, &ctx.room(&format!("d{}", i % rooms))).await?;
    }
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + Duration::from_secs(ctx.args.duration);
    let cpu0 = procfs::sample(&ctx.args.server_pid);
    let started = Instant::now();
    let bar = progress(ctx, "durable");
    let conns: Vec<Arc<Conn>> = conns.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        for w in 0..window.max(1) {
            let (conn, counters) = (conn.clone(), counters.clone());
            let room = ctx.room(&format!("d{}", i % rooms));
            tasks.push(tokio::spawn(async move {
                let mut hist = new_hist();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let arg = json!({ "room": room, "text": client::timed_text(size), "client_id": format!("{i}-{w}-{n}") });
                    let t0 = Instant::now();
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    match conn.call("send", arg, ACK_TIMEOUT).await {
                        Ok(r) if r.ok() => {
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                            let _ = hist.record(t0.elapsed().as_micros().max(1) as u64);
                        }
                        _ => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                hist
            }));
        }
    }
    let ticker = tick(&bar, ctx.args.duration, counters.clone(), "acked");
    let mut ack = new_hist();
    for t in tasks {
        ack.add(t.await?)?;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    bar.finish_and_clear();
    let cpu1 = procfs::sample(&ctx.args.server_pid);
    let mut delivered = 0;
    for c in conns {
        if let Ok(c) = Arc::try_unwrap(c) {
            delivered += c.close().await.count;
        }
    }
    let mut r = Report::new(
        "durable",
        format!("senders={senders} window={window} rooms={rooms} size={size}"),
        elapsed,
    );
    r.sent = counters.sent.load(Ordering::Relaxed);
    r.acked = counters.acked.load(Ordering::Relaxed);
    r.errors = counters.errors.load(Ordering::Relaxed);
    r.delivered = delivered;
    r.ack_latency = report::Latency::of(&ack);
    r.set_server(cpu0, cpu1);
    Ok(r)
}

fn tick(
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
fn paced_senders(
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

async fn fanout(
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

async fn pairs_scenario(ctx: &Ctx, pairs: usize, rate: u64, size: usize) -> anyhow::Result<Report> {
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
struct PacedRun {
    label: &'static str,
    params: String,
    rate: u64,
    size: usize,
    /// How many receiver deliveries each acked message should produce.
    deliveries_per_ack: u64,
}

impl PacedRun {
    async fn measure(
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
async fn warm_up(
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
struct Timed {
    scheduled: Duration,
    latency_us: u64,
}

/// Width of the windows of [`Report::ack_p99_timeline_ms`].
const TIMELINE_WINDOW: Duration = Duration::from_millis(500);

/// Send→ack latency by when the send was scheduled, in fixed windows: tells a tail spread
/// over the whole run (queueing) from one made of a few bad moments (stalls).
struct Timeline {
    window: Duration,
    windows: Vec<Histogram<u64>>,
}

impl Timeline {
    fn new(window: Duration) -> Self {
        Timeline {
            window,
            windows: Vec::new(),
        }
    }

    fn record(&mut self, t: &Timed) {
        let i = (t.scheduled.as_micros() / self.window.as_micros().max(1)) as usize;
        while self.windows.len() <= i {
            self.windows.push(new_hist());
        }
        let _ = self.windows[i].record(t.latency_us);
    }

    /// Each window's p99 in ms (0 for a window without acked sends).
    fn p99_ms(&self) -> Vec<f64> {
        self.windows
            .iter()
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
            .collect()
    }
}

async fn idle(
    ctx: &Ctx,
    connections: usize,
    concurrency: usize,
    rooms: usize,
) -> anyhow::Result<Report> {
    // Connections are opened in IDLE_STEPS equal steps and the server's RSS is sampled after
    // each; the figure is the least-squares slope of RSS over connections across all samples
    // but the first. The first step is left out because it reuses memory the server freed
    // before (password hashing leaves ~19 MiB of free heap behind), and each step's transient
    // allocations (request buffers, handshakes) leave holes the next one fills: a single
    // before/after difference swung between 3 and 10 KiB per connection from run to run.
    let step = (connections / IDLE_STEPS).max(1);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(connections);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut first = None;
    while conns.len() < connections {
        let n = step.min(connections - conns.len());
        let opened = connect_and_join(ctx, n, conns.len(), concurrency, rooms).await?;
        conns.extend(opened);
        settle(ctx).await;
        if let Some(sample) = procfs::sample(&ctx.args.server_pid) {
            samples.push((conns.len() as f64, sample.rss_kb as f64));
            first.get_or_insert(sample);
        }
    }
    let connect_time = started.elapsed();
    let bar = progress(ctx, "idle");
    for _ in 0..ctx.args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let after = procfs::sample(&ctx.args.server_pid);
    let mut r = Report::new(
        "idle",
        format!("connections={connections} rooms={rooms}"),
        connect_time,
    );
    r.connections = Some(conns.len() as u64);
    r.connects_per_s = Some(connections as f64 / connect_time.as_secs_f64());
    r.rss_per_connection_kb = samples.get(1..).and_then(slope);
    r.set_server(first, after);
    drop(conns);
    Ok(r)
}

/// How many steps `idle` opens its connections in.
const IDLE_STEPS: usize = 5;

/// The least-squares slope of y over x; `None` for fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (cov, var) = points.iter().fold((0.0, 0.0), |(c, v), (x, y)| {
        (c + (x - mx) * (y - my), v + (x - mx) * (x - mx))
    });
    (var > 0.0).then(|| cov / var)
}

async fn settle(ctx: &Ctx) {
    if !ctx.args.server_pid.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn connect_and_join(
    ctx: &Ctx,
    n: usize,
    offset: usize,
    concurrency: usize,
    rooms: usize,
) -> anyhow::Result<Vec<Conn>> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let rooms = rooms.max(1);
    stream::iter((offset..offset + n).map(|i| async move {
        let conn = ctx.connect(i).await?;
        join(&conn, &ctx.room(&format!("i{}", i % rooms))).await?;
        Ok::<_, anyhow::Error>(conn)
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await
}

#[cfg(test)]
mod tests {
    use super::{slope, Timed, Timeline};
    use std::time::Duration;

    #[test]
    fn timeline_puts_each_send_in_the_window_it_was_scheduled_in() {
        let mut t = Timeline::new(Duration::from_millis(500));
        let at = |ms: u64, latency_us: u64| Timed {
            scheduled: Duration::from_millis(ms),
            latency_us,
        };
        // Window 0: 100 fast sends; window 2: one slow send among fast ones; window 1 empty.
        for _ in 0..100 {
            t.record(&at(10, 2_000));
        }
        for i in 0..99 {
            t.record(&at(1_000 + i, 2_000));
        }
        t.record(&at(1_499, 40_000));
        let p99 = t.p99_ms();
        assert_eq!(p99.len(), 3);
        assert!((p99[0] - 2.0).abs() < 0.01, "{p99:?}");
        assert_eq!(p99[1], 0.0);
        // The 100th of 100 is above the 99th percentile only if it is among the top 1 %.
        assert!((p99[2] - 2.0).abs() < 0.01, "{p99:?}");
        t.record(&at(1_200, 40_000));
        assert!((t.p99_ms()[2] - 40.0).abs() < 0.1, "{:?}", t.p99_ms());
    }

    #[test]
    fn slope_is_the_least_squares_fit() {
        let exact = [(2000.0, 100.0), (4000.0, 116.0), (6000.0, 132.0)];
        assert_eq!(slope(&exact), Some(0.008));
        // Noise around a slope of 2: the fit, not the last difference (which is 1).
        let noisy = [(1.0, 2.0), (2.0, 5.0), (3.0, 6.0)];
        assert_eq!(slope(&noisy), Some(2.0));
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
