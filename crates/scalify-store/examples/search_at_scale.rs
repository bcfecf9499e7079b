//! Search latency over a large message log, through `Store::search` with no network in the
//! way.
//!
//! ```text
//! cargo run --release -p scalify-store --example search_at_scale -- sqlite <messages> <file>
//! cargo run --release -p scalify-store --example search_at_scale -- postgres <messages> <database-url>
//! ```
//!
//! Loads `<messages>` messages through the store's own append path (so the search index is
//! built as in production) into 1,000 rooms, unless the store already holds them (a second
//! run only queries). Texts are 4–16 words drawn from a 20,000-word vocabulary with Zipf's
//! law (as natural language is). The searcher is a member of 50 of the rooms (5 % of the
//! messages); each query class (over all their rooms, or in one of them) runs 200 times and
//! reports p50, p99 and the worst latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalify_core::{
    ClientId, MessageKind, MessageText, NewMessage, Room, RoomKind, RoomName, SearchPage,
    SearchQuery, UserRef, Username,
};
use scalify_store::Store;

const ROOMS: usize = 1000;
const SEARCHER_ROOMS: usize = 50;
const VOCABULARY: usize = 20_000;
const RUNS: usize = 200;

/// A small, fast, deterministic generator (xorshift64*): the same data on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Word `rank` of the vocabulary: pronounceable, distinct for every rank.
fn word(rank: usize) -> String {
    const C: &[u8] = b"bdfgklmnprstvz";
    const V: &[u8] = b"aeiou";
    let (mut n, mut out) = (rank + 1, String::new());
    while n > 0 {
        out.push(C[n % C.len()] as char);
        n /= C.len();
        out.push(V[n % V.len()] as char);
        n /= V.len();
    }
    out
}

/// Draws ranks with Zipf's law (exponent 1).
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / k as f64;
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|c| *c < u).min(self.0.len() - 1)
    }
}

fn text(rng: &mut Rng, zipf: &Zipf) -> String {
    let n = 4 + rng.below(13);
    (0..n)
        .map(|_| word(zipf.sample(rng)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: search_at_scale sqlite|postgres <messages> <file|database-url>";
    let (engine, total, target) = match args.as_slice() {
        [e, n, t] => (e.as_str(), n.parse::<u64>().expect(usage), t.as_str()),
        _ => panic!("{usage}"),
    };
    let store: Arc<dyn Store> = match engine {
        "sqlite" => Arc::new(
            scalify_store::sqlite::SqliteStore::open(scalify_store::sqlite::SqliteConfig::new(
                target,
            ))
            .expect("open"),
        ),
        "postgres" => Arc::new(
            scalify_store::postgres::PgStore::open(scalify_store::postgres::PgConfig::new(target))
                .await
                .expect("open"),
        ),
        _ => panic!("{usage}"),
    };
    let zipf = Zipf::new(VOCABULARY);
    let name = |s: &str| Username::parse(s).expect("name");
    let (loader, searcher) = match store.user_by_name(&name("loader")).await.expect("user") {
        Some(loader) => (
            loader,
            store
                .user_by_name(&name("searcher"))
                .await
                .expect("user")
                .expect("searcher"),
        ),
        None => (
            store.create_user(&name("loader"), "h").await.expect("user"),
            store
                .create_user(&name("searcher"), "h")
                .await
                .expect("user"),
        ),
    };
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let members = if r < SEARCHER_ROOMS {
            vec![loader.id, searcher.id]
        } else {
            vec![loader.id]
        };
        let room = RoomName::parse(&format!("r{r}")).expect("room");
        rooms.push(
            store
                .ensure_room(&room, RoomKind::Public, &members)
                .await
                .expect("room"),
        );
    }
    let held: u64 = rooms.iter().map(|r| r.last_seq).sum();
    if held < total {
        load(&store, &rooms, &loader, held, total, &zipf).await;
    }
    println!("{engine}: {total} messages in {ROOMS} rooms; the searcher reads {SEARCHER_ROOMS} of them; {RUNS} queries per class, a page of 20");
    let mut rng = Rng(0x5EA_2C4);
    type Make = Box<dyn Fn(&mut Rng) -> String>;
    let classes: [(&str, Make, bool); 7] = [
        (
            "one common word (rank 1–10)",
            Box::new(|r| word(r.below(10))),
            false,
        ),
        (
            "one mid word (rank 100–1,000)",
            Box::new(|r| word(100 + r.below(900))),
            false,
        ),
        (
            "one rare word (rank 5,000–20,000)",
            Box::new(|r| word(5000 + r.below(15_000))),
            false,
        ),
        (
            "two mid words (rank 20–500)",
            Box::new(|r| format!("{} {}", word(20 + r.below(480)), word(20 + r.below(480)))),
            false,
        ),
        (
            "a word absent from every message",
            Box::new(|r| format!("absent{}", r.below(1_000_000))),
            false,
        ),
        (
            "one common word, in one room",
            Box::new(|r| word(r.below(10))),
            true,
        ),
        (
            "one rare word, in one room",
            Box::new(|r| word(5000 + r.below(15_000))),
            true,
        ),
    ];
    for (label, make, in_room) in classes.iter() {
        let mut times = Vec::with_capacity(RUNS);
        let mut hits = 0;
        for _ in 0..RUNS {
            let q = SearchQuery::parse(&make(&mut rng)).expect("query");
            let room = in_room.then(|| rooms[rng.below(SEARCHER_ROOMS)].id);
            let t0 = Instant::now();
            let found = store
                .search(
                    searcher.id,
                    &q,
                    room,
                    SearchPage {
                        before: None,
                        limit: 21,
                    },
                )
                .await
                .expect("search");
            times.push(t0.elapsed());
            hits += found.len().min(20);
        }
        times.sort();
        let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "  {label:<36} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  ({:.1} hits per page)",
            at(0.50),
            at(0.99),
            times[times.len() - 1],
            hits as f64 / RUNS as f64
        );
    }
}

async fn load(
    store: &Arc<dyn Store>,
    rooms: &[Room],
    loader: &scalify_store::User,
    held: u64,
    total: u64,
    zipf: &Zipf,
) {
    const TASKS: u64 = 256;
    let done = Arc::new(AtomicU64::new(held));
    let zipf = Arc::new(Zipf(zipf.0.clone()));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (store, done, zipf, rooms) =
            (store.clone(), done.clone(), zipf.clone(), rooms.to_vec());
        let sender = UserRef {
            id: loader.id,
            username: "loader".into(),
        };
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1) ^ (held << 20));
            loop {
                let n = done.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let room = &rooms[rng.below(rooms.len())];
                store
                    .append(NewMessage {
                        room_id: room.id,
                        room: room.name.clone(),
                        sender: sender.clone(),
                        text: MessageText::parse(&text(&mut rng, &zipf), 4096).expect("text"),
                        client_id: ClientId::parse(&format!("m{n}")).expect("cid"),
                        mentions: Vec::new(),
                        mention_room: false,
                        kind: MessageKind::Message,
                        relates_to: None,
                        reply_to: None,
                        attachment: None,
                    })
                    .await
                    .expect("append");
            }
        }));
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let n = done.load(Ordering::Relaxed).min(total);
                eprintln!(
                    "loaded {n}/{total} ({:.0}/s)",
                    (n - held) as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    };
    for h in handles {
        h.await.expect("task");
    }
    progress.abort();
    store.flush().await.expect("flush");
    eprintln!(
        "loaded {} messages in {:.0} s",
        total - held,
        start.elapsed().as_secs_f64()
    );
}
