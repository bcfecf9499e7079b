//! The `idle` scenario: connections opened in steps and held, and the RSS slope per connection.

use super::*;

pub(super) async fn idle(
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

/// The least-squares slope of y over x; `None` for fewer than two distinct x.
pub(super) fn slope(points: &[(f64, f64)]) -> Option<f64> {
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

pub(super) async fn settle(ctx: &Ctx) {
    if !ctx.args.server_pid.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(super) async fn connect_and_join(
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
