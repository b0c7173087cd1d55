//! The lean reader: a connection that speaks just enough of the client protocol to
//! connect, subscribe and answer pings, and that finds each publication's sequence
//! number and timestamp by scanning the frame instead of decoding it.
//!
//! At a million deliveries per second the SDK's per-publication work (a full decode, an
//! event per publication) would measure the load generator rather than the server; the
//! throughput and memory scenarios use this reader, the recovery scenarios the SDK.
//! The same reader serves the Sockudo peer's Pusher connections ([`Dialect::Pusher`]),
//! whose publications carry the payload as an escaped JSON string.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A lean connection's position, readable by the stats command.
#[derive(Default)]
pub(crate) struct LeanTrack {
    pub last: AtomicU64,
    pub connected: AtomicBool,
    /// The server closed the connection as a slow consumer (Herald's 3008, Sockudo's
    /// 4100 for a full buffer).
    pub cut_off: AtomicBool,
}

/// What one frame held, folded into the worker's counters by the caller.
#[derive(Default)]
pub(crate) struct FrameTally {
    pub received: u64,
    pub dups: u64,
    pub gaps: u64,
    /// (latency µs rounded, count) for this frame's publications.
    pub lat: Vec<u64>,
}

/// The protocol a lean connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Herald's (the Centrifuge client protocol, JSON).
    Herald,
    /// Pusher's, for the Sockudo peer.
    Pusher,
}

/// Opens a WebSocket to `url` from `source_ip`.
pub(crate) async fn open(
    url: &str,
    source_ip: IpAddr,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let request = url.into_client_request()?;
    let host = request.uri().host().context("url host")?.to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let remote = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .find(SocketAddr::is_ipv4)
        .context("no IPv4 address")?;
    let socket = herald_client::local_socket(source_ip)?;
    let stream = socket.connect(remote).await?;
    stream.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// Connects from `source_ip` and subscribes to `channel`.
pub(crate) async fn connect(
    url: &str,
    source_ip: IpAddr,
    channel: &str,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let mut ws = open(url, source_ip).await?;
    let commands = format!(
        "{{\"id\":1,\"connect\":{{\"name\":\"herald-bench\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":{}}}}}",
        serde_json::to_string(channel)?
    );
    ws.send(Message::Text(commands.into())).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .context("no subscribe reply in 30 s")?
            .context("closed before subscribing")??;
        let Message::Text(text) = msg else { continue };
        for line in text.as_str().lines() {
            let reply: serde_json::Value = serde_json::from_str(line)?;
            if reply.get("id").and_then(serde_json::Value::as_u64) == Some(2) {
                if let Some(e) = reply.get("error") {
                    anyhow::bail!("subscribe failed: {e}");
                }
                return Ok(ws);
            }
        }
    }
}

/// Reads publications until the socket closes, calling `fold` once per frame.
pub(crate) async fn read(
    mut ws: WebSocketStream<TcpStream>,
    dialect: Dialect,
    track: Arc<LeanTrack>,
    mut fold: impl FnMut(FrameTally),
) {
    track.connected.store(true, Ordering::Relaxed);
    while let Some(Ok(msg)) = ws.next().await {
        let text = match msg {
            Message::Text(text) => text,
            Message::Close(Some(frame)) => {
                let slow = match dialect {
                    Dialect::Herald => 3008,
                    Dialect::Pusher => 4100,
                };
                if u16::from(frame.code) == slow {
                    track.cut_off.store(true, Ordering::Relaxed);
                }
                break;
            }
            _ => continue,
        };
        let text = text.as_str();
        // Herald's ping is an empty reply and its pong an empty command; Pusher's are
        // named events.
        let pong = match dialect {
            Dialect::Herald => text.lines().any(|l| l == "{}").then_some("{}"),
            Dialect::Pusher => crate::pusher::is_ping(text).then_some(crate::pusher::PONG),
        };
        if let Some(pong) = pong
            && ws.send(Message::Text(pong.into())).await.is_err()
        {
            break;
        }
        let now = crate::proto::now_us();
        let mut tally = FrameTally::default();
        let mut last = track.last.load(Ordering::Relaxed);
        for (seq, ts) in publications(text) {
            if seq <= last {
                tally.dups += 1;
                continue;
            }
            tally.gaps += seq - last - 1;
            last = seq;
            tally.received += 1;
            tally.lat.push(crate::proto::round3(now.saturating_sub(ts)));
        }
        track.last.store(last, Ordering::Relaxed);
        if tally.received + tally.dups > 0 {
            fold(tally);
        }
    }
    track.connected.store(false, Ordering::Relaxed);
}

/// The `(seq, ts)` of every benchmark publication in a frame, whether the payload is
/// JSON in the frame (Herald) or a JSON string inside it (Pusher).
fn publications(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = after_key(rest, "\"seq")?;
        let seq = leading_number(rest)?;
        rest = after_key(rest, "\"ts")?;
        let ts = leading_number(rest)?;
        Some((seq, ts))
    })
}

/// What follows the first `key":` or `key\":` (a key inside an escaped string) in `text`.
fn after_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    loop {
        let at = from + text[from..].find(key)?;
        let rest = &text[at + key.len()..];
        if let Some(value) = rest
            .strip_prefix("\":")
            .or_else(|| rest.strip_prefix("\\\":"))
        {
            return Some(value);
        }
        from = at + key.len();
    }
}

fn leading_number(s: &str) -> Option<u64> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_publication_in_a_batched_frame() {
        let a = crate::proto::payload(7, 1_000, 64);
        let b = crate::proto::payload(8, 2_000, 64);
        let frame = format!(
            "{{\"push\":{{\"channel\":\"c\",\"pub\":{{\"data\":{a},\"offset\":7}}}}}}\n{{}}\n{{\"push\":{{\"channel\":\"c\",\"pub\":{{\"data\":{b},\"offset\":8}}}}}}"
        );
        assert_eq!(
            publications(&frame).collect::<Vec<_>>(),
            vec![(7, 1_000), (8, 2_000)]
        );
        assert_eq!(publications("{}").count(), 0);
    }

    #[test]
    fn finds_a_publication_inside_a_pusher_event() {
        let data = serde_json::to_string(&crate::proto::payload(9, 3_000, 64)).expect("json");
        let frame = format!(r#"{{"event":"pub","channel":"c","data":{data}}}"#);
        assert!(frame.contains(r#"\"seq\":9"#), "{frame}");
        assert_eq!(publications(&frame).collect::<Vec<_>>(), vec![(9, 3_000)]);
        // A key that merely starts like one is skipped.
        assert_eq!(
            publications(r#"{"seqx":1,"seq":2,"ts":5}"#).collect::<Vec<_>>(),
            vec![(2, 5)]
        );
    }
}
