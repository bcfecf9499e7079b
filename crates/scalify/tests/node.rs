//! A whole node in process, built by [`scalify::Node`] from [`scalify::Settings`] exactly as
//! `scalify serve` builds it, in each mode, and spoken to over real HTTP: the embedded
//! default, two cluster nodes sharing PostgreSQL and Redis, and durable mode with its
//! persister (a real Kafka-API broker, Redis and PostgreSQL; `scripts/test.sh` starts the
//! broker and sets `SCALIFY_TEST_KAFKA_BROKERS`).

mod support;

use std::time::Duration;

use scalify_testkit::{brokers, redis_url, unique, FreshDb, RedisPrefix};
use serde_json::json;
use sqlx::Connection;
use support::{spawn_app, TestApp};

impl TestApp {
    /// A new user and a public room of theirs: (token, room name).
    async fn user_and_room(&self) -> (String, String) {
        self.named_user_and_room(&unique("u").replace('_', ""))
            .await
    }

    async fn named_user_and_room(&self, username: &str) -> (String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/api/auth/register",
                Some(json!({"username": username, "password": "password-1"})),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let token = body["token"].as_str().expect("token").to_owned();
        let room = unique("room").replace('_', "-");
        let (status, body) = self
            .call(
                "POST",
                "/api/rooms",
                Some(json!({"name": room, "kind": "public"})),
                Some(&token),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (token, room)
    }

    /// Sends `n` messages over REST; each must be acked (201) with its seq.
    async fn send(&self, token: &str, room: &str, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for i in 0..n {
            let (status, body) = self
                .call(
                    "POST",
                    &format!("/api/rooms/{room}/messages"),
                    Some(json!({"text": format!("m{i}"), "client_id": format!("c{i}")})),
                    Some(token),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            seqs.push(body["message"]["seq"].as_u64().expect("seq"));
        }
        seqs
    }

    async fn history(&self, token: &str, room: &str) -> Vec<String> {
        let (status, body) = self
            .call(
                "GET",
                &format!("/api/rooms/{room}/messages?limit=100"),
                None,
                Some(token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn an_embedded_node_serves_and_stops_cleanly() {
    let node = spawn_app(&[]).await;
    let (token, room) = node.user_and_room().await;
    assert_eq!(node.send(&token, &room, 5).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        node.history(&token, &room).await,
        ["m0", "m1", "m2", "m3", "m4"]
    );
    // The data directory and every file of the database are its owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&node.data), 0o700, "the data directory");
        for file in ["scalify.db", "scalify.db-wal", "scalify.db-shm"] {
            assert_eq!(mode(&node.data.join(file)), 0o600, "{file}");
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn two_cluster_nodes_share_history_tokens_and_the_registry() {
    let db = FreshDb::create().await;
    let prefix = RedisPrefix::new();
    let redis = redis_url();
    let admin = unique("admin").replace('_', "");
    let flags = [
        "--database-url",
        db.url.as_str(),
        "--redis-url",
        redis.as_str(),
        "--redis-prefix",
        prefix.0.as_str(),
        "--admins",
        admin.as_str(),
    ];
    // Node A starts before the admin's account exists, so without --admins (a name with no
    // account would stop its start); node B, started after, binds the name to the account.
    let a = spawn_app(&flags[..6]).await;
    let (token, room) = a.named_user_and_room(&admin).await;
    let b = spawn_app(&flags).await;
    assert_eq!(a.send(&token, &room, 3).await, vec![1, 2, 3]);
    // A token from one node is good on the other, and the history is shared.
    assert_eq!(b.history(&token, &room).await, ["m0", "m1", "m2"]);
    // Each node announces itself in the registry; the admin overview lists both, typed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = b
            .call("GET", "/api/admin/overview", None, Some(&token))
            .await;
        assert_eq!(status, 200, "{body}");
        let nodes = body["nodes"].as_array().map(Vec::len).unwrap_or(0);
        if nodes == 2 {
            assert!(body["nodes"][0]["started_at"].as_i64().is_some(), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{nodes} node(s) in the overview after 30 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    b.stop().await;
}

/// With `--internal-listen`, `/metrics` leaves the client-facing listener for the internal
/// one, which also answers `/healthz` and `/readyz` (and nothing else).
#[tokio::test]
async fn metrics_move_to_the_internal_listener() {
    let node = spawn_app(&["--internal-listen", "127.0.0.1:0"]).await;
    let internal = node.internal.clone().expect("an internal listener");
    let get = |url: String| async move {
        let res = reqwest::get(&url).await.expect("request");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    };
    assert_eq!(get(format!("{}/metrics", node.url)).await.0, 404);
    let (status, body) = get(format!("{internal}/metrics")).await;
    assert_eq!(status, 200);
    assert!(body.contains("scalify_"), "{body}");
    assert_eq!(get(format!("{internal}/readyz")).await.0, 200);
    assert_eq!(get(format!("{internal}/healthz")).await.0, 200);
    assert_eq!(get(format!("{internal}/api/rooms")).await.0, 404);
    // Load balancers still probe the main listener.
    assert_eq!(get(format!("{}/readyz", node.url)).await.0, 200);
    node.stop().await;

    // Without it, /metrics stays where it was.
    let node = spawn_app(&[]).await;
    assert!(node.internal.is_none());
    assert_eq!(get(format!("{}/metrics", node.url)).await.0, 200);
    node.stop().await;
}

/// A user's request budget is the cluster's, not a node's: what they spend on node A is
/// debited on node B within moments, so spreading requests over the nodes (as a load
/// balancer does with REST) does not multiply it.
#[tokio::test]
async fn a_request_budget_spent_on_one_cluster_node_holds_on_the_other() {
    let db = FreshDb::create().await;
    let prefix = RedisPrefix::new();
    let redis = redis_url();
    // 20 sends in a burst, then one a second.
    let flags = [
        "--database-url",
        db.url.as_str(),
        "--redis-url",
        redis.as_str(),
        "--redis-prefix",
        prefix.0.as_str(),
        "--rate-limit-per-sec",
        "1",
        "--rate-limit-burst",
        "20",
    ];
    let a = spawn_app(&flags).await;
    let b = spawn_app(&flags).await;
    // Registering and creating the room are charged too; wait for B to hear of them.
    let (token, room) = a.user_and_room().await;
    let mut spent_on_a = 0;
    for i in 0.. {
        let (status, body) = a
            .call(
                "POST",
                &format!("/api/rooms/{room}/messages"),
                Some(json!({"text": "hi", "client_id": format!("a{i}")})),
                Some(&token),
            )
            .await;
        if status == 429 {
            break;
        }
        assert_eq!(status, 201, "{body}");
        spent_on_a += 1;
    }
    assert!(
        spent_on_a >= 5,
        "only {spent_on_a} sends before the first 429 on A"
    );
    // On B, a node whose own bucket for the user is full, sends are refused as soon as A's
    // spending arrives (every 100 ms). Without it B would allow a whole burst (20) more.
    let mut allowed_on_b = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = b
            .call(
                "POST",
                &format!("/api/rooms/{room}/messages"),
                Some(json!({"text": "hi", "client_id": format!("b{allowed_on_b}")})),
                Some(&token),
            )
            .await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            break;
        }
        assert_eq!(status, 201, "{body}");
        allowed_on_b += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "B kept accepting sends for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        allowed_on_b < 10,
        "B accepted {allowed_on_b} sends after A had spent the whole budget"
    );
    a.stop().await;
    b.stop().await;
}

/// Throttles are the cluster's, not a node's: failed logins counted on node A refuse the next
/// attempt on node B, per account and per client address.
#[tokio::test]
async fn a_login_throttle_earned_on_one_cluster_node_holds_on_the_other() {
    let db = FreshDb::create().await;
    let prefix = RedisPrefix::new();
    let redis = redis_url();
    let flags = [
        "--database-url",
        db.url.as_str(),
        "--redis-url",
        redis.as_str(),
        "--redis-prefix",
        prefix.0.as_str(),
        "--login-attempts-per-account",
        "2",
        "--login-attempts-per-address",
        "4",
    ];
    let a = spawn_app(&flags).await;
    let b = spawn_app(&flags).await;
    let name = unique("t").replace('_', "");
    a.named_user_and_room(&name).await;
    let login = |node: &TestApp, name: &str, password: &str| {
        let (node, body) = (
            node.url.clone(),
            json!({"username": name, "password": password}),
        );
        let http = reqwest::Client::new();
        async move {
            let res = http
                .post(format!("{node}/api/auth/login"))
                .json(&body)
                .send()
                .await
                .expect("login request");
            let retry_after = res
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            (res.status().as_u16(), retry_after)
        }
    };
    for _ in 0..2 {
        assert_eq!(login(&a, &name, "wrong password").await, (401, None));
    }
    // The right password, on the other node, within the backoff's first second.
    assert_eq!(
        login(&b, &name, "password-1").await,
        (429, Some("1".into()))
    );
    // Two more failures from this address, on other accounts, on B; the fifth on A is refused.
    for other in ["nobody1", "nobody2"] {
        assert_eq!(login(&b, other, "wrong password").await.0, 401);
    }
    assert_eq!(login(&a, "nobody3", "wrong password").await.0, 429);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_durable_node_and_its_persister_write_every_acked_message_to_postgresql() {
    let db = FreshDb::create().await;
    let prefix = RedisPrefix::new();
    let topic = unique("node");
    let (brokers, redis) = (brokers(), redis_url());
    let node = spawn_app(&[
        "--database-url",
        &db.url,
        "--redis-url",
        &redis,
        "--redis-prefix",
        &prefix.0,
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        &topic,
        "--kafka-group",
        &topic,
        "--kafka-partitions",
        "2",
        "--persister",
    ])
    .await;
    let (token, room) = node.user_and_room().await;
    let seqs = node.send(&token, &room, 20).await;
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
    // Acked ⇒ readable at once (from the recent window until the persister has it).
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(node.history(&token, &room).await, expected);
    // The persister, a service of the same node, writes them to PostgreSQL.
    let mut pg = sqlx::PgConnection::connect(&db.url).await.expect("db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&mut pg)
            .await
            .expect("count");
        if stored == 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored} of 20 messages in PostgreSQL after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(pg);
    node.stop().await;
}
