//! Bidirectional emulation: the registry of this node's emulated sessions, the
//! `/emulation` endpoint that takes their commands, and the routing of a command posted
//! to another node than the session's. Behind a balancer without sticky sessions a
//! client's POSTs land anywhere: the receiving node sends them to the session's node
//! through the broker and waits for its answer, so the client learns at once when the
//! session or its node is gone.

use crate::node::Node;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_broker::Broker;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a node waits for the session's node to take a forwarded command.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Emulated commands queued for one session before further POSTs are refused (503):
/// the SDK sends one POST per command batch, so a full queue means a stuck session.
pub(crate) const SESSION_QUEUE: usize = 64;

/// What became of commands sent to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Delivered {
    /// Queued for the session's connection.
    Yes,
    /// The node has no such session (it ended).
    NoSession,
    /// The session's queue is full.
    Busy,
}

/// A message between nodes about emulated sessions.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum NodeMessage {
    /// Commands for a session of the receiving node; answer to `from` with `req`.
    Commands {
        from: String,
        req: u64,
        session: String,
        data: String,
    },
    /// The answer to `Commands`.
    Ack { req: u64, delivered: Delivered },
}

/// Why commands could not be routed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    /// No live node has that id.
    #[error("the session's node is gone")]
    NodeGone,
    /// The session's node did not answer in time.
    #[error("the session's node did not answer in time")]
    Timeout,
    /// The broker failed.
    #[error("the broker is unavailable")]
    Broker(#[source] herald_broker::BrokerError),
}

/// This node's emulated sessions and its forwarded commands waiting for an answer.
pub(crate) struct Emulation {
    node: String,
    broker: Arc<dyn Broker>,
    sessions: Mutex<HashMap<String, mpsc::Sender<String>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Delivered>>>,
    next_request: AtomicU64,
}

impl std::fmt::Debug for Emulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulation")
            .field("node", &self.node)
            .field("sessions", &self.sessions.lock().len())
            .finish_non_exhaustive()
    }
}

/// Keeps a session registered while it lives.
pub(crate) struct SessionGuard {
    emulation: Arc<Emulation>,
    session: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.emulation.sessions.lock().remove(&self.session);
    }
}

impl Emulation {
    /// The registry of node `node` (its id in the broker).
    pub(crate) fn new(node: String, broker: Arc<dyn Broker>) -> Self {
        Self {
            node,
            broker,
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        }
    }

    /// Registers a session whose commands go to `commands`, until the guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        session: &str,
        commands: mpsc::Sender<String>,
    ) -> SessionGuard {
        self.sessions.lock().insert(session.to_owned(), commands);
        SessionGuard {
            emulation: self.clone(),
            session: session.to_owned(),
        }
    }

    fn deliver_local(&self, session: &str, data: String) -> Delivered {
        let Some(commands) = self.sessions.lock().get(session).cloned() else {
            return Delivered::NoSession;
        };
        match commands.try_send(data) {
            Ok(()) => Delivered::Yes,
            Err(mpsc::error::TrySendError::Full(_)) => Delivered::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivered::NoSession,
        }
    }

    /// Gives `data` (commands, `\n`-separated) to session `session` of node `node`,
    /// this one or another.
    pub(crate) async fn route(
        &self,
        node: &str,
        session: &str,
        data: String,
    ) -> Result<Delivered, RouteError> {
        if node == self.node {
            return Ok(self.deliver_local(session, data));
        }
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(req, tx);
        // Removes the waiting entry however this ends (an answer, an error, a timeout).
        let _pending = crate::scopeguard(|| {
            self.pending.lock().remove(&req);
        });
        let message = NodeMessage::Commands {
            from: self.node.clone(),
            req,
            session: session.to_owned(),
            data,
        };
        let bytes = serde_json::to_vec(&message).unwrap_or_default();
        match self.broker.send_to_node(node, bytes.into()).await {
            Ok(true) => {}
            Ok(false) => return Err(RouteError::NodeGone),
            Err(e) => return Err(RouteError::Broker(e)),
        }
        match tokio::time::timeout(FORWARD_TIMEOUT, rx).await {
            Ok(Ok(delivered)) => Ok(delivered),
            _ => Err(RouteError::Timeout),
        }
    }

    /// Handles a message from another node (see [`NodeMessage`]).
    pub(crate) fn on_node_message(&self, message: &[u8]) {
        let message = match serde_json::from_slice::<NodeMessage>(message) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable node message");
                return;
            }
        };
        match message {
            NodeMessage::Commands {
                from,
                req,
                session,
                data,
            } => {
                let delivered = self.deliver_local(&session, data);
                let answer = NodeMessage::Ack { req, delivered };
                let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                let broker = self.broker.clone();
                // The broker's delivery path must not wait for a send.
                tokio::spawn(async move {
                    if let Err(e) = broker.send_to_node(&from, bytes.into()).await {
                        tracing::debug!(error = %herald_broker::Chain(&e), "emulation answer not sent");
                    }
                });
            }
            NodeMessage::Ack { req, delivered } => {
                if let Some(waiting) = self.pending.lock().remove(&req) {
                    let _ = waiting.send(delivered);
                }
            }
        }
    }
}

/// The body of a POST to `/emulation` (JSON protocol): `data` holds the commands as
/// one string, `\n`-separated.
#[derive(Debug, Deserialize)]
struct EmulationRequest {
    #[serde(default)]
    node: String,
    session: String,
    data: String,
}

fn status(code: StatusCode, message: &'static str) -> Response {
    (code, message).into_response()
}

/// `POST /emulation`: commands of an emulated session. 204 once the session's
/// connection has them (its replies go out on its stream); 404 when the session or its
/// node is gone (the SDK then reconnects at once); 400, 413 and 415 for a body that is
/// not a valid request; 503 and 504 when the session's node could not be reached.
pub(crate) async fn handler(State(node): State<Arc<Node>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/octet-stream") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the Protobuf protocol is served over WebSocket only; emulation speaks JSON",
        );
    }
    let body = match super::http::read_body(Body::new(body)).await {
        Ok(b) => b,
        Err(refused) => return refused.into_response(),
    };
    let request: EmulationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "bad emulation request");
            return status(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object with string fields node, session and data",
            );
        }
    };
    if request.session.is_empty() || request.data.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "session and data must not be empty",
        );
    }
    let target = if request.node.is_empty() {
        node.uid.as_str()
    } else {
        request.node.as_str()
    };
    let routed = node
        .emulation
        .route(target, &request.session, request.data)
        .await;
    let label = match &routed {
        Ok(Delivered::Yes) => "delivered",
        Ok(Delivered::NoSession) => "no_session",
        Ok(Delivered::Busy) => "busy",
        Err(RouteError::NodeGone) => "node_gone",
        Err(RouteError::Timeout) => "timeout",
        Err(RouteError::Broker(_)) => "broker_error",
    };
    node.metrics
        .emulation_requests
        .with_label_values(&[
            label,
            if target == node.uid {
                "local"
            } else {
                "forwarded"
            },
        ])
        .inc();
    match routed {
        Ok(Delivered::Yes) => StatusCode::NO_CONTENT.into_response(),
        Ok(Delivered::NoSession) => status(StatusCode::NOT_FOUND, "no such session"),
        Ok(Delivered::Busy) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session has too many commands queued",
        ),
        Err(RouteError::NodeGone) => status(StatusCode::NOT_FOUND, "the session's node is gone"),
        Err(RouteError::Timeout) => status(
            StatusCode::GATEWAY_TIMEOUT,
            "the session's node did not answer in time",
        ),
        Err(e @ RouteError::Broker(_)) => {
            tracing::warn!(error = %herald_broker::Chain(&e), "emulated commands not forwarded");
            status(StatusCode::SERVICE_UNAVAILABLE, "the broker is unavailable")
        }
    }
}
