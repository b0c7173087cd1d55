//! State shared by every connection and the server API of one gateway node.

use crate::admission::Admission;
use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use herald_broker::Broker;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's version, sent in connect replies and `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a node stands in its life: the token that starts its drain, and the token and
/// tracker of its background work, which outlives the drain.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Cancelled when the node begins to shut down (starts the drain).
    pub shutdown: CancellationToken,
    /// Cancelled after the connections are gone.
    pub background_stop: CancellationToken,
    /// The node's background tasks.
    pub background: TaskTracker,
}

impl Lifecycle {
    /// A lifecycle whose drain starts when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            background_stop: CancellationToken::new(),
            background: TaskTracker::new(),
        }
    }
}

/// The parts of a node made before it: its hub, its emulated sessions, and its id in
/// the broker, which they share.
pub(crate) struct Parts {
    /// Local subscriptions.
    pub hub: Arc<Hub>,
    /// Emulated sessions.
    pub emulation: Arc<crate::transport::emulation::Emulation>,
    /// The node's id.
    pub uid: String,
    /// The proxy hooks' client.
    pub proxy: Arc<crate::proxy::Proxy>,
    /// The node's part in the cluster.
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// One gateway node.
pub struct Node {
    /// The validated configuration.
    pub(crate) config: Arc<Config>,
    /// Token verification.
    pub(crate) verifier: TokenVerifier,
    /// The backbone.
    pub(crate) broker: Arc<dyn Broker>,
    /// Local subscriptions.
    pub(crate) hub: Arc<Hub>,
    /// This node's emulated sessions (HTTP-streaming and SSE).
    pub(crate) emulation: Arc<crate::transport::emulation::Emulation>,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Who may connect: origins, addresses, limits.
    pub(crate) admission: Arc<Admission>,
    /// Calls to the application's backend.
    pub(crate) proxy: Arc<crate::proxy::Proxy>,
    /// Reports, surveys and recent disconnects.
    pub(crate) cluster: Arc<crate::cluster::Cluster>,
    /// The admin page's logins and live tails.
    pub(crate) admin: crate::admin::AdminState,
    /// This node's name.
    pub(crate) name: String,
    /// A unique id for this run of the node: its address in the broker.
    pub(crate) uid: String,
    /// When the node started.
    pub(crate) started: Instant,
    /// Cancelled when the node begins to shut down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks every connection task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// Cancelled once the connections are gone: the broker's loops, presence refresh
    /// and channel linger end then (they keep serving connections through the drain).
    pub(crate) background_stop: CancellationToken,
    /// Tracks the node's background tasks (the broker's loops among them), so shutdown
    /// can wait for them too.
    pub(crate) background: TaskTracker,
    draining: AtomicBool,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Assembles a node.
    pub(crate) fn new(
        config: Arc<Config>,
        verifier: TokenVerifier,
        broker: Arc<dyn Broker>,
        parts: Parts,
        metrics: Metrics,
        admission: Arc<Admission>,
        lifecycle: Lifecycle,
    ) -> Self {
        let name = if config.node_name.is_empty() {
            format!("{}-{}", hostname(), std::process::id())
        } else {
            config.node_name.clone()
        };
        Self {
            config,
            verifier,
            broker,
            hub: parts.hub,
            emulation: parts.emulation,
            metrics,
            admission,
            proxy: parts.proxy,
            cluster: parts.cluster,
            admin: crate::admin::AdminState::default(),
            name,
            uid: parts.uid,
            started: Instant::now(),
            shutdown: lifecycle.shutdown,
            tasks: TaskTracker::new(),
            background_stop: lifecycle.background_stop,
            background: lifecycle.background,
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        }
    }

    /// A fresh node-unique connection number.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks the node as draining: `/readyz` turns false and new sockets are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.ready.set(0);
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the node should receive traffic.
    pub fn ready(&self) -> (bool, String) {
        if self.draining() {
            return (false, "draining".into());
        }
        let health = self.broker.health();
        if !health.ready {
            return (false, format!("broker: {}", health.detail));
        }
        (true, String::new())
    }
}

/// The machine's name: the kernel's (shells do not export `$HOSTNAME`), else
/// `$HOSTNAME`, else "herald".
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "herald".into())
}
