//! `Chat` over the embedded engines — SQLite and the in-process fan-out — without a
//! transport: accounts, rooms, messages, and what reaches the node's delivery. The transports'
//! own tests (`scalify-server`, the end-to-end suite) cover the wire on top of this.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scalify_core::{ErrorCode, HistoryQuery, Id, RoomName, SyncRequest, UserRef};
use scalify_fanout::{EventKind, LocalDelivery, LocalFanout, RoomEvent, Sequencer};
use scalify_service::auth::Auth;
use scalify_service::{Chat, ChatConfig, ThrottleConfig};
use scalify_store::sqlite::{SqliteConfig, SqliteStore};

/// The node's delivery, as the fan-out hands it events: (room, kind, payload).
#[derive(Default)]
struct Delivered(Mutex<Vec<(RoomName, EventKind, String)>>);

impl LocalDelivery for Delivered {
    fn deliver(&self, event: &RoomEvent) {
        if let Ok(mut d) = self.0.lock() {
            d.push((
                event.room.clone(),
                event.kind,
                event.payload.get().to_owned(),
            ));
        }
    }
}

impl Delivered {
    /// The seqs of the messages delivered to `room`, in delivery order.
    fn seqs(&self, room: &RoomName) -> Vec<u64> {
        let d = self.0.lock().expect("not poisoned");
        d.iter()
            .filter_map(|(r, kind, _)| match kind {
                EventKind::Message { seq, .. } if r == room => Some(*seq),
                _ => None,
            })
            .collect()
    }
}

struct Node {
    chat: Arc<Chat>,
    sequencer: Arc<Sequencer>,
    delivered: Arc<Delivered>,
    _dir: tempfile::TempDir,
}

fn node() -> Node {
    node_with(
        tempfile::tempdir().expect("a temporary directory"),
        ChatConfig::default(),
    )
}

/// A node on the database in `dir` (a second node on one directory plays a restart).
fn node_with(dir: tempfile::TempDir, config: ChatConfig) -> Node {
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("scalify.db"))).expect("store");
    let delivered = Arc::new(Delivered::default());
    // As a node assembles them: the sequencer hands a room's messages over in seq order.
    let sequencer = Sequencer::new(delivered.clone());
    let fanout = Arc::new(LocalFanout::new(sequencer.clone()));
    let auth = Auth::new(&[7u8; 32], Duration::from_secs(3600)).expect("auth");
    let chat = Chat::new(
        Id::new().to_string(),
        Arc::new(store),
        fanout,
        None,
        auth,
        config,
    );
    Node {
        chat,
        sequencer,
        delivered,
        _dir: dir,
    }
}

/// The client address of most tests.
const HOME: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

async fn user(chat: &Chat, name: &str) -> UserRef {
    chat.register(name, "correct horse battery staple", HOME)
        .await
        .expect("registered")
        .user
}

#[tokio::test]
async fn accounts_register_log_in_and_refuse_a_wrong_password_or_a_taken_name() {
    let n = node();
    let alice = user(&n.chat, "alice").await;
    let session = n
        .chat
        .login("alice", "correct horse battery staple", HOME)
        .await
        .expect("login");
    assert_eq!(session.user, alice);
    assert_eq!(
        n.chat
            .authenticate(&session.token)
            .await
            .expect("token")
            .user,
        alice
    );
    let wrong = n
        .chat
        .login("alice", "wrong horse battery staple", HOME)
        .await;
    assert_eq!(wrong.expect_err("refused").code, ErrorCode::Unauthorized);
    let taken = n
        .chat
        .register("Alice", "another good password", HOME)
        .await;
    assert_eq!(taken.expect_err("refused").code, ErrorCode::Conflict);
}

fn throttled(free_per_account: u32, free_per_address: u32, registrations: u32) -> ChatConfig {
    ChatConfig {
        throttle: ThrottleConfig {
            login_per_account: ThrottleConfig::login(free_per_account),
            login_per_address: ThrottleConfig::login(free_per_address),
            registrations_per_address: ThrottleConfig::registrations(registrations),
            ..ThrottleConfig::default()
        },
        ..ChatConfig::default()
    }
}

const PASSWORD: &str = "correct horse battery staple";

/// Past its free failures an account refuses even the right password, from any address, for
/// the backoff's first second — and an account that does not exist answers exactly the same,
/// so the throttle tells nothing about who has an account.
#[tokio::test]
async fn failed_logins_throttle_the_account_whether_or_not_it_exists() {
    let n = node_with(tempfile::tempdir().unwrap(), throttled(3, 0, 0));
    user(&n.chat, "alice").await;
    for name in ["alice", "nobody"] {
        for i in 0..3u8 {
            let e = n
                .chat
                .login(name, "wrong password!", addr(i))
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized, "{name} attempt {i}");
        }
        let e = n.chat.login(name, PASSWORD, addr(9)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited, "{name}");
        assert_eq!(e.retry_after_secs, Some(1), "{name}");
        assert_eq!(e.message, "too many failed logins");
    }
    // Other accounts are not affected.
    user(&n.chat, "bob").await;
    n.chat
        .login("bob", PASSWORD, HOME)
        .await
        .expect("bob logs in");
}

/// A success clears the account's count: a user who mistypes now and then is never throttled.
#[tokio::test]
async fn a_successful_login_clears_the_accounts_failures() {
    let n = node_with(tempfile::tempdir().unwrap(), throttled(3, 0, 0));
    user(&n.chat, "alice").await;
    for round in 0..3 {
        for _ in 0..2 {
            let e = n
                .chat
                .login("alice", "wrong password!", HOME)
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized, "round {round}");
        }
        n.chat
            .login("alice", PASSWORD, HOME)
            .await
            .expect("logs in");
    }
}

/// Guessing across many accounts from one address is throttled by the address; another
/// address, and a real login's success, are not held against anyone.
#[tokio::test]
async fn failed_logins_throttle_the_client_address_across_accounts() {
    let n = node_with(tempfile::tempdir().unwrap(), throttled(0, 3, 0));
    user(&n.chat, "alice").await;
    let attacker = addr(66);
    for i in 0..3 {
        let e = n
            .chat
            .login(&format!("victim{i}"), "guess!guess!", attacker)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
    }
    let e = n.chat.login("alice", PASSWORD, attacker).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    // Malformed names count against the address too.
    let e = n
        .chat
        .login("x", "guess!guess!", attacker)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    for _ in 0..5 {
        n.chat
            .login("alice", PASSWORD, HOME)
            .await
            .expect("another address");
    }
}

/// The sessions ended events delivered through the control room, in order.
fn sessions_ended(n: &Node) -> Vec<Vec<String>> {
    let control = RoomName::control();
    let d = n.delivered.0.lock().expect("not poisoned");
    d.iter()
        .filter(|(r, kind, _)| *r == control && *kind == EventKind::SessionsEnded)
        .map(|(_, _, payload)| {
            let v: serde_json::Value = serde_json::from_str(payload).expect("json");
            serde_json::from_value(v["sessions"].clone()).expect("session ids")
        })
        .collect()
}

/// A token is good while its session lives: sign-out ends one session, sign-out-everywhere
/// all of them, and each ending is announced through the control room (which closes the
/// sessions' connections on every node).
#[tokio::test]
async fn signing_out_revokes_exactly_the_tokens_it_names() {
    let n = node();
    user(&n.chat, "alice").await;
    // As a node does when it is assembled.
    n.chat.watch_control().await.expect("control room");
    let s1 = n.chat.login("alice", PASSWORD, HOME).await.unwrap();
    let s2 = n.chat.login("alice", PASSWORD, HOME).await.unwrap();
    let s3 = n.chat.login("alice", PASSWORD, HOME).await.unwrap();
    let a1 = n.chat.authenticate(&s1.token).await.unwrap();
    n.chat.logout(&a1).await.unwrap();
    assert_eq!(
        n.chat.authenticate(&s1.token).await.unwrap_err().code,
        ErrorCode::Unauthorized
    );
    let a2 = n
        .chat
        .authenticate(&s2.token)
        .await
        .expect("another session stays");
    assert_eq!(sessions_ended(&n), [vec![a1.session.clone()]]);
    n.chat.logout_all(&a2).await.unwrap();
    for t in [&s2.token, &s3.token] {
        assert!(n.chat.authenticate(t).await.is_err());
    }
    let ended = sessions_ended(&n);
    assert_eq!(ended.len(), 2);
    // The registration's session, s2 and s3.
    assert_eq!(ended[1].len(), 3, "{ended:?}");
    assert!(ended[1].contains(&a2.session));
}

/// A password change needs the current password, keeps the session that made it and ends the
/// others; the old password stops working.
#[tokio::test]
async fn a_password_change_ends_the_other_sessions() {
    let n = node();
    user(&n.chat, "alice").await;
    n.chat.watch_control().await.expect("control room");
    let here = n.chat.login("alice", PASSWORD, HOME).await.unwrap();
    let there = n.chat.login("alice", PASSWORD, HOME).await.unwrap();
    let a = n.chat.authenticate(&here.token).await.unwrap();
    let e = n
        .chat
        .change_password(&a, "not my password", "a brand new password", HOME)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    let e = n
        .chat
        .change_password(&a, PASSWORD, "short", HOME)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        n.chat.authenticate(&there.token).await.is_ok(),
        "nothing changed yet"
    );
    n.chat
        .change_password(&a, PASSWORD, "a brand new password", HOME)
        .await
        .unwrap();
    assert!(n.chat.authenticate(&here.token).await.is_ok());
    assert!(n.chat.authenticate(&there.token).await.is_err());
    assert!(!sessions_ended(&n).is_empty());
    assert!(n.chat.login("alice", PASSWORD, HOME).await.is_err());
    n.chat
        .login("alice", "a brand new password", HOME)
        .await
        .expect("the new password");
}

/// Deleting an account needs its password; then its tokens stop working, nobody can sign in
/// as it, and its name stays taken.
#[tokio::test]
async fn a_deleted_account_signs_in_nowhere_and_keeps_its_name() {
    let n = node();
    user(&n.chat, "alice").await;
    let s = n.chat.login("alice", PASSWORD, HOME).await.unwrap();
    let a = n.chat.authenticate(&s.token).await.unwrap();
    let e = n
        .chat
        .delete_account(&a, "wrong password!", HOME)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    n.chat.delete_account(&a, PASSWORD, HOME).await.unwrap();
    assert!(n.chat.authenticate(&s.token).await.is_err());
    let e = n.chat.login("alice", PASSWORD, HOME).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    let e = n.chat.register("alice", PASSWORD, HOME).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
}

/// One budget per user, drawn by sends and typing alike and by costlier requests by their
/// cost, whatever the transport.
#[tokio::test]
async fn every_request_of_a_user_draws_on_one_budget() {
    let config = ChatConfig {
        rate_limit_per_sec: 1,
        rate_limit_burst: 10,
        ..ChatConfig::default()
    };
    let n = node_with(tempfile::tempdir().unwrap(), config);
    let alice = user(&n.chat, "alice").await;
    let bob = user(&n.chat, "bob").await;
    // Creating the room costs 10: the whole burst.
    n.chat.join(&alice, "general").await.expect("created");
    let e = n
        .chat
        .send(&alice, "general", "hi", "c0")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    // Bob's budget is his own: joining costs 2, then 8 sends or typing events.
    n.chat.join(&bob, "general").await.expect("joined");
    for i in 0..4 {
        n.chat
            .send(&bob, "general", "hi", &format!("b{i}"))
            .await
            .expect("sent");
        n.chat.typing(&bob, "general").await.expect("typing");
    }
    let e = n.chat.typing(&bob, "general").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    let e = n
        .chat
        .history(&bob, "general", HistoryQuery::new(None, None).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.message, "too many requests; slow down");
}

/// A user holds at most `max_connections_per_user` connections on a node.
#[tokio::test]
async fn connections_per_user_are_capped() {
    let config = ChatConfig {
        max_connections_per_user: 2,
        ..ChatConfig::default()
    };
    let n = node_with(tempfile::tempdir().unwrap(), config);
    let alice = user(&n.chat, "alice").await;
    let bob = user(&n.chat, "bob").await;
    n.chat.connection_opened(&alice).await.expect("first");
    n.chat.connection_opened(&alice).await.expect("second");
    let e = n.chat.connection_opened(&alice).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    n.chat.connection_opened(&bob).await.expect("another user");
    n.chat.connection_closed(&alice).await;
    n.chat
        .connection_opened(&alice)
        .await
        .expect("a place freed");
}

/// One `sync` answers at most about 1 MiB of messages; the rest comes with the next one.
#[tokio::test]
async fn a_sync_answer_is_bounded_in_bytes() {
    let config = ChatConfig {
        rate_limit_per_sec: 0,
        ..ChatConfig::default()
    };
    let n = node_with(tempfile::tempdir().unwrap(), config);
    let alice = user(&n.chat, "alice").await;
    n.chat.join(&alice, "big").await.expect("created");
    n.chat.join(&alice, "small").await.expect("created");
    let text = "x".repeat(4000);
    for i in 0..300 {
        n.chat
            .send(&alice, "big", &text, &format!("c{i}"))
            .await
            .expect("sent");
    }
    n.chat.send(&alice, "small", "hi", "s").await.expect("sent");
    let rooms = |big: i64| {
        SyncRequest::new(vec![("big".to_owned(), big), ("small".to_owned(), 0)]).unwrap()
    };
    let first = n.chat.sync(&alice, rooms(0)).await.unwrap();
    let big = &first[&RoomName::parse("big").unwrap()];
    let bytes: usize = big.messages.iter().map(|m| m.text.as_str().len()).sum();
    assert!(big.truncated);
    assert!(bytes <= 1 << 20 && bytes > 900_000, "{bytes} bytes");
    // The answer is full: the next room says there is more rather than adding to it.
    let small = &first[&RoomName::parse("small").unwrap()];
    assert!(small.messages.is_empty() && small.truncated);
    let last = big.messages.last().unwrap().seq;
    let second = n.chat.sync(&alice, rooms(last as i64)).await.unwrap();
    let big = &second[&RoomName::parse("big").unwrap()];
    assert!(!big.truncated);
    assert_eq!(big.messages.last().unwrap().seq, 300);
    assert_eq!(second[&RoomName::parse("small").unwrap()].messages.len(), 1);
}

/// Leaving and removal: the owner (creator) or an admin removes, others may not; a removed or
/// departed member can no longer send or read a private room; DMs cannot be left; each
/// removal is announced to every node through the control room.
#[tokio::test]
async fn leaving_and_removal_end_a_membership() {
    let config = ChatConfig {
        admins: vec!["dave".into()],
        ..ChatConfig::default()
    };
    let n = node_with(tempfile::tempdir().unwrap(), config);
    n.chat.watch_control().await.expect("control room");
    let alice = user(&n.chat, "alice").await;
    let bob = user(&n.chat, "bob").await;
    let carol = user(&n.chat, "carol").await;
    let dave = user(&n.chat, "dave").await;
    n.chat.resolve_admins().await.expect("dave is an admin");
    n.chat
        .create_room(&alice, "team", "private", &["bob".into(), "carol".into()])
        .await
        .expect("created");
    n.chat
        .send(&carol, "team", "hi", "c1")
        .await
        .expect("a member sends");

    let e = n
        .chat
        .remove_member(&bob, "team", "carol")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "only the owner or an admin");
    n.chat
        .remove_member(&alice, "team", "carol")
        .await
        .expect("the owner removes");
    let e = n
        .chat
        .send(&carol, "team", "again", "c2")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "a private room she is not in");
    let e = n
        .chat
        .remove_member(&alice, "team", "carol")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound, "not a member any more");

    n.chat.leave_room(&bob, "team").await.expect("bob leaves");
    let e = n
        .chat
        .history(&bob, "team", HistoryQuery::new(None, None).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);

    // A server admin who is not in a room removes from it.
    n.chat.join(&bob, "lobby").await.expect("created");
    n.chat.join(&carol, "lobby").await.expect("joined");
    n.chat
        .remove_member(&dave, "lobby", "carol")
        .await
        .expect("an admin removes");
    let e = n.chat.send(&carol, "lobby", "hi", "c3").await.unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::Forbidden,
        "a public room she may join again"
    );
    n.chat.join(&carol, "lobby").await.expect("joined again");

    let dm = n.chat.dm(&alice, "bob").await.expect("a DM");
    let e = n
        .chat
        .leave_room(&alice, dm.name.as_str())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);

    let d = n.delivered.0.lock().expect("not poisoned");
    let removals: Vec<serde_json::Value> = d
        .iter()
        .filter(|(r, kind, _)| *r == RoomName::control() && *kind == EventKind::MemberRemoved)
        .map(|(_, _, p)| serde_json::from_str(p).expect("json"))
        .collect();
    assert_eq!(removals.len(), 3, "{removals:?}");
    assert_eq!(removals[0]["room"], "team");
    assert_eq!(removals[0]["user"], carol.id.to_string());
    assert_eq!(removals[1]["user"], bob.id.to_string());
}

/// A user who blocked someone cannot be put in a DM or a room by them; unblocking undoes it.
#[tokio::test]
async fn a_blocked_user_cannot_open_a_dm_or_add_the_blocker() {
    let unlimited = ChatConfig {
        rate_limit_per_sec: 0,
        ..ChatConfig::default()
    };
    let n = node_with(tempfile::tempdir().unwrap(), unlimited);
    let alice = user(&n.chat, "alice").await;
    let bob = user(&n.chat, "bob").await;
    n.chat.block(&bob, "alice", true).await.expect("blocked");
    assert_eq!(
        n.chat.blocks(&bob).await.unwrap(),
        std::slice::from_ref(&alice)
    );
    assert!(n.chat.blocks(&alice).await.unwrap().is_empty());
    let e = n.chat.dm(&alice, "bob").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = n
        .chat
        .create_room(&alice, "trap", "private", &["bob".into()])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    n.chat.join(&alice, "open").await.expect("created");
    let e = n.chat.add_member(&alice, "open", "bob").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    // Bob can still reach Alice: a block is one-way.
    n.chat.dm(&bob, "alice").await.expect("bob opens a DM");
    let e = n.chat.block(&bob, "bob", true).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    n.chat.block(&bob, "alice", false).await.expect("unblocked");
    let dm = n.chat.dm(&alice, "bob").await.expect("a DM again");
    // A block also silences the DM they already share: the blocked user can neither send nor
    // type there; the blocker can.
    let room = dm.name.as_str();
    n.chat.send(&alice, room, "hi", "a1").await.expect("sent");
    n.chat.block(&bob, "alice", true).await.expect("blocked");
    let e = n.chat.send(&alice, room, "hi?", "a2").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = n.chat.typing(&alice, room).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    n.chat
        .send(&bob, room, "bye", "b1")
        .await
        .expect("the blocker sends");
    n.chat.block(&bob, "alice", false).await.expect("unblocked");
    n.chat
        .send(&alice, room, "sorry", "a3")
        .await
        .expect("sent again");
}

/// Registrations per address: the free ones, then refused with the wait; other addresses go on.
#[tokio::test]
async fn registrations_are_limited_per_client_address() {
    let n = node_with(tempfile::tempdir().unwrap(), throttled(0, 0, 2));
    for name in ["reg1", "reg2"] {
        n.chat
            .register(name, PASSWORD, addr(1))
            .await
            .expect("free");
    }
    let e = n
        .chat
        .register("reg3", PASSWORD, addr(1))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after_secs, Some(3600));
    n.chat
        .register("reg3", PASSWORD, addr(2))
        .await
        .expect("another address");
    // A request that is invalid anyway is refused for what it is, not counted.
    let e = n.chat.register("r", PASSWORD, addr(1)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
}

#[tokio::test]
async fn a_private_room_admits_its_members_only() {
    let n = node();
    let (alice, bob, eve) = (
        user(&n.chat, "alice").await,
        user(&n.chat, "bob").await,
        user(&n.chat, "eve").await,
    );
    n.chat
        .create_room(&alice, "secret", "private", &["bob".into()])
        .await
        .expect("created");
    n.chat
        .send(&bob, "secret", "hi", "c1")
        .await
        .expect("a member sends");
    let join = n.chat.join(&eve, "secret").await;
    assert!(join.is_err(), "a non-member cannot join a private room");
    let send = n.chat.send(&eve, "secret", "let me in", "c1").await;
    assert!(send.is_err(), "a non-member cannot send");
    let read = n
        .chat
        .history(
            &eve,
            "secret",
            HistoryQuery::new(None, None).expect("query"),
        )
        .await;
    assert!(read.is_err(), "a non-member cannot read");
}

#[tokio::test]
async fn sends_get_gap_free_seqs_a_resend_is_the_same_message_and_delivery_is_in_order() {
    let n = node();
    let alice = user(&n.chat, "alice").await;
    let bob = user(&n.chat, "bob").await;
    let room = n
        .chat
        .create_room(&alice, "team", "public", &["bob".into()])
        .await
        .expect("room");
    // Events reach this node's delivery for the rooms it has connections in; the transport
    // seeds the room's order with its last seq when a connection joins, as here.
    n.chat.connection_joined(&room, &bob).await;
    let last = n.chat.last_seq(&room).await.expect("last seq");
    n.sequencer.seed(&room.name, last);
    let mut sends = Vec::new();
    for i in 0..20 {
        let (chat, sender) = (
            n.chat.clone(),
            if i % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            },
        );
        sends.push(tokio::spawn(async move {
            chat.send(&sender, "team", &format!("m{i}"), &format!("c{i}"))
                .await
        }));
    }
    let mut seqs = Vec::new();
    for s in sends {
        seqs.push(s.await.expect("joined").expect("sent").seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "gap-free from 1");

    // The same (sender, room, client_id) again: the first message, not a new one.
    let again = n
        .chat
        .send(&alice, "team", "m0", "c0")
        .await
        .expect("resent");
    let (history, more) = n
        .chat
        .history(&bob, "team", HistoryQuery::new(None, None).expect("query"))
        .await
        .expect("history");
    assert!(!more);
    assert_eq!(history.len(), 20, "the resend stored nothing");
    assert_eq!(
        history
            .iter()
            .find(|m| m.client_id.as_str() == "c0")
            .map(|m| m.id),
        Some(again.id)
    );
    assert_eq!(
        n.delivered.seqs(&room.name),
        (1..=20).collect::<Vec<_>>(),
        "delivered once each, in seq order"
    );

    // sync returns what follows a seq.
    let synced = n
        .chat
        .sync(
            &bob,
            SyncRequest::new([(room.name.to_string(), 15)]).expect("request"),
        )
        .await
        .expect("sync");
    let after: Vec<u64> = synced[&room.name].messages.iter().map(|m| m.seq).collect();
    assert_eq!(after, vec![16, 17, 18, 19, 20]);
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let n = node();
    let alice = user(&n.chat, "alice").await;
    n.chat
        .create_room(&alice, "team", "public", &[])
        .await
        .expect("room");
    let empty = n.chat.send(&alice, "team", "", "c1").await;
    assert_eq!(empty.expect_err("refused").code, ErrorCode::BadRequest);
    let big = n.chat.send(&alice, "team", &"x".repeat(5000), "c2").await;
    assert_eq!(big.expect_err("refused").code, ErrorCode::TooLarge);
    let nowhere = n.chat.send(&alice, "no-such-room", "hi", "c3").await;
    assert!(nowhere.is_err());
    let kind = n.chat.create_room(&alice, "other", "secret", &[]).await;
    assert_eq!(kind.expect_err("refused").code, ErrorCode::BadRequest);
}

#[tokio::test]
async fn an_admin_name_with_no_account_stops_the_start_and_gives_nobody_the_role() {
    let config = ChatConfig {
        admins: vec!["boss".into()],
        ..ChatConfig::default()
    };
    let n = node_with(tempfile::tempdir().expect("dir"), config.clone());
    let refused = n
        .chat
        .resolve_admins()
        .await
        .expect_err("no account named boss");
    assert!(refused.contains("'boss'"), "{refused}");
    // Whoever registers the name meanwhile, in any case, is not an admin.
    let claimer = user(&n.chat, "BOSS").await;
    assert!(!n.chat.is_admin(&claimer).await.expect("checked"));
    assert_eq!(
        n.chat.overview(&claimer).await.expect_err("refused").code,
        ErrorCode::Forbidden
    );
    // A node started when the account exists binds the name to it, by user id.
    let Node {
        chat, _dir: dir, ..
    } = n;
    drop(chat);
    let restarted = node_with(dir, config);
    restarted.chat.resolve_admins().await.expect("bound");
    assert!(restarted.chat.is_admin(&claimer).await.expect("checked"));
}
