//! A minimal Socket.IO v4 client over a raw WebSocket: handshake with `auth: {token}`, events
//! with acks, and a per-connection reader that answers pings and measures `message` deliveries.
//! Deliberately small (one reader and one writer task per connection) so that one process can
//! hold tens of thousands of connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::now_micros;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Ack>>>>;

/// An ack's arguments, as the JSON text the server sent (`[{...}]`): parsed only as far as
/// the caller needs (a send's ack carries the whole message; the bench only needs `ok`).
pub struct Ack(String);

impl Ack {
    /// Whether the ack says `ok: true`.
    pub fn ok(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct Head {
            ok: bool,
        }
        serde_json::from_str::<(Head,)>(&self.0).is_ok_and(|(h,)| h.ok)
    }
}

impl std::fmt::Display for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a connection's reader saw of timed `message` events (see [`timed_text`]).
pub struct Deliveries {
    pub count: u64,
    /// Delivery latency in µs, from the send timestamp carried in the message text.
    pub latency: Histogram<u64>,
}

pub struct Conn {
    out: mpsc::UnboundedSender<Ws>,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<Deliveries>,
}

/// The text of a timed message: `t=<µs since epoch>;` then padding to `size` bytes.
pub fn timed_text(size: usize) -> String {
    let mut t = format!("t={};", now_micros());
    while t.len() < size {
        t.push('x');
    }
    t
}

/// Extracts the send timestamp from a `message` frame without a full JSON parse.
pub fn sent_at(frame: &str) -> Option<u64> {
    let start = frame.find("\"text\":\"t=")? + 10;
    let end = start + frame[start..].find(';')?;
    frame[start..end].parse().ok()
}

impl Conn {
    /// Opens a WebSocket to `base` (`http://host:port`) and completes the Socket.IO handshake.
    pub async fn connect(base: &str, token: &str) -> anyhow::Result<Conn> {
        let url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            base.replacen("http", "ws", 1)
        );
        // A 4 KiB read buffer: tungstenite zero-fills its read buffer up to this size before
        // every read, and at its default (128 KiB) that memset was a third of the load
        // generator's CPU. No Nagle delay, as Node's `ws` (the official client's transport).
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .context("websocket connect")?;
        let (mut sink, mut stream) = ws.split();
        let open = next_text(&mut stream).await?;
        if !open.starts_with("0{") {
            bail!("unexpected engine.io open packet: {open}");
        }
        sink.send(Ws::Text(
            format!("40{}", serde_json::json!({ "token": token })).into(),
        ))
        .await?;
        loop {
            let frame = next_text(&mut stream).await?;
            match frame.as_str() {
                // The server pings as soon as the transport is open.
                "2" => sink.send(Ws::Text("3".into())).await?,
                f if f.starts_with("40") => break,
                f => bail!("handshake refused: {f}"),
            }
        }
        let (out, mut out_rx) = mpsc::unbounded_channel::<Ws>();
        // One write per wake-up, not per frame: everything queued meanwhile goes out with it
        // (a `send` per frame cost the load generator a syscall per event).
        tokio::spawn(async move {
            'out: while let Some(m) = out_rx.recv().await {
                if sink.feed(m).await.is_err() {
                    break;
                }
                while let Ok(m) = out_rx.try_recv() {
                    if sink.feed(m).await.is_err() {
                        break 'out;
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let pending: Pending = Arc::default();
        let reader = {
            let pending = pending.clone();
            let out = out.clone();
            tokio::spawn(async move {
                let mut d = Deliveries {
                    count: 0,
                    latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                        .expect("histogram bounds"),
                };
                while let Some(Ok(msg)) = stream.next().await {
                    let Ws::Text(text) = msg else { continue };
                    let f = text.as_str();
                    if f == "2" {
                        let _ = out.send(Ws::Text("3".into()));
                    } else if let Some(rest) = f.strip_prefix("43") {
                        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                        let Ok(id) = rest[..digits].parse::<u64>() else {
                            continue;
                        };
                        if let Some(tx) = pending.lock().ok().and_then(|mut p| p.remove(&id)) {
                            let _ = tx.send(Ack(rest[digits..].to_owned()));
                        }
                    } else if f.starts_with("42[\"message\"") {
                        // Only timed messages count: the warm-up's are not part of the run.
                        if let Some(sent) = sent_at(f) {
                            d.count += 1;
                            let _ = d.latency.record(now_micros().saturating_sub(sent).max(1));
                        }
                    }
                }
                d
            })
        };
        Ok(Conn {
            out,
            pending,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    /// Emits `event` with `arg` and waits (up to `timeout`) for its ack.
    pub async fn call(&self, event: &str, arg: Value, timeout: Duration) -> anyhow::Result<Ack> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(id, tx);
        let frame = format!("42{id}{}", serde_json::json!([event, arg]));
        self.out
            .send(Ws::Text(frame.into()))
            .map_err(|_| anyhow!("connection closed"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => bail!("connection closed before the ack"),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                bail!("ack timed out after {timeout:?}")
            }
        }
    }

    /// Closes the connection and returns what its reader measured.
    pub async fn close(self) -> Deliveries {
        let _ = self.out.send(Ws::Close(None));
        drop(self.out);
        match tokio::time::timeout(Duration::from_secs(5), self.reader).await {
            Ok(Ok(d)) => d,
            _ => Deliveries {
                count: 0,
                latency: Histogram::new(3).expect("histogram"),
            },
        }
    }
}

async fn next_text<S>(stream: &mut S) -> anyhow::Result<String>
where
    S: futures_util::Stream<Item = Result<Ws, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .context("no frame within 10 s")?
            .ok_or_else(|| anyhow!("connection closed"))??;
        if let Ws::Text(t) = msg {
            return Ok(t.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_text_round_trips_through_a_frame() {
        let text = timed_text(64);
        assert_eq!(text.len(), 64);
        let frame = format!(r#"42["message",{{"id":"X","seq":1,"text":"{text}","ts":1}}]"#);
        let sent = sent_at(&frame).unwrap();
        assert!(now_micros() - sent < 1_000_000);
        assert_eq!(sent_at(r#"42["message",{"text":"hello"}]"#), None);
    }

    #[test]
    fn ack_ok_reads_only_the_head() {
        assert!(Ack(r#"[{"ok":true,"message":{"id":"X","text":"a"}}]"#.into()).ok());
        assert!(!Ack(r#"[{"ok":false,"error":{"code":"bad_request","message":"m"}}]"#.into()).ok());
        assert!(!Ack("[]".into()).ok());
        assert!(!Ack("[{}]".into()).ok());
    }
}
