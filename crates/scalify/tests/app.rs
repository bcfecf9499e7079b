//! In-process integration tests of the client-facing API: `spawn_app()` runs a whole
//! embedded node (SQLite in a temp dir, port 0), built as `scalify serve` builds it, and the
//! tests talk to it over real HTTP and a raw Engine.IO/Socket.IO WebSocket.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{spawn_app, TestApp};
use tokio_tungstenite::tungstenite::Message as Ws;

impl TestApp {
    async fn register(&self, name: &str) -> (String, Value) {
        let (status, body) = self
            .call(
                "POST",
                "/api/auth/register",
                Some(json!({"username": name, "password": "password-1"})),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["token"].as_str().expect("token").to_owned(),
            body["user"].clone(),
        )
    }
}

/// A raw Socket.IO v4 client over WebSocket: sends packets, reads frames, answers pings.
struct RawSocket {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Frames read while waiting for an ack, kept for `next_frame`.
    skipped: std::collections::VecDeque<String>,
}

impl RawSocket {
    async fn open(app: &TestApp) -> RawSocket {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            app.url.replace("http", "ws")
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut s = RawSocket {
            ws,
            skipped: Default::default(),
        };
        let open = s.next_frame().await;
        assert!(open.starts_with("0{"), "engine.io open: {open}");
        s
    }

    async fn send(&mut self, frame: &str) {
        self.ws.send(Ws::Text(frame.into())).await.expect("ws send");
    }

    async fn next_frame(&mut self) -> String {
        if let Some(f) = self.skipped.pop_front() {
            return f;
        }
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("frame within 5 s")
                .expect("stream open")
                .expect("frame");
            if let Ws::Text(t) = msg {
                if t.as_str() == "2" {
                    self.send("3").await;
                    continue;
                }
                return t.to_string();
            }
        }
    }

    /// Emits `event` with ack id `id` and returns the ack's argument.
    async fn call(&mut self, id: u32, event: &str, arg: Value) -> Value {
        self.send(&format!("42{id}{}", json!([event, arg]))).await;
        let prefix = format!("43{id}");
        loop {
            let f = self.read_frame().await;
            if let Some(rest) = f.strip_prefix(&prefix) {
                let mut args: Vec<Value> = serde_json::from_str(rest).expect("ack json");
                return args.remove(0);
            }
            self.skipped.push_back(f);
        }
    }
}

#[tokio::test]
async fn register_login_me_and_error_shapes() {
    let app = spawn_app(&[]).await;
    let (token, user) = app.register("Carol").await;
    assert_eq!(user["username"], "carol");
    let (status, body) = app.call("GET", "/api/me", None, Some(&token)).await;
    assert_eq!((status, &body["user"]), (200, &user));
    assert_eq!(body["limits"]["max_message_bytes"], 4096, "{body}");
    let (status, body) = app
        .call(
            "POST",
            "/api/auth/login",
            Some(json!({"username": "CAROL", "password": "password-1"})),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["user"], user);
    let (status, body) = app
        .call(
            "POST",
            "/api/auth/register",
            Some(json!({"username": "carol", "password": "password-1"})),
            None,
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "conflict");
    let (status, body) = app
        .call("GET", "/api/me", None, Some("forged.token.value"))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    app.stop().await;
}

/// A login from `forwarded_for` (sent as `X-Forwarded-For`): status, `Retry-After`, body.
async fn login_from(
    app: &TestApp,
    name: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/auth/login", app.url))
        .json(&json!({"username": name, "password": password}));
    if let Some(f) = forwarded_for {
        req = req.header("x-forwarded-for", f);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, retry, res.json().await.expect("json"))
}

/// The default throttle over HTTP: five failures, then `429` with `Retry-After` and the same
/// wait in the body, even for the right password.
#[tokio::test]
async fn failed_logins_answer_429_with_retry_after() {
    let app = spawn_app(&[]).await;
    app.register("mallory").await;
    for _ in 0..5 {
        let (status, retry, body) = login_from(&app, "mallory", "wrong-password", None).await;
        assert_eq!((status, retry), (401, None), "{body}");
    }
    let (status, retry, body) = login_from(&app, "mallory", "password-1", None).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["retry_after"], 1);
    app.stop().await;
}

/// Failed logins throttled per client address only: two free, then a wait.
const PER_ADDRESS: [&str; 4] = [
    "--login-attempts-per-account",
    "0",
    "--login-attempts-per-address",
    "2",
];

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy; otherwise an
/// attacker could write a new address into every request and never be throttled.
#[tokio::test]
async fn x_forwarded_for_is_believed_from_trusted_proxies_only() {
    let untrusted = spawn_app(&PER_ADDRESS).await;
    for i in 0..2 {
        let forged = format!("203.0.113.{i}");
        let (status, ..) = login_from(&untrusted, "nobody", "guess-guess", Some(&forged)).await;
        assert_eq!(status, 401);
    }
    let (status, ..) = login_from(&untrusted, "nobody", "guess-guess", Some("203.0.113.9")).await;
    assert_eq!(status, 429, "a forged X-Forwarded-For escaped the throttle");
    untrusted.stop().await;

    let behind_proxy =
        spawn_app(&[&PER_ADDRESS[..], &["--trusted-proxies", "127.0.0.0/8"]].concat()).await;
    for _ in 0..2 {
        let (status, ..) =
            login_from(&behind_proxy, "nobody", "guess-guess", Some("203.0.113.1")).await;
        assert_eq!(status, 401);
    }
    let (status, ..) =
        login_from(&behind_proxy, "nobody", "guess-guess", Some("203.0.113.1")).await;
    assert_eq!(status, 429, "the client behind the proxy is throttled");
    // Another client behind the same proxy is not, nor is one whose forged first hop names
    // the throttled address (the proxy appends the real one).
    for header in ["203.0.113.2", "203.0.113.1, 198.51.100.7"] {
        let (status, ..) = login_from(&behind_proxy, "nobody", "guess-guess", Some(header)).await;
        assert_eq!(status, 401, "{header}");
    }
    behind_proxy.stop().await;
}

#[tokio::test]
async fn socket_handshake_requires_a_token() {
    let app = spawn_app(&[]).await;
    let mut s = RawSocket::open(&app).await;
    s.send(r#"40{"token":"nope"}"#).await;
    assert_eq!(s.next_frame().await, r#"44{"message":"unauthorized"}"#);
    let mut s = RawSocket::open(&app).await;
    s.send("40").await;
    assert_eq!(s.next_frame().await, r#"44{"message":"unauthorized"}"#);
    app.stop().await;
}

#[tokio::test]
async fn socket_join_send_history_and_ack_shapes() {
    let app = spawn_app(&[]).await;
    let (token, user) = app.register("dave").await;
    let mut s = RawSocket::open(&app).await;
    s.send(&format!("40{}", json!({"token": token}))).await;
    assert!(s.next_frame().await.starts_with("40{\"sid\""));
    let joined = s.call(1, "join", json!({"room": "lobby"})).await;
    assert_eq!(joined["ok"], true);
    assert_eq!(joined["room"]["last_seq"], 0);
    assert_eq!(joined["online"], json!([user]));
    let sent = s
        .call(
            2,
            "send",
            json!({"room": "lobby", "text": "hi", "client_id": "c1"}),
        )
        .await;
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(sent["message"]["seq"], 1);
    // Our own connection receives the broadcast too (after the events of the join: the room
    // is new, so `room_created` and `room_added`, and `presence`).
    let mut seen_broadcast = false;
    for _ in 0..10 {
        let f = s.next_frame().await;
        if f.starts_with("42[\"message\"") {
            let v: Value = serde_json::from_str(&f[2..]).expect("json");
            assert_eq!(v[1], sent["message"]);
            seen_broadcast = true;
            break;
        }
    }
    assert!(seen_broadcast);
    let h = s.call(3, "history", json!({"room": "lobby"})).await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(h["has_more"], false);
    let bad = s.call(4, "send", json!({"room": "lobby"})).await;
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["error"]["code"], "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_returns_with_connections_open() {
    let app = spawn_app(&[]).await;
    let (token, _) = app.register("erin").await;
    let mut s = RawSocket::open(&app).await;
    s.send(&format!("40{}", json!({"token": token}))).await;
    s.next_frame().await;
    // `shutdown` asserts the server returns within 10 s although this socket stays open.
    app.stop().await;
}

#[tokio::test]
async fn openapi_documents_every_route_and_every_route_is_served() {
    let spec: serde_yaml::Value = serde_yaml::from_str(include_str!("../../../docs/openapi.yaml"))
        .expect("openapi.yaml parses");
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for (method, _) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method");
            if method != "parameters" {
                documented.push((method.to_owned(), path.as_str().expect("path").to_owned()));
            }
        }
    }
    let mut routes: Vec<(String, String)> = scalify_server::rest::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(
        documented, routes,
        "docs/openapi.yaml and rest::ROUTES differ"
    );

    let app = spawn_app(&[]).await;
    for (method, path) in &routes {
        let (status, body) = app
            .call(
                &method.to_uppercase(),
                &path.replace("{room}", "lobby"),
                Some(json!({})),
                None,
            )
            .await;
        assert_ne!(status, 405, "{method} {path} is not served");
        assert_ne!(
            body["error"]["message"], "no such endpoint",
            "{method} {path} is not served"
        );
    }
    app.stop().await;
}

/// Scrapes `/metrics` and parses it as Prometheus text (a parse error fails the test).
async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

/// The value of a counter or gauge (summed over label sets matching `labels`), or a histogram's
/// count. Absent series count as 0. The recorder is process-wide, so tests compare deltas.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_when_messages_flow() {
    let app = spawn_app(&[]).await;
    let (token, _) = app.register("mona").await;
    let before = scrape(&app).await;
    let mut s = RawSocket::open(&app).await;
    s.send(&format!("40{}", json!({"token": token}))).await;
    assert!(s.next_frame().await.starts_with("40{"));
    assert_eq!(
        s.call(1, "join", json!({"room": "metered"})).await["ok"],
        true
    );
    for i in 0..5 {
        let r = s
            .call(
                10 + i,
                "send",
                json!({"room": "metered", "text": "x", "client_id": format!("m{i}")}),
            )
            .await;
        assert_eq!(r["ok"], true);
    }
    // A repeat, a bad request and an unknown room: each counted by outcome or code.
    s.call(
        20,
        "send",
        json!({"room": "metered", "text": "x", "client_id": "m0"}),
    )
    .await;
    s.call(21, "send", json!({"room": "metered"})).await;
    s.call(22, "join", json!({"room": "Not A Room!"})).await;
    let after = scrape(&app).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    assert!(delta("scalify_connections", &[("transport", "websocket")]) >= 1.0);
    assert!(
        delta(
            "scalify_connections_opened_total",
            &[("transport", "websocket")]
        ) >= 1.0
    );
    assert!(delta("scalify_messages_accepted_total", &[("outcome", "stored")]) >= 5.0);
    assert!(
        delta(
            "scalify_messages_accepted_total",
            &[("outcome", "duplicate")]
        ) >= 1.0
    );
    assert!(delta("scalify_events_delivered_total", &[("kind", "message")]) >= 5.0);
    assert!(
        delta("scalify_send_ack_seconds", &[]) >= 6.0,
        "send→ack histogram"
    );
    assert!(delta("scalify_fanout_delay_seconds", &[]) >= 5.0);
    assert!(delta("scalify_store_batch_size", &[("engine", "sqlite")]) >= 1.0);
    assert!(delta("scalify_store_commit_seconds", &[("engine", "sqlite")]) >= 1.0);
    assert!(
        delta(
            "scalify_requests_rejected_total",
            &[("transport", "socket"), ("code", "bad_request")]
        ) >= 2.0
    );
    assert!(value(&after, "scalify_rooms_local", &[]) >= 1.0);
    // Names follow the conventions, and no label carries a room or a user.
    for sample in &after.samples {
        assert!(sample.metric.starts_with("scalify_"), "{}", sample.metric);
        for (k, _) in sample.labels.iter() {
            assert!(
                [
                    "transport",
                    "code",
                    "outcome",
                    "kind",
                    "engine",
                    "le",
                    "quantile"
                ]
                .contains(&k.as_str()),
                "label {k} on {}",
                sample.metric
            );
        }
    }
    app.stop().await;
}
