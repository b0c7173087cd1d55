//! A connection's rate limits: its buckets for commands, publishes and subscribes (one
//! more per namespace with limits of its own), the per-user limits kept in the broker,
//! and the count of refusals that decides when a client is far enough over its limits
//! to be closed with 3013.

use super::{Conn, Fail};
use crate::channel::Channel;
use crate::config::{NamespaceRateLimits, Rate};
use herald_broker::{Bucket, Quota};
use herald_protocol::{DisconnectCode, ErrorCode};
use tokio::time::Instant;

/// Which limit refused a request (the `limit` label of `herald_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    Commands,
    Publishes,
    Subscribes,
    UserPublishes,
    UserConnections,
}

impl Limit {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Commands => "commands",
            Self::Publishes => "publishes",
            Self::Subscribes => "subscribes",
            Self::UserPublishes => "user_publishes",
            Self::UserConnections => "user_connections",
        }
    }
}

/// The buckets and refusal count of one connection. Buckets are plain values (one
/// instant each): the connection's task owns them, so nothing is shared or locked.
#[derive(Debug, Default)]
pub(super) struct Limiter {
    commands: Bucket,
    publishes: Bucket,
    subscribes: Bucket,
    /// Buckets of namespaces that override a limit, by namespace name: few, so a list.
    by_namespace: Vec<(Box<str>, Limit, Bucket)>,
    /// Refusals in the current window, and when the window began.
    refused: u32,
    window_start: Option<Instant>,
    /// A limited client is logged once, however hard it floods.
    logged: bool,
}

impl Limiter {
    /// The bucket a request of `limit` in namespace `ns` (when it has its own limit)
    /// draws from.
    fn bucket(&mut self, limit: Limit, ns: Option<&str>) -> &mut Bucket {
        let Some(ns) = ns else {
            return match limit {
                Limit::Publishes => &mut self.publishes,
                Limit::Subscribes => &mut self.subscribes,
                _ => &mut self.commands,
            };
        };
        let at = match self
            .by_namespace
            .iter()
            .position(|(name, l, _)| **name == *ns && *l == limit)
        {
            Some(at) => at,
            None => {
                self.by_namespace
                    .push((Box::from(ns), limit, Bucket::default()));
                self.by_namespace.len() - 1
            }
        };
        &mut self.by_namespace[at].2
    }

    /// Takes a token for one request; `false` when over `quota`.
    pub(super) fn take(
        &mut self,
        limit: Limit,
        ns: Option<&str>,
        quota: &Quota,
        now: Instant,
    ) -> bool {
        self.bucket(limit, ns).take(quota, now)
    }

    /// Counts an enforced refusal at `now`; `true` when the client has now been refused
    /// `after` times within `window` (0 = never).
    fn far_over(&mut self, now: Instant, after: u32, window: std::time::Duration) -> bool {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= window)
        {
            self.window_start = Some(now);
            self.refused = 0;
        }
        self.refused = self.refused.saturating_add(1);
        after > 0 && self.refused >= after
    }
}

/// The limit that applies to a request of `limit` in a namespace, and whether it is a
/// dry run: the namespace's override if it has one, else the global setting.
fn effective(
    global: Rate,
    global_dry: bool,
    ns: Option<&NamespaceRateLimits>,
    pick: impl Fn(&NamespaceRateLimits) -> Option<Rate>,
) -> (Option<Quota>, bool, bool) {
    let dry = ns.and_then(|n| n.dry_run).unwrap_or(global_dry);
    match ns.and_then(&pick) {
        Some(rate) => (rate.quota(), dry, true),
        None => (global.quota(), dry, false),
    }
}

impl Conn {
    /// Counts a command toward the commands limit.
    pub(super) fn limit_command(&mut self) -> Result<(), Fail> {
        let limits = &self.node.config.client.rate_limits;
        let (Some(quota), dry) = (limits.commands.quota(), limits.dry_run) else {
            return Ok(());
        };
        if self
            .limiter
            .take(Limit::Commands, None, &quota, Instant::now())
        {
            return Ok(());
        }
        self.refuse(Limit::Commands, dry)
    }

    /// Counts a publish or subscribe in `ch` toward its limit (the namespace's own, if
    /// it has one, in a bucket of its own).
    pub(super) fn limit_channel(&mut self, limit: Limit, ch: &Channel<'_>) -> Result<(), Fail> {
        let limits = &self.node.config.client.rate_limits;
        let ns = Some(&ch.ns.rate_limits);
        let (quota, dry, own) = match limit {
            Limit::Publishes => effective(limits.publishes, limits.dry_run, ns, |n| n.publishes),
            _ => effective(limits.subscribes, limits.dry_run, ns, |n| n.subscribes),
        };
        let Some(quota) = quota else {
            return Ok(());
        };
        let bucket_ns = own.then_some(ch.ns_name);
        if self.limiter.take(limit, bucket_ns, &quota, Instant::now()) {
            return Ok(());
        }
        self.refuse(limit, dry)
    }

    /// Takes a token from the user's publish bucket in the broker, shared by every node.
    /// A broker failure lets the publish through (fail-open): the publish itself goes
    /// through the same broker and fails on its own if the broker is really down, and a
    /// limiter must not turn a blip into refused publishes for every user.
    pub(super) async fn limit_user_publish(&mut self, ch: &Channel<'_>) -> Result<(), Fail> {
        let limits = &self.node.config.client.rate_limits;
        let (quota, dry, _) = effective(
            limits.user_publishes,
            limits.dry_run,
            Some(&ch.ns.rate_limits),
            |n| n.user_publishes,
        );
        let user = self.session.as_ref().map(|s| s.user.clone());
        // Anonymous clients share the user "": one bucket for all of them would let one
        // starve the rest, so they are limited per connection only.
        let (Some(quota), Some(user)) = (quota, user.filter(|u| !u.is_empty())) else {
            return Ok(());
        };
        match self.node.broker.take_user_publish(&user, quota).await {
            Ok(true) => Ok(()),
            Ok(false) => self.refuse(Limit::UserPublishes, dry),
            Err(e) => {
                self.node
                    .metrics
                    .rate_limit_errors
                    .with_label_values(&[Limit::UserPublishes.label()])
                    .inc();
                tracing::debug!(error = %herald_broker::Chain(&e), "user publish limit not checked");
                Ok(())
            }
        }
    }

    /// Counts a refusal: in a dry run only the metric; otherwise 111, or 3013 once the
    /// client is far over its limits.
    pub(super) fn refuse(&mut self, limit: Limit, dry: bool) -> Result<(), Fail> {
        let mode = if dry { "dry_run" } else { "enforced" };
        self.node
            .metrics
            .rate_limited
            .with_label_values(&[limit.label(), mode])
            .inc();
        if !self.limiter.logged {
            self.limiter.logged = true;
            tracing::info!(limit = limit.label(), mode, "client over a rate limit");
        }
        if dry {
            return Ok(());
        }
        let limits = &self.node.config.client.rate_limits;
        let (after, window) = (limits.disconnect_after, limits.disconnect_window);
        if self.limiter.far_over(Instant::now(), after, window) {
            tracing::info!(
                limit = limit.label(),
                refused = after,
                "closing a client far over its rate limits"
            );
            return Err(Fail::Disconnect(DisconnectCode::TooManyRequests));
        }
        Err(Fail::Error(ErrorCode::TooManyRequests))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{NamespaceConfig, Rate};
    use crate::testing::{self, Received, TestClient};
    use herald_broker::memory::MemoryBroker;
    use herald_protocol::DisconnectCode;
    use serde_json::{Value, json};
    use std::sync::Arc;
    use std::time::Duration;

    async fn connected(node: &Arc<crate::node::Node>, token: &str) -> TestClient {
        let mut client = testing::connect(node);
        client.connect(token).await;
        client
    }

    async fn node(config: crate::Config) -> Arc<crate::node::Node> {
        testing::node(config, Arc::new(MemoryBroker::new())).await
    }

    async fn ping(client: &mut TestClient) -> Value {
        let id = client
            .command("rpc", json!({ "method": herald_protocol::RPC_PING }))
            .await;
        client.reply(id).await
    }

    async fn publish(client: &mut TestClient, channel: &str) -> Value {
        let id = client
            .command("publish", json!({ "channel": channel, "data": {} }))
            .await;
        client.reply(id).await
    }

    fn refused(reply: &Value) -> bool {
        reply["error"] == json!({ "code": 111, "message": "too many requests", "temporary": true })
    }

    fn count(node: &crate::node::Node, limit: &str, mode: &str) -> u64 {
        node.metrics
            .rate_limited
            .with_label_values(&[limit, mode])
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_command_limit_replies_111_and_keeps_the_connection() {
        let mut config = testing::config();
        config.client.rate_limits.commands = "5/s".parse().expect("a rate");
        let node = node(config).await;
        // The connect command was the first of the burst.
        let mut client = connected(&node, "").await;
        for _ in 0..4 {
            assert!(!refused(&ping(&mut client).await));
        }
        assert!(refused(&ping(&mut client).await));
        assert!(refused(&ping(&mut client).await));
        assert_eq!(count(&node, "commands", "enforced"), 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !refused(&ping(&mut client).await),
            "one token back after 200ms"
        );
        assert!(refused(&ping(&mut client).await));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_far_over_is_closed_with_3013() {
        let mut config = testing::config();
        config.client.rate_limits.commands = "2/s".parse().expect("a rate");
        config.client.rate_limits.disconnect_after = 10;
        config.client.rate_limits.disconnect_window = Duration::from_secs(10);
        let node = node(config).await;
        let mut client = connected(&node, "").await;
        let mut refusals = 0;
        let closed = loop {
            let id = client
                .command("rpc", json!({ "method": herald_protocol::RPC_PING }))
                .await;
            match client.recv().await {
                Received::Text(frame) if frame.iter().any(|v| v["id"] == json!(id)) => {
                    refusals += usize::from(frame.iter().any(refused));
                }
                Received::Text(_) => {}
                other => break other,
            }
        };
        let code = DisconnectCode::TooManyRequests;
        assert_eq!(
            closed,
            Received::Close(code.code(), code.reason().to_owned())
        );
        assert_eq!(refusals, 9, "nine 111s, the tenth refusal closes");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_spread_over_windows_never_close() {
        let mut config = testing::config();
        config.client.rate_limits.commands = "1/s".parse().expect("a rate");
        config.client.rate_limits.disconnect_after = 3;
        config.client.rate_limits.disconnect_window = Duration::from_secs(1);
        let node = node(config).await;
        let mut client = connected(&node, "").await;
        for _ in 0..10 {
            // Two refusals per window: under the three that close.
            assert!(refused(&ping(&mut client).await));
            assert!(refused(&ping(&mut client).await));
            tokio::time::sleep(Duration::from_millis(1001)).await;
            assert!(!refused(&ping(&mut client).await));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_counts_but_refuses_nothing() {
        let mut config = testing::config();
        config.client.rate_limits.commands = "2/s".parse().expect("a rate");
        config.client.rate_limits.publishes = "1/s".parse().expect("a rate");
        config.client.rate_limits.dry_run = true;
        config.client.rate_limits.disconnect_after = 3;
        let node = node(config).await;
        let mut client = connected(&node, "").await;
        for _ in 0..20 {
            assert!(publish(&mut client, "news").await.get("error").is_none());
        }
        assert_eq!(count(&node, "commands", "dry_run"), 19);
        assert_eq!(count(&node, "publishes", "dry_run"), 19);
        assert_eq!(count(&node, "commands", "enforced"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_limit_has_its_own_bucket() {
        let mut config = testing::config();
        config.client.rate_limits.publishes = "100/s".parse().expect("a rate");
        let mut chat = NamespaceConfig::permissive();
        chat.rate_limits.publishes = Some("2/s".parse().expect("a rate"));
        let mut free = NamespaceConfig::permissive();
        free.rate_limits.publishes = Some(Rate::OFF);
        config.namespaces.insert("chat".into(), chat);
        config.namespaces.insert("free".into(), free);
        let node = node(config).await;
        let mut client = connected(&node, "").await;
        assert!(!refused(&publish(&mut client, "chat:a").await));
        assert!(!refused(&publish(&mut client, "chat:b").await));
        assert!(refused(&publish(&mut client, "chat:a").await));
        // The global bucket is untouched by the namespace's.
        for _ in 0..100 {
            assert!(!refused(&publish(&mut client, "news").await));
        }
        assert!(refused(&publish(&mut client, "news").await));
        // "0" turns the limit off in a namespace.
        for _ in 0..200 {
            assert!(!refused(&publish(&mut client, "free:x").await));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_users_connections_share_one_publish_budget() {
        let mut config = testing::config();
        config.client.rate_limits.user_publishes = "3/s".parse().expect("a rate");
        let node = node(config).await;
        let token = testing::sign(&json!({ "sub": "ann" }));
        let mut a = connected(&node, &token).await;
        let mut b = connected(&node, &token).await;
        let mut anon = connected(&node, "").await;
        assert!(!refused(&publish(&mut a, "news").await));
        assert!(!refused(&publish(&mut b, "news").await));
        assert!(!refused(&publish(&mut a, "news").await));
        assert!(refused(&publish(&mut b, "news").await));
        assert!(refused(&publish(&mut a, "news").await));
        // Anonymous clients are not one user.
        for _ in 0..10 {
            assert!(!refused(&publish(&mut anon, "news").await));
        }
        assert_eq!(count(&node, "user_publishes", "enforced"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_over_the_connection_limit_is_refused_with_111_until_a_slot_frees() {
        let mut config = testing::config();
        config.client.rate_limits.user_connections = 2;
        let node = node(config).await;
        let token = testing::sign(&json!({ "sub": "ann" }));
        let a = connected(&node, &token).await;
        let _b = connected(&node, &token).await;
        let mut c = testing::connect(&node);
        let id = c.command("connect", json!({ "token": token })).await;
        assert!(refused(&c.reply(id).await));
        assert_eq!(count(&node, "user_connections", "enforced"), 1);
        drop(a);
        // The closed connection gives its slot back.
        let mut admitted = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let id = c.command("connect", json!({ "token": token })).await;
            if c.reply(id).await.get("error").is_none() {
                admitted = true;
                break;
            }
        }
        assert!(admitted);
    }
}
