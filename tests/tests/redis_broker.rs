//! The broker conformance suite against the Redis broker and a real `redis-server`,
//! plus checks only a shared backbone has: two brokers (two nodes) see each other's
//! publications, and the function library can be called by any publisher.

use async_trait::async_trait;
use herald_broker::{
    Broker, BrokerContext, BrokerError, BrokerHealth, HistoryPage, HistoryQuery, JoinLeave,
    PublishOutcome, PublishRequest,
};
use herald_protocol::ClientInfo;
use herald_redis::{RedisBroker, RedisConfig};
use herald_tests::redis::RedisServer;
use std::time::Duration;

/// A Redis broker with its own server, which lives as long as the broker.
struct WithServer {
    broker: RedisBroker,
    _server: RedisServer,
}

async fn broker_on(url: String) -> RedisBroker {
    RedisBroker::connect(RedisConfig {
        url,
        ..RedisConfig::default()
    })
    .await
    .expect("broker connects")
}

async fn fresh() -> WithServer {
    let server = RedisServer::start();
    WithServer {
        broker: broker_on(server.url()).await,
        _server: server,
    }
}

#[async_trait]
impl Broker for WithServer {
    async fn start(&self, context: BrokerContext) -> Result<(), BrokerError> {
        self.broker.start(context).await
    }
    async fn send_to_node(&self, node: &str, message: bytes::Bytes) -> Result<bool, BrokerError> {
        self.broker.send_to_node(node, message).await
    }
    async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError> {
        self.broker.publish(channel, request).await
    }
    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.broker.subscribe(channels).await
    }
    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.broker.unsubscribe(channels).await
    }
    async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        self.broker.history(channel, query).await
    }
    async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        self.broker.remove_history(channel).await
    }
    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.broker.add_presence(channel, info, ttl).await
    }
    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        self.broker.remove_presence(channel, client).await
    }
    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        self.broker.presence(channel).await
    }
    async fn publish_join_leave(&self, channel: &str, event: JoinLeave) -> Result<(), BrokerError> {
        self.broker.publish_join_leave(channel, event).await
    }

    async fn take_user_publish(
        &self,
        user: &str,
        quota: herald_broker::Quota,
    ) -> Result<bool, BrokerError> {
        self.broker.take_user_publish(user, quota).await
    }

    async fn admit_connection(
        &self,
        user: &str,
        client: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.broker.admit_connection(user, client, limit, ttl).await
    }

    async fn release_connection(&self, user: &str, client: &str) -> Result<(), BrokerError> {
        self.broker.release_connection(user, client).await
    }
    async fn report_node(
        &self,
        node: &str,
        report: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.broker.report_node(node, report, ttl).await
    }

    async fn nodes(&self) -> Result<Vec<bytes::Bytes>, BrokerError> {
        self.broker.nodes().await
    }

    async fn forget_node(&self, node: &str) -> Result<(), BrokerError> {
        self.broker.forget_node(node).await
    }

    fn health(&self) -> BrokerHealth {
        self.broker.health()
    }
}

herald_broker::broker_conformance_tests!(|| fresh());

#[tokio::test]
async fn two_nodes_see_each_others_publications_in_order() {
    let server = RedisServer::start();
    let (a, b) = (broker_on(server.url()).await, broker_on(server.url()).await);
    let mut rx_a = herald_broker::conformance::start(&a).await;
    let mut rx_b = herald_broker::conformance::start(&b).await;
    let ch = herald_broker::conformance::channel("two-nodes");
    a.subscribe(std::slice::from_ref(&ch)).await.expect("sub a");
    b.subscribe(std::slice::from_ref(&ch)).await.expect("sub b");
    let req = |n: u64| {
        PublishRequest::new(herald_protocol::RawJson::from_value(&n).expect("json"))
            .with_history(100, Duration::from_secs(60))
    };
    for n in 1..=50 {
        let via = if n % 2 == 0 { &a } else { &b };
        via.publish(&ch, req(n)).await.expect("publish");
    }
    for rx in [&mut rx_a, &mut rx_b] {
        for expected in 1..=50 {
            let (_, p) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("delivery")
                .expect("open");
            assert_eq!(p.publication.offset, expected);
        }
    }
}

#[tokio::test]
async fn unreachable_redis_fails_fast_with_a_clear_error() {
    let port = herald_tests::free_port();
    let started = std::time::Instant::now();
    let err = RedisBroker::connect(RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(1),
        ..RedisConfig::default()
    })
    .await
    .expect_err("no Redis there");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
