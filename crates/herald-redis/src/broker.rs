//! The Redis broker: publishing through the function library, node subscriptions on a
//! dedicated pub/sub client, and the safety nets that make delivery gap-free.

use crate::config::RedisConfig;
use crate::envelope::{self, Decoded};
use crate::metrics::RedisMetrics;
use crate::sequencer::{Sequencer, Verdict};
use crate::{FUNCTION_LIBRARY, FUNCTION_VERSION};
use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::UnresponsiveConfig;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use herald_broker::{
    Broker, BrokerContext, BrokerError, BrokerHandler, BrokerHealth, HistoryPage, HistoryQuery,
    JoinLeave, PublishOutcome, PublishRequest, StoredPublication, new_epoch,
};
use herald_protocol::{ClientInfo, StreamPosition};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisStartError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: fred::error::Error,
    },
    /// Redis did not answer in time.
    #[error("cannot reach Redis at {url} within {timeout:?}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Redis refused the connection or a start-up command.
    #[error("Redis at {url} failed during start-up")]
    Redis {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: fred::error::Error,
    },
    /// The server is older than 7.0 (no functions, no sharded pub/sub).
    #[error("Redis {found} is too old: Herald needs Redis 7.0 or newer")]
    TooOld {
        /// The version found.
        found: String,
    },
    /// The loaded function library is not one this gateway can use.
    #[error(
        "Redis holds Herald function library version {found:?}, this gateway needs {FUNCTION_VERSION:?}"
    )]
    FunctionVersion {
        /// The version found.
        found: String,
    },
    /// Metrics could not be created.
    #[error("metrics could not be created")]
    Metrics(#[source] prometheus::Error),
}

/// A Herald broker over Redis. See the crate docs.
pub struct RedisBroker {
    inner: Arc<Inner>,
}

type SharedRead = Shared<BoxFuture<'static, Result<Arc<HistoryPage>, Arc<BrokerError>>>>;

/// A history read in flight that later callers may share.
struct InFlight {
    id: u64,
    started: tokio::time::Instant,
    read: SharedRead,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    channel: String,
    since: Option<u64>,
    limit: i64,
    reverse: bool,
}

enum Work {
    Publication { channel: String, payload: Bytes },
    CatchUp(String),
}

/// A node (un)subscription waiting to be merged with others into one command.
struct SubRequest {
    subscribe: bool,
    channels: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<(), Arc<BrokerError>>>,
}

/// The largest offset passed to the Lua functions (see `read_history`).
const MAX_LUA_OFFSET: u64 = 99_999_999_999_999;

/// Most channels merged into one SUBSCRIBE.
const SUBSCRIBE_BATCH: usize = 512;

struct Probe {
    last_echo: Instant,
    sent_at: Option<Instant>,
    reconnect_requested: bool,
}

struct Inner {
    config: RedisConfig,
    cluster: bool,
    client: Client,
    subscriber: SubscriberClient,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    channels: Mutex<HashMap<String, Sequencer>>,
    workers: OnceLock<Vec<mpsc::UnboundedSender<Work>>>,
    inflight: Mutex<HashMap<ReadKey, InFlight>>,
    next_read: std::sync::atomic::AtomicU64,
    metrics: RedisMetrics,
    probe: Mutex<Probe>,
    probe_channel: String,
    subscriptions: mpsc::UnboundedSender<SubRequest>,
}

fn unavailable(e: fred::error::Error) -> BrokerError {
    if matches!(e.kind(), ErrorKind::Timeout) {
        BrokerError::Timeout
    } else {
        BrokerError::Unavailable(Box::new(e))
    }
}

fn protocol(message: &str) -> BrokerError {
    BrokerError::Protocol(message.to_owned().into())
}

/// An error with its causes, for logs ("broker unavailable: ERR ...").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn secs(d: Duration) -> String {
    d.as_secs().max(1).to_string()
}

impl RedisBroker {
    /// Connects, checks the server, and loads the function library. Fails fast with a
    /// clear error when Redis is unreachable or too old; reconnects by itself afterwards.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisStartError> {
        let url = config.url.clone();
        let fred_config = Config::from_url(&url).map_err(|source| RedisStartError::Url {
            url: url.clone(),
            source,
        })?;
        let cluster = fred_config.server.is_clustered();
        let mut builder = Builder::from_config(fred_config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.command_timeout;
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(config.command_timeout),
                    interval: Duration::from_millis(500),
                };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = config.command_timeout;
                // Pub/sub messages wait here for the dispatcher; a lagging reader loses
                // messages (then repaired), so leave room for bursts.
                p.broadcast_channel_capacity = 1 << 16;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let redis_err = |source| RedisStartError::Redis {
            url: url.clone(),
            source,
        };
        let client = builder.build().map_err(redis_err)?;
        let subscriber = builder.build_subscriber_client().map_err(redis_err)?;
        let subscriber_client = subscriber.to_client();
        for c in [&client, &subscriber_client] {
            match tokio::time::timeout(config.connect_timeout, c.init()).await {
                Ok(Ok(_task)) => {}
                Ok(Err(source)) => return Err(RedisStartError::Redis { url, source }),
                Err(_) => {
                    let _ = c.quit().await;
                    return Err(RedisStartError::Unreachable {
                        url,
                        timeout: config.connect_timeout,
                    });
                }
            }
        }
        let info: String = client
            .info(Some(fred::types::InfoKind::Server))
            .await
            .map_err(redis_err)?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(RedisStartError::TooOld { found: version });
        }
        warn_on_eviction(&client).await;
        load_functions(&client, cluster)
            .await
            .map_err(|e| match e {
                LoadError::Redis(source) => RedisStartError::Redis {
                    url: url.clone(),
                    source,
                },
                LoadError::Version(found) => RedisStartError::FunctionVersion { found },
            })?;
        let probe_id = new_epoch();
        let prefix = &config.prefix;
        let probe_channel = format!("{prefix}:{{probe-{probe_id}}}:pub");
        tracing::info!(redis = %version, cluster, "connected to Redis");
        let (subscriptions, requests) = mpsc::unbounded_channel();
        let broker = Self {
            inner: Arc::new(Inner {
                cluster,
                client,
                subscriber,
                handler: OnceLock::new(),
                channels: Mutex::new(HashMap::new()),
                workers: OnceLock::new(),
                inflight: Mutex::new(HashMap::new()),
                next_read: std::sync::atomic::AtomicU64::new(0),
                metrics: RedisMetrics::new().map_err(RedisStartError::Metrics)?,
                probe: Mutex::new(Probe {
                    last_echo: Instant::now(),
                    sent_at: None,
                    reconnect_requested: false,
                }),
                probe_channel,
                subscriptions,
                config,
            }),
        };
        tokio::spawn(batch_subscriptions(Arc::downgrade(&broker.inner), requests));
        Ok(broker)
    }
}

enum LoadError {
    Redis(fred::error::Error),
    Version(String),
}

/// Loads the library unless the same or a newer version is already there, so a
/// gateway of an older release never downgrades it during a rolling update.
async fn load_functions(client: &Client, cluster: bool) -> Result<(), LoadError> {
    let loaded: Option<String> = client
        .fcall_ro::<Value, _, _, _>("herald_version", Vec::<String>::new(), Vec::<String>::new())
        .await
        .ok()
        .and_then(|v| v.as_string());
    let ours: u64 = FUNCTION_VERSION.parse().unwrap_or(0);
    match loaded.as_deref().map(|v| v.parse::<u64>().unwrap_or(0)) {
        Some(v) if v >= ours && !cluster => return Ok(()),
        _ => {}
    }
    if cluster {
        client
            .function_load_cluster::<(), _>(true, FUNCTION_LIBRARY)
            .await
            .map_err(LoadError::Redis)?;
    } else {
        client
            .function_load::<Value, _>(true, FUNCTION_LIBRARY)
            .await
            .map_err(LoadError::Redis)?;
    }
    let now: Option<String> = client
        .fcall_ro::<Value, _, _, _>("herald_version", Vec::<String>::new(), Vec::<String>::new())
        .await
        .map_err(LoadError::Redis)?
        .as_string();
    match now {
        Some(v) if v.parse::<u64>().unwrap_or(0) >= ours => Ok(()),
        other => Err(LoadError::Version(other.unwrap_or_default())),
    }
}

/// An eviction policy may drop history or meta keys, and then "recovered" could be
/// claimed over a hole; only `noeviction` is safe.
async fn warn_on_eviction(client: &Client) {
    let reply: Result<Value, _> = client
        .custom(
            fred::types::CustomCommand::new_static("CONFIG", None, false),
            vec!["GET", "maxmemory-policy"],
        )
        .await;
    let policy = reply
        .ok()
        .map(Value::into_array)
        .and_then(|a| a.get(1).and_then(Value::as_string));
    match policy.as_deref() {
        Some("noeviction") => {}
        Some(p) => tracing::warn!(
            policy = p,
            "Redis maxmemory-policy can evict Herald's history keys, which breaks recovery; use noeviction"
        ),
        None => tracing::warn!("cannot read Redis maxmemory-policy; make sure it is noeviction"),
    }
}

impl Inner {
    fn key(&self, channel: &str, suffix: &str) -> String {
        format!("{}:{{{channel}}}:{suffix}", self.config.prefix)
    }

    fn pubsub_channel(&self, channel: &str) -> String {
        self.key(channel, "pub")
    }

    fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub
            .strip_prefix(self.config.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:pub")
    }

    fn handler(&self) -> Option<&Arc<dyn BrokerHandler>> {
        self.handler.get()
    }

    fn route(&self, channel: &str, work: Work) {
        let Some(workers) = self.workers.get() else {
            return;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut h);
        let i = (h.finish() % workers.len() as u64) as usize;
        let _ = workers[i].send(work);
    }

    fn catch_up_all(&self) {
        let names: Vec<String> = self.channels.lock().keys().cloned().collect();
        for name in names {
            self.route(&name.clone(), Work::CatchUp(name));
        }
    }

    /// Calls a library function; an empty Redis (restarted without persistence) has no
    /// library, so it is loaded again and the call retried once.
    async fn fcall(
        &self,
        name: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, BrokerError> {
        match self
            .client
            .fcall::<Value, _, _, _>(name, keys.clone(), args.clone())
            .await
        {
            Ok(v) => Ok(v),
            Err(e) if e.details().contains("Function not found") => {
                tracing::warn!(
                    "Herald's function library is missing (Redis lost its data?); loading it again"
                );
                load_functions(&self.client, self.cluster)
                    .await
                    .map_err(|e| match e {
                        LoadError::Redis(e) => unavailable(e),
                        LoadError::Version(v) => {
                            protocol(&format!("function library version {v:?}"))
                        }
                    })?;
                self.client
                    .fcall(name, keys, args)
                    .await
                    .map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read_history(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: i64,
        reverse: bool,
    ) -> Result<HistoryPage, BrokerError> {
        let keys = vec![self.key(channel, "stream"), self.key(channel, "meta")];
        // Lua prints numbers of 1e14 and above in exponent form, which no stream ID
        // parses as; no real stream gets near, so a larger position means "past the top".
        let since = since.map_or_else(|| "-1".to_owned(), |s| s.min(MAX_LUA_OFFSET).to_string());
        let args = vec![
            since,
            limit.to_string(),
            if reverse { "1" } else { "0" }.to_owned(),
            new_epoch(),
            secs(self.config.meta_ttl),
        ];
        let reply = self.fcall("herald_history", keys, args).await?;
        parse_history(reply)
    }

    /// Delivers a publication that is next in sequence.
    fn deliver(&self, channel: &str, d: Decoded) {
        let stored = Arc::new(StoredPublication {
            publication: d.publication,
            epoch: d.epoch,
        });
        {
            let mut channels = self.channels.lock();
            let Some(seq) = channels.get_mut(channel) else {
                return;
            };
            seq.delivered(&stored);
        }
        if let Some(h) = self.handler() {
            h.on_publication(channel, stored);
        }
    }

    /// The stream cannot be followed without a hole: subscribers must resubscribe with
    /// recovery, and the node continues from `offset` in `epoch`.
    fn lost(&self, channel: &str, offset: u64, epoch: &str) {
        self.metrics.resets.inc();
        {
            let mut channels = self.channels.lock();
            let Some(seq) = channels.get_mut(channel) else {
                return;
            };
            seq.reset(offset, epoch);
        }
        tracing::warn!(channel, offset, epoch, "stream continuity lost");
        if let Some(h) = self.handler() {
            h.on_insufficient_state(channel);
        }
    }

    /// Offers a publication in sequence: delivers it, drops a duplicate, or repairs the
    /// gap before it from the stream (one read for the whole node).
    async fn offer(&self, channel: &str, d: Decoded) {
        loop {
            let verdict = match self.channels.lock().get(channel) {
                Some(seq) => seq.judge(d.publication.offset, &d.epoch),
                None => return,
            };
            match verdict {
                Verdict::Deliver => return self.deliver(channel, d),
                Verdict::Duplicate => return,
                Verdict::Reset => return self.lost(channel, d.publication.offset, &d.epoch),
                Verdict::Gap { from, to } => {
                    self.metrics.gap_repairs.inc();
                    if !self.repair(channel, from, to, &d.epoch).await {
                        self.lost(channel, to, &d.epoch);
                    }
                }
            }
        }
    }

    async fn repair(&self, channel: &str, from: u64, to: u64, epoch: &str) -> bool {
        let count = i64::try_from(to - from + 1).unwrap_or(i64::MAX);
        let page = match self
            .read_history(channel, Some(from - 1), count, false)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %chain(&e), channel, "gap repair read failed");
                return false;
            }
        };
        if page.position.epoch != epoch {
            return false;
        }
        let mut expected = from;
        for p in page.publications {
            if p.offset != expected {
                return false;
            }
            self.metrics.gap_repair_messages.inc();
            self.deliver(
                channel,
                Decoded {
                    publication: p,
                    epoch: epoch.to_owned(),
                },
            );
            expected += 1;
            if expected > to {
                break;
            }
        }
        expected > to
    }

    /// Brings a channel up to its stream's top (after a reconnect, a lagging reader, or
    /// a top-offset check that found the node behind).
    async fn catch_up(&self, channel: &str) {
        let known = self
            .channels
            .lock()
            .get(channel)
            .and_then(|s| s.position().map(|(o, e)| (o, e.to_owned())));
        let Some((last, epoch)) = known else {
            return;
        };
        let page = match self.read_history(channel, Some(last), -1, false).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %chain(&e), channel, "catch-up read failed; the next check retries");
                return;
            }
        };
        let top = page.position.offset;
        if page.position.epoch != epoch {
            return self.lost(channel, top, &page.position.epoch);
        }
        for p in page.publications {
            self.offer(
                channel,
                Decoded {
                    publication: p,
                    epoch: epoch.clone(),
                },
            )
            .await;
        }
        let behind = self
            .channels
            .lock()
            .get(channel)
            .and_then(|s| s.position().map(|(o, _)| o < top))
            .unwrap_or(false);
        if behind {
            // The stream no longer holds what was missed (expired or trimmed).
            self.lost(channel, top, &epoch);
        }
    }

    /// Subscribes (or unsubscribes) pub/sub channels and returns once Redis has
    /// processed it: a subscription must be live before history is read, or a
    /// publication in between would only arrive through the slower safety nets.
    async fn listen(&self, subscribe: bool, names: Vec<String>) -> Result<(), fred::error::Error> {
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

    /// Resubscribes every tracked channel after a reconnect. Only non-empty sets are
    /// sent (an empty SUBSCRIBE is an error whose reply would be taken for another's).
    async fn resubscribe(&self) -> Result<(), fred::error::Error> {
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

    /// Queues a node (un)subscription; concurrent ones are merged into one command,
    /// which keeps a reconnect storm from costing one round trip per channel.
    async fn queue_subscription(
        &self,
        subscribe: bool,
        channels: &[String],
    ) -> Result<(), BrokerError> {
        let (reply, done) = tokio::sync::oneshot::channel();
        let request = SubRequest {
            subscribe,
            channels: channels.to_vec(),
            reply,
        };
        self.subscriptions
            .send(request)
            .map_err(|_| BrokerError::Lifecycle)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::Unavailable(Box::new(e))),
            Err(_) => Err(BrokerError::Lifecycle),
        }
    }

    async fn do_subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        let inner = self;
        {
            let mut known = inner.channels.lock();
            for c in channels {
                known
                    .entry(c.clone())
                    .or_insert_with(|| Sequencer::with_window(inner.config.replay_window));
            }
        }
        let names: Vec<String> = channels.iter().map(|c| inner.pubsub_channel(c)).collect();
        let subscribed = inner.listen(true, names).await;
        if let Err(e) = subscribed {
            let mut known = inner.channels.lock();
            for c in channels {
                known.remove(c);
            }
            return Err(unavailable(e));
        }
        // The position when the node started listening: a publication lost right after
        // this is then a gap the node can see.
        let reads = channels
            .iter()
            .map(|c| inner.read_history(c, None, 0, false));
        let pages = futures_util::future::join_all(reads).await;
        for (c, page) in channels.iter().zip(pages) {
            // Best effort: without a baseline the first live publication sets one.
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), channel = %c, "baseline read failed");
                    continue;
                }
            };
            if let Some(seq) = inner.channels.lock().get_mut(c) {
                seq.baseline(page.position.offset, &page.position.epoch);
            }
        }
        Ok(())
    }

    async fn do_unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        let inner = self;
        {
            let mut known = inner.channels.lock();
            for c in channels {
                known.remove(c);
            }
        }
        let names: Vec<String> = channels.iter().map(|c| inner.pubsub_channel(c)).collect();
        inner.listen(false, names).await.map_err(unavailable)
    }

    async fn on_message(&self, channel: &str, payload: &[u8]) {
        match envelope::decode_incoming(payload) {
            Ok(envelope::Incoming::Publication(d)) => self.offer(channel, d).await,
            Ok(envelope::Incoming::JoinLeave(event)) => {
                if self.channels.lock().contains_key(channel)
                    && let Some(h) = self.handler()
                {
                    h.on_join_leave(channel, event);
                }
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), channel, "unreadable pub/sub message ignored")
            }
        }
    }

    fn probe_echo(&self) {
        let mut probe = self.probe.lock();
        let now = Instant::now();
        if let Some(sent) = probe.sent_at.take() {
            self.metrics
                .probe_roundtrip
                .observe(now.duration_since(sent).as_secs_f64());
        }
        probe.last_echo = now;
        probe.reconnect_requested = false;
    }

    fn pubsub_fresh(&self) -> bool {
        self.probe.lock().last_echo.elapsed() < self.config.probe_timeout
    }
}

fn parse_history(reply: Value) -> Result<HistoryPage, BrokerError> {
    let mut parts = reply.into_array().into_iter();
    let top = parts
        .next()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| protocol("history reply without top"))?;
    let epoch = parts
        .next()
        .and_then(|v| v.as_string())
        .ok_or_else(|| protocol("history reply without epoch"))?;
    let entries = parts.next().map(Value::into_array).unwrap_or_default();
    let mut publications = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut e = entry.into_array().into_iter();
        let id = e.next().and_then(|v| v.as_string()).unwrap_or_default();
        let offset: u64 = id
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| protocol("stream entry id is not <offset>-0"))?;
        let fields = e.next().map(Value::into_array).unwrap_or_default();
        let (mut data, mut info, mut tags) = (Bytes::new(), Bytes::new(), Bytes::new());
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let v = v.into_bytes().unwrap_or_default();
            match k.as_string().as_deref() {
                Some("d") => data = v,
                Some("i") => info = v,
                Some("t") => tags = v,
                _ => {}
            }
        }
        publications.push(envelope::publication(offset, &data, &info, &tags));
    }
    Ok(HistoryPage {
        publications,
        position: StreamPosition { offset: top, epoch },
    })
}

async fn dispatch(
    inner: Weak<Inner>,
    mut rx: tokio::sync::broadcast::Receiver<fred::types::Message>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let msg = rx.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        match msg {
            Ok(msg) => {
                let name: &str = &msg.channel;
                if name == inner.probe_channel {
                    inner.probe_echo();
                    continue;
                }
                let Some(channel) = inner.channel_of(name) else {
                    continue;
                };
                let channel = channel.to_owned();
                let payload = msg.value.into_bytes().unwrap_or_default();
                inner.route(&channel.clone(), Work::Publication { channel, payload });
            }
            Err(RecvError::Lagged(n)) => {
                // Messages were dropped before we read them: catch every channel up.
                inner.metrics.lagged_messages.inc_by(n);
                tracing::warn!(
                    dropped = n,
                    "pub/sub reader lagged; catching up from streams"
                );
                inner.catch_up_all();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn worker(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Work>) {
    while let Some(work) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        match work {
            Work::Publication { channel, payload } => inner.on_message(&channel, &payload).await,
            Work::CatchUp(channel) => inner.catch_up(&channel).await,
        }
    }
}

/// Merges waiting (un)subscriptions: consecutive requests of one kind become one
/// command of up to [`SUBSCRIBE_BATCH`] channels. Order is kept between kinds.
async fn batch_subscriptions(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<SubRequest>) {
    let mut pending: Option<SubRequest> = None;
    loop {
        let first = match pending.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let kind = first.subscribe;
        let mut channels = first.channels.clone();
        let mut batch = vec![first];
        while channels.len() < SUBSCRIBE_BATCH {
            match rx.try_recv() {
                Ok(r) if r.subscribe == kind => {
                    channels.extend(r.channels.iter().cloned());
                    batch.push(r);
                }
                Ok(r) => {
                    pending = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let result = if kind {
            inner.do_subscribe(&channels).await
        } else {
            inner.do_unsubscribe(&channels).await
        };
        let result = result.map_err(Arc::new);
        for r in batch {
            let _ = r.reply.send(result.clone());
        }
    }
}

/// After the pub/sub connection comes back: resubscribe everything first, then read
/// what was published meanwhile, so nothing falls between the two.
async fn on_reconnects(
    inner: Weak<Inner>,
    mut rx: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
) {
    while rx.recv().await.is_ok() {
        let Some(inner) = inner.upgrade() else { return };
        inner.metrics.pubsub_reconnects.inc();
        tracing::warn!("pub/sub connection re-established; resubscribing and catching up");
        if let Err(e) = inner.resubscribe().await {
            tracing::warn!(error = %chain(&e), "resubscribe failed; the probe will reconnect again");
            continue;
        }
        inner.probe_echo();
        inner.catch_up_all();
    }
}

/// Finds channels whose stream moved on without the node hearing (a lost tail no later
/// message reveals) or whose epoch changed, and catches them up.
async fn top_checks(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Channels found behind at the last check, with the top seen then. A node is only
    // caught up when it is still short of that top a whole interval later: publications
    // in flight on pub/sub arrive within milliseconds, a lost tail never does. Acting at
    // once would race them (and could call a healthy stream lost if it was trimmed).
    let mut behind: HashMap<String, u64> = HashMap::new();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let known: Vec<(String, u64, String)> = inner
            .channels
            .lock()
            .iter()
            .filter_map(|(c, s)| s.position().map(|(o, e)| (c.clone(), o, e.to_owned())))
            .collect();
        let mut still_behind = HashMap::new();
        for chunk in known.chunks(256) {
            // Concurrent commands on one connection are pipelined by the client.
            let reads = chunk.iter().map(|(c, _, _)| {
                inner
                    .client
                    .hmget::<Vec<Option<String>>, _, _>(inner.key(c, "meta"), vec!["epoch", "top"])
            });
            let replies = futures_util::future::join_all(reads).await;
            for ((channel, last, epoch), reply) in chunk.iter().zip(replies) {
                let Ok(fields) = reply else { continue };
                let now_epoch = fields.first().cloned().flatten();
                let top: u64 = fields
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                match now_epoch {
                    Some(e) if e == *epoch && top > *last => match behind.get(channel) {
                        Some(&seen) if *last < seen => {
                            inner.route(channel, Work::CatchUp(channel.clone()))
                        }
                        _ => {
                            still_behind.insert(channel.clone(), top);
                        }
                    },
                    Some(e) if e == *epoch => {}
                    // A new epoch, or the meta is gone (Redis lost its data): the
                    // channel's worker reads the new position and tells subscribers, in
                    // order with everything else it does for the channel.
                    _ => inner.route(channel, Work::CatchUp(channel.clone())),
                }
            }
        }
        behind = still_behind;
    }
}

/// Publishes to the node's own probe channel; a pub/sub connection that stops echoing
/// is reported unhealthy (`/readyz`) and reconnected.
async fn probes(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let stale = {
            let mut probe = inner.probe.lock();
            let stale = probe.last_echo.elapsed() >= inner.config.probe_timeout
                && !probe.reconnect_requested;
            if stale {
                probe.reconnect_requested = true;
            }
            if probe.sent_at.is_none() {
                probe.sent_at = Some(Instant::now());
            }
            stale
        };
        if stale {
            inner.metrics.probe_failures.inc();
            tracing::warn!("pub/sub probe got no echo; reconnecting the pub/sub connection");
            let subscriber = inner.subscriber.clone();
            tokio::spawn(async move {
                let _ = subscriber.force_reconnection().await;
            });
        }
        let sent = if inner.cluster {
            inner
                .client
                .spublish::<(), _, _>(inner.probe_channel.as_str(), "probe")
                .await
        } else {
            inner
                .client
                .publish::<(), _, _>(inner.probe_channel.as_str(), "probe")
                .await
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "probe publish failed");
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn start(&self, context: BrokerContext) -> Result<(), BrokerError> {
        let inner = &self.inner;
        inner
            .handler
            .set(context.handler.clone())
            .map_err(|_| BrokerError::Lifecycle)?;
        inner
            .metrics
            .register(&context.registry)
            .map_err(BrokerError::Metrics)?;
        let weak = Arc::downgrade(inner);
        let mut senders = Vec::with_capacity(inner.config.workers.max(1));
        for _ in 0..inner.config.workers.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            tokio::spawn(worker(weak.clone(), rx));
        }
        let _ = inner.workers.set(senders);
        tokio::spawn(dispatch(weak.clone(), inner.subscriber.message_rx()));
        tokio::spawn(on_reconnects(weak.clone(), inner.subscriber.reconnect_rx()));
        let probe = vec![inner.probe_channel.clone()];
        if inner.cluster {
            inner
                .subscriber
                .ssubscribe(probe)
                .await
                .map_err(unavailable)?;
        } else {
            inner
                .subscriber
                .subscribe(probe)
                .await
                .map_err(unavailable)?;
        }
        inner.probe_echo();
        tokio::spawn(top_checks(weak.clone(), inner.config.top_check_interval));
        tokio::spawn(probes(weak, inner.config.probe_interval));
        Ok(())
    }

    async fn publish(
        &self,
        channel: &str,
        request: PublishRequest,
    ) -> Result<PublishOutcome, BrokerError> {
        let inner = &self.inner;
        let mut keys = vec![inner.key(channel, "stream"), inner.key(channel, "meta")];
        if let Some(k) = &request.idempotency_key {
            keys.push(inner.key(channel, &format!("idem:{k}")));
        }
        let size = if request.keeps_history() {
            request.history_size
        } else {
            0
        };
        let args = vec![
            inner.pubsub_channel(channel),
            request.data.get().to_owned(),
            size.to_string(),
            secs(request.history_ttl),
            secs(inner.config.meta_ttl),
            new_epoch(),
            envelope::encode_info(request.info.as_ref()),
            envelope::encode_tags(&request.tags),
            secs(inner.config.idempotency_ttl),
            if inner.cluster { "1" } else { "0" }.to_owned(),
        ];
        let started = Instant::now();
        let reply = inner.fcall("herald_publish", keys, args).await?;
        inner
            .metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        let mut parts = reply.into_array().into_iter();
        let offset = parts
            .next()
            .and_then(|v| v.as_u64())
            .ok_or_else(|| protocol("publish reply without offset"))?;
        let epoch = parts.next().and_then(|v| v.as_string()).unwrap_or_default();
        let duplicate = parts.next().and_then(|v| v.as_u64()) == Some(1);
        Ok(PublishOutcome {
            position: StreamPosition { offset, epoch },
            duplicate,
        })
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.inner.queue_subscription(true, channels).await
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.inner.queue_subscription(false, channels).await
    }

    async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let key = ReadKey {
            channel: channel.to_owned(),
            since: query.since_offset,
            limit: query.limit.to_signed(),
            reverse: query.reverse,
        };
        // A subscriber registered for live publications recovering the recent past is
        // answered from the channel's replay window: what the node delivered last, with
        // everything after it still to come live.
        if query.not_before.is_some()
            && !query.reverse
            && let Some(page) = self
                .inner
                .channels
                .lock()
                .get(channel)
                .and_then(|seq| seq.window().page(key.since, key.limit))
        {
            self.inner
                .metrics
                .history_reads
                .with_label_values(&["window"])
                .inc();
            return Ok(page);
        }
        // At most one read per (channel, position) in flight on this node: a reconnect
        // storm of clients recovering from the same offset costs one Redis read.
        // A caller that registered for live publications at `not_before` cannot use a
        // read that started before then; any other caller needs one that started after
        // its call (so it sees its own earlier publishes). A finished read is never
        // shared: its page is already old.
        let not_before = query.not_before.unwrap_or_else(tokio::time::Instant::now);
        let (read, issued) = {
            let mut inflight = self.inner.inflight.lock();
            let usable = inflight
                .get(&key)
                .filter(|f| f.started >= not_before && f.read.peek().is_none());
            match usable {
                Some(f) => (f.read.clone(), None),
                None => {
                    let id = self
                        .inner
                        .next_read
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let inner = self.inner.clone();
                    let k = key.clone();
                    let read: SharedRead = async move {
                        let page = inner
                            .read_history(&k.channel, k.since, k.limit, k.reverse)
                            .await
                            .map(Arc::new)
                            .map_err(Arc::new);
                        // The read leaves the table itself, even if its first caller
                        // gave up waiting (a cancelled request must not pin its page).
                        let mut inflight = inner.inflight.lock();
                        if inflight.get(&k).is_some_and(|f| f.id == id) {
                            inflight.remove(&k);
                        }
                        page
                    }
                    .boxed()
                    .shared();
                    let started = tokio::time::Instant::now();
                    inflight.insert(
                        key.clone(),
                        InFlight {
                            id,
                            started,
                            read: read.clone(),
                        },
                    );
                    (read, Some(id))
                }
            }
        };
        let kind = if issued.is_some() {
            "issued"
        } else {
            "coalesced"
        };
        self.inner
            .metrics
            .history_reads
            .with_label_values(&[kind])
            .inc();
        let result = read.await;
        match result {
            Ok(page) => Ok(HistoryPage::clone(&page)),
            Err(e) => Err(BrokerError::Unavailable(Box::new(e))),
        }
    }

    async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        self.inner
            .client
            .del::<i64, _>(self.inner.key(channel, "stream"))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let keys = vec![
            inner.key(channel, "presence"),
            inner.key(channel, "presence-exp"),
        ];
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let args = vec![
            info.client.clone(),
            envelope::encode_info(Some(info)),
            ttl_ms.to_string(),
        ];
        inner
            .fcall("herald_presence_add", keys, args)
            .await
            .map(|_| ())
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let keys = vec![
            inner.key(channel, "presence"),
            inner.key(channel, "presence-exp"),
        ];
        inner
            .fcall("herald_presence_remove", keys, vec![client.to_owned()])
            .await
            .map(|_| ())
    }

    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        let inner = &self.inner;
        let keys = vec![
            inner.key(channel, "presence"),
            inner.key(channel, "presence-exp"),
        ];
        let reply = inner.fcall("herald_presence", keys, Vec::new()).await?;
        let mut out = Vec::new();
        let mut it = reply.into_array().into_iter();
        while let (Some(_client), Some(info)) = (it.next(), it.next()) {
            let bytes = info.into_bytes().unwrap_or_default();
            if let Ok(info) = serde_json::from_slice::<ClientInfo>(&bytes) {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn publish_join_leave(&self, channel: &str, event: JoinLeave) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let payload = Bytes::from(envelope::encode_join_leave(&event));
        let name = inner.pubsub_channel(channel);
        let sent = if inner.cluster {
            inner.client.spublish::<(), _, _>(name, payload).await
        } else {
            inner.client.publish::<(), _, _>(name, payload).await
        };
        sent.map_err(unavailable)
    }

    fn health(&self) -> BrokerHealth {
        let inner = &self.inner;
        if !inner.client.is_connected() {
            return BrokerHealth {
                ready: false,
                detail: "Redis command connection down".into(),
            };
        }
        if !inner.subscriber.is_connected() || !inner.pubsub_fresh() {
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
        let (client, subscriber) = (self.inner.client.clone(), self.inner.subscriber.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = client.quit().await;
            });
        }
    }
}
