//! The embedded in-memory broker: one node, no Redis, same semantics as the backbone.

use crate::{
    Broker, BrokerContext, BrokerError, BrokerHandler, BrokerHealth, Bucket, Ended, HistoryPage,
    HistoryQuery, JoinLeave, PublishOutcome, PublishRequest, Quota, StoredPublication, new_epoch,
};
use async_trait::async_trait;
use herald_protocol::ClientInfo;
use herald_protocol::{Publication, StreamPosition};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Tuning of the memory broker.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// How long an idle channel keeps its epoch and top offset after its last publish.
    pub meta_ttl: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How often expired history, keys and idle channels are swept.
    pub sweep_interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            meta_ttl: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(5 * 60),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// A broker that lives inside the gateway process. History and offsets are lost when
/// the process exits, and a restarted node gives every channel a new epoch, so clients
/// are told their recovery failed instead of silently missing publications.
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

struct Inner {
    config: MemoryConfig,
    channels: Mutex<HashMap<String, Arc<Mutex<Channel>>>>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    /// The node's id, set at start: the only node a message can be sent to.
    node: OnceLock<String>,
    /// Each user's publish bucket.
    user_publishes: Mutex<HashMap<String, Bucket>>,
    /// Each user's admitted connections and when each admission expires.
    user_connections: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Node reports and when each expires.
    reports: Mutex<HashMap<String, (Instant, bytes::Bytes)>>,
}

struct Channel {
    epoch: String,
    top: u64,
    entries: VecDeque<Entry>,
    idempotency: HashMap<String, (StreamPosition, Instant)>,
    presence: HashMap<String, (ClientInfo, Instant)>,
    subscribed: bool,
    touched: Instant,
    /// The newest version published, and its series.
    version: Option<(u64, String)>,
}

struct Entry {
    expires: Instant,
    publication: Publication,
}

impl Channel {
    fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            idempotency: HashMap::new(),
            presence: HashMap::new(),
            subscribed: false,
            touched: now,
            version: None,
        }
    }

    fn prune(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|e| e.expires <= now) {
            self.entries.pop_front();
        }
        self.idempotency.retain(|_, (_, until)| *until > now);
        self.presence.retain(|_, (_, until)| *until > now);
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

impl MemoryBroker {
    /// A broker with default tuning.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A broker with the given tuning.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                channels: Mutex::new(HashMap::new()),
                handler: OnceLock::new(),
                node: OnceLock::new(),
                user_publishes: Mutex::new(HashMap::new()),
                user_connections: Mutex::new(HashMap::new()),
                reports: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The number of channels with state (for tests and metrics).
    pub fn channel_count(&self) -> usize {
        self.inner.channels.lock().len()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn channel(&self, name: &str) -> Arc<Mutex<Channel>> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(name) {
            return c.clone();
        }
        let c = Arc::new(Mutex::new(Channel::new(Instant::now())));
        channels.insert(name.to_owned(), c.clone());
        c
    }

    fn existing(&self, name: &str) -> Option<Arc<Mutex<Channel>>> {
        self.channels.lock().get(name).cloned()
    }

    fn sweep(&self, now: Instant) {
        let mut channels = self.channels.lock();
        channels.retain(|_, c| {
            let mut c = c.lock();
            c.prune(now);
            c.subscribed
                || !c.entries.is_empty()
                || !c.idempotency.is_empty()
                || !c.presence.is_empty()
                || now.duration_since(c.touched) < self.config.meta_ttl
        });
        drop(channels);
        self.user_publishes.lock().retain(|_, b| !b.is_full(now));
        self.user_connections.lock().retain(|_, conns| {
            conns.retain(|_, until| *until > now);
            !conns.is_empty()
        });
    }
}

async fn sweeper(inner: Weak<Inner>, every: Duration, stop: CancellationToken) -> Ended {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return Ended::Shutdown,
        }
        let Some(inner) = inner.upgrade() else {
            return Ended::OwnerGone;
        };
        inner.sweep(Instant::now());
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn start(&self, context: BrokerContext) -> Result<(), BrokerError> {
        self.inner
            .handler
            .set(context.handler.clone())
            .map_err(|_| BrokerError::Lifecycle)?;
        let _ = self.inner.node.set(context.node.clone());
        context.spawn(
            "memory-sweeper",
            sweeper(
                Arc::downgrade(&self.inner),
                self.inner.config.sweep_interval,
                context.shutdown.clone(),
            ),
        );
        Ok(())
    }

    async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError> {
        let handler = self.inner.handler.get().ok_or(BrokerError::Lifecycle)?;
        let now = Instant::now();
        let keeps_history = request.keeps_history();
        let mut publication = Publication {
            data: request.data,
            info: request.info,
            offset: 0,
            tags: request.tags,
            delta: false,
            origin: (!request.origin.is_empty()).then_some(request.origin),
        };
        if !keeps_history
            && request.idempotency_key.is_none()
            && request.version == 0
            && self.inner.existing(channel).is_none()
        {
            // No stream, no key or version to remember and no node listening: nothing
            // to store or deliver, and no channel state worth creating.
            return Ok(PublishOutcome {
                position: StreamPosition::default(),
                duplicate: false,
                suppressed: false,
            });
        }

        let state = self.inner.channel(channel);
        // The channel lock is held while delivering so that offset order is delivery order.
        let mut state = state.lock();
        state.prune(now);
        state.touched = now;
        if let Some(key) = &request.idempotency_key
            && let Some((position, _)) = state.idempotency.get(key)
        {
            return Ok(PublishOutcome {
                position: position.clone(),
                duplicate: true,
                suppressed: false,
            });
        }
        if request.version > 0 {
            if let Some((newest, series)) = &state.version
                && *series == request.version_epoch
                && *newest >= request.version
            {
                let position = if keeps_history {
                    state.position()
                } else {
                    StreamPosition::default()
                };
                return Ok(PublishOutcome {
                    position,
                    duplicate: false,
                    suppressed: true,
                });
            }
            state.version = Some((request.version, request.version_epoch.clone()));
        }
        let position = if keeps_history {
            state.top += 1;
            publication.offset = state.top;
            state.entries.push_back(Entry {
                expires: now + request.history_ttl,
                publication: publication.clone(),
            });
            while state.entries.len() > request.history_size {
                state.entries.pop_front();
            }
            state.position()
        } else {
            StreamPosition::default()
        };
        if let Some(key) = request.idempotency_key {
            state.idempotency.insert(
                key,
                (position.clone(), now + self.inner.config.idempotency_ttl),
            );
        }
        if state.subscribed {
            handler.on_publication(
                channel,
                Arc::new(StoredPublication {
                    publication,
                    epoch: position.epoch.clone(),
                }),
            );
        }
        Ok(PublishOutcome {
            position,
            duplicate: false,
            suppressed: false,
        })
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        for name in channels {
            self.inner.channel(name).lock().subscribed = true;
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        for name in channels {
            if let Some(c) = self.inner.existing(name) {
                c.lock().subscribed = false;
            }
        }
        Ok(())
    }

    async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let now = Instant::now();
        let state = self.inner.channel(channel);
        let mut state = state.lock();
        state.prune(now);
        let limit = query.limit.max_items();
        let publications = if limit == 0 {
            Vec::new()
        } else if query.reverse {
            let below = query.since_offset.unwrap_or(u64::MAX);
            state
                .entries
                .iter()
                .rev()
                .filter(|e| e.publication.offset < below)
                .take(limit)
                .map(|e| e.publication.clone())
                .collect()
        } else {
            let above = query.since_offset.unwrap_or(0);
            // Entries are sorted by offset: skip to the first one after `above`.
            let start = state
                .entries
                .partition_point(|e| e.publication.offset <= above);
            state
                .entries
                .range(start..)
                .take(limit)
                .map(|e| e.publication.clone())
                .collect()
        };
        Ok(HistoryPage {
            publications,
            position: state.position(),
        })
    }

    async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        if let Some(c) = self.inner.existing(channel) {
            c.lock().entries.clear();
        }
        Ok(())
    }

    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let state = self.inner.channel(channel);
        state
            .lock()
            .presence
            .insert(info.client.clone(), (info.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        if let Some(c) = self.inner.existing(channel) {
            c.lock().presence.remove(client);
        }
        Ok(())
    }

    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let Some(c) = self.inner.existing(channel) else {
            return Ok(Vec::new());
        };
        let mut c = c.lock();
        c.prune(Instant::now());
        Ok(c.presence.values().map(|(info, _)| info.clone()).collect())
    }

    async fn publish_join_leave(&self, channel: &str, event: JoinLeave) -> Result<(), BrokerError> {
        let handler = self.inner.handler.get().ok_or(BrokerError::Lifecycle)?;
        if let Some(c) = self.inner.existing(channel) {
            // Under the channel lock, like publications, so the two stay in order.
            let c = c.lock();
            if c.subscribed {
                handler.on_join_leave(channel, event);
            }
        }
        Ok(())
    }

    async fn take_user_publish(&self, user: &str, quota: Quota) -> Result<bool, BrokerError> {
        let mut buckets = self.inner.user_publishes.lock();
        let now = Instant::now();
        if let Some(bucket) = buckets.get_mut(user) {
            return Ok(bucket.take(&quota, now));
        }
        let mut bucket = Bucket::default();
        let taken = bucket.take(&quota, now);
        buckets.insert(user.to_owned(), bucket);
        Ok(taken)
    }

    async fn admit_connection(
        &self,
        user: &str,
        client: &str,
        limit: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let now = Instant::now();
        let mut users = self.inner.user_connections.lock();
        let conns = users.entry(user.to_owned()).or_default();
        conns.retain(|_, until| *until > now);
        let admitted =
            conns.contains_key(client) || u32::try_from(conns.len()).unwrap_or(u32::MAX) < limit;
        if admitted {
            conns.insert(client.to_owned(), now + ttl);
        }
        Ok(admitted)
    }

    async fn release_connection(&self, user: &str, client: &str) -> Result<(), BrokerError> {
        let mut users = self.inner.user_connections.lock();
        if let Some(conns) = users.get_mut(user) {
            conns.remove(client);
            if conns.is_empty() {
                users.remove(user);
            }
        }
        Ok(())
    }

    async fn send_to_node(&self, node: &str, message: bytes::Bytes) -> Result<bool, BrokerError> {
        // One process, one node: a message can only be for this one.
        let handler = self.inner.handler.get().ok_or(BrokerError::Lifecycle)?;
        if self.inner.node.get().is_some_and(|own| own == node) {
            handler.on_node_message(message);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn report_node(
        &self,
        node: &str,
        report: bytes::Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut reports = self.inner.reports.lock();
        let now = Instant::now();
        reports.retain(|_, (until, _)| *until > now);
        reports.insert(node.to_owned(), (now + ttl, report));
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<bytes::Bytes>, BrokerError> {
        let now = Instant::now();
        Ok(self
            .inner
            .reports
            .lock()
            .values()
            .filter(|(until, _)| *until > now)
            .map(|(_, report)| report.clone())
            .collect())
    }

    async fn forget_node(&self, node: &str) -> Result<(), BrokerError> {
        self.inner.reports.lock().remove(node);
        Ok(())
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth::ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::broker_conformance_tests!(|| async { MemoryBroker::new() });

    #[tokio::test]
    async fn sweep_forgets_idle_channels_but_not_subscribed_ones() {
        let broker = MemoryBroker::with_config(MemoryConfig {
            meta_ttl: Duration::from_millis(10),
            ..MemoryConfig::default()
        });
        broker
            .history("idle", HistoryQuery::default())
            .await
            .expect("history");
        broker.subscribe(&["kept".to_owned()]).await.expect("sub");
        assert_eq!(broker.channel_count(), 2);
        broker.inner.sweep(Instant::now() + Duration::from_secs(1));
        assert_eq!(broker.channel_count(), 1);
    }
}
