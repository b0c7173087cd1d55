//! The connection task: the one task that owns the socket, reconnects, and keeps every
//! subscription's state. Handles talk to it only through [`Control`] messages.

mod socket;
mod subs;

use crate::backoff::Backoff;
use crate::calls::{Calls, ReplyTx};
use crate::config::{Config, SubscribeOptions, TokenRefresher};
use crate::error::ClientError;
use crate::event::{
    ConnectionEvent, ConnectionState, SubscriptionEvent, connecting_code, disconnected_code,
};
use herald_protocol::{Command, FrameWriter};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};

pub(crate) use subs::SubEntry;

/// A request from a [`Client`](crate::Client) or [`Subscription`](crate::Subscription)
/// handle to the connection task.
#[derive(Debug)]
pub(crate) enum Control {
    Connect {
        ack: oneshot::Sender<()>,
    },
    Disconnect {
        ack: oneshot::Sender<()>,
    },
    /// Drop the socket without a close handshake, then reconnect after `offline`.
    Interrupt {
        offline: Duration,
        ack: oneshot::Sender<()>,
    },
    Call {
        command: Box<Command>,
        reply: ReplyTx,
    },
    Subscribe {
        channel: String,
        key: u64,
        options: SubscribeOptions,
        events: mpsc::Sender<SubscriptionEvent>,
        ack: oneshot::Sender<Result<(), ClientError>>,
    },
    /// `reply` is `None` when the handle was dropped rather than unsubscribed.
    Unsubscribe {
        channel: String,
        key: u64,
        reply: Option<ReplyTx>,
    },
}

/// What the handles can read without asking the task.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub(crate) state: ConnectionState,
    pub(crate) client_id: Option<String>,
    /// Why the client last became disconnected.
    pub(crate) last_close: Option<(u16, String)>,
}

/// Results of work the task hands to helper tasks so that a slow token refresher never
/// stalls the socket.
#[derive(Debug)]
pub(crate) enum Internal {
    ConnToken {
        generation: u64,
        result: Result<String, ClientError>,
    },
    SubToken {
        channel: String,
        key: u64,
        purpose: TokenPurpose,
        result: Result<String, ClientError>,
    },
}

/// Why a subscription token is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenPurpose {
    Subscribe,
    Refresh,
}

/// Why the current socket (or connect attempt) ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Back off, then connect again.
    Reconnect { code: u16, reason: String },
    /// Stop and report disconnected.
    Stop { code: u16, reason: String },
    /// Every handle is gone.
    Shutdown,
    /// The application dropped the socket on purpose (no close handshake); connect
    /// again after `offline`, without touching the backoff.
    Interrupted { offline: Duration },
}

pub(crate) struct Task {
    cfg: Config,
    control: mpsc::UnboundedReceiver<Control>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<ConnectionEvent>,
    /// The current connection token (replaced by the refresher).
    token: String,
    /// The last `connect` failed with 109: fetch a new token before the next one.
    refresh_required: bool,
    /// The application wants a connection (between `connect()` and `disconnect()`).
    want_connected: bool,
    shutdown: bool,
    backoff: Backoff,
    /// Calls made while not connected; sent once the `connect` reply arrives, failed
    /// when the client becomes disconnected, dropped when their caller gives up.
    waiting: VecDeque<(Box<Command>, ReplyTx)>,
    subs: HashMap<String, SubEntry>,
    calls: Calls,
    out: FrameWriter,
    session: Option<socket::Session>,
    /// Bumped per socket so that late token refresh results for an old socket are not
    /// sent on a new one.
    generation: u64,
    disconnect_acks: Vec<oneshot::Sender<()>>,
    /// Set by handlers when the current socket must be closed.
    end: Option<End>,
    /// The housekeeping timer (see [`Task::next_sweep`]).
    sweep: Pin<Box<Sleep>>,
    last_sweep: Instant,
}

/// How often the task looks for abandoned calls, stuck commands, drained subscription
/// buffers and due subscription retries while any of them may be there.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// How often it looks while nothing is in flight: only for dropped subscription handles
/// and due token refreshes. A client that is simply connected and subscribed wakes up
/// once a second for this, not ten times; with many clients in one process (a load
/// generator, a service fanning in) those wake-ups add up.
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Task {
    pub(crate) fn new(
        cfg: Config,
        control: mpsc::UnboundedReceiver<Control>,
        status: watch::Sender<Status>,
        events: broadcast::Sender<ConnectionEvent>,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        Self {
            token: cfg.token.clone(),
            backoff: Backoff::new(cfg.min_backoff, cfg.max_backoff),
            cfg,
            control,
            internal_tx,
            internal_rx,
            status,
            events,
            refresh_required: false,
            want_connected: false,
            shutdown: false,
            waiting: VecDeque::new(),
            subs: HashMap::new(),
            calls: Calls::new(),
            out: FrameWriter::with_capacity(4096),
            session: None,
            generation: 0,
            disconnect_acks: Vec::new(),
            end: None,
            sweep: Box::pin(tokio::time::sleep_until(now + SWEEP_EVERY)),
            last_sweep: now,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            if self.shutdown {
                self.finish();
                return;
            }
            if !self.want_connected {
                if self.state() != ConnectionState::Disconnected {
                    self.stop(disconnected_code::DISCONNECT_CALLED, "disconnect called");
                }
                match self.control.recv().await {
                    Some(c) => self.on_control(c),
                    None => self.shutdown = true,
                }
                continue;
            }
            let end = self.attempt().await;
            self.after_socket();
            match end {
                End::Shutdown => self.shutdown = true,
                End::Stop { code, reason } => self.stop(code, &reason),
                End::Interrupted { offline } => {
                    self.set_connecting(connecting_code::TRANSPORT_CLOSED, "connection dropped");
                    self.offline(tokio::time::sleep(offline)).await;
                }
                End::Reconnect { code, reason } => {
                    if !self.want_connected || self.shutdown {
                        continue;
                    }
                    if !self.cfg.reconnect {
                        // Below 1000 the code is a connecting code, which means something
                        // else among disconnected codes.
                        let code = if code >= 1000 {
                            code
                        } else {
                            disconnected_code::NO_RECONNECT
                        };
                        self.stop(code, &reason);
                        continue;
                    }
                    self.set_connecting(code, &reason);
                    let delay = self.backoff.next_delay();
                    tracing::debug!(?delay, code, %reason, "reconnecting after backoff");
                    let _ = self.events.send(ConnectionEvent::Retrying { delay });
                    self.offline(tokio::time::sleep(delay)).await;
                }
            }
        }
    }

    /// One connect attempt: token, handshake, then the socket's whole life.
    async fn attempt(&mut self) -> End {
        if let Some(refresher) = self.cfg.token_refresher.clone()
            && (self.token.is_empty() || self.refresh_required)
        {
            match self.offline(fetch_token(refresher, self.cfg.timeout)).await {
                None => return self.abandoned(),
                Some(Ok(token)) => {
                    self.token = token;
                    self.refresh_required = false;
                }
                Some(Err(e)) => {
                    self.emit_error(e);
                    return End::Reconnect {
                        code: connecting_code::TRANSPORT_CLOSED,
                        reason: "token refresher failed".to_owned(),
                    };
                }
            }
        }
        let handshake = tokio::time::timeout(
            self.cfg.timeout,
            socket::open(self.cfg.url.clone(), self.cfg.local_address),
        );
        let ws = match self.offline(handshake).await {
            None => return self.abandoned(),
            Some(Ok(Ok((ws, _response)))) => ws,
            Some(Ok(Err(e))) => {
                tracing::debug!(error = %e, "websocket handshake failed");
                self.emit_error(ClientError::Transport(e));
                return End::Reconnect {
                    code: connecting_code::TRANSPORT_CLOSED,
                    reason: "transport closed".to_owned(),
                };
            }
            Some(Err(_elapsed)) => {
                self.emit_error(ClientError::Timeout);
                return End::Reconnect {
                    code: connecting_code::TRANSPORT_CLOSED,
                    reason: "handshake timeout".to_owned(),
                };
            }
        };
        self.serve(ws).await
    }

    fn abandoned(&self) -> End {
        if self.shutdown {
            End::Shutdown
        } else {
            End::Stop {
                code: disconnected_code::DISCONNECT_CALLED,
                reason: "disconnect called".to_owned(),
            }
        }
    }

    /// Runs `fut` while no socket is open, still serving the handles. `None` when the
    /// application disconnected or dropped the client meanwhile.
    async fn offline<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.shutdown || !self.want_connected {
                return None;
            }
            self.arm_sweep();
            tokio::select! {
                out = &mut fut => return Some(out),
                ctl = self.control.recv() => match ctl {
                    Some(c) => self.on_control(c),
                    None => self.shutdown = true,
                },
                Some(msg) = self.internal_rx.recv() => self.on_internal(msg),
                () = self.sweep.as_mut() => self.on_sweep(Instant::now()),
            }
        }
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Connect { ack } => {
                if !self.want_connected {
                    self.want_connected = true;
                    self.backoff.reset();
                    self.set_connecting(connecting_code::CONNECT_CALLED, "connect called");
                }
                let _ = ack.send(());
            }
            Control::Disconnect { ack } => {
                if self.state() == ConnectionState::Disconnected {
                    for (_, tx) in self.waiting.drain(..) {
                        let _ = tx.send(Err(ClientError::Closed));
                    }
                    let _ = ack.send(());
                    return;
                }
                self.want_connected = false;
                self.disconnect_acks.push(ack);
                if self.session.is_some() {
                    self.end = Some(End::Stop {
                        code: disconnected_code::DISCONNECT_CALLED,
                        reason: "disconnect called".to_owned(),
                    });
                }
            }
            Control::Interrupt { offline, ack } => {
                if self.session.is_some() && self.end.is_none() {
                    self.end = Some(End::Interrupted { offline });
                }
                let _ = ack.send(());
            }
            Control::Call { command, reply } => {
                if self.authenticated() {
                    self.send_call(command, reply);
                } else {
                    if !self.want_connected {
                        // No sweep runs while idle, so abandoned calls are dropped here.
                        self.waiting.retain(|(_, tx)| !tx.is_closed());
                    }
                    self.waiting.push_back((command, reply));
                }
            }
            Control::Subscribe {
                channel,
                key,
                options,
                events,
                ack,
            } => self.on_subscribe_control(channel, key, options, events, ack),
            Control::Unsubscribe {
                channel,
                key,
                reply,
            } => self.on_unsubscribe_control(&channel, key, reply),
        }
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::ConnToken { generation, result } => {
                self.on_connection_token(generation, result)
            }
            Internal::SubToken {
                channel,
                key,
                purpose,
                result,
            } => self.on_sub_token(&channel, key, purpose, result),
        }
    }

    /// When the next housekeeping pass is due: soon while something may need it (a
    /// command waiting for its reply, a subscription to retry or to resume after its
    /// consumer caught up), otherwise at the idle pace.
    fn next_sweep(&self) -> Instant {
        let authenticated = self.authenticated();
        let busy =
            !self.calls.is_empty() || self.subs.values().any(|e| e.needs_sweep(authenticated));
        let every = if busy { SWEEP_EVERY } else { IDLE_SWEEP_EVERY };
        self.last_sweep + every
    }

    /// Sets the housekeeping timer to [`Task::next_sweep`]; called before each wait.
    fn arm_sweep(&mut self) {
        let at = self.next_sweep();
        if at != self.sweep.deadline() {
            self.sweep.as_mut().reset(at);
        }
    }

    fn on_sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.waiting.retain(|(_, tx)| !tx.is_closed());
        for stuck in self.calls.sweep(now) {
            tracing::debug!(?stuck, "command got no reply in time");
            if self.end.is_none() {
                self.emit_error(ClientError::Timeout);
                self.end = Some(End::Reconnect {
                    code: connecting_code::COMMAND_TIMEOUT,
                    reason: "command timeout".to_owned(),
                });
            }
        }
        self.sweep_subs(now);
    }

    /// Cleans up after a socket closed or a connect attempt failed.
    fn after_socket(&mut self) {
        self.session = None;
        self.end = None;
        self.calls.fail_all();
        // Unsent bytes belong to the dead socket; their waiters were just failed.
        let _ = self.out.take();
        self.reset_subs();
        self.status.send_modify(|s| s.client_id = None);
    }

    fn state(&self) -> ConnectionState {
        self.status.borrow().state
    }

    fn authenticated(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.authenticated)
    }

    fn set_connecting(&mut self, code: u16, reason: &str) {
        if self.state() == ConnectionState::Connecting {
            return;
        }
        self.status.send_modify(|s| {
            s.state = ConnectionState::Connecting;
            s.client_id = None;
        });
        let _ = self.events.send(ConnectionEvent::Connecting {
            code,
            reason: reason.to_owned(),
        });
    }

    fn set_connected(&mut self, client_id: String) {
        self.status.send_modify(|s| {
            s.state = ConnectionState::Connected;
            s.client_id = Some(client_id.clone());
        });
        let _ = self.events.send(ConnectionEvent::Connected { client_id });
    }

    /// Becomes disconnected for good (until the next `connect()`).
    fn stop(&mut self, code: u16, reason: &str) {
        self.want_connected = false;
        for (_, tx) in self.waiting.drain(..) {
            let _ = tx.send(Err(ClientError::Closed));
        }
        if self.state() != ConnectionState::Disconnected {
            self.status.send_modify(|s| {
                s.state = ConnectionState::Disconnected;
                s.client_id = None;
                s.last_close = Some((code, reason.to_owned()));
            });
            let _ = self.events.send(ConnectionEvent::Disconnected {
                code,
                reason: reason.to_owned(),
            });
        }
        for ack in self.disconnect_acks.drain(..) {
            let _ = ack.send(());
        }
    }

    fn finish(&mut self) {
        self.stop(disconnected_code::CLIENT_DROPPED, "client dropped");
        self.subs.clear();
    }

    fn emit_error(&self, e: ClientError) {
        let _ = self.events.send(ConnectionEvent::Error(Arc::new(e)));
    }

    /// Hands a token refresher call to a helper task; the result comes back as an
    /// [`Internal`] message built by `wrap`.
    fn spawn_token_fetch(
        &self,
        refresher: TokenRefresher,
        wrap: impl FnOnce(Result<String, ClientError>) -> Internal + Send + 'static,
    ) {
        let tx = self.internal_tx.clone();
        let timeout = self.cfg.timeout;
        tokio::spawn(async move {
            let result = fetch_token(refresher, timeout).await;
            let _ = tx.send(wrap(result));
        });
    }
}

async fn fetch_token(refresher: TokenRefresher, timeout: Duration) -> Result<String, ClientError> {
    match tokio::time::timeout(timeout, refresher.call()).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(e)) => Err(ClientError::Token(e)),
        Err(elapsed) => Err(ClientError::Token(Box::new(elapsed))),
    }
}

/// When to refresh a token that expires in `ttl` seconds: a tenth early, so a slow
/// refresher or a busy server still makes it in time.
pub(crate) fn refresh_delay(ttl: u32) -> Duration {
    Duration::from_millis(u64::from(ttl) * 900)
}

/// A random delay in 5–10 s before retrying a failed token refresh, spread so that many
/// clients of a flaky auth backend do not retry together.
pub(crate) fn refresh_retry_delay() -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::rng().random_range(5_000..=10_000))
}
