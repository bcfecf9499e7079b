//! Store-only throughput: concurrent appends through the SQLite group-commit writer, with no
//! network in the way. Each text is a sentence of a dozen words (about 80 bytes), so the
//! search index has words to take in, as with real messages. `cargo run --release -p scalify-store --example append_throughput -- [tasks] [rooms] [seconds]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalify_core::{ClientId, MessageText, NewMessage, RoomKind, RoomName, UserRef, Username};
use scalify_store::sqlite::{SqliteConfig, SqliteStore};
use scalify_store::Store;

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (tasks, rooms, secs) = (
        args.first().copied().unwrap_or(512),
        args.get(1).copied().unwrap_or(64),
        args.get(2).copied().unwrap_or(5),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db"))).expect("open"));
    let user = store
        .create_user(&Username::parse("bench").expect("name"), "h")
        .await
        .expect("user");
    let mut room_list = Vec::new();
    for r in 0..rooms {
        let name = RoomName::parse(&format!("r{r}")).expect("room");
        room_list.push(
            store
                .ensure_room(&name, RoomKind::Public, &[user.id])
                .await
                .expect("room"),
        );
    }
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, done, room) = (
            store.clone(),
            done.clone(),
            room_list[(t % rooms) as usize].clone(),
        );
        let sender = UserRef {
            id: user.id,
            username: "bench".into(),
        };
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut worst = Duration::ZERO;
            while Instant::now() < end {
                n += 1;
                let t0 = Instant::now();
                store
                    .append(NewMessage {
                        room_id: room.id,
                        room: room.name.clone(),
                        sender: sender.clone(),
                        text: MessageText::parse(&sentence(t, n), 4096).expect("text"),
                        client_id: ClientId::parse(&format!("{t}-{n}")).expect("cid"),
                        mentions: Vec::new(),
                        mention_room: false,
                        kind: scalify_core::MessageKind::Message,
                        relates_to: None,
                        reply_to: None,
                        attachment: None,
                    })
                    .await
                    .expect("append");
                worst = worst.max(t0.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            worst
        }));
    }
    let mut worst = Duration::ZERO;
    for h in handles {
        worst = worst.max(h.await.expect("task"));
    }
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!("{tasks} concurrent appenders, {rooms} rooms: {n} appends in {secs:.1} s = {:.0}/s, worst {worst:?}", n as f64 / secs);
}

/// A dozen words of a small vocabulary and a number, different for every message.
fn sentence(task: u64, n: u64) -> String {
    const WORDS: [&str; 32] = [
        "the", "deploy", "is", "on", "friday", "after", "lunch", "we", "review", "plan", "for",
        "release", "notes", "and", "a", "quick", "fix", "to", "staging", "then", "ship", "it",
        "tests", "pass", "again", "today", "ok", "thanks", "see", "you", "there", "soon",
    ];
    let mut x = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    let mut out = n.to_string();
    for _ in 0..12 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push(' ');
        out.push_str(WORDS[(x >> 59) as usize]);
    }
    out
}
