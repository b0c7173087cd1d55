//! The node's dedicated pub/sub connection: (un)subscribing channels and returning only
//! once Redis processed it, resubscribing after a reconnect, forcing a reconnect, and
//! the streams of messages and reconnect events it produces.

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::broadcast;

/// The pub/sub connection (sharded pub/sub on a cluster).
#[derive(Clone)]
pub(crate) struct PubSub {
    subscriber: SubscriberClient,
    cluster: bool,
}

impl PubSub {
    /// Wraps the subscriber client; `cluster` selects sharded pub/sub.
    pub(crate) fn new(subscriber: SubscriberClient, cluster: bool) -> Self {
        Self {
            subscriber,
            cluster,
        }
    }

    /// Subscribes (or unsubscribes) pub/sub channels and returns once Redis has
    /// processed it: a subscription must be live before history is read, or a
    /// publication in between would only arrive through the slower safety nets.
    pub(crate) async fn listen(
        &self,
        subscribe: bool,
        names: Vec<String>,
    ) -> Result<(), fred::error::Error> {
        if names.is_empty() {
            return Ok(());
        }
        if self.cluster {
            // Sharded (un)subscribe takes channels of one slot at a time.
            for (_slot, keys) in fred::util::group_by_hash_slot(names)? {
                let keys: Vec<Key> = keys.into_iter().collect();
                if subscribe {
                    self.subscriber.ssubscribe(keys).await?;
                } else {
                    self.subscriber.sunsubscribe(keys).await?;
                }
            }
            Ok(())
        } else {
            if subscribe {
                self.subscriber.subscribe(names).await?;
            } else {
                self.subscriber.unsubscribe(names).await?;
            }
            // The client resolves (UN)SUBSCRIBE when it is written; Redis answers in
            // order, so a PING reply means it was processed.
            self.subscriber.ping::<Value>(None).await.map(|_| ())
        }
    }

    /// Subscribes the node's probe channel (written, not waited for: the first echo
    /// shows it is live).
    pub(crate) async fn listen_probe(&self, name: &str) -> Result<(), fred::error::Error> {
        let names = vec![name.to_owned()];
        if self.cluster {
            self.subscriber.ssubscribe(names).await
        } else {
            self.subscriber.subscribe(names).await
        }
    }

    /// Resubscribes every tracked channel after a reconnect. Only non-empty sets are
    /// sent (an empty SUBSCRIBE is an error whose reply would be taken for another's).
    pub(crate) async fn resubscribe(&self) -> Result<(), fred::error::Error> {
        let names: Vec<String> = if self.cluster {
            self.subscriber.tracked_shard_channels()
        } else {
            self.subscriber.tracked_channels()
        }
        .into_iter()
        .map(|s| s.to_string())
        .collect();
        self.listen(true, names).await
    }

    /// Drops the connection and makes a new one (which then resubscribes).
    pub(crate) async fn force_reconnect(&self) -> Result<(), fred::error::Error> {
        self.subscriber.force_reconnection().await
    }

    /// Whether the connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.subscriber.is_connected()
    }

    /// Every message of every subscribed channel.
    pub(crate) fn messages(&self) -> broadcast::Receiver<fred::types::Message> {
        self.subscriber.message_rx()
    }

    /// One event per reconnect.
    pub(crate) fn reconnects(&self) -> broadcast::Receiver<fred::types::config::Server> {
        self.subscriber.reconnect_rx()
    }
}
