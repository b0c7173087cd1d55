//! The application's handle on a connection and its builder: lifecycle, state, events,
//! subscriptions and calls.

use crate::config::{Config, SubscribeOptions, TokenRefresher};
use crate::error::{BoxError, ClientError, ConfigError};
use crate::event::{ConnectionEvent, ConnectionState};
use crate::subscription::Subscription;
use crate::task::{Control, Status, Task};
use herald_protocol::{
    Command, HistoryRequest, HistoryResult, PresenceRequest, PresenceResult, PresenceStatsRequest,
    PresenceStatsResult, PublishRequest, RawJson, Reply, RpcRequest, RpcResult, StreamPosition,
};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How many connection events a slow [`Client::events`] receiver may fall behind before
/// it skips ahead (it then gets `RecvError::Lagged`).
const EVENT_BACKLOG: usize = 256;

/// A connection to a Herald (or Centrifugo) server. Cheap to clone; all clones share one
/// connection, run by a background task that reconnects and resubscribes by itself.
///
/// The task ends when every clone and every [`Subscription`] has been dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Unbounded because every message is either a call whose caller awaits its reply (so
    // the depth is bounded by the application's own concurrency) or a one-off lifecycle
    // request; and dropping a `Subscription` must be able to send without awaiting.
    control: mpsc::UnboundedSender<Control>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<ConnectionEvent>,
    timeout: Duration,
    subscription_buffer: usize,
    next_key: AtomicU64,
}

/// Options of [`Client::history`]; the default reads only the stream position.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// At most this many publications; 0 = only the position, negative = all.
    pub limit: i32,
    /// Only publications after this position.
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

impl Client {
    /// Starts configuring a client for a WebSocket endpoint such as
    /// `ws://127.0.0.1:8000/connection/websocket`.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    pub(crate) fn start(config: Config, runtime: &tokio::runtime::Handle) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Status {
            state: ConnectionState::Disconnected,
            client_id: None,
            last_close: None,
        });
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let inner = Inner {
            control: control_tx,
            status: status_rx,
            events: events.clone(),
            timeout: config.timeout,
            subscription_buffer: config.subscription_buffer,
            next_key: AtomicU64::new(1),
        };
        let task = Task::new(config, control_rx, status_tx, events);
        runtime.spawn(task.run());
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Starts connecting (if not already) and waits until connected, up to the client's
    /// timeout. On [`ClientError::Timeout`] the client keeps trying in the background;
    /// [`ClientError::Disconnected`] means the server refused for good (e.g. invalid token).
    pub async fn connect(&self) -> Result<(), ClientError> {
        let (ack, acked) = oneshot::channel();
        self.send(Control::Connect { ack })?;
        acked.await.map_err(|_| ClientError::Closed)?;
        let mut status = self.inner.status.clone();
        let wait = async {
            loop {
                {
                    let s = status.borrow_and_update();
                    match s.state {
                        ConnectionState::Connected => return Ok(()),
                        ConnectionState::Disconnected => {
                            return Err(match &s.last_close {
                                Some((code, reason)) => ClientError::Disconnected {
                                    code: *code,
                                    reason: reason.clone(),
                                },
                                None => ClientError::Closed,
                            });
                        }
                        ConnectionState::Connecting => {}
                    }
                }
                status.changed().await.map_err(|_| ClientError::Closed)?;
            }
        };
        tokio::time::timeout(self.inner.timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Closes the connection cleanly and stops reconnecting. Calls waiting for the
    /// connection fail with [`ClientError::Closed`]; calls in flight with
    /// [`ClientError::Interrupted`]. Subscriptions stay registered and
    /// resume, with recovery, on the next [`connect`](Self::connect).
    pub async fn disconnect(&self) {
        let (ack, done) = oneshot::channel();
        if self.send(Control::Disconnect { ack }).is_ok() {
            let _ = done.await;
        }
    }

    /// Drops the connection abruptly, without a close handshake, as a network failure
    /// would, and connects again after `offline` (subscriptions resume with recovery).
    /// Does nothing while not connected. For testing how an application and its server
    /// handle lost connections.
    pub async fn drop_connection(&self, offline: Duration) {
        let (ack, done) = oneshot::channel();
        if self.send(Control::Interrupt { offline, ack }).is_ok() {
            let _ = done.await;
        }
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.status.borrow().state
    }

    /// The client id the server assigned to the current connection.
    pub fn client_id(&self) -> Option<String> {
        self.inner.status.borrow().client_id.clone()
    }

    /// A receiver of connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    /// Registers a subscription; it is sent to the server as soon as the client is
    /// connected, and again (with recovery) after every reconnect. The first event is
    /// [`SubscriptionEvent::Subscribed`](crate::SubscriptionEvent::Subscribed) or
    /// [`SubscriptionEvent::Error`](crate::SubscriptionEvent::Error).
    ///
    /// Fails with [`ClientError::AlreadySubscribed`] if this client already has a
    /// subscription to the channel.
    pub async fn subscribe(
        &self,
        channel: impl Into<String>,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let channel = channel.into();
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events_rx) = mpsc::channel(self.inner.subscription_buffer);
        let (ack, acked) = oneshot::channel();
        self.send(Control::Subscribe {
            channel: channel.clone(),
            key,
            options,
            events: events_tx,
            ack,
        })?;
        acked.await.map_err(|_| ClientError::Closed)??;
        Ok(Subscription::new(
            channel,
            key,
            events_rx,
            self.inner.control.clone(),
            self.inner.timeout,
        ))
    }

    /// Publishes `data` to a channel (where the namespace allows client publishing).
    pub async fn publish(
        &self,
        channel: impl Into<String>,
        data: RawJson,
    ) -> Result<(), ClientError> {
        self.call(Command {
            publish: Some(PublishRequest {
                channel: channel.into(),
                data: Some(data),
                ..PublishRequest::default()
            }),
            ..Command::default()
        })
        .await
        .map(drop)
    }

    /// Reads a channel's history.
    pub async fn history(
        &self,
        channel: impl Into<String>,
        options: HistoryOptions,
    ) -> Result<HistoryResult, ClientError> {
        let HistoryOptions {
            limit,
            since,
            reverse,
        } = options;
        let reply = self
            .call(Command {
                history: Some(HistoryRequest {
                    channel: channel.into(),
                    limit,
                    since,
                    reverse,
                }),
                ..Command::default()
            })
            .await?;
        Ok(reply.history.unwrap_or_default())
    }

    /// Who is subscribed to a channel, by client id.
    pub async fn presence(
        &self,
        channel: impl Into<String>,
    ) -> Result<PresenceResult, ClientError> {
        let reply = self
            .call(Command {
                presence: Some(PresenceRequest {
                    channel: channel.into(),
                }),
                ..Command::default()
            })
            .await?;
        Ok(reply.presence.unwrap_or_default())
    }

    /// How many clients and distinct users are subscribed to a channel.
    pub async fn presence_stats(
        &self,
        channel: impl Into<String>,
    ) -> Result<PresenceStatsResult, ClientError> {
        let reply = self
            .call(Command {
                presence_stats: Some(PresenceStatsRequest {
                    channel: channel.into(),
                }),
                ..Command::default()
            })
            .await?;
        Ok(reply.presence_stats.unwrap_or_default())
    }

    /// Calls a server-side RPC method.
    pub async fn rpc(
        &self,
        method: impl Into<String>,
        data: RawJson,
    ) -> Result<RpcResult, ClientError> {
        let reply = self
            .call(Command {
                rpc: Some(RpcRequest {
                    method: method.into(),
                    data: Some(data),
                }),
                ..Command::default()
            })
            .await?;
        Ok(reply.rpc.unwrap_or_default())
    }

    /// Sends one command and waits for its reply. While not connected the command waits
    /// for the connection (it fails with [`ClientError::Closed`] if the client becomes
    /// disconnected meanwhile); the timeout covers both.
    async fn call(&self, command: Command) -> Result<Reply, ClientError> {
        let (reply, replied) = oneshot::channel();
        self.send(Control::Call {
            command: Box::new(command),
            reply,
        })?;
        match tokio::time::timeout(self.inner.timeout, replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    fn send(&self, control: Control) -> Result<(), ClientError> {
        self.inner
            .control
            .send(control)
            .map_err(|_| ClientError::Closed)
    }
}

/// Builds a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    pub(crate) fn new(url: String) -> Self {
        Self {
            config: Config::new(url),
        }
    }

    /// The connection JWT sent in `connect`. Without one (and without a refresher) the
    /// client connects anonymously, which the server may or may not allow.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = token.into();
        self
    }

    /// Fetches a new connection token: before the current one expires (when the
    /// `connect` reply says `expires`), after a `connect` fails with 109 token expired,
    /// and before the first connect if no [`token`](Self::token) was set.
    pub fn token_refresher<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.config.token_refresher = Some(TokenRefresher::new(f));
        self
    }

    /// The client name sent in `connect` (default `herald-rust`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The base of the reconnect backoff window (default 500 ms).
    pub fn min_backoff(mut self, d: Duration) -> Self {
        self.config.min_backoff = d;
        self
    }

    /// The largest reconnect backoff window (default 20 s).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.config.max_backoff = d;
        self
    }

    /// Whether to reconnect after the connection is lost with a reconnect code
    /// (default `true`). With `false` any loss ends in
    /// [`ConnectionState::Disconnected`](crate::ConnectionState::Disconnected).
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.config.reconnect = reconnect;
        self
    }

    /// The timeout of each call (publish, history, ...), of waiting for the connection in
    /// [`Client::connect`], of each protocol command the SDK sends itself, and of each
    /// token refresher call (default 10 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// How many events a subscription buffers for a consumer that reads slowly before the
    /// SDK unsubscribes it and later resubscribes with recovery (default 4096, at least 16).
    pub fn subscription_buffer(mut self, events: usize) -> Self {
        self.config.subscription_buffer = events.max(16);
        self
    }

    /// The local address the connection's socket binds to before connecting (default:
    /// chosen by the operating system). For hosts with several addresses, and for load
    /// generators that spread connections over source addresses.
    pub fn local_address(mut self, ip: IpAddr) -> Self {
        self.config.local_address = Some(ip);
        self
    }

    /// Validates the settings and starts the (idle) connection task. Must be called
    /// inside a tokio runtime. The client does not connect until [`Client::connect`].
    pub fn build(self) -> Result<Client, ClientError> {
        self.config.validate().map_err(ClientError::Config)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ClientError::Config(ConfigError::NoRuntime))?;
        Ok(Client::start(self.config, &runtime))
    }
}
