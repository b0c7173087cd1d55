//! Test support: nodes started in-process, connections driven over a pair of channels,
//! a broker that records what the node asks of it, and signed test tokens.
//!
//! Compiled for this crate's unit tests only: everything here reaches into the crate
//! (`Node`, the connection task), and a feature-gated public module would make that
//! reach part of the library's API.

use crate::config::{Config, NamespaceConfig, Secret};
use crate::node::Node;
use crate::server::{StartError, build, serve};
use async_trait::async_trait;
use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{Sink, Stream};
use herald_broker::memory::MemoryBroker;
use herald_broker::{
    Broker, BrokerContext, BrokerError, BrokerHealth, HistoryPage, HistoryQuery, JoinLeave,
    PublishOutcome, PublishRequest,
};
use herald_protocol::ClientInfo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, PollSendError, PollSender};

/// The HMAC secret of [`config`] and [`sign`].
pub(crate) const SECRET: &str = "test-secret-0123456789abcdef0123";

/// A configuration for tests: anonymous clients allowed, HMAC tokens signed with
/// [`SECRET`], and every channel without a namespace open with history.
pub(crate) fn config() -> Config {
    let mut config = Config::default();
    config.client.allow_anonymous = true;
    config.token.hmac_secret = Secret(SECRET.into());
    config.api.insecure = true;
    config.namespaces.insert(
        crate::config::DEFAULT_NAMESPACE.into(),
        NamespaceConfig::permissive(),
    );
    config
}

/// A connection or subscription token with these claims, signed with [`SECRET`].
pub(crate) fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a test token encodes")
}

/// A node built with `broker` but not serving: its connections come from
/// [`connect`], with no socket at all.
pub(crate) async fn node(config: Config, broker: Arc<dyn Broker>) -> Arc<Node> {
    build(config, broker, CancellationToken::new())
        .await
        .expect("the test node builds")
}

/// A node with the memory broker, serving on `127.0.0.1:0` until [`TestNode::stop`].
pub(crate) struct TestNode {
    /// The node.
    pub(crate) node: Arc<Node>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    served: JoinHandle<Result<(), StartError>>,
}

impl TestNode {
    /// Builds a node on the memory broker and serves it on an ephemeral local port.
    pub(crate) async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("an ephemeral port");
        let addr = listener.local_addr().expect("the bound address");
        let shutdown = CancellationToken::new();
        let node = build(config, Arc::new(MemoryBroker::new()), shutdown.clone())
            .await
            .expect("the test node builds");
        let served = tokio::spawn(serve(node.clone(), listener));
        Self {
            node,
            addr,
            shutdown,
            served,
        }
    }

    /// Starts the node's shutdown (drain included) and waits until `serve` returns.
    pub(crate) async fn stop(self) -> Result<(), StartError> {
        self.shutdown.cancel();
        self.served.await.expect("serve does not panic")
    }
}

/// One connection of `node`, driven over channels: the connection task runs on the
/// node's tracker exactly as an upgraded WebSocket does.
pub(crate) fn connect(node: &Arc<Node>) -> TestClient {
    connect_with(node, herald_protocol::Encoding::Json)
}

/// One connection of `node` in `encoding`, driven over channels.
pub(crate) fn connect_with(node: &Arc<Node>, encoding: herald_protocol::Encoding) -> TestClient {
    let (to_conn, incoming) = mpsc::channel(64);
    // Bounded like a socket's buffers: a client that stops reading backs up the writer.
    let (outgoing, from_conn) = mpsc::channel(64);
    let socket = ChannelSocket {
        incoming,
        outgoing: PollSender::new(outgoing),
    };
    node.tasks.spawn(crate::connection::serve(
        socket,
        node.clone(),
        crate::transport::Transport::websocket(encoding),
    ));
    TestClient {
        to_conn,
        from_conn,
        next_id: 1,
    }
}

/// The connection's end of the channel pair.
struct ChannelSocket {
    incoming: mpsc::Receiver<Result<Message, axum::Error>>,
    outgoing: PollSender<Message>,
}

impl Stream for ChannelSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for ChannelSocket {
    type Error = PollSendError<Message>;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.outgoing).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing).poll_close(cx)
    }
}

/// What the connection wrote, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Received {
    /// A text frame: its JSON objects, in order.
    Text(Vec<Value>),
    /// A close frame: code and reason.
    Close(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

/// The client's end of the channel pair.
pub(crate) struct TestClient {
    to_conn: mpsc::Sender<Result<Message, axum::Error>>,
    from_conn: mpsc::Receiver<Message>,
    next_id: u32,
}

impl TestClient {
    /// Sends one text frame.
    pub(crate) async fn send(&self, text: &str) {
        self.to_conn
            .send(Ok(Message::Text(Utf8Bytes::from(text))))
            .await
            .expect("the connection reads");
    }

    /// Sends one binary frame.
    pub(crate) async fn send_binary(&self, bytes: &[u8]) {
        self.to_conn
            .send(Ok(Message::Binary(bytes.to_vec().into())))
            .await
            .expect("the connection reads");
    }

    /// The next message the connection wrote, as it is (`None` once it ended).
    pub(crate) async fn recv_message(&mut self) -> Option<Message> {
        self.from_conn.recv().await
    }

    /// Sends a command and returns its id.
    pub(crate) async fn command(&mut self, method: &str, params: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "id": id, method: params }).to_string())
            .await;
        id
    }

    /// Sends a pong (a bare `{}`).
    pub(crate) async fn pong(&self) {
        self.send("{}").await;
    }

    /// The next thing the connection wrote; waits as long as it takes (under paused
    /// time, the clock jumps to the connection's next timer).
    pub(crate) async fn recv(&mut self) -> Received {
        match self.from_conn.recv().await {
            None => Received::Gone,
            Some(Message::Text(text)) => Received::Text(
                text.as_str()
                    .lines()
                    .map(|line| serde_json::from_str(line).expect("the server writes JSON"))
                    .collect(),
            ),
            Some(Message::Close(Some(frame))) => {
                Received::Close(frame.code, frame.reason.to_string())
            }
            Some(other) => panic!("unexpected message {other:?}"),
        }
    }

    /// The next text frame's objects; anything else fails the test.
    pub(crate) async fn frame(&mut self) -> Vec<Value> {
        match self.recv().await {
            Received::Text(values) => values,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The reply to command `id`, skipping pushes that come first.
    pub(crate) async fn reply(&mut self, id: u32) -> Value {
        loop {
            if let Some(reply) = self
                .frame()
                .await
                .into_iter()
                .find(|v| v["id"].as_u64() == Some(u64::from(id)))
            {
                return reply;
            }
        }
    }

    /// Connects with `token` ("" = anonymous) and returns the connect result.
    pub(crate) async fn connect(&mut self, token: &str) -> Value {
        let id = self.command("connect", json!({ "token": token })).await;
        let reply = self.reply(id).await;
        assert!(reply.get("error").is_none(), "connect refused: {reply}");
        reply["connect"].clone()
    }

    /// Subscribes to `channel` and returns the subscribe result.
    pub(crate) async fn subscribe(&mut self, channel: &str) -> Value {
        let id = self
            .command("subscribe", json!({ "channel": channel }))
            .await;
        let reply = self.reply(id).await;
        assert!(reply.get("error").is_none(), "subscribe refused: {reply}");
        reply["subscribe"].clone()
    }

    /// Whether nothing arrives for `wait` (the clock moves on by `wait`).
    pub(crate) async fn quiet_for(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.from_conn.recv())
            .await
            .is_err()
    }
}

/// A call the node made to its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerCall {
    /// `subscribe` of these channels.
    Subscribe(Vec<String>),
    /// `unsubscribe` of these channels.
    Unsubscribe(Vec<String>),
}

/// The memory broker, recording when the node subscribes and unsubscribes.
pub(crate) struct RecordingBroker {
    inner: MemoryBroker,
    calls: Mutex<Vec<(Instant, BrokerCall)>>,
}

impl RecordingBroker {
    /// A recording memory broker.
    pub(crate) fn new() -> Self {
        Self {
            inner: MemoryBroker::new(),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The (un)subscribe calls so far, with how long after `since` each came.
    pub(crate) fn calls_since(&self, since: Instant) -> Vec<(Duration, BrokerCall)> {
        self.calls
            .lock()
            .iter()
            .map(|(at, call)| (at.saturating_duration_since(since), call.clone()))
            .collect()
    }

    fn record(&self, call: BrokerCall) {
        self.calls.lock().push((Instant::now(), call));
    }
}

#[async_trait]
impl Broker for RecordingBroker {
    async fn start(&self, context: BrokerContext) -> Result<(), BrokerError> {
        self.inner.start(context).await
    }

    async fn send_to_node(&self, node: &str, message: bytes::Bytes) -> Result<bool, BrokerError> {
        self.inner.send_to_node(node, message).await
    }

    async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError> {
        self.inner.publish(channel, request).await
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.record(BrokerCall::Subscribe(channels.to_vec()));
        self.inner.subscribe(channels).await
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.record(BrokerCall::Unsubscribe(channels.to_vec()));
        self.inner.unsubscribe(channels).await
    }

    async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        self.inner.history(channel, query).await
    }

    async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        self.inner.remove_history(channel).await
    }

    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.inner.add_presence(channel, info, ttl).await
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        self.inner.remove_presence(channel, client).await
    }

    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        self.inner.presence(channel).await
    }

    async fn publish_join_leave(&self, channel: &str, event: JoinLeave) -> Result<(), BrokerError> {
        self.inner.publish_join_leave(channel, event).await
    }

    async fn take_user_publish(
        &self,
        user: &str,
        quota: herald_broker::Quota,
    ) -> Result<bool, BrokerError> {
        self.inner.take_user_publish(user, quota).await
    }

    async fn admit_connection(
        &self,
        user: &str,
        client: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.inner.admit_connection(user, client, limit, ttl).await
    }

    async fn release_connection(&self, user: &str, client: &str) -> Result<(), BrokerError> {
        self.inner.release_connection(user, client).await
    }

    async fn report_node(
        &self,
        node: &str,
        report: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.inner.report_node(node, report, ttl).await
    }

    async fn nodes(&self) -> Result<Vec<bytes::Bytes>, BrokerError> {
        self.inner.nodes().await
    }

    async fn forget_node(&self, node: &str) -> Result<(), BrokerError> {
        self.inner.forget_node(node).await
    }

    fn health(&self) -> BrokerHealth {
        self.inner.health()
    }
}
