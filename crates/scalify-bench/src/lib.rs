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
//! - `login`: a real user's logins, one after another, while clients flood the server with
//!   failed logins → the real logins' latency and refusals, and how the flood was answered.
//! - `idle`: N connections each joined to a room, opened in 5 steps and held → server RSS per
//!   connection (slope of RSS over connections after the first step), connects/s.
//!
//! Given `--server-pid`, it reads the servers' CPU seconds and RSS from /proc and reports
//! deliveries per server CPU-second, the figure that stays comparable on a noisy machine.

pub mod client;
mod durable;
mod idle;
mod login;
mod paced;
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
use crate::report::Latency;
pub use crate::report::{FloodFigures, Report};

use durable::*;
use idle::*;
use login::*;
use paced::*;

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
    /// A real user's logins, one after another, while clients loop failed logins.
    Login {
        /// Clients looping failed logins, each on a new username every time.
        #[arg(long, default_value_t = 64)]
        flooders: usize,
        /// Local address the flood is sent from (e.g. 127.0.0.2), so the server sees the
        /// attacker's address apart from the real user's. Default: the same address.
        #[arg(long)]
        flood_from: Option<std::net::IpAddr>,
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
        Scenario::Login {
            flooders,
            flood_from,
        } => login(&ctx, flooders, flood_from).await,
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

/// Width of the windows of [`Report::ack_p99_timeline_ms`].
const TIMELINE_WINDOW: Duration = Duration::from_millis(500);

/// How many steps `idle` opens its connections in.
const IDLE_STEPS: usize = 5;

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
