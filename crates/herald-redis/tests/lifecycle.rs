//! The Redis broker's place in a node's lifecycle, against a real `redis-server`: its
//! loops end at the node's shutdown and its connections close then, and a broker
//! dropped (started or not) leaves no connection behind.

use herald_broker::{Broker, BrokerContext, BrokerHandler, JoinLeave, StoredPublication};
use herald_redis::{RedisBroker, RedisConfig};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A `redis-server` on a free port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Server { child, port };
        server.until(|s| s.cli(&["PING"]) == "PONG").await;
        server
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Connected clients other than the `redis-cli` asking.
    fn clients(&self) -> usize {
        self.cli(&["CLIENT", "LIST"])
            .lines()
            .count()
            .saturating_sub(1)
    }

    async fn until(&self, ok: impl Fn(&Self) -> bool) {
        for _ in 0..250 {
            if ok(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis on port {} never got there", self.port);
    }

    async fn broker(&self) -> RedisBroker {
        RedisBroker::connect(RedisConfig {
            url: format!("redis://127.0.0.1:{}", self.port),
            ..RedisConfig::default()
        })
        .await
        .expect("connects")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Nobody;

impl BrokerHandler for Nobody {
    fn on_publication(&self, _: &str, _: Arc<StoredPublication>) {}
    fn on_join_leave(&self, _: &str, _: JoinLeave) {}
    fn on_insufficient_state(&self, _: &str) {}
}

fn context() -> BrokerContext {
    BrokerContext::standalone(Arc::new(Nobody))
}

#[tokio::test]
async fn loops_end_and_connections_close_at_shutdown() {
    let server = Server::start().await;
    let broker = server.broker().await;
    let context = context();
    broker.start(context.clone()).await.expect("starts");
    broker
        .subscribe(&["news".to_owned()])
        .await
        .expect("subscribes");
    assert_eq!(server.clients(), 2, "commands and pub/sub");
    assert!(!context.tasks.is_empty());

    context.shutdown.cancel();
    context.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), context.tasks.wait())
        .await
        .expect("every task ends at shutdown");
    server.until(|s| s.clients() == 0).await;
    // The broker outlives its node's shutdown, but no longer serves.
    assert!(broker.subscribe(&["more".to_owned()]).await.is_err());
}

#[tokio::test]
async fn a_broker_dropped_before_the_shutdown_ends_its_loops() {
    let server = Server::start().await;
    let broker = server.broker().await;
    let context = context();
    broker.start(context.clone()).await.expect("starts");
    drop(broker);
    context.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), context.tasks.wait())
        .await
        .expect("every task ends with the broker");
    assert!(!context.shutdown.is_cancelled(), "the node goes on");
    server.until(|s| s.clients() == 0).await;
}

#[tokio::test]
async fn a_broker_never_started_leaves_nothing_when_dropped() {
    let server = Server::start().await;
    let broker = server.broker().await;
    broker
        .publish(
            "news",
            herald_broker::PublishRequest::new(herald_protocol::RawJson::null()),
        )
        .await
        .expect("publishes without start");
    assert!(
        broker.subscribe(&["news".to_owned()]).await.is_err(),
        "subscribing needs a start"
    );
    assert_eq!(server.clients(), 2);
    drop(broker);
    server.until(|s| s.clients() == 0).await;
}

#[tokio::test]
async fn starting_twice_is_refused() {
    let server = Server::start().await;
    let broker = server.broker().await;
    broker.start(context()).await.expect("starts");
    assert!(matches!(
        broker.start(context()).await,
        Err(herald_broker::BrokerError::Lifecycle)
    ));
}
