//! The `login` scenario: a real user signs in, one login after another, while `flooders`
//! clients loop failed logins as fast as the server answers them → the real logins' latency
//! and how many of them were refused, and how the flood was answered.
//!
//! The flood comes from `--flood-from` (another loopback address, e.g. `127.0.0.2`), so the
//! server can tell the attacker's address from the real user's, as it would on a network.

use std::net::IpAddr;

use super::*;

pub(super) async fn login(
    ctx: &Ctx,
    flooders: usize,
    flood_from: Option<IpAddr>,
) -> anyhow::Result<Report> {
    let url = ctx.url(0).to_owned();
    let user = format!("bench-{}-0", ctx.run_id);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_sent = Arc::new(AtomicU64::new(0));
    let flood_throttled = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for f in 0..flooders {
        let mut builder = reqwest::Client::builder();
        if let Some(addr) = flood_from {
            builder = builder.local_address(addr);
        }
        let http = builder.build().context("the flood's HTTP client")?;
        let (url, stop) = (url.clone(), stop.clone());
        let (sent, throttled) = (flood_sent.clone(), flood_throttled.clone());
        let run_id = ctx.run_id.clone();
        flood.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // A different account each time, as a guesser spraying passwords would.
                let body = json!({ "username": format!("flood-{run_id}-{f}-{n}"), "password": "not-the-password" });
                match http.post(format!("{url}/api/auth/login")).json(&body).send().await {
                    Ok(res) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        if res.status().as_u16() == 429 {
                            throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = res.bytes().await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }
    // Let the flood reach its steady state (the throttle engaged, or the queue full).
    if flooders > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let http = reqwest::Client::new();
    let body = json!({ "username": user, "password": "bench-password" });
    let mut hist = new_hist();
    let (mut sent, mut ok, mut refused) = (0u64, 0u64, 0u64);
    let bar = progress(ctx, "login");
    let started = Instant::now();
    let flood_before = flood_sent.load(Ordering::Relaxed);
    let end = started + Duration::from_secs(ctx.args.duration);
    let mut tick = started;
    while Instant::now() < end {
        let t = Instant::now();
        let res = http
            .post(format!("{url}/api/auth/login"))
            .json(&body)
            .send()
            .await
            .context("a real login")?;
        let status = res.status();
        let _ = res.bytes().await;
        sent += 1;
        if status.is_success() {
            ok += 1;
            hist.record(t.elapsed().as_micros().max(1) as u64).ok();
        } else {
            refused += 1;
        }
        if tick.elapsed() >= Duration::from_secs(1) {
            bar.inc(1);
            tick = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    let mut r = Report::new(
        "login",
        format!(
            "flooders={flooders} flood_from={}",
            flood_from.map_or("the same address".into(), |a| a.to_string())
        ),
        elapsed,
    );
    r.sent = sent;
    r.acked = ok;
    r.errors = refused;
    r.ack_latency = Latency::of(&hist);
    let flood_total = flood_sent.load(Ordering::Relaxed) - flood_before;
    r.flood = Some(FloodFigures {
        per_s: flood_total as f64 / elapsed.as_secs_f64(),
        throttled_share: if flood_total == 0 {
            0.0
        } else {
            flood_throttled.load(Ordering::Relaxed) as f64
                / flood_sent.load(Ordering::Relaxed).max(1) as f64
        },
    });
    r.set_server(None, None);
    Ok(r)
}
