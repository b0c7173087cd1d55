//! [`RedisBroker`]: composes the components of the backbone, starts their loops on the
//! node's tracker, and implements [`Broker`] by handing each call to the one that owns it.

use crate::config::RedisConfig;
use crate::connect::{self, Connected};
use crate::delivery::{self, Delivery};
use crate::error::{RedisStartError, unavailable};
use crate::health::{self, Probe};
use crate::history::History;
use crate::keys::Keys;
use crate::metrics::RedisMetrics;
use crate::pubsub::PubSub;
use crate::stop::Stop;
use crate::store::{Store, StoreSettings, Streams};
use crate::subscriptions::{self, Subscriptions};
use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::ConnectHandle;
use herald_broker::{
    Broker, BrokerContext, BrokerError, BrokerHealth, Ended, HistoryPage, HistoryQuery, JoinLeave,
    PublishOutcome, PublishRequest, new_epoch,
};
use herald_protocol::ClientInfo;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::DropGuard;

/// A Herald broker over Redis. See the crate docs.
///
/// Publishing and reading work as soon as it is connected; delivery starts with
/// [`Broker::start`]. Its connections stay open until the node's shutdown (or until it
/// is dropped), and are then closed by a task on the node's tracker.
pub struct RedisBroker {
    config: RedisConfig,
    keys: Keys,
    probe_channel: String,
    metrics: RedisMetrics,
    store: Store,
    pubsub: PubSub,
    delivery: Arc<Delivery>,
    subscriptions: Arc<Subscriptions>,
    history: History,
    probe: Arc<Probe>,
    lifecycle: Mutex<Lifecycle>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

/// What ties the broker to the node's lifecycle.
struct Lifecycle {
    /// The connections, until a task on the node's tracker takes them to close them.
    connections: Option<Connections>,
    /// Stops every loop when the broker is dropped before the node shuts down.
    guard: Option<DropGuard>,
}

struct Connections {
    client: Client,
    subscriber: SubscriberClient,
    tasks: Vec<ConnectHandle>,
}

impl RedisBroker {
    /// Connects, checks the server, and loads the function library. Fails fast with a
    /// clear error when Redis is unreachable or too old; reconnects by itself afterwards.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisStartError> {
        let metrics = match RedisMetrics::new() {
            Ok(m) => m,
            Err(e) => return Err(RedisStartError::Metrics(e)),
        };
        let Connected {
            client,
            subscriber,
            tasks,
            cluster,
        } = connect::connect(&config).await?;
        let keys = Keys::new(&config.prefix);
        let probe_channel = keys.probe(&new_epoch());
        let store = Store::new(
            client.clone(),
            keys.clone(),
            StoreSettings {
                cluster,
                meta_ttl: config.meta_ttl,
                idempotency_ttl: config.idempotency_ttl,
            },
            metrics.clone(),
        );
        let streams: Arc<dyn Streams> = Arc::new(store.clone());
        let pubsub = PubSub::new(subscriber.clone(), cluster);
        let delivery = Arc::new(Delivery::new(
            streams.clone(),
            metrics.clone(),
            config.replay_window,
        ));
        let subscriptions = Arc::new(Subscriptions::new(
            pubsub.clone(),
            keys.clone(),
            delivery.clone(),
            streams.clone(),
        ));
        let history = History::new(delivery.clone(), streams, metrics.clone());
        let probe = Arc::new(Probe::new(config.probe_timeout, metrics.clone()));
        Ok(Self {
            keys,
            probe_channel,
            metrics,
            store,
            pubsub,
            delivery,
            subscriptions,
            history,
            probe,
            lifecycle: Mutex::new(Lifecycle {
                connections: Some(Connections {
                    client,
                    subscriber,
                    tasks,
                }),
                guard: None,
            }),
            config,
        })
    }

    /// Ties the broker to the node: a stop for its loops, and the task that closes the
    /// connections at the stop. Fails when already started.
    fn attach(&self, context: &BrokerContext) -> Result<Stop, BrokerError> {
        let mut lifecycle = self.lifecycle.lock();
        if lifecycle.guard.is_some() {
            return Err(BrokerError::Lifecycle);
        }
        let (stop, guard) = Stop::new(&context.shutdown);
        lifecycle.guard = Some(guard);
        if let Some(connections) = lifecycle.connections.take() {
            context.spawn(
                "redis-connections",
                close_at_stop(connections, self.config.command_timeout, stop.clone()),
            );
        }
        Ok(stop)
    }
}

/// Keeps the connections open until `stop`, then quits them and waits (at most
/// `timeout`) for their tasks to end.
async fn close_at_stop(mut connections: Connections, timeout: Duration, stop: Stop) -> Ended {
    let ended = stop.stopped().await;
    let closed = tokio::time::timeout(timeout, async {
        let _ = connections.subscriber.quit().await;
        let _ = connections.client.quit().await;
        futures_util::future::join_all(connections.tasks.iter_mut()).await;
    })
    .await;
    if closed.is_err() {
        tracing::debug!("Redis connections did not close in time; dropping them");
        connect::abort(&connections.tasks);
    }
    ended
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn start(&self, context: BrokerContext) -> Result<(), BrokerError> {
        let stop = self.attach(&context)?;
        self.delivery.start(self.config.workers, &context, &stop)?;
        self.metrics
            .register(&context.registry)
            .map_err(BrokerError::Metrics)?;
        let probe = self.probe.clone();
        context.spawn(
            "redis-dispatch",
            delivery::dispatch(
                self.delivery.clone(),
                self.keys.clone(),
                delivery::Probes {
                    channel: self.probe_channel.clone(),
                    on_echo: move || probe.echo(),
                    node_channel: self.keys.node(&context.node),
                    handler: context.handler.clone(),
                },
                self.metrics.clone(),
                self.pubsub.messages(),
                stop.clone(),
            ),
        );
        context.spawn(
            "redis-reconnects",
            subscriptions::on_reconnects(
                self.pubsub.clone(),
                self.delivery.clone(),
                self.probe.clone(),
                self.metrics.clone(),
                self.pubsub.reconnects(),
                stop.clone(),
            ),
        );
        context.spawn(
            "redis-subscriptions",
            self.subscriptions.clone().serve(stop.clone()),
        );
        self.pubsub
            .listen_probe(&self.probe_channel)
            .await
            .map_err(unavailable)?;
        self.probe.echo();
        // Live before the node serves: other nodes may route to it from its first client.
        self.pubsub
            .listen(true, vec![self.keys.node(&context.node)])
            .await
            .map_err(unavailable)?;
        context.spawn(
            "redis-top-checks",
            health::top_checks(
                self.delivery.clone(),
                Arc::new(self.store.clone()),
                self.config.top_check_interval,
                stop.clone(),
            ),
        );
        context.spawn(
            "redis-probes",
            health::probes(
                self.probe.clone(),
                self.store.clone(),
                self.pubsub.clone(),
                self.probe_channel.clone(),
                self.config.probe_interval,
                context.clone(),
                stop,
            ),
        );
        Ok(())
    }

    async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError> {
        self.store.publish(channel, request).await
    }

    async fn send_to_node(&self, node: &str, message: bytes::Bytes) -> Result<bool, BrokerError> {
        self.store.send_to_node(node, message).await
    }

    async fn report_node(
        &self,
        node: &str,
        report: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.store.report_node(node, &report, ttl).await
    }

    async fn nodes(&self) -> Result<Vec<bytes::Bytes>, BrokerError> {
        self.store.nodes().await
    }

    async fn forget_node(&self, node: &str) -> Result<(), BrokerError> {
        self.store.forget_node(node).await
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.subscriptions.request(true, channels).await
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.subscriptions.request(false, channels).await
    }

    async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        self.history.read(channel, query).await
    }

    async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        self.store.remove_history(channel).await
    }

    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.store.add_presence(channel, info, ttl).await
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        self.store.remove_presence(channel, client).await
    }

    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        self.store.presence(channel).await
    }

    async fn publish_join_leave(&self, channel: &str, event: JoinLeave) -> Result<(), BrokerError> {
        self.store.publish_join_leave(channel, &event).await
    }

    async fn take_user_publish(
        &self,
        user: &str,
        quota: herald_broker::Quota,
    ) -> Result<bool, BrokerError> {
        self.store.take_user_publish(user, quota).await
    }

    async fn admit_connection(
        &self,
        user: &str,
        client: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.store.admit_connection(user, client, limit, ttl).await
    }

    async fn release_connection(&self, user: &str, client: &str) -> Result<(), BrokerError> {
        self.store.release_connection(user, client).await
    }

    fn health(&self) -> BrokerHealth {
        if !self.store.is_connected() {
            return BrokerHealth {
                ready: false,
                detail: "Redis command connection down".into(),
            };
        }
        if !self.pubsub.is_connected() || !self.probe.fresh() {
            return BrokerHealth {
                ready: false,
                detail: "Redis pub/sub unhealthy".into(),
            };
        }
        BrokerHealth::ok()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // Never started: no task owns the connections, so end them here. A started
        // broker's connections are closed by its task on the tracker, which the
        // dropped guard has just woken.
        if let Some(connections) = self.lifecycle.get_mut().connections.take() {
            connect::abort(&connections.tasks);
        }
    }
}
