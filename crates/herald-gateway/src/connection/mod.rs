//! One task per client connection, whatever its transport and encoding: it reads
//! commands, writes replies and queued pushes (batched into one frame per wake-up), and
//! runs the connection's timers. Transports other than WebSocket reach it through an
//! adapter that looks like a WebSocket ([`Socket`]; see [`crate::transport`]); the
//! encoding (JSON text frames or Protobuf binary frames) matters only at the edges:
//! decoding a frame and writing one.

mod commands;
pub(crate) use commands::MAX_ORIGIN_BYTES;
mod hooks;
mod idempotency;
mod limits;
#[cfg(test)]
mod protobuf_tests;
mod subscribe;
#[cfg(test)]
mod tests;

use crate::hub::{Closer, ConnHandle, ConnId, Outgoing};
use crate::node::Node;
use crate::transport::{Transport, TransportKind};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use herald_protocol::{
    DisconnectCode, Encoding, ErrorCode, FrameWriter, RawJson, Reply, UnsubscribeCode,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Why a command did not get a normal reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    /// Reply with this error; the connection stays.
    Error(ErrorCode),
    /// Reply with an error the application's backend chose (a proxy hook's answer).
    App(Box<herald_protocol::Error>),
    /// Close the connection with this code (or with the one already requested of its
    /// closer, such as an application's close code from a proxy hook).
    Disconnect(DisconnectCode),
}

impl From<ErrorCode> for Fail {
    fn from(code: ErrorCode) -> Self {
        Fail::Error(code)
    }
}

/// The authenticated part of a connection.
struct Session {
    client: Arc<str>,
    user: Arc<str>,
    conn_info: Option<RawJson>,
    expires_at: Option<Instant>,
    /// The connection token's tag filter, applied to every subscription.
    filter: Option<Arc<herald_protocol::Filter>>,
    /// At `expires_at`, the refresh hook is asked whether the connection goes on
    /// (instead of the client sending a new token).
    refreshed_by_proxy: bool,
    /// The connection's origin id: its publications carry it, and it never receives
    /// publications that carry it.
    origin: Option<Arc<str>>,
    handle: ConnHandle,
    /// Counts this connection under its user on this node until the session is dropped,
    /// however the connection ends.
    _user_permit: Option<crate::admission::UserPermit>,
}

/// One subscription of this connection.
struct Sub {
    /// The channel keeps history: publications carry offsets to check.
    positioned: bool,
    /// The last offset delivered (or skipped as already known).
    offset: u64,
    epoch: Arc<str>,
    expires_at: Option<Instant>,
    /// The namespace announces joins and leaves.
    announce_leave: bool,
    /// Listed in the channel's presence.
    presence: bool,
    chan_info: Option<RawJson>,
    /// Fossil deltas are on: every `data` goes out as a JSON string.
    delta: bool,
    /// The client holds the full text of the publication at `offset`, so the next one
    /// may come as a patch.
    delta_base: bool,
    /// The subscription token's tag filter.
    token_filter: Option<Arc<herald_protocol::Filter>>,
    /// The tag filter the client chose.
    client_filter: Option<Arc<herald_protocol::Filter>>,
    /// At `expires_at`, the sub_refresh hook is asked whether the subscription goes on.
    refreshed_by_proxy: bool,
    /// At most one publication per key per interval, when asked for.
    conflation: Option<Box<crate::conflation::Conflation<Arc<crate::hub::EncodedPublication>>>>,
}

impl Sub {
    /// Whether a token or the client set a filter on this subscription.
    fn filtered(&self) -> bool {
        self.token_filter.is_some() || self.client_filter.is_some()
    }

    /// Whether a publication passes this subscription's filters and what the
    /// connection keeps out.
    fn passes(&self, connection: Excluding<'_>, p: &herald_protocol::Publication) -> bool {
        if connection.origin.is_some() && p.origin.as_deref() == connection.origin {
            return false;
        }
        [
            connection.filter,
            self.token_filter.as_deref(),
            self.client_filter.as_deref(),
        ]
        .into_iter()
        .flatten()
        .all(|f| f.matches(&p.tags))
    }

    /// Keeps the publications that pass this subscription's filters and what the
    /// connection keeps out.
    fn retain_passing(
        &self,
        publications: &mut Vec<herald_protocol::Publication>,
        connection: Excluding<'_>,
    ) {
        if connection.any() || self.filtered() {
            publications.retain(|p| self.passes(connection, p));
        }
    }
}

/// What a connection keeps out of every subscription: publications its connection
/// token's filter does not pass, and those of its own origin.
#[derive(Debug, Clone, Copy, Default)]
struct Excluding<'a> {
    filter: Option<&'a herald_protocol::Filter>,
    origin: Option<&'a str>,
}

impl Excluding<'_> {
    fn any(&self) -> bool {
        self.filter.is_some() || self.origin.is_some()
    }
}

impl Session {
    fn excluding(&self) -> Excluding<'_> {
        Excluding {
            filter: self.filter.as_deref(),
            origin: self.origin.as_deref(),
        }
    }
}

/// Writes a publication in the subscription's form: a patch when it follows the one
/// the client holds in full (`next`), in full otherwise. `false` when a delta
/// subscription's forms are missing.
fn deliver(
    out: &mut FrameWriter,
    sub: &mut Sub,
    p: &crate::hub::EncodedPublication,
    next: bool,
) -> bool {
    // Delta forms are JSON: Protobuf subscriptions never ask for delta.
    if !sub.delta || out.encoding() != Encoding::Json {
        out.push_encoded(p.encoded(out.encoding()));
    } else if let Some(forms) = &p.delta {
        let patch = (next && sub.delta_base)
            .then(|| forms.patch(&p.channel))
            .flatten();
        out.push_encoded(patch.unwrap_or_else(|| forms.full(&p.channel)));
        sub.delta_base = next;
    } else {
        return false;
    }
    true
}

/// Writes what a conflated subscription holds from a window that has ended by `now`
/// (nothing for other subscriptions). `false` as for [`deliver`].
fn deliver_due(out: &mut FrameWriter, sub: &mut Sub, now: Instant) -> bool {
    let due = match sub.conflation.as_mut() {
        Some(c) => c.take_due(now),
        None => return true,
    };
    due.iter().all(|held| deliver(out, sub, held, false))
}

/// A filter from a token claim, checked: `Err` when the claim is not a valid tree.
fn claimed_filter(
    node: Option<&herald_protocol::FilterNode>,
) -> Result<Option<Arc<herald_protocol::Filter>>, herald_protocol::FilterError> {
    node.map(|n| herald_protocol::Filter::compile(n).map(Arc::new))
        .transpose()
}

struct Conn {
    node: Arc<Node>,
    id: ConnId,
    tx: crate::queue::Sender<Outgoing>,
    closer: Arc<Closer>,
    session: Option<Session>,
    /// Boxed: a map sized for a few entries holds pointers, not a `Sub` per slot.
    subs: HashMap<Arc<str>, Box<Sub>>,
    out: FrameWriter,
    /// Work decided while handling an event, carried out before the next flush:
    /// unsubscribes, and expiries to ask the backend about.
    deferred: Vec<Deferred>,
    opened: Instant,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
    limiter: limits::Limiter,
    /// How the client is connected.
    transport: Transport,
    /// Commands received and messages written, for the summary logged at the end.
    commands_in: u32,
    messages_out: u32,
}

/// Work a connection carries out after the event that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deferred {
    /// End a subscription with this code.
    Unsubscribe(Arc<str>, UnsubscribeCode),
    /// The connection expired: ask the refresh hook.
    Refresh,
    /// A subscription expired: ask the sub_refresh hook.
    SubRefresh(Arc<str>),
}

/// What a connection task reads messages from and writes them to: a WebSocket
/// (Herald's frame layer, or the HTTP library's on HTTP/2), a unidirectional or HTTP
/// stream, or a pair of channels in tests.
///
/// One value is both the sink and the stream, so that production needs no `split()`:
/// that would move every socket behind a lock into an allocation of its own.
pub(crate) trait Socket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin + Send
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin + Send
{
}

/// Serves one client connection until it closes.
///
/// Not an `async fn`: the connection's state is built here and moved once into the
/// returned future, which is all that an idle connection's task holds. An `async fn`
/// would keep its arguments (the socket among them) beside that state for the life of
/// the connection.
pub(crate) fn serve<S: Socket>(
    socket: S,
    node: Arc<Node>,
    transport: Transport,
) -> impl std::future::Future<Output = ()> + Send {
    let id = node.next_conn_id();
    let span = tracing::info_span!(
        "conn",
        id,
        transport = transport.kind.name(),
        encoding = transport.encoding.as_str(),
        client = tracing::field::Empty,
        user = tracing::field::Empty
    );
    node.metrics
        .transport_connections
        .with_label_values(&[transport.kind.name()])
        .inc();
    let (tx, rx) = crate::queue::channel(node.config.client.queue_size);
    let now = Instant::now();
    Conn {
        id,
        tx,
        closer: Arc::new(Closer::default()),
        session: None,
        subs: HashMap::new(),
        // No buffer between frames: each frame's allocation leaves with it.
        out: FrameWriter::new(transport.encoding, 0),
        deferred: Vec::new(),
        opened: now,
        next_ping: now + node.config.client.ping_interval,
        pong_deadline: None,
        limiter: limits::Limiter::default(),
        transport,
        commands_in: 0,
        messages_out: 0,
        node,
    }
    .run(socket, rx)
    .instrument(span)
}

impl Conn {
    // Not an `async fn`: its arguments would be stored twice in its future (once as
    // arguments, once as the locals they are moved into), doubling the Conn and the
    // socket that every idle connection holds. An `async move` block uses the captured
    // values in place.
    #[allow(clippy::manual_async_fn)]
    fn run<S: Socket>(
        mut self,
        mut socket: S,
        mut rx: crate::queue::Receiver<Outgoing>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            // Counted from the first poll (a future dropped unpolled never counted), and
            // uncounted at the end of this block.
            self.node.metrics.connections.inc();
            let closer = self.closer.clone();
            let batch_bytes = self.node.config.client.write_batch_bytes;
            let write_interval = self.node.config.client.write_interval;
            let mut deadline = self.deadline();
            let timer = tokio::time::sleep_until(deadline);
            tokio::pin!(timer);
            // Pushes are written at most once per `write_interval`: the first after a quiet
            // spell goes at once, those arriving faster wait for the next write and share
            // its frame and system call. Replies to commands never wait.
            let now = Instant::now();
            let mut last_write = now.checked_sub(write_interval).unwrap_or(now);
            let mut write_pending = false;
            let write_timer = tokio::time::sleep_until(last_write);
            tokio::pin!(write_timer);
            let outcome: Ending = loop {
                let mut pushes_only = false;
                let step = tokio::select! {
                    biased;
                    () = closer.requested() => break Ending::Close(closer.requested_close().unwrap_or_else(|| reason_of(DisconnectCode::ConnectionClosed))),
                    // Authenticated clients are closed by the drain, spread over its window;
                    // a socket that never connected just goes.
                    () = self.node.shutdown.cancelled(), if self.session.is_none() => Err(DisconnectCode::Shutdown),
                    msg = socket.next() => match msg {
                        None => break Ending::Gone,
                        Some(Ok(Message::Close(_))) => break Ending::ClosedByPeer,
                        // Commands are rare next to pushes; their futures (authentication,
                        // history reads) are boxed so that they do not make every idle
                        // connection's task as large as the largest command.
                        Some(Ok(Message::Text(text))) if self.out.encoding() == Encoding::Json => {
                            Box::pin(self.on_text_frame(text.as_str())).await
                        }
                        Some(Ok(Message::Binary(data))) if self.out.encoding() == Encoding::Protobuf => {
                            Box::pin(self.on_binary_frame(&data)).await
                        }
                        // A frame of the other encoding's kind.
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => Err(DisconnectCode::BadRequest),
                        Some(Ok(_)) => Ok(()),
                        Some(Err(e)) => match read_error_code(e) {
                            Some(code) => Err(code),
                            None => break Ending::Gone,
                        },
                    },
                    item = rx.recv() => {
                        pushes_only = true;
                        // `self.tx` keeps the queue open, so `None` cannot happen.
                        let mut result = item.map_or(Ok(()), |item| self.on_outgoing(item));
                        while result.is_ok() && self.out.len() < batch_bytes {
                            match rx.try_recv() {
                                Some(item) => result = self.on_outgoing(item),
                                None => break,
                            }
                        }
                        result
                    }
                    () = &mut timer => self.on_timer(),
                    () = &mut write_timer, if write_pending => Ok(()),
                };
                if let Err(code) = step {
                    // A close already requested (a proxy hook's own code) wins.
                    break Ending::Close(
                        closer.requested_close().unwrap_or_else(|| reason_of(code)),
                    );
                }
                // A unidirectional client cannot resubscribe to recover a channel: it gets
                // 3010 instead, and reconnects with its positions.
                if !self.transport.kind.bidirectional()
                    && self.deferred.iter().any(|d| {
                        matches!(
                            d,
                            Deferred::Unsubscribe(_, UnsubscribeCode::InsufficientState)
                        )
                    })
                {
                    break Ending::Close(reason_of(DisconnectCode::InsufficientState));
                }
                if !self.deferred.is_empty()
                    && let Err(code) = Box::pin(self.run_deferred()).await
                {
                    break Ending::Close(
                        closer.requested_close().unwrap_or_else(|| reason_of(code)),
                    );
                }
                if !self.out.is_empty() {
                    let now = Instant::now();
                    let due = last_write + write_interval;
                    if pushes_only && now < due && self.out.len() < batch_bytes {
                        if !write_pending {
                            write_pending = true;
                            write_timer.as_mut().reset(due);
                        }
                    } else {
                        write_pending = false;
                        last_write = now;
                        if !self.flush(&mut socket).await {
                            break Ending::Close(
                                closer
                                    .requested_close()
                                    .unwrap_or_else(|| reason_of(DisconnectCode::WriteError)),
                            );
                        }
                    }
                }
                let next = self.deadline();
                if next != deadline {
                    deadline = next;
                    timer.as_mut().reset(deadline);
                }
            };
            self.log_summary(&outcome);
            match outcome {
                Ending::Close((code, reason)) => {
                    if self.close(&mut socket, code, reason).await {
                        self.await_close_reply(&mut socket).await;
                    }
                }
                // The frame layer queued the answer to the client's Close (its code echoed,
                // or 1002 for a code that must not be sent) and may not have written all of
                // it yet; closing the sink writes what is left and ends the WebSocket.
                Ending::ClosedByPeer => {
                    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, socket.close()).await;
                }
                Ending::Gone => {}
            }
            // The TCP connection is closed here, before the cleanup's broker calls, so that
            // the client sees the end of the handshake at once.
            drop(socket);
            Box::pin(self.cleanup()).await;
            self.node.metrics.connections.dec();
        }
    }

    /// One line per connection that authenticated, at info: how it ended, how long it
    /// lasted, what it sent and got (the span adds its client id and user).
    fn log_summary(&self, outcome: &Ending) {
        if let Ending::Close((code, reason)) = outcome {
            let (user, client) = self
                .session
                .as_ref()
                .map_or(("", ""), |s| (&*s.user, &*s.client));
            self.node
                .cluster
                .record_disconnect(*code, reason, user, client);
        }
        let (ended_by, code) = match outcome {
            Ending::Close((code, _)) => ("server", *code),
            Ending::ClosedByPeer => ("client", 0),
            Ending::Gone => ("network", 0),
        };
        let secs = self.opened.elapsed().as_secs_f64();
        if self.session.is_some() {
            tracing::info!(
                ended_by,
                code,
                secs = format!("{secs:.1}"),
                commands = self.commands_in,
                messages = self.messages_out,
                subscriptions = self.subs.len(),
                "connection closed"
            );
        } else {
            tracing::debug!(ended_by, code, "connection closed before connecting");
        }
    }

    /// Counts the close and sends its Close frame, within a short wait; whether the
    /// frame went out to a client that may answer it.
    async fn close<S: Socket>(&self, socket: &mut S, code: u16, reason: String) -> bool {
        let label = if code >= 4000 {
            "application".to_owned()
        } else {
            code.to_string()
        };
        self.node
            .metrics
            .disconnects
            .with_label_values(&[label.as_str()])
            .inc();
        tracing::debug!(code, reason, "closing connection");
        // The hub sees the connection closing from now on (whatever the reason), so
        // that publications meanwhile neither queue up nor count as a slow client.
        self.closer.close_with(code, &reason);
        // A failed write cannot take a close frame; a slow client gets a brief chance
        // (its queued bytes go first), everyone else a second.
        let wait = match DisconnectCode::from_code(code) {
            Some(DisconnectCode::WriteError) => return false,
            Some(DisconnectCode::Slow) => Duration::from_millis(250),
            _ => CLOSE_REPLY_TIMEOUT,
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        }));
        let sent = matches!(
            tokio::time::timeout(wait, socket.send(close)).await,
            Ok(Ok(()))
        );
        // A client that stopped answering pings will not answer a Close either.
        sent && DisconnectCode::from_code(code) != Some(DisconnectCode::NoPong)
    }

    /// After the server's Close on a WebSocket: reads and drops what the client still
    /// sends until its own Close arrives (or the stream ends, or a short wait passes).
    /// Closing the TCP connection over unread bytes makes the kernel reset it, and a
    /// reset can overtake the Close frame on its way, so that the client never learns
    /// the code. A client answers a Close at once; one that does not costs this wait.
    async fn await_close_reply<S: Socket>(&self, socket: &mut S) {
        if self.transport.kind != TransportKind::WebSocket
            && self.transport.kind != TransportKind::UniWebSocket
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_DRAIN_TIMEOUT, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Writes the pending frame. A client that stops reading is cut off as soon as its
    /// queue overflows, even while this write waits for the socket.
    async fn flush<S: Socket>(&mut self, socket: &mut S) -> bool {
        let count = self.out.count() as u64;
        let frame = self.out.take();
        let message = match self.out.encoding() {
            Encoding::Protobuf => Message::Binary(frame),
            Encoding::Json => match Utf8Bytes::try_from(frame) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    tracing::error!("encoded frame is not UTF-8");
                    return false;
                }
            },
        };
        let closer = self.closer.clone();
        let sent = tokio::select! {
            r = socket.send(message) => r.is_ok(),
            () = closer.requested() => false,
        };
        if sent {
            self.messages_out = self
                .messages_out
                .saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
            self.node.metrics.messages_sent.inc_by(count);
            self.node.metrics.frames_sent.inc();
        }
        sent
    }

    fn deadline(&self) -> Instant {
        let client = &self.node.config.client;
        let Some(session) = &self.session else {
            return self.opened + client.connect_timeout;
        };
        let mut next = self.next_ping;
        // The client gets a grace period to send a new token; the backend is asked at
        // the expiry itself.
        let grace = |by_proxy: bool| {
            if by_proxy {
                Duration::ZERO
            } else {
                client.expire_grace
            }
        };
        let candidates = self
            .pong_deadline
            .into_iter()
            .chain(
                session
                    .expires_at
                    .map(|t| t + grace(session.refreshed_by_proxy)),
            )
            .chain(
                self.subs
                    .values()
                    .filter_map(|s| s.expires_at.map(|t| t + grace(s.refreshed_by_proxy))),
            )
            .chain(
                self.subs
                    .values()
                    .filter_map(|s| s.conflation.as_ref().and_then(|c| c.due())),
            );
        for t in candidates {
            next = next.min(t);
        }
        next
    }

    fn on_timer(&mut self) -> Result<(), DisconnectCode> {
        let now = Instant::now();
        let client = &self.node.config.client;
        let Some(session) = &self.session else {
            return if now >= self.opened + client.connect_timeout {
                Err(DisconnectCode::Stale)
            } else {
                Ok(())
            };
        };
        if self.pong_deadline.is_some_and(|t| now >= t) {
            return Err(DisconnectCode::NoPong);
        }
        if session.refreshed_by_proxy {
            if session.expires_at.is_some_and(|t| now >= t)
                && !self.deferred.contains(&Deferred::Refresh)
            {
                self.deferred.push(Deferred::Refresh);
            }
        } else if session
            .expires_at
            .is_some_and(|t| now >= t + client.expire_grace)
        {
            return Err(DisconnectCode::Expired);
        }
        let grace = client.expire_grace;
        for (channel, sub) in &self.subs {
            if sub.refreshed_by_proxy {
                let due = Deferred::SubRefresh(channel.clone());
                if sub.expires_at.is_some_and(|t| now >= t) && !self.deferred.contains(&due) {
                    self.deferred.push(due);
                }
            } else if sub.expires_at.is_some_and(|t| now >= t + grace) {
                self.deferred.push(Deferred::Unsubscribe(
                    channel.clone(),
                    UnsubscribeCode::Expired,
                ));
            }
        }
        // Conflated publications whose window ended.
        for (channel, sub) in &mut self.subs {
            if !deliver_due(&mut self.out, sub, now) {
                self.deferred.push(Deferred::Unsubscribe(
                    channel.clone(),
                    UnsubscribeCode::InsufficientState,
                ));
            }
        }
        if now >= self.next_ping {
            self.out
                .push(&Reply::default())
                .map_err(|_| DisconnectCode::Internal)?;
            self.next_ping = now + client.ping_interval;
            // Unidirectional clients have no way to answer.
            if self.pong_deadline.is_none() && self.transport.kind.bidirectional() {
                self.pong_deadline = Some(now + client.pong_timeout);
            }
        }
        Ok(())
    }

    fn on_outgoing(&mut self, item: Outgoing) -> Result<(), DisconnectCode> {
        use herald_protocol::{Position, Step};
        match item {
            Outgoing::Publication(p) => {
                let Some(sub) = self.subs.get_mut(&p.channel) else {
                    return Ok(());
                };
                let mut next = false;
                if sub.positioned {
                    match Position::new(sub.offset, &sub.epoch).judge(p.offset, &p.epoch) {
                        Step::Unpositioned => {}
                        Step::Next => {
                            sub.offset = p.offset;
                            next = true;
                        }
                        // Already delivered (recovered in the subscribe reply).
                        Step::Duplicate => return Ok(()),
                        Step::Gap { .. } | Step::NewEpoch => {
                            // Never deliver out of order. The client resubscribes with
                            // recovery and gets the missing part or a clear "not recovered".
                            tracing::debug!(channel = %p.channel, have = sub.offset, got = p.offset, "gap in live stream");
                            if !self.deferred.iter().any(
                                |d| matches!(d, Deferred::Unsubscribe(c, _) if *c == p.channel),
                            ) {
                                self.deferred.push(Deferred::Unsubscribe(
                                    p.channel.clone(),
                                    UnsubscribeCode::InsufficientState,
                                ));
                            }
                            return Ok(());
                        }
                    }
                }
                // Filtered out: the position moved on, nothing goes out, and a delta
                // subscriber's next publication comes in full.
                let excluding = self
                    .session
                    .as_ref()
                    .map(Session::excluding)
                    .unwrap_or_default();
                if !sub.passes(excluding, &p.stored.publication) {
                    sub.delta_base = false;
                    return Ok(());
                }
                // Conflated: held for the end of the window (or sent now, opening one).
                if sub.conflation.is_some() {
                    let now = Instant::now();
                    // A window that ended before its timer fired goes out first: what it
                    // holds is older than this publication.
                    if !deliver_due(&mut self.out, sub, now) {
                        self.deferred.push(Deferred::Unsubscribe(
                            p.channel.clone(),
                            UnsubscribeCode::InsufficientState,
                        ));
                        return Ok(());
                    }
                    if let Some(c) = sub.conflation.as_mut()
                        && c.arrive(now, &p.stored.publication.tags, p.offset, p.clone())
                            == crate::conflation::Arrival::Held
                    {
                        sub.delta_base = false;
                        return Ok(());
                    }
                }
                if !deliver(&mut self.out, sub, &p, next) {
                    // The hub builds delta forms for every publication queued to a
                    // delta subscriber; without them the data cannot go out as the
                    // client expects, so it resubscribes and recovers.
                    self.deferred.push(Deferred::Unsubscribe(
                        p.channel.clone(),
                        UnsubscribeCode::InsufficientState,
                    ));
                }
            }
            Outgoing::Push(push) => self.out.push_encoded(push.encoded(self.out.encoding())),
            Outgoing::Unsubscribe(order) => {
                if self.subs.contains_key(&order.channel) {
                    self.deferred
                        .push(Deferred::Unsubscribe(order.channel, order.code));
                }
            }
        }
        Ok(())
    }

    /// Carries out the deferred work: first the expiries the backend decides on (a call
    /// each, within its timeout; those it ends become unsubscribes), then the
    /// unsubscribes. `Err` closes the connection.
    async fn run_deferred(&mut self) -> Result<(), DisconnectCode> {
        let mut work = std::mem::take(&mut self.deferred);
        for item in &work {
            match item {
                Deferred::Refresh => self.refresh_by_proxy().await?,
                Deferred::SubRefresh(channel) => self.sub_refresh_by_proxy(channel).await?,
                Deferred::Unsubscribe(..) => {}
            }
        }
        // Unsubscribes the calls decided come after those decided before.
        work.append(&mut self.deferred);
        for item in work {
            let Deferred::Unsubscribe(channel, code) = item else {
                continue;
            };
            if self.remove_sub(&channel).await {
                let push = Reply::push(herald_protocol::Push {
                    channel: channel.to_string(),
                    unsubscribe: Some(herald_protocol::Unsubscribe {
                        code: code.code(),
                        reason: code.reason().to_owned(),
                    }),
                    ..herald_protocol::Push::default()
                });
                let _ = self.out.push(&push);
            }
        }
        Ok(())
    }

    /// Ends one subscription: leaves the hub and presence, and announces the leave.
    async fn remove_sub(&mut self, channel: &str) -> bool {
        let Some(sub) = self.subs.remove(channel) else {
            return false;
        };
        self.node.hub.unsubscribe(channel, self.id).await;
        let broker = &self.node.broker;
        if sub.presence
            && let Some(session) = &self.session
            && let Err(e) = broker.remove_presence(channel, &session.client).await
        {
            tracing::warn!(error = %herald_broker::Chain(&e), channel, "presence removal failed");
        }
        if sub.announce_leave
            && let Some(info) = self.client_info(sub.chan_info)
            && let Err(e) = broker
                .publish_join_leave(channel, herald_broker::JoinLeave::Leave(info))
                .await
        {
            tracing::warn!(error = %herald_broker::Chain(&e), channel, "leave announcement failed");
        }
        true
    }

    fn client_info(&self, chan_info: Option<RawJson>) -> Option<herald_protocol::ClientInfo> {
        self.session.as_ref().map(|s| herald_protocol::ClientInfo {
            user: s.user.to_string(),
            client: s.client.to_string(),
            conn_info: s.conn_info.clone(),
            chan_info,
        })
    }

    async fn cleanup(&mut self) {
        let channels: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        for channel in channels {
            self.remove_sub(&channel).await;
        }
        if let Some(session) = &self.session {
            self.node.hub.unregister(self.id);
            // With the per-user connection limit on, every session may hold a slot (one
            // let through while the broker failed gets one at the next refresh).
            if self.node.config.client.rate_limits.user_connections > 0
                && !session.user.is_empty()
                && let Err(e) = self
                    .node
                    .broker
                    .release_connection(&session.user, &session.client)
                    .await
            {
                // The slot expires by itself within the presence TTL.
                tracing::debug!(error = %herald_broker::Chain(&e), "connection slot not released");
            }
        }
    }
}

/// How long a Close frame (the server's own, or the answer to the client's) may take
/// to write.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long, after the server's Close, the client's answering Close is waited for.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// How the connection loop ended.
#[derive(Debug)]
enum Ending {
    /// The server closes with this code and reason.
    Close((u16, String)),
    /// The client sent a Close frame; it gets the answer.
    ClosedByPeer,
    /// The client went away without a close handshake.
    Gone,
}

fn reason_of(code: DisconnectCode) -> (u16, String) {
    (code.code(), code.reason().to_owned())
}

/// The close code for a read error (a violation of WebSocket framing gets the RFC 6455
/// code), or `None` when the client simply went away.
fn read_error_code(e: axum::Error) -> Option<DisconnectCode> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let inner = e.into_inner();
    // Herald's own frame layer (every HTTP/1.1 WebSocket).
    if let Some(e) = inner.downcast_ref::<herald_websocket::Error>() {
        return match e {
            herald_websocket::Error::Protocol(_) => Some(DisconnectCode::WsProtocolError),
            herald_websocket::Error::Utf8 | herald_websocket::Error::Inflate => {
                Some(DisconnectCode::WsInvalidPayload)
            }
            herald_websocket::Error::TooBig(_) => Some(DisconnectCode::WsMessageTooBig),
            herald_websocket::Error::Closing | herald_websocket::Error::Io(_) => None,
        };
    }
    match inner.downcast_ref::<WsError>() {
        // Vanishing without a close handshake is a client going away, not a bad request.
        Some(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => None,
        Some(WsError::Protocol(_)) => Some(DisconnectCode::WsProtocolError),
        Some(WsError::Utf8(_)) => Some(DisconnectCode::WsInvalidPayload),
        // 1009, not 3501: both stop the SDKs, but 1009 also tells them why (the npm
        // SDK reports `messageSizeLimit`); either way a client that keeps sending the
        // message does not reconnect into the same close in a loop.
        Some(WsError::Capacity(_)) => Some(DisconnectCode::WsMessageTooBig),
        _ => None,
    }
}
