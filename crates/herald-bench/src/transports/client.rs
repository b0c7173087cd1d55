//! The benchmark's clients, one per transport, each reading its stream on a task of its
//! own and recording what it received: publication latencies, replies by id, and the
//! bytes it read off the socket (HTTP framing included, as on the wire).

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// A transport as the benchmark drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    WebSocket,
    HttpStream,
    Sse,
    UniSse,
    UniHttpStream,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::WebSocket => "websocket",
            Kind::HttpStream => "http_stream",
            Kind::Sse => "sse",
            Kind::UniSse => "uni_sse",
            Kind::UniHttpStream => "uni_http_stream",
        }
    }
}

/// Microseconds since the Unix epoch: publications carry it as `t`.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What every client of one measurement shares.
#[derive(Default)]
pub(crate) struct Tally {
    pub received: AtomicU64,
    pub bytes: AtomicU64,
    pub latencies_us: Mutex<Vec<u64>>,
}

/// One open client: its session (for emulated transports), and the replies it waits for.
pub(crate) struct Client {
    pub session: String,
    pub node: String,
    waiting: Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>>,
    ws: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// A reply with this id will be awaited: the returned receiver fires when it comes.
    pub(crate) fn expect(&self, id: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
        rx
    }

    /// Sends commands on the WebSocket (WebSocket clients only).
    pub(crate) fn send_ws(&self, text: String) -> anyhow::Result<()> {
        self.ws
            .as_ref()
            .context("not a WebSocket client")?
            .send(text)
            .ok()
            .context("the socket task ended")
    }
}

/// Handles one message (a reply or a push, unwrapped or not).
fn on_message(
    text: &str,
    tally: &Tally,
    waiting: &Mutex<HashMap<u32, oneshot::Sender<()>>>,
    first: &Mutex<Option<oneshot::Sender<String>>>,
) {
    if text.contains("\"pub\":") {
        tally.received.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = text
            .split_once("\"t\":")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse::<u64>().ok())
        {
            tally
                .latencies_us
                .lock()
                .push(now_us().saturating_sub(sent));
        }
        return;
    }
    if let Some(tx) = first.lock().take() {
        let _ = tx.send(text.to_owned());
        return;
    }
    if let Some(id) = text
        .strip_prefix("{\"id\":")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<u32>().ok())
        && let Some(tx) = waiting.lock().remove(&id)
    {
        let _ = tx.send(());
    }
}

/// Opens a client of `kind` on `addr` with `connect` as its opening message: a connect
/// command (bidirectional) or a connect request (unidirectional). Returns once the
/// first message (the connect reply) has arrived, with it. `gzip` asks for compression:
/// gzip on an HTTP stream, permessage-deflate on a WebSocket.
pub(crate) async fn open(
    kind: Kind,
    addr: SocketAddr,
    connect: &str,
    gzip: bool,
    tally: Arc<Tally>,
) -> anyhow::Result<(Client, String)> {
    let waiting: Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>> = Arc::default();
    let (first_tx, first_rx) = oneshot::channel();
    let first = Arc::new(Mutex::new(Some(first_tx)));
    let (task, ws) = if kind == Kind::WebSocket && gzip {
        let socket = deflate_websocket(addr, tally.clone()).await?;
        let (task, tx) =
            websocket_task(socket, DEFLATE, connect, tally, waiting.clone(), first).await?;
        (task, Some(tx))
    } else if kind == Kind::WebSocket {
        let url = format!("ws://{addr}/connection/websocket");
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        let (task, tx) =
            websocket_task(socket, PLAIN, connect, tally, waiting.clone(), first).await?;
        (task, Some(tx))
    } else {
        let (method, path, body) = match kind {
            Kind::HttpStream => ("POST", "/connection/http_stream".to_owned(), connect),
            Kind::UniHttpStream => ("POST", "/connection/uni_http_stream".to_owned(), connect),
            Kind::Sse => (
                "GET",
                format!("/connection/sse?cf_connect={}", encode(connect)),
                "",
            ),
            Kind::UniSse => (
                "GET",
                format!("/connection/uni_sse?cf_connect={}", encode(connect)),
                "",
            ),
            Kind::WebSocket => unreachable!("handled above"),
        };
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let accept = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{accept}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let events = matches!(kind, Kind::Sse | Kind::UniSse);
        let waiting = waiting.clone();
        let task = tokio::spawn(async move {
            let _ = read_stream(stream, events, gzip, &tally, &waiting, &first).await;
        });
        (task, None)
    };
    let first = tokio::time::timeout(Duration::from_secs(10), first_rx)
        .await
        .context("no connect reply within 10 s")?
        .context("the stream ended before the connect reply")?;
    let field = |name: &str| -> String {
        let pattern = format!("\"{name}\":\"");
        first
            .split_once(&pattern)
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let client = Client {
        session: field("session"),
        node: field("node"),
        waiting,
        ws,
        task,
    };
    Ok((client, first))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Reads a chunked HTTP response, line by line (`data: ` lines for SSE).
async fn read_stream(
    mut stream: TcpStream,
    events: bool,
    gzip: bool,
    tally: &Tally,
    waiting: &Mutex<HashMap<u32, oneshot::Sender<()>>>,
    first: &Mutex<Option<oneshot::Sender<String>>>,
) -> anyhow::Result<()> {
    let mut raw = Vec::with_capacity(16 * 1024);
    let mut buf = vec![0u8; 16 * 1024];
    // Headers.
    let body_start = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before the headers");
        }
        tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).to_string();
            if !head.starts_with("HTTP/1.1 200") {
                bail!("{}", head.lines().next().unwrap_or(""));
            }
            break i + 4;
        }
    };
    raw.drain(..body_start);
    let mut decoder = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let mut text = Vec::new();
    loop {
        // Whole chunks out of `raw`.
        while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol])?.trim(), 16)?;
            if raw.len() < eol + 2 + size + 2 {
                break;
            }
            let chunk = raw[eol + 2..eol + 2 + size].to_vec();
            raw.drain(..eol + 2 + size + 2);
            if size == 0 {
                return Ok(());
            }
            match decoder.as_mut() {
                Some(d) => {
                    use std::io::Write;
                    d.write_all(&chunk)?;
                    d.flush()?;
                    text.append(d.get_mut());
                }
                None => text.extend_from_slice(&chunk),
            }
        }
        while let Some(nl) = text.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = text.drain(..=nl).collect();
            let line = std::str::from_utf8(&line)?.trim_end();
            let message = if events {
                match line.strip_prefix("data: ") {
                    Some(m) => m,
                    None => continue,
                }
            } else {
                line
            };
            if !message.is_empty() && message != "{}" {
                on_message(message, tally, waiting, first);
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Posts `data` (commands) for a session to `/emulation` on `addr`; the status.
pub(crate) async fn post_emulation(
    http: &reqwest::Client,
    addr: SocketAddr,
    client: &Client,
    data: &str,
) -> anyhow::Result<u16> {
    let body = serde_json::json!({ "node": client.node, "session": client.session, "data": data });
    let response = http
        .post(format!("http://{addr}/emulation"))
        .json(&body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// How [`websocket_task`] speaks to one WebSocket library.
struct Flavour<M> {
    /// A text message.
    text: fn(String) -> M,
    /// A received text message's text (`None` for anything else, which ends the task).
    read: for<'a> fn(&'a M) -> Option<&'a str>,
    /// Count each text frame's bytes here (its length plus the server's 2- or 4-byte
    /// header), for a socket whose reads are not counted underneath.
    count_frames: bool,
}

/// tokio-tungstenite, with the bytes estimated from each frame.
const PLAIN: Flavour<Message> = Flavour {
    text: Message::text,
    read: |m| match m {
        Message::Text(t) => Some(t.as_str()),
        _ => None,
    },
    count_frames: true,
};

/// Herald's frame layer with permessage-deflate, its bytes counted off the TCP socket.
const DEFLATE: Flavour<herald_websocket::Message> = Flavour {
    text: |t| herald_websocket::Message::Text(bytes::Bytes::from(t)),
    read: |m| match m {
        herald_websocket::Message::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    },
    count_frames: false,
};

/// Sends `connect`, then runs the client's task: it sends what arrives on the returned
/// channel, answers pings as the SDKs do, and hands every other line it receives to
/// [`on_message`].
async fn websocket_task<S, M>(
    mut socket: S,
    flavour: Flavour<M>,
    connect: &str,
    tally: Arc<Tally>,
    waiting: Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>>,
    first: Arc<Mutex<Option<oneshot::Sender<String>>>>,
) -> anyhow::Result<(
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedSender<String>,
)>
where
    S: futures_util::Stream<Item = Result<M, <S as futures_util::Sink<M>>::Error>>
        + futures_util::Sink<M>
        + Unpin
        + Send
        + 'static,
    <S as futures_util::Sink<M>>::Error: std::error::Error + Send + Sync + 'static,
    M: Send + 'static,
{
    socket.send((flavour.text)(connect.to_owned())).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(t) => if socket.send((flavour.text)(t)).await.is_err() { return },
                    None => return,
                },
                msg = socket.next() => {
                    let Some(Ok(msg)) = msg else { return };
                    let Some(frame) = (flavour.read)(&msg) else { return };
                    if flavour.count_frames {
                        let header = if frame.len() > 125 { 4 } else { 2 };
                        tally.bytes.fetch_add((frame.len() + header) as u64, Ordering::Relaxed);
                    }
                    for line in frame.split('\n') {
                        if line == "{}" {
                            // Pings are answered, as the SDKs do.
                            let _ = socket.send((flavour.text)("{}".to_owned())).await;
                            continue;
                        }
                        on_message(line, &tally, &waiting, &first);
                    }
                }
            }
        }
    });
    Ok((task, tx))
}

/// A WebSocket client that negotiates permessage-deflate (Herald's own frame layer, as
/// the usual Rust clients have no such extension), counting the bytes read off the TCP
/// socket, compressed as they are.
async fn deflate_websocket(
    addr: SocketAddr,
    tally: Arc<Tally>,
) -> anyhow::Result<herald_websocket::WebSocket<Counting>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let host = addr.to_string();
    let request = herald_websocket::client::Request {
        host: &host,
        path: "/connection/websocket",
        deflate: Some(herald_websocket::Deflate::default()),
        headers: &[],
        max_message: 16 << 20,
    };
    let counting = Counting {
        inner: stream,
        tally,
    };
    let socket = herald_websocket::client::handshake(counting, &request).await?;
    anyhow::ensure!(
        socket.compressed(),
        "the node did not accept permessage-deflate"
    );
    Ok(socket)
}

/// A TCP stream that adds what it reads to the tally's bytes.
struct Counting {
    inner: TcpStream,
    tally: Arc<Tally>,
}

impl tokio::io::AsyncRead for Counting {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.tally.bytes.fetch_add(read as u64, Ordering::Relaxed);
        poll
    }
}

impl tokio::io::AsyncWrite for Counting {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
