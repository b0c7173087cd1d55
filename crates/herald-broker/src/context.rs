//! What a node hands its broker at start: where to deliver, when to stop, where its
//! background tasks run and where its metrics go.

use crate::BrokerHandler;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's side of a broker: its handler and its place in the node's lifecycle.
///
/// A broker spawns every background loop with [`BrokerContext::spawn`], so the node
/// can wait for them at shutdown, and each loop returns why it [`Ended`].
#[derive(Clone)]
pub struct BrokerContext {
    /// Receives publications, joins and leaves, and continuity losses.
    pub handler: Arc<dyn BrokerHandler>,
    /// Cancelled when the node stops its background work (after its connections have
    /// closed); every loop of the broker ends then.
    pub shutdown: CancellationToken,
    /// The node's tracker of background tasks.
    pub tasks: TaskTracker,
    /// The node's metrics registry, where the broker registers its own metrics.
    pub registry: prometheus::Registry,
    /// The node's id, unique to this run of it: messages sent to it with
    /// [`crate::Broker::send_to_node`] reach [`BrokerHandler::on_node_message`].
    pub node: String,
}

impl fmt::Debug for BrokerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerContext")
            .field("node", &self.node)
            .field("shutdown", &self.shutdown.is_cancelled())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl BrokerContext {
    /// A context of its own, for a broker used outside a node (tests, tools): a fresh
    /// token, tracker and registry.
    pub fn standalone(handler: Arc<dyn BrokerHandler>) -> Self {
        Self {
            handler,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            registry: prometheus::Registry::new(),
            node: format!("standalone-{:016x}", rand::random::<u64>()),
        }
    }

    /// Runs a background loop on the node's tracker and logs why it ended.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = Ended> + Send + 'static,
    {
        self.tasks.spawn(async move {
            let ended = task.await;
            tracing::debug!(task = name, reason = %ended, "broker task ended");
        });
    }
}

/// Why a broker's background loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The node is shutting down.
    Shutdown,
    /// The broker it served was dropped.
    OwnerGone,
    /// Its input (a channel or a connection's event stream) closed.
    InputClosed,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ended::Shutdown => "shutdown",
            Ended::OwnerGone => "broker dropped",
            Ended::InputClosed => "input closed",
        })
    }
}
