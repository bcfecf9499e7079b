//! What the in-process tests share: [`spawn_app`] builds a whole node with [`scalify::Node`]
//! from `scalify serve` flags, exactly as the binary does, serves it on a free port, and
//! [`TestApp`] speaks to it over real HTTP.

#![allow(dead_code)] // each test binary uses its own part of it

use std::time::Duration;

use clap::Parser;
use scalify::config::{Cli, Command};
use scalify::{Node, Settings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

pub struct TestApp {
    pub url: String,
    /// The operator's listener, with `--internal-listen`.
    pub internal: Option<String>,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub running: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub data: std::path::PathBuf,
    pub _dir: tempfile::TempDir,
}

/// Builds and runs a node from `scalify serve` flags (plus a data directory and a token
/// secret of its own), on a free port.
pub async fn spawn_app(flags: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("scalify.toml");
    std::fs::write(&file, format!("token_secret = \"{SECRET}\"\n")).expect("config file");
    let data = dir.path().join("data");
    let mut argv = vec![
        "scalify",
        "serve",
        "--config",
        file.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ];
    // No request budget unless the test sets one.
    if !flags.contains(&"--rate-limit-per-sec") {
        argv.extend_from_slice(&["--rate-limit-per-sec", "0"]);
    }
    argv.extend_from_slice(flags);
    let Command::Serve(args) = Cli::parse_from(argv).command else {
        unreachable!("parsed as serve");
    };
    let settings = Settings::load(&args.common, Some(&args)).expect("settings");
    let shutdown = CancellationToken::new();
    let node = Node::build(&settings, &shutdown)
        .await
        .expect("node")
        .expect("not shut down while starting");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let internal = node.internal_addr().map(|a| format!("http://{a}"));
    let running = tokio::spawn(node.run(listener, shutdown.clone()));
    TestApp {
        url,
        internal,
        http: reqwest::Client::new(),
        shutdown,
        running,
        data,
        _dir: dir,
    }
}

impl TestApp {
    /// An HTTP request with an optional JSON body: (status, JSON answer, or the text when
    /// the answer is not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.url),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Graceful shutdown: `Node::run` returns Ok within 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running)
            .await
            .expect("stopped within 30 s")
            .expect("node task")
            .expect("node result");
    }
}
