//! The life of one socket: the `connect` handshake, reading frames, dispatching replies
//! and pushes, pings, connection token refresh, and writing batched frames.

use super::{End, Internal, Task, refresh_delay, refresh_retry_delay};
use crate::calls::{ReplyTx, Waiter, into_result};
use crate::error::ClientError;
use crate::error::ProtocolError;
use crate::event::{connecting_code, disconnected_code};
use futures_util::{SinkExt, StreamExt};
use herald_protocol::codes::should_reconnect;
use herald_protocol::{
    Command, ConnectRequest, ConnectResult, ErrorCode, Push, RefreshRequest, Reply, decode_replies,
};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Control messages taken in one go before writing, so that commands issued together
/// leave in one frame without starving the reader.
const MAX_BATCH: usize = 256;

/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// State of the open socket.
#[derive(Debug)]
pub(crate) struct Session {
    /// The `connect` reply arrived.
    pub(super) authenticated: bool,
    connect_deadline: Option<Instant>,
    /// Answer server pings with `{}`.
    pong: bool,
    /// Ping interval plus grace: silence longer than this means the connection is dead.
    ping_timeout: Option<Duration>,
    ping_deadline: Option<Instant>,
    /// When to fetch a new connection token.
    refresh_at: Option<Instant>,
}

impl Session {
    fn next_deadline(&self) -> Option<Instant> {
        [self.connect_deadline, self.ping_deadline, self.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Task {
    /// Runs one socket from the `connect` command until it ends.
    pub(super) async fn serve(&mut self, mut ws: Ws) -> End {
        self.generation = self.generation.wrapping_add(1);
        let now = Instant::now();
        self.session = Some(Session {
            authenticated: false,
            connect_deadline: Some(now + self.cfg.timeout),
            pong: false,
            ping_timeout: None,
            ping_deadline: None,
            refresh_at: None,
        });
        let id = self.calls.register(Waiter::Connect, now + self.cfg.timeout);
        let connect = Command {
            id,
            connect: Some(ConnectRequest {
                token: self.token.clone(),
                name: self.cfg.name.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..ConnectRequest::default()
            }),
            ..Command::default()
        };
        self.write(&connect);
        loop {
            if self.end.is_none() {
                self.flush(&mut ws).await;
            }
            if let Some(end) = self.end.take() {
                close(&mut ws, &end).await;
                return end;
            }
            let deadline = self.session.as_ref().and_then(Session::next_deadline);
            self.arm_sweep();
            tokio::select! {
                msg = ws.next() => self.on_message(msg),
                ctl = self.control.recv() => match ctl {
                    Some(c) => {
                        self.on_control(c);
                        for _ in 1..MAX_BATCH {
                            match self.control.try_recv() {
                                Ok(c) => self.on_control(c),
                                Err(_) => break,
                            }
                        }
                    }
                    None => self.end = Some(End::Shutdown),
                },
                Some(msg) = self.internal_rx.recv() => self.on_internal(msg),
                () = sleep_until(deadline) => self.on_timers(Instant::now()),
                () = self.sweep.as_mut() => self.on_sweep(Instant::now()),
            }
        }
    }

    /// Appends a command to the frame being built.
    pub(super) fn write(&mut self, command: &Command) {
        if let Err(e) = self.out.push(command) {
            // Only possible with data that cannot be JSON, which `RawJson` rules out.
            tracing::warn!(error = %e, "could not encode a command");
        }
    }

    /// Sends an application call, or tells the caller why it cannot be sent.
    pub(super) fn send_call(&mut self, mut command: Box<Command>, reply: ReplyTx) {
        if reply.is_closed() {
            return;
        }
        let deadline = Instant::now() + self.cfg.timeout;
        let id = self.calls.register(Waiter::User(reply), deadline);
        command.id = id;
        if let Err(e) = self.out.push(&*command)
            && let Some(Waiter::User(reply)) = self.calls.resolve(id)
        {
            let _ = reply.send(Err(ClientError::Protocol(ProtocolError::Encode(e))));
        }
    }

    async fn flush(&mut self, ws: &mut Ws) {
        if self.out.is_empty() {
            return;
        }
        let frame = self.out.take();
        let text = match Utf8Bytes::try_from(frame) {
            Ok(text) => text,
            Err(e) => {
                // serde_json writes UTF-8; this guards the invariant instead of panicking.
                tracing::warn!(error = %e, "encoded frame is not UTF-8");
                return;
            }
        };
        match tokio::time::timeout(self.cfg.timeout, ws.send(Message::Text(text))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "websocket write failed");
                self.end = Some(transport_closed());
            }
            Err(_) => {
                tracing::debug!("websocket write timed out");
                self.end = Some(transport_closed());
            }
        }
    }

    fn on_message(&mut self, msg: Option<Result<Message, WsError>>) {
        // Any traffic proves the connection alive, not just pings: a server busy sending
        // publications may delay its pings.
        if let Some(session) = &mut self.session
            && let Some(timeout) = session.ping_timeout
        {
            session.ping_deadline = Some(Instant::now() + timeout);
        }
        match msg {
            Some(Ok(Message::Text(text))) => match decode_replies(&text) {
                Ok(replies) => {
                    for reply in replies {
                        self.on_reply(reply);
                    }
                }
                Err(e) => self.bad_protocol(ProtocolError::Frame(e)),
            },
            Some(Ok(Message::Binary(_))) => self.bad_protocol(ProtocolError::BinaryFrame),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (
                        connecting_code::TRANSPORT_CLOSED,
                        "transport closed".to_owned(),
                    ),
                };
                self.closed_by_server(code, reason);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read failed");
                self.set_end(transport_closed());
            }
            None => self.set_end(transport_closed()),
        }
    }

    fn set_end(&mut self, end: End) {
        if self.end.is_none() {
            self.end = Some(end);
        }
    }

    fn bad_protocol(&mut self, e: ProtocolError) {
        tracing::warn!(error = %e, "server sent a malformed frame");
        self.emit_error(ClientError::Protocol(e));
        self.set_end(End::Reconnect {
            code: connecting_code::BAD_PROTOCOL,
            reason: "bad protocol".to_owned(),
        });
    }

    fn closed_by_server(&mut self, code: u16, reason: String) {
        tracing::debug!(code, %reason, "server closed the connection");
        self.set_end(if should_reconnect(code) {
            End::Reconnect { code, reason }
        } else {
            End::Stop { code, reason }
        });
    }

    fn on_reply(&mut self, reply: Reply) {
        if reply.id != 0 {
            match self.calls.resolve(reply.id) {
                None => tracing::debug!(id = reply.id, "reply to an unknown command"),
                Some(Waiter::User(tx)) => {
                    let _ = tx.send(into_result(reply));
                }
                Some(Waiter::Connect) => self.on_connect_reply(reply),
                Some(Waiter::Subscribe { channel, key }) => {
                    self.on_subscribe_reply(&channel, key, reply)
                }
                Some(Waiter::Unsubscribe) => {
                    if let Some(e) = reply.error {
                        tracing::debug!(code = e.code, message = %e.message, "unsubscribe failed");
                    }
                }
                Some(Waiter::Refresh) => self.on_refresh_reply(reply),
                Some(Waiter::SubRefresh { channel, key }) => {
                    self.on_sub_refresh_reply(&channel, key, reply)
                }
            }
        } else if let Some(push) = reply.push {
            self.on_push(push);
        } else if reply.is_ping() {
            if self.session.as_ref().is_some_and(|s| s.pong) {
                self.write(&Command::default());
            }
        } else {
            tracing::debug!(?reply, "error without a command id");
        }
    }

    fn on_push(&mut self, push: Push) {
        let Push {
            channel,
            publication,
            unsubscribe,
            disconnect,
            ..
        } = push;
        if let Some(d) = disconnect {
            let code = u16::try_from(d.code).unwrap_or(u16::MAX);
            self.closed_by_server(code, d.reason);
        } else if let Some(p) = publication {
            self.on_publication(&channel, p);
        } else if let Some(u) = unsubscribe {
            self.on_unsubscribe_push(&channel, u.code, u.reason);
        }
        // Join, leave, messages and server-side subscriptions have no consumer in this SDK.
    }

    fn on_connect_reply(&mut self, reply: Reply) {
        match into_result(reply) {
            Err(e) => self.on_connect_error(e),
            Ok(Reply {
                connect: Some(result),
                ..
            }) => self.on_connected(result),
            Ok(_) => self.bad_protocol(ProtocolError::MissingConnectResult),
        }
    }

    fn on_connect_error(&mut self, e: ClientError) {
        let end = match &e {
            ClientError::Server { code, .. } if *code == ErrorCode::TokenExpired.code() => {
                self.refresh_required = true;
                if self.cfg.token_refresher.is_some() {
                    End::Reconnect {
                        code: connecting_code::TRANSPORT_CLOSED,
                        reason: "token expired".to_owned(),
                    }
                } else {
                    End::Stop {
                        code: disconnected_code::UNAUTHORIZED,
                        reason: "token expired and no token refresher".to_owned(),
                    }
                }
            }
            ClientError::Server {
                code,
                message,
                temporary,
            } => {
                if *temporary || *code < 100 {
                    End::Reconnect {
                        code: connecting_code::TRANSPORT_CLOSED,
                        reason: message.clone(),
                    }
                } else {
                    End::Stop {
                        code: u16::try_from(*code).unwrap_or(u16::MAX),
                        reason: message.clone(),
                    }
                }
            }
            _ => transport_closed(),
        };
        tracing::debug!(error = %e, "connect failed");
        self.emit_error(e);
        self.set_end(end);
    }

    fn on_connected(&mut self, result: ConnectResult) {
        let now = Instant::now();
        let refresher = self.cfg.token_refresher.is_some();
        let Some(session) = &mut self.session else {
            return;
        };
        session.authenticated = true;
        session.connect_deadline = None;
        session.pong = result.pong;
        if result.ping > 0 {
            let ping = Duration::from_secs(u64::from(result.ping));
            let timeout = ping + (ping / 3).max(Duration::from_secs(3));
            session.ping_timeout = Some(timeout);
            session.ping_deadline = Some(now + timeout);
        }
        if result.expires && refresher {
            session.refresh_at = Some(now + refresh_delay(result.ttl));
        }
        self.backoff.reset();
        tracing::debug!(client = %result.client, "connected");
        self.set_connected(result.client);
        self.subscribe_due(now);
        while let Some((command, reply)) = self.waiting.pop_front() {
            self.send_call(command, reply);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let Some(session) = &mut self.session else {
            return;
        };
        if session.connect_deadline.is_some_and(|d| d <= now) {
            session.connect_deadline = None;
            self.emit_error(ClientError::Timeout);
            self.set_end(End::Reconnect {
                code: connecting_code::COMMAND_TIMEOUT,
                reason: "connect timeout".to_owned(),
            });
        } else if session.ping_deadline.is_some_and(|d| d <= now) {
            session.ping_deadline = None;
            self.set_end(End::Reconnect {
                code: connecting_code::NO_PING,
                reason: "no ping".to_owned(),
            });
        } else if session.refresh_at.is_some_and(|d| d <= now) {
            session.refresh_at = None;
            if let Some(refresher) = self.cfg.token_refresher.clone() {
                let generation = self.generation;
                self.spawn_token_fetch(refresher, move |result| Internal::ConnToken {
                    generation,
                    result,
                });
            }
        }
    }

    pub(super) fn on_connection_token(
        &mut self,
        generation: u64,
        result: Result<String, ClientError>,
    ) {
        let current = generation == self.generation && self.authenticated();
        match result {
            Ok(token) => {
                self.token = token;
                self.refresh_required = false;
                if current {
                    let id = self
                        .calls
                        .register(Waiter::Refresh, Instant::now() + self.cfg.timeout);
                    let refresh = Command {
                        id,
                        refresh: Some(RefreshRequest {
                            token: self.token.clone(),
                        }),
                        ..Command::default()
                    };
                    self.write(&refresh);
                }
            }
            Err(e) => {
                self.emit_error(e);
                if current && let Some(session) = &mut self.session {
                    session.refresh_at = Some(Instant::now() + refresh_retry_delay());
                }
            }
        }
    }

    fn on_refresh_reply(&mut self, reply: Reply) {
        match into_result(reply) {
            Ok(reply) => {
                let result = reply.refresh.unwrap_or_default();
                if result.expires
                    && let Some(session) = &mut self.session
                {
                    session.refresh_at = Some(Instant::now() + refresh_delay(result.ttl));
                }
            }
            Err(e) => {
                let retry = matches!(&e, ClientError::Server { code, temporary, .. } if *temporary || *code < 100);
                let stop = match &e {
                    ClientError::Server { code, message, .. } if !retry => Some(End::Stop {
                        code: u16::try_from(*code).unwrap_or(u16::MAX),
                        reason: message.clone(),
                    }),
                    _ => None,
                };
                self.emit_error(e);
                match stop {
                    Some(end) => self.set_end(end),
                    None => {
                        if let Some(session) = &mut self.session {
                            session.refresh_at = Some(Instant::now() + refresh_retry_delay());
                        }
                    }
                }
            }
        }
    }
}

fn transport_closed() -> End {
    End::Reconnect {
        code: connecting_code::TRANSPORT_CLOSED,
        reason: "transport closed".to_owned(),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Closes the socket politely where that still makes sense, without waiting long.
async fn close(ws: &mut Ws, end: &End) {
    let reason = match end {
        End::Stop { reason, .. } | End::Reconnect { reason, .. } => reason.as_str(),
        End::Shutdown => "client dropped",
        // Dropped as a network failure would: no close frame.
        End::Interrupted { .. } => return,
    };
    // A close reason must fit in a control frame (123 bytes).
    let mut cut = reason.len().min(120);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: Utf8Bytes::from(&reason[..cut]),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(Some(frame))).await;
}

/// Opens the WebSocket, from `local` when given.
pub(super) async fn open(
    url: String,
    local: Option<std::net::IpAddr>,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    WsError,
> {
    let Some(local) = local else {
        return tokio_tungstenite::connect_async(url).await;
    };
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = url.into_client_request()?;
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        return Err(WsError::Url(
            tokio_tungstenite::tungstenite::error::UrlError::UnsupportedUrlScheme,
        ));
    }
    let host = uri
        .host()
        .ok_or(WsError::Url(
            tokio_tungstenite::tungstenite::error::UrlError::NoHostName,
        ))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let mut last = None;
    for remote in tokio::net::lookup_host((host.as_str(), port)).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = crate::net::local_socket(local)?;
        match socket.connect(remote).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                    .await;
            }
            Err(e) => last = Some(e),
        }
    }
    Err(WsError::Io(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no address of the host matches the local address family",
        )
    })))
}
