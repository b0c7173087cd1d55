//! Assembly and lifecycle of a node: router, serving, and graceful drain on shutdown.

use crate::admission::Admission;
use crate::auth::{KeyError, TokenVerifier};
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::node::{Lifecycle, Node};
use crate::transport::websocket::Upgrade;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures_util::FutureExt;
use herald_broker::{Broker, BrokerContext, BrokerError, BrokerHandler, StoredPublication};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A token key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A secret file (`token.hmac_secret_file`, `api.key_file`) could not be read.
    #[error(transparent)]
    SecretFile(#[from] crate::config::SecretFileError),
    /// The broker did not start.
    #[error("the broker did not start")]
    Broker(#[source] BrokerError),
    /// Metrics could not be registered.
    #[error("metrics could not be registered")]
    Metrics(#[source] prometheus::Error),
    /// An admission setting (allowed origins, trusted proxies) is not valid.
    #[error("invalid admission settings")]
    Admission(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The proxy hooks' client could not be set up.
    #[error("invalid proxy settings")]
    Proxy(#[source] Box<crate::proxy::ProxySetupError>),
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
}

// The broker holds its handler for its whole life; weak links avoid the cycles
// broker → hub → broker and broker → emulation → broker.
struct HubLink(
    Weak<Hub>,
    Weak<crate::transport::emulation::Emulation>,
    Weak<crate::cluster::Cluster>,
);

impl BrokerHandler for HubLink {
    fn on_publication(&self, channel: &str, publication: Arc<StoredPublication>) {
        if let Some(hub) = self.0.upgrade() {
            hub.on_publication(channel, publication);
        }
    }

    fn on_join_leave(&self, channel: &str, event: herald_broker::JoinLeave) {
        if let Some(hub) = self.0.upgrade() {
            hub.on_join_leave(channel, event);
        }
    }

    fn on_insufficient_state(&self, channel: &str) {
        if let Some(hub) = self.0.upgrade() {
            hub.on_insufficient_state(channel);
        }
    }

    fn on_node_message(&self, message: bytes::Bytes) {
        if let Some(cluster) = self.2.upgrade()
            && cluster.on_node_message(&message)
        {
            return;
        }
        if let Some(emulation) = self.1.upgrade() {
            emulation.on_node_message(&message);
        }
    }
}

/// Runs `round` every `period`, the first one period after the start, until `stop`, or
/// until `round` finds the node gone (`None`). A round that overruns delays the next.
async fn periodically<F, Fut>(period: Duration, stop: CancellationToken, mut round: F)
where
    F: FnMut() -> Option<Fut>,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(work) = round() else {
            return;
        };
        work.await;
    }
}

/// Reports the node to the cluster at once and every report interval until `stop`; the
/// node removes its report with `Cluster::leave` before its broker stops.
async fn report_node(node: Weak<Node>, stop: CancellationToken) {
    if let Some(node) = node.upgrade() {
        node.cluster.publish_report(&node).await;
    }
    periodically(crate::cluster::REPORT_INTERVAL, stop, || {
        let node = node.upgrade()?;
        Some(async move { node.cluster.publish_report(&node).await })
    })
    .await;
}

/// Keeps this node's presence entries alive, so that entries of a node that died expire
/// while live ones never do.
async fn refresh_presence(
    hub: Weak<Hub>,
    broker: Arc<dyn Broker>,
    ttl: Duration,
    stop: CancellationToken,
) {
    periodically(ttl / 3, stop, || {
        let entries = hub.upgrade()?.presence_entries();
        let broker = broker.clone();
        Some(async move {
            for chunk in entries.chunks(64) {
                let refreshes = chunk
                    .iter()
                    .map(|(channel, info)| broker.add_presence(channel, info, ttl));
                for result in futures_util::future::join_all(refreshes).await {
                    if let Err(e) = result {
                        tracing::warn!(error = %herald_broker::Chain(&e), "presence refresh failed");
                    }
                }
            }
        })
    })
    .await;
}

/// Keeps the per-address buckets to the addresses seen within one refill time.
async fn sweep_admission(admission: Weak<Admission>, stop: CancellationToken) {
    periodically(crate::admission::SWEEP_EVERY, stop, || {
        admission.upgrade()?.sweep();
        Some(std::future::ready(()))
    })
    .await;
}

/// Keeps the per-user connection slots of this node's sessions alive on the presence
/// cadence, so that the slots of a node that died expire while live ones never do.
async fn refresh_user_connections(
    hub: Weak<Hub>,
    broker: Arc<dyn Broker>,
    limit: u32,
    ttl: Duration,
    stop: CancellationToken,
) {
    periodically(ttl / 3, stop, || {
        let connections = hub.upgrade()?.all_connections();
        let broker = broker.clone();
        Some(async move {
            let mut failed = 0usize;
            for chunk in connections.chunks(64) {
                let refreshes = chunk
                    .iter()
                    .filter(|c| !c.user.is_empty())
                    .map(|c| broker.admit_connection(&c.user, &c.client, limit, ttl));
                // A session over the limit here was let through while the broker failed:
                // it stays (refusing a live client later would be a surprise), and has no
                // slot.
                for result in futures_util::future::join_all(refreshes).await {
                    failed += usize::from(result.is_err());
                }
            }
            if failed > 0 {
                tracing::warn!(failed, "connection slot refresh failed");
            }
        })
    })
    .await;
}

/// Builds a node: loads keys, starts the broker, wires the hub.
pub async fn build(
    config: Config,
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
) -> Result<Arc<Node>, StartError> {
    let mut config = config;
    config.load_secret_files()?;
    let verifier = TokenVerifier::from_config(&config.token)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    let admission = Arc::new(
        Admission::new(&config.client, metrics.admission.clone())
            .map_err(|e| StartError::Admission(Box::new(e)))?,
    );
    let proxy = Arc::new(
        crate::proxy::Proxy::new(&config.proxy, metrics.registry())
            .map_err(|e| StartError::Proxy(Box::new(e)))?,
    );
    let lifecycle = Lifecycle::new(shutdown);
    if let Some(jwks) = verifier.jwks() {
        metrics
            .registry()
            .register(Box::new(jwks.fetch_counter().clone()))
            .map_err(StartError::Metrics)?;
        // The node starts whether or not the first fetch works: until it does, tokens
        // that need the key set get a temporary error, which the SDKs retry.
        lifecycle
            .background
            .spawn(jwks.clone().run(lifecycle.background_stop.clone()));
    }
    let hub = Arc::new(Hub::new(
        broker.clone(),
        metrics.clone(),
        config.client.channel_linger,
        lifecycle.background.clone(),
        lifecycle.background_stop.clone(),
    ));
    let uid = uuid::Uuid::new_v4().to_string();
    let emulation = Arc::new(crate::transport::emulation::Emulation::new(
        uid.clone(),
        broker.clone(),
    ));
    let cluster = Arc::new(crate::cluster::Cluster::new(
        uid.clone(),
        broker.clone(),
        hub.clone(),
    ));
    broker
        .start(BrokerContext {
            handler: Arc::new(HubLink(
                Arc::downgrade(&hub),
                Arc::downgrade(&emulation),
                Arc::downgrade(&cluster),
            )),
            shutdown: lifecycle.background_stop.clone(),
            tasks: lifecycle.background.clone(),
            registry: metrics.registry().clone(),
            node: uid.clone(),
        })
        .await
        .map_err(StartError::Broker)?;
    metrics.ready.set(1);
    lifecycle.background.spawn(refresh_presence(
        Arc::downgrade(&hub),
        broker.clone(),
        config.client.presence_ttl,
        lifecycle.background_stop.clone(),
    ));
    lifecycle.background.spawn(sweep_admission(
        Arc::downgrade(&admission),
        lifecycle.background_stop.clone(),
    ));
    let user_connections = config.client.rate_limits.user_connections;
    if user_connections > 0 {
        lifecycle.background.spawn(refresh_user_connections(
            Arc::downgrade(&hub),
            broker.clone(),
            user_connections,
            config.client.presence_ttl,
            lifecycle.background_stop.clone(),
        ));
    }
    let node = Arc::new(Node::new(
        Arc::new(config),
        verifier,
        broker,
        crate::node::Parts {
            hub,
            emulation,
            uid,
            proxy,
            cluster,
        },
        metrics,
        admission,
        lifecycle,
    ));
    node.background.spawn(report_node(
        Arc::downgrade(&node),
        node.background_stop.clone(),
    ));
    Ok(node)
}

/// The HTTP routes of a node.
pub fn router(node: Arc<Node>) -> Router {
    // The API's CORS answers and Origin check wrap only the API: probes and metrics are
    // not for browsers, and the WebSocket upgrade checks origins itself.
    let api = Router::new()
        .route(
            "/api",
            post(crate::api::pipeline_handler).options(crate::api::preflight),
        )
        .route(
            "/api/{method}",
            post(crate::api::method_handler).options(crate::api::preflight),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            crate::api::cors,
        ));
    let transports = {
        use crate::transport::{cors, emulation, http};
        Router::new()
            .route(
                "/connection/http_stream",
                post(http::http_stream).options(cors::preflight),
            )
            .route(
                "/connection/sse",
                get(http::sse).post(http::sse).options(cors::preflight),
            )
            .route(
                "/emulation",
                post(emulation::handler).options(cors::preflight),
            )
            .route("/connection/uni_websocket", get(http::uni_websocket))
            .route(
                "/connection/uni_http_stream",
                post(http::uni_http_stream).options(cors::preflight),
            )
            .route(
                "/connection/uni_sse",
                get(http::uni_sse)
                    .post(http::uni_sse)
                    .options(cors::preflight),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                node.clone(),
                cors::cors,
            ))
    };
    Router::new()
        .route("/connection/websocket", get(websocket))
        .merge(transports)
        .route("/", get(crate::home::page))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(crate::admin::routes())
        .with_state(node)
}

/// The TCP peer of a request: set when served by [`serve`], absent for a router driven
/// in-process.
pub(crate) fn peer(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn websocket(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    // Not an upgrade at all: refused as such before anything is counted.
    let upgrade = match Upgrade::from_parts(&mut parts, &node).await {
        Ok(u) => u,
        Err(refusal) => return refusal,
    };
    if node.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let admission = &node.admission;
    let ip = peer(&parts).map(|p| admission.client_ip(p, &parts.headers));
    if let Err(refusal) = admission.check_origin(&parts.headers, ip) {
        return refusal.into_response();
    }
    let permit = match admission.admit_socket(ip) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let (upgrade, protobuf) = upgrade.with_protobuf();
    let encoding = if protobuf || protobuf_query(parts.uri.query()) {
        herald_protocol::Encoding::Protobuf
    } else {
        herald_protocol::Encoding::Json
    };
    let forwarded = node.proxy.forwarded(&parts.headers);
    let tracker_token = node.tasks.token();
    let client = node.config.client.clone();
    let metrics = node.metrics.clone();
    upgrade.accept(&client, &metrics, move |socket| {
        let mut transport = crate::transport::Transport::websocket(encoding);
        transport.forwarded = forwarded;
        // The permit and the tracker's token last as long as the connection.
        crate::connection::serve(socket, node, transport).map(move |()| {
            drop(permit);
            drop(tracker_token);
        })
    })
}

/// Whether the query asks for the Protobuf encoding (`cf_protocol=protobuf`, or
/// `format=protobuf`), for clients that cannot offer a subprotocol.
fn protobuf_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "cf_protocol=protobuf" | "format=protobuf"))
    })
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    match node.ready() {
        (true, _) => "ready".into_response(),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics.render(),
    )
        .into_response()
}

/// The listen backlog asked for. The kernel caps it at `net.core.somaxconn` (4096 by
/// default on current kernels). Tokio's own `TcpListener::bind` asks for 1024, which a
/// reconnect storm (every client of a drained or restarted node arriving within a
/// second) overflows: the kernel then drops SYNs, and the unlucky clients wait out
/// TCP's retransmission backoff, 1, 3, 7, 15 s and longer, before they are even seen.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the client listener with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted node can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `node` on `listener` until `node.shutdown` is cancelled, then drains: readiness
/// turns false, no new sockets are accepted, clients are closed with 3001 spread over
/// the drain window (so they reconnect elsewhere with their offsets), and connection
/// tasks are awaited up to the shutdown timeout.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> Result<(), StartError> {
    let send_buffer = node.config.client.socket_send_buffer_bytes;
    let listener = listener.tap_io(move |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
        // A bounded kernel send buffer keeps a stalled client's backlog in its queue,
        // where it is counted and cut off (3008), rather than in megabytes of kernel
        // memory.
        if send_buffer > 0
            && let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer)
        {
            tracing::debug!(error = %e, "SO_SNDBUF failed");
        }
    });
    let shutdown = node.shutdown.clone();
    // The listener stays open through the drain, so load balancers and probes see
    // `/readyz` turn 503 (and new sockets refused) instead of connection errors.
    let stop_accepting = CancellationToken::new();
    let app = router(node.clone());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let serving = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    node.start_draining();
    tracing::info!("draining");
    drain(&node).await;
    stop_accepting.cancel();
    node.tasks.close();
    let timeout = node.config.shutdown.timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    if tokio::time::timeout_at(deadline, node.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = node.tasks.len(),
            "shutdown timeout: connections still open"
        );
    }
    // The connections are gone (or given up on): the node leaves the cluster's list
    // while its broker still works, then the broker's loops, presence refresh and
    // channel linger stop, within what is left of the same timeout.
    let leave_by = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
    if tokio::time::timeout_at(leave_by, node.cluster.leave())
        .await
        .is_err()
    {
        tracing::debug!("the node's report was not removed in time; it expires");
    }
    node.background_stop.cancel();
    node.background.close();
    if tokio::time::timeout_at(deadline, node.background.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = node.background.len(),
            "shutdown timeout: background tasks still running"
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), serving).await {
        Ok(Ok(Err(e))) => return Err(StartError::Serve(e)),
        Ok(_) => {}
        Err(_) => tracing::warn!("HTTP server did not stop in time"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn drain(node: &Node) {
    let conns = node.hub.all_connections();
    if conns.is_empty() {
        return;
    }
    let window = node.config.shutdown.drain_window;
    let start = tokio::time::Instant::now();
    let n = conns.len() as u32;
    for (i, conn) in conns.into_iter().enumerate() {
        let at = start + window.mul_f64(f64::from(i as u32) / f64::from(n));
        tokio::time::sleep_until(at).await;
        conn.closer.close(herald_protocol::DisconnectCode::Shutdown);
    }
}

/// Builds and serves a node until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    broker: Arc<dyn Broker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let node = build(config, broker, shutdown).await?;
    serve(node, listener).await
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, Received, TestNode};
    use futures_util::{SinkExt, StreamExt};
    use herald_protocol::DisconnectCode;
    use std::time::Duration;
    use tokio::time::Instant;
    use tokio_tungstenite::tungstenite::Message;

    #[tokio::test(start_paused = true)]
    async fn the_drain_spreads_closes_over_its_window() {
        let mut config = testing::config();
        config.client.ping_interval = Duration::from_secs(3600);
        config.shutdown.drain_window = Duration::from_secs(8);
        let node = TestNode::start(config).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut client = testing::connect(&node.node);
            client.connect("").await;
            clients.push(client);
        }
        // A socket that never sent `connect` is not drained: it just goes.
        let mut stranger = testing::connect(&node.node);
        let start = Instant::now();
        let stopped = tokio::spawn(node.stop());

        let shutdown = Received::Close(
            DisconnectCode::Shutdown.code(),
            DisconnectCode::Shutdown.reason().to_owned(),
        );
        // Each client waits for its close on its own, so each close is timed when it comes.
        let waits: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    let received = client.recv().await;
                    (received, start.elapsed())
                })
            })
            .collect();
        assert_eq!(stranger.recv().await, shutdown);
        assert_eq!(start.elapsed(), Duration::ZERO);
        let mut closed_after = Vec::new();
        for wait in waits {
            let (received, after) = wait.await.expect("the client task ends");
            assert_eq!(received, shutdown);
            closed_after.push(after);
        }
        closed_after.sort();
        assert_eq!(closed_after, [0, 2, 4, 6].map(Duration::from_secs));
        stopped
            .await
            .expect("stop does not panic")
            .expect("the node stops cleanly");
    }

    #[test]
    fn the_query_can_ask_for_protobuf() {
        use super::protobuf_query;
        assert!(protobuf_query(Some("cf_protocol=protobuf")));
        assert!(protobuf_query(Some("a=1&format=protobuf")));
        assert!(!protobuf_query(Some("cf_protocol=json")));
        assert!(!protobuf_query(Some("xformat=protobuf")));
        assert!(!protobuf_query(None));
    }

    #[tokio::test]
    async fn serves_websocket_clients_in_process() {
        let node = TestNode::start(testing::config()).await;
        let url = format!("ws://{}/connection/websocket", node.addr);
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the node accepts a WebSocket");
        socket
            .send(Message::text(r#"{"id":1,"connect":{}}"#))
            .await
            .expect("sent");
        let reply = socket.next().await.expect("a reply").expect("readable");
        let reply: serde_json::Value =
            serde_json::from_str(reply.to_text().expect("text")).expect("JSON");
        assert_eq!(reply["id"], 1);
        assert!(reply["connect"]["client"].is_string(), "{reply}");

        let stopped = tokio::spawn(node.stop());
        match socket.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), DisconnectCode::Shutdown.code());
            }
            other => panic!("expected a shutdown close, got {other:?}"),
        }
        drop(socket);
        stopped
            .await
            .expect("stop does not panic")
            .expect("the node stops cleanly");
    }
}
