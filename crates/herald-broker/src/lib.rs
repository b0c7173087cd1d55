//! The broker boundary of Herald: how a gateway node publishes, reads history and learns
//! of publications made anywhere in the cluster.
//!
//! [`Broker`] is deliberately narrow so that the connection code never knows which
//! implementation runs: the embedded [`memory::MemoryBroker`] (a single node, no Redis)
//! or the Redis backbone. [`conformance`] is the one suite every implementation passes.

pub mod conformance;
mod context;
pub mod memory;
mod rate;
mod types;

pub use context::{BrokerContext, Ended};
pub use rate::{Bucket, Quota};
pub use types::*;

use async_trait::async_trait;
use herald_protocol::ClientInfo;
use std::sync::Arc;
use std::time::Duration;

/// Receives what the broker delivers to this node. Implementations must return quickly
/// and never block: the broker calls them from its delivery path.
pub trait BrokerHandler: Send + Sync + 'static {
    /// A publication in a channel this node subscribed to, in offset order per channel.
    fn on_publication(&self, channel: &str, publication: Arc<StoredPublication>);

    /// A client joined or left `channel` (on any node).
    fn on_join_leave(&self, channel: &str, event: JoinLeave);

    /// The node can no longer deliver `channel` without a gap (its stream was reset, or
    /// publications were lost beyond repair): every local subscriber must resubscribe
    /// with recovery, which tells each one plainly whether it missed anything.
    fn on_insufficient_state(&self, channel: &str);

    /// A message sent to this node with [`Broker::send_to_node`] (by another node, or
    /// by this one). Nodes that never send such messages need not handle them.
    fn on_node_message(&self, message: bytes::Bytes) {
        let _ = message;
    }
}

/// What a gateway node needs from the message backbone.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// What kind of broker this is, for people reading a node's page (`memory`,
    /// `redis`).
    fn kind(&self) -> &'static str {
        "other"
    }

    /// Starts delivering publications of subscribed channels to the context's handler.
    /// Called once, before any other method. Every background task the broker needs runs
    /// on the context's tracker and ends when its token is cancelled.
    async fn start(&self, context: BrokerContext) -> Result<(), BrokerError>;

    /// Publishes to a channel: assigns the next offset (when the channel keeps history),
    /// stores it, and delivers it to every subscribed node. With an idempotency key that
    /// was seen within its TTL, returns the first result and publishes nothing. Keys
    /// belong to the channel: the same key in another channel is another key.
    async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError>;

    /// Starts delivering publications of these channels to this node.
    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError>;

    /// Stops delivering publications of these channels to this node.
    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError>;

    /// Reads a channel's history and its current position. The position's epoch is
    /// created if the channel has none yet, so a client can subscribe before the first
    /// publication and still recover it.
    async fn history(&self, channel: &str, query: HistoryQuery)
    -> Result<HistoryPage, BrokerError>;

    /// Removes a channel's stored publications, keeping its position: a client that
    /// recovers from before the removal is told recovery failed.
    async fn remove_history(&self, channel: &str) -> Result<(), BrokerError>;

    /// Records (or refreshes) a subscriber in the channel's presence for `ttl`; nodes
    /// refresh their own subscribers well within it, so a crashed node's entries expire.
    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError>;

    /// Removes a subscriber from the channel's presence.
    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError>;

    /// Everyone present in the channel, on every node.
    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError>;

    /// Tells every subscribed node that a client joined or left.
    async fn publish_join_leave(&self, channel: &str, event: JoinLeave) -> Result<(), BrokerError>;

    /// Takes one token from `user`'s publish bucket, shared by every node: `true` when
    /// the user is within `quota`. Atomic and one round trip; the bucket forgets itself
    /// once full again.
    async fn take_user_publish(&self, user: &str, quota: Quota) -> Result<bool, BrokerError>;

    /// Admits connection `client` of `user` when the user has fewer than `limit` live
    /// connections on all nodes (a client already admitted is refreshed and admitted
    /// again). Each admission lives for `ttl` unless refreshed, so the slots of a node
    /// that died come back by themselves.
    async fn admit_connection(
        &self,
        user: &str,
        client: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError>;

    /// Gives back the slot of a connection that closed.
    async fn release_connection(&self, user: &str, client: &str) -> Result<(), BrokerError>;

    /// Sends `message` to node `node` (the [`BrokerContext::node`] it started with),
    /// whose handler gets it in [`BrokerHandler::on_node_message`]. `Ok(false)` when no
    /// live node has that id: it stopped, or never existed. Delivery is at most once
    /// and carries no ordering promise between messages.
    async fn send_to_node(&self, node: &str, message: bytes::Bytes) -> Result<bool, BrokerError>;

    /// Records node `node`'s report (a document the broker does not read) for `ttl`,
    /// replacing its previous one, so that [`Broker::nodes`] on every node lists it. A
    /// node reports itself well within `ttl`: a node that stopped without a word drops
    /// out of the list by itself.
    async fn report_node(
        &self,
        node: &str,
        report: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError>;

    /// The unexpired reports of every node, in no particular order.
    async fn nodes(&self) -> Result<Vec<bytes::Bytes>, BrokerError>;

    /// Removes node `node`'s report (it is stopping).
    async fn forget_node(&self, node: &str) -> Result<(), BrokerError>;

    /// Whether the broker can serve traffic now.
    fn health(&self) -> BrokerHealth;
}
