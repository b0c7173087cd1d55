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
