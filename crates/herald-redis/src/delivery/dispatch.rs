//! The pub/sub reader: hands each message to its channel's worker, reports the node's
//! own probe echoes, and catches every channel up when messages were dropped unread.

use super::{Delivery, Work};
use crate::keys::Keys;
use crate::metrics::RedisMetrics;
use crate::stop::Stop;
use herald_broker::Ended;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// Where the reader sends what is not a channel's message.
pub(crate) struct Probes<F> {
    /// The node's own probe channel.
    pub(crate) channel: String,
    /// Called on each probe echo.
    pub(crate) on_echo: F,
    /// The node's control channel.
    pub(crate) node_channel: String,
    /// Gets the messages of the control channel.
    pub(crate) handler: Arc<dyn herald_broker::BrokerHandler>,
}

/// Reads pub/sub messages until `stop` (or the connection's stream closes).
pub(crate) async fn dispatch<F: Fn()>(
    delivery: Arc<Delivery>,
    keys: Keys,
    probes: Probes<F>,
    metrics: RedisMetrics,
    mut rx: broadcast::Receiver<fred::types::Message>,
    stop: Stop,
) -> Ended {
    loop {
        let msg = tokio::select! {
            ended = stop.stopped() => return ended,
            msg = rx.recv() => msg,
        };
        match msg {
            Ok(msg) => {
                let name: &str = &msg.channel;
                if name == probes.channel {
                    (probes.on_echo)();
                    continue;
                }
                if name == probes.node_channel {
                    probes
                        .handler
                        .on_node_message(msg.value.into_bytes().unwrap_or_default());
                    continue;
                }
                let Some(channel) = keys.channel_of(name) else {
                    continue;
                };
                let channel = channel.to_owned();
                let payload = msg.value.into_bytes().unwrap_or_default();
                delivery.route(&channel.clone(), Work::Publication { channel, payload });
            }
            Err(RecvError::Lagged(n)) => {
                // Messages were dropped before we read them: catch every channel up.
                metrics.lagged_messages.inc_by(n);
                tracing::warn!(
                    dropped = n,
                    "pub/sub reader lagged; catching up from streams"
                );
                delivery.catch_up_all();
            }
            Err(RecvError::Closed) => return Ended::InputClosed,
        }
    }
}
