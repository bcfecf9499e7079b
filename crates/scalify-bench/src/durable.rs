//! The `durable` scenario: closed loop, each sender with a window of sends in flight.

use super::*;

pub(super) async fn durable(
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
