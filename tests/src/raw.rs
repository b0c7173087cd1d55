//! A raw protocol client over tokio-tungstenite: send exact frames, read exact replies,
//! observe close codes. For tests of edge cases an SDK would never produce.

use futures_util::{SinkExt, StreamExt};
use herald_protocol::Reply;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, connect_async};

/// How long a raw client waits for the next frame by default.
pub const WAIT: Duration = Duration::from_secs(5);

/// One raw WebSocket connection.
#[derive(Debug)]
pub struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: std::collections::VecDeque<Reply>,
    next_id: u32,
}

/// An upgrade the server answered with an HTTP status instead of a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The status.
    pub status: u16,
    /// Its `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// What the server did next.
#[derive(Debug)]
pub enum Event {
    /// A reply, push or ping.
    Reply(Box<Reply>),
    /// The server closed with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

impl Raw {
    /// Opens a socket to `url`.
    pub async fn open(url: &str) -> Raw {
        let (ws, _) = connect_async(url).await.expect("websocket connect");
        Raw {
            ws,
            pending: Default::default(),
            next_id: 0,
        }
    }

    /// Opens a socket to `url` from the local address `from` (any 127.0.0.0/8 address
    /// works on loopback, so tests can be several clients) with extra request headers;
    /// an upgrade answered with a status comes back as [`Refused`].
    pub async fn try_open(
        url: &str,
        from: IpAddr,
        headers: &[(&str, &str)],
    ) -> Result<Raw, Refused> {
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        let uri = request.uri();
        let server: SocketAddr = format!(
            "{}:{}",
            uri.host().expect("a host"),
            uri.port_u16().expect("a port")
        )
        .parse()
        .expect("an address");
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the source address");
        let stream = socket.connect(server).await.expect("TCP connect");
        match client_async(request, MaybeTlsStream::Plain(stream)).await {
            Ok((ws, _)) => Ok(Raw {
                ws,
                pending: Default::default(),
                next_id: 0,
            }),
            Err(tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }),
            Err(e) => panic!("upgrade failed: {e}"),
        }
    }

    /// Opens a socket and authenticates with `token`; returns the connect result.
    pub async fn connect(url: &str, token: &str) -> (Raw, Value) {
        let mut raw = Raw::open(url).await;
        let reply = raw
            .call(serde_json::json!({ "connect": { "token": token } }))
            .await;
        assert!(reply.get("error").is_none(), "connect failed: {reply}");
        (raw, reply["connect"].clone())
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a WebSocket message as is.
    pub async fn send(&mut self, msg: Message) {
        let _ = self.ws.send(msg).await;
    }

    /// Sends one command (adding an id) and returns the id.
    pub async fn command(&mut self, mut cmd: Value) -> u32 {
        self.next_id += 1;
        cmd["id"] = self.next_id.into();
        self.send_text(&cmd.to_string()).await;
        self.next_id
    }

    /// Sends a command and waits for its reply (pushes that arrive first are kept for
    /// [`Raw::next`]); returns the reply as JSON.
    pub async fn call(&mut self, cmd: Value) -> Value {
        let id = self.command(cmd).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        // Set aside here, not in `pending`: `read_frame` reads `pending` first, so a
        // message put back there would be read again at once, forever.
        let mut earlier = Vec::new();
        let reply = loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(Event::Reply(r)) if r.id == id => break serde_json::to_value(*r).expect("json"),
                Ok(Event::Reply(r)) => earlier.push(*r),
                Ok(other) => panic!("no reply to command {id}: {other:?}"),
                Err(_) => panic!("no reply to command {id} within {WAIT:?}"),
            }
        };
        // Kept for later reads, in the order they came, ahead of what is still pending.
        for r in earlier.into_iter().rev() {
            self.pending.push_front(r);
        }
        reply
    }

    /// Sends a command and returns its reply exactly as the server encoded it (its line
    /// of the frame), for checks on bytes rather than on the decoded value. Other
    /// messages of the frames read are kept for [`Raw::next`].
    pub async fn call_text(&mut self, cmd: Value) -> String {
        let id = self.command(cmd).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("no reply to command {id}: {other:?}"),
                Err(_) => panic!("no reply to command {id} within {WAIT:?}"),
            };
            let mut found = None;
            for line in text.as_str().split('\n') {
                let reply: Reply = serde_json::from_str(line).expect("server message decodes");
                if reply.id == id {
                    found = Some(line.to_owned());
                } else {
                    self.pending.push_back(reply);
                }
            }
            if let Some(line) = found {
                return line;
            }
        }
    }

    async fn read_frame(&mut self) -> Event {
        if let Some(r) = self.pending.pop_front() {
            return Event::Reply(Box::new(r));
        }
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let mut replies =
                        herald_protocol::decode_replies(t.as_str()).expect("server frame decodes");
                    let first = replies.remove(0);
                    self.pending.extend(replies);
                    return Event::Reply(Box::new(first));
                }
                Some(Ok(Message::Close(Some(f)))) => {
                    return Event::Closed(f.code.into(), f.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Event::Gone,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next event within `within`, or `None` on timeout.
    pub async fn next_within(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.read_frame()).await.ok()
    }

    /// The next event within [`WAIT`]; panics on timeout.
    pub async fn next(&mut self) -> Event {
        self.next_within(WAIT)
            .await
            .expect("an event within the wait")
    }

    /// The next push or reply, skipping pings; panics on close or timeout.
    pub async fn next_reply(&mut self) -> Reply {
        loop {
            match self.next().await {
                Event::Reply(r) if r.is_ping() => continue,
                Event::Reply(r) => return *r,
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }

    /// The next publication pushed on `channel`, skipping everything else.
    pub async fn next_publication(&mut self, channel: &str) -> herald_protocol::Publication {
        loop {
            let r = self.next_reply().await;
            if let Some(push) = r.push
                && push.channel == channel
                && let Some(p) = push.publication
            {
                return p;
            }
        }
    }

    /// Reads until the server closes; returns the close code (skipping anything else).
    pub async fn closed_within(&mut self, within: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Ok(Event::Closed(code, _)) => return code,
                Ok(Event::Gone) => return 0,
                Ok(Event::Reply(_)) => continue,
                Err(_) => panic!("the server did not close within {within:?}"),
            }
        }
    }

    /// Offsets of the next `n` publications of `channel` (skipping pings and others).
    pub async fn publications(&mut self, channel: &str, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let r = self.next_reply().await;
            if let Some(push) = r.push
                && push.channel == channel
                && let Some(p) = push.publication
            {
                out.push(p.offset);
            }
        }
        out
    }
}
