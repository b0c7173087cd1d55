//! Who may open a connection: the Origin rule, the client's address, and the limits on
//! connections per node, per address and per user, and on new connections per second.
//!
//! Every refusal has its status or close code, one metric sample per limit and mode
//! (never an address or user as a label), and a log line at most every
//! [`LOG_EVERY`] per limit carrying how many more were not logged, so a flood cannot
//! flood the log. A limit in `dry_run` counts and logs what it would refuse and admits.

mod address;
mod origin;

pub(crate) use address::{Cidr, TrustedProxies, limit_key};
pub(crate) use origin::{OriginPattern, OriginRule};

use crate::config::{ClientConfig, LimitsConfig, RateLimit};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounterVec, IntGauge};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// At most one log line per limit per this interval; the next one says how many were
/// left out.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// How often the per-address buckets forget addresses whose bucket is full again.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Most addresses the per-address rate keeps buckets for. A scan from more addresses
/// than this within one refill time starts the table over rather than grow it.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Governor's view of tokio's clock, so buckets refill under paused test time too.
#[derive(Debug, Clone)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type NodeBucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;
type AddressBuckets =
    RateLimiter<IpAddr, DashMapStateStore<IpAddr>, TokioClock, NoOpMiddleware<Duration>>;

fn quota(rate: RateLimit) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    Some(Quota::per_second(per_second).allow_burst(burst))
}

/// Which rule refused (or, in dry run, would have refused) a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `client.allowed_origins` (HTTP 403).
    Origin,
    /// `client.limits.connections` (HTTP 503).
    Connections,
    /// `client.limits.connections_per_ip` (HTTP 429).
    ConnectionsPerIp,
    /// `client.limits.connections_per_user` (error 111 to `connect`).
    ConnectionsPerUser,
    /// `client.limits.connect_rate` (HTTP 429).
    ConnectRate,
    /// `client.limits.connect_rate_per_ip` (HTTP 429).
    ConnectRatePerIp,
}

impl Limit {
    const ALL: [Limit; 6] = [
        Limit::Origin,
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::ConnectionsPerUser,
        Limit::ConnectRate,
        Limit::ConnectRatePerIp,
    ];

    /// The metric label, the setting's own name.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::Origin => "origin",
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::ConnectionsPerUser => "connections_per_user",
            Limit::ConnectRate => "connect_rate",
            Limit::ConnectRatePerIp => "connect_rate_per_ip",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Limit::Origin => StatusCode::FORBIDDEN,
            // The node is full, not the client too eager: a load balancer may retry
            // elsewhere.
            Limit::Connections => StatusCode::SERVICE_UNAVAILABLE,
            Limit::ConnectionsPerIp
            | Limit::ConnectionsPerUser
            | Limit::ConnectRate
            | Limit::ConnectRatePerIp => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A refused request: the rule, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The rule that refused.
    pub(crate) limit: Limit,
    /// How long to wait before trying again (`None` for the origin rule: never).
    pub(crate) retry_after: Option<Duration>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.limit.status(), self.limit.label()).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client told 0 would come straight back.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// Lets one log line through per [`LOG_EVERY`], counting the ones it holds back.
#[derive(Debug, Default)]
struct LogGate {
    next: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl LogGate {
    /// `Some(lines held back since the last one)` when this line may be written.
    fn pass(&self) -> Option<u64> {
        let now = Instant::now();
        let mut next = self.next.lock();
        if next.is_some_and(|n| now < n) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *next = Some(now + LOG_EVERY);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

/// The metrics admission keeps.
#[derive(Debug, Clone)]
pub(crate) struct AdmissionMetrics {
    /// Refusals by limit and mode (`enforced`, `dry_run`).
    pub(crate) refusals: IntCounterVec,
    /// Addresses the per-address rate keeps buckets for.
    pub(crate) tracked_addresses: IntGauge,
}

/// Why the admission settings cannot be used (`Config::validate` reports the same).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdmissionError {
    /// A `client.allowed_origins` entry.
    #[error("client.allowed_origins: {0:?}")]
    Origin(String, #[source] origin::OriginError),
    /// A `client.trusted_proxies` entry.
    #[error("client.trusted_proxies: {0:?}")]
    Proxy(String, #[source] address::CidrError),
}

/// The node's admission state: the rules, the counts and the buckets.
#[derive(Debug)]
pub(crate) struct Admission {
    origins: OriginRule,
    proxies: TrustedProxies,
    limits: LimitsConfig,
    clock: TokioClock,
    open: AtomicU32,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    per_user: Mutex<HashMap<Arc<str>, u32>>,
    node_rate: Option<NodeBucket>,
    ip_rate: Option<RwLock<AddressBuckets>>,
    metrics: AdmissionMetrics,
    gates: [LogGate; Limit::ALL.len()],
}

impl Admission {
    /// The admission rules of `client`.
    pub(crate) fn new(
        client: &ClientConfig,
        metrics: AdmissionMetrics,
    ) -> Result<Self, AdmissionError> {
        let origins = client
            .allowed_origins
            .iter()
            .map(|o| OriginPattern::parse(o).map_err(|e| AdmissionError::Origin(o.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let proxies = client
            .trusted_proxies
            .iter()
            .map(|p| Cidr::parse(p).map_err(|e| AdmissionError::Proxy(p.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let clock = TokioClock {
            start: Instant::now(),
        };
        let limits = client.limits.clone();
        Ok(Self {
            origins: OriginRule::new(origins),
            proxies: TrustedProxies::new(proxies),
            node_rate: quota(limits.connect_rate)
                .map(|q| RateLimiter::direct_with_clock(q, &clock)),
            ip_rate: quota(limits.connect_rate_per_ip)
                .map(|q| RwLock::new(RateLimiter::dashmap_with_clock(q, &clock))),
            clock,
            limits,
            open: AtomicU32::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
            metrics,
            gates: Default::default(),
        })
    }

    /// Counts (and logs, held back per [`LOG_EVERY`]) what `limit` refused or, in dry
    /// run, would have refused.
    fn note(&self, limit: Limit, dry_run: bool, ip: Option<IpAddr>) {
        let mode = if dry_run { "dry_run" } else { "enforced" };
        self.metrics
            .refusals
            .with_label_values(&[limit.label(), mode])
            .inc();
        let Some(held_back) = self.gates[limit as usize].pass() else {
            return;
        };
        let ip = ip.map(tracing::field::display);
        let limit_name = limit.label();
        match (limit, dry_run) {
            (_, true) => tracing::info!(
                limit = limit_name,
                ip,
                held_back,
                "connection over a limit admitted (dry run)"
            ),
            // The node is full or flooded: the operator's business.
            (Limit::Connections | Limit::ConnectRate, false) => tracing::warn!(
                limit = limit_name,
                ip,
                held_back,
                "connection refused by a limit"
            ),
            // One client's doing: the node is fine.
            (_, false) => tracing::info!(
                limit = limit_name,
                ip,
                held_back,
                "connection refused by a limit"
            ),
        }
    }

    /// Whether a request with these headers passes the Origin rule; logs a refusal.
    pub(crate) fn check_origin(
        &self,
        headers: &axum::http::HeaderMap,
        ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        if self.origins.allows(headers) {
            return Ok(());
        }
        self.note(Limit::Origin, false, ip);
        if let Some(origin) = headers.get(header::ORIGIN) {
            tracing::debug!(origin = ?origin, "origin refused");
        }
        Err(Refusal {
            limit: Limit::Origin,
            retry_after: None,
        })
    }

    /// The client's address for a request from `peer` (see [`TrustedProxies`]).
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        self.proxies.client_ip(peer, headers)
    }

    /// Admits a new socket from `ip` (unknown for in-process sockets) or says which
    /// limit refuses it. The permit counts the socket until it is dropped.
    pub(crate) fn admit_socket(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
    ) -> Result<SocketPermit, Refusal> {
        let key = ip.map(limit_key);
        let l = &self.limits;
        if let (Some(key), Some(_)) = (key, &self.ip_rate)
            && let Err(wait) = self.check_ip_rate(key)
        {
            self.note(Limit::ConnectRatePerIp, l.connect_rate_per_ip.dry_run, ip);
            if !l.connect_rate_per_ip.dry_run {
                return Err(Refusal {
                    limit: Limit::ConnectRatePerIp,
                    retry_after: Some(wait),
                });
            }
        }
        if let Some(bucket) = &self.node_rate
            && let Err(not_until) = bucket.check()
        {
            self.note(Limit::ConnectRate, l.connect_rate.dry_run, ip);
            if !l.connect_rate.dry_run {
                return Err(Refusal {
                    limit: Limit::ConnectRate,
                    retry_after: Some(not_until.wait_time_from(self.clock.now())),
                });
            }
        }
        let mut permit = SocketPermit {
            admission: self.clone(),
            ip: None,
        };
        let open_before = self.open.fetch_add(1, Ordering::AcqRel);
        let limit = l.connections_per_ip;
        if let (Some(key), true) = (key, limit.max > 0) {
            let mut per_ip = self.per_ip.lock();
            let count = per_ip.entry(key).or_insert(0);
            let full = *count >= limit.max;
            if !full || limit.dry_run {
                *count += 1;
                permit.ip = Some(key);
            }
            drop(per_ip);
            if full {
                self.note(Limit::ConnectionsPerIp, limit.dry_run, ip);
                if !limit.dry_run {
                    return Err(self.full(Limit::ConnectionsPerIp));
                }
            }
        }
        let limit = l.connections;
        if limit.max > 0 && open_before >= limit.max {
            self.note(Limit::Connections, limit.dry_run, ip);
            if !limit.dry_run {
                return Err(self.full(Limit::Connections));
            }
        }
        Ok(permit)
    }

    fn full(&self, limit: Limit) -> Refusal {
        Refusal {
            limit,
            retry_after: Some(self.limits.retry_after),
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until the next one.
    fn check_ip_rate(&self, key: IpAddr) -> Result<(), Duration> {
        let Some(buckets) = &self.ip_rate else {
            return Ok(());
        };
        let check = |b: &AddressBuckets| {
            b.check_key(&key)
                .map_err(|n| n.wait_time_from(self.clock.now()))
        };
        {
            let b = buckets.read();
            if b.len() < MAX_TRACKED_ADDRESSES {
                return check(&b);
            }
        }
        let mut b = buckets.write();
        if b.len() >= MAX_TRACKED_ADDRESSES {
            b.retain_recent();
            if b.len() >= MAX_TRACKED_ADDRESSES {
                // Memory stays bounded; the price is that these addresses' buckets
                // start full again.
                if let Some(quota) = quota(self.limits.connect_rate_per_ip) {
                    *b = RateLimiter::dashmap_with_clock(quota, &self.clock);
                }
                tracing::warn!(
                    addresses = MAX_TRACKED_ADDRESSES,
                    "too many client addresses within one refill time: per-address connect rates start over"
                );
            }
        }
        check(&b)
    }

    /// Forgets addresses whose bucket is full again, so the table holds only the
    /// addresses seen within one refill time. Called every [`SWEEP_EVERY`].
    pub(crate) fn sweep(&self) {
        if let Some(buckets) = &self.ip_rate {
            let b = buckets.read();
            b.retain_recent();
            b.shrink_to_fit();
            self.metrics
                .tracked_addresses
                .set(i64::try_from(b.len()).unwrap_or(i64::MAX));
        }
        self.per_ip.lock().shrink_to_fit();
        self.per_user.lock().shrink_to_fit();
    }

    /// Admits one more connection of `user` on this node, or refuses it (error 111 to the
    /// connect).
    /// Anonymous connections (user "") have no user to count: the per-address limits
    /// cover them.
    pub(crate) fn admit_user(
        self: &Arc<Self>,
        user: &Arc<str>,
    ) -> Result<Option<UserPermit>, Refusal> {
        let limit = self.limits.connections_per_user;
        if limit.max == 0 || user.is_empty() {
            return Ok(None);
        }
        let mut per_user = self.per_user.lock();
        let count = per_user.entry(user.clone()).or_insert(0);
        let full = *count >= limit.max;
        if !full || limit.dry_run {
            *count += 1;
        }
        drop(per_user);
        if full {
            self.note(Limit::ConnectionsPerUser, limit.dry_run, None);
            if !limit.dry_run {
                return Err(self.full(Limit::ConnectionsPerUser));
            }
        }
        Ok(Some(UserPermit {
            admission: self.clone(),
            user: user.clone(),
        }))
    }

    /// Sockets open on this node through [`Admission::admit_socket`].
    #[cfg(test)]
    pub(crate) fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

/// Removes one from a count, and the entry when it reaches zero, so the maps hold only
/// keys with open connections.
fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u32>>, key: &K) {
    let mut map = map.lock();
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// One admitted socket, counted on the node (and under its address) until dropped,
/// however its connection ends.
#[derive(Debug)]
pub(crate) struct SocketPermit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = &self.ip {
            release(&self.admission.per_ip, ip);
        }
    }
}

/// One connection of a user on this node, counted until dropped.
#[derive(Debug)]
pub(crate) struct UserPermit {
    admission: Arc<Admission>,
    user: Arc<str>,
}

impl Drop for UserPermit {
    fn drop(&mut self) {
        release(&self.admission.per_user, &self.user);
    }
}

#[cfg(test)]
mod tests;
