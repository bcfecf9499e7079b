//! A short run of every scenario against an in-process node. Checks counts, not speed:
//! sent = acked, delivered = expected, nothing lost.

use std::sync::Arc;
use std::time::Duration;

use scalify_bench::{BenchArgs, Scenario};
use scalify_server::{App, TransportConfig};
use scalify_service::auth::Auth;
use scalify_service::{ChatConfig, ThrottleConfig};
use scalify_store::sqlite::{SqliteConfig, SqliteStore};

async fn spawn_node() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db"))).expect("store");
    let auth = Auth::new(&[9u8; 32], Duration::from_secs(3600)).expect("auth");
    // The bench is the only client: no budgets, throttles or connection caps.
    let chat = ChatConfig {
        rate_limit_per_sec: 0,
        max_connections_per_user: usize::MAX,
        throttle: ThrottleConfig::off(),
        ..ChatConfig::default()
    };
    let app = App::build(
        Arc::new(store),
        &scalify_server::Cluster::Embedded,
        auth,
        chat,
        TransportConfig::default(),
        &tokio_util::task::TaskTracker::new(),
    )
    .await
    .expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(scalify_server::run(listener, app, std::future::pending()));
    (url, dir)
}

fn args(url: &str, scenario: Scenario) -> BenchArgs {
    BenchArgs {
        scenario,
        url: vec![url.to_owned()],
        server_pid: vec![std::process::id()],
        duration: 2,
        json: true,
        users: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_counts_add_up() {
    let (url, _dir) = spawn_node().await;

    let r = scalify_bench::run(args(
        &url,
        Scenario::Durable {
            senders: 4,
            window: 2,
            rooms: 2,
            size: 64,
        },
    ))
    .await
    .expect("durable");
    assert!(r.sent > 0);
    assert_eq!(
        (r.acked, r.errors),
        (r.sent, 0),
        "durable: every send acked"
    );
    // Each sender shares its room with one other sender: every acked message reaches both.
    assert_eq!(r.delivered, r.acked * 2);
    assert!(r.ack_latency.is_some() && r.server_cpu_s.is_some());

    let r = scalify_bench::run(args(
        &url,
        Scenario::Fanout {
            receivers: 20,
            senders: 2,
            rate: 20,
            size: 64,
        },
    ))
    .await
    .expect("fanout");
    assert_eq!(r.acked, r.sent);
    assert!(r.acked >= 30, "fanout paced ~40 sends, got {}", r.acked);
    assert_eq!(r.expected, Some(r.acked * 20));
    assert_eq!(r.lost, Some(0), "fanout: every receiver got every message");
    // Exactly: the warm-up's messages (one per sender, before the run) are not counted.
    assert_eq!(r.delivered, r.acked * 20);
    assert!(r.delivery_latency.is_some());
    assert_eq!(
        r.first_send_latency.map(|l| l.samples),
        Some(2),
        "one warm-up send per sender"
    );
    // 2 s of the run in half-second windows (the last may be partial or empty).
    let windows = r
        .ack_p99_timeline_ms
        .expect("open-loop runs report a timeline");
    assert!((4..=5).contains(&windows.len()), "{windows:?}");
    assert!(windows[..4].iter().all(|&ms| ms > 0.0), "{windows:?}");

    let r = scalify_bench::run(args(
        &url,
        Scenario::Pairs {
            pairs: 10,
            rate: 50,
            size: 64,
        },
    ))
    .await
    .expect("pairs");
    assert_eq!(r.acked, r.sent);
    assert_eq!(r.lost, Some(0));
    assert_eq!(r.delivered, r.acked);

    let r = scalify_bench::run(args(
        &url,
        Scenario::Idle {
            connections: 200,
            concurrency: 16,
            rooms: 10,
        },
    ))
    .await
    .expect("idle");
    assert_eq!(r.connections, Some(200));
    assert!(r.rss_per_connection_kb.is_some() && r.connects_per_s.is_some());
}
