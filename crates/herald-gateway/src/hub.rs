//! The local hub: which connections on this node subscribe to which channels. It keeps
//! the node's broker subscriptions reference-counted, and fans each publication out by
//! encoding it once per encoding in use and queueing the same bytes to every local
//! subscriber.

use crate::delta::DeltaForms;
use crate::metrics::Metrics;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use herald_broker::{Broker, BrokerError, BrokerHandler, JoinLeave, StoredPublication};
use herald_protocol::{
    ClientInfo, DisconnectCode, Encoding, Join, Leave, Publication, Push, Reply,
};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A node-unique connection number.
pub(crate) type ConnId = u64;

/// A publication encoded once for every subscriber on this node.
#[derive(Debug)]
pub(crate) struct EncodedPublication {
    /// The channel.
    pub channel: Arc<str>,
    /// The offset (0 without history).
    pub offset: u64,
    /// The epoch of the offset.
    pub epoch: Arc<str>,
    /// The push, encoded as one JSON object.
    pub frame: Bytes,
    /// The forms delta subscribers receive, while the channel has any on this node.
    pub delta: Option<DeltaForms>,
    /// The publication, for the encodings made on demand.
    pub stored: Arc<StoredPublication>,
    /// The push as a Protobuf message, made by the first Protobuf subscriber that
    /// writes it, so that a node without Protobuf clients never encodes one.
    pub protobuf: OnceLock<Bytes>,
}

impl EncodedPublication {
    /// The push in `encoding`, encoded at most once per node.
    pub(crate) fn encoded(&self, encoding: Encoding) -> &[u8] {
        match encoding {
            Encoding::Json => &self.frame,
            Encoding::Protobuf => self.protobuf.get_or_init(|| {
                herald_protocol::protobuf::encode_publication_push(
                    &self.channel,
                    &self.stored.publication,
                )
            }),
        }
    }
}

/// A push shared by its recipients (join, leave), encoded at most once per encoding
/// and only in the encodings its recipients use.
#[derive(Debug)]
pub(crate) struct EncodedPush {
    reply: Reply,
    json: OnceLock<Bytes>,
    protobuf: OnceLock<Bytes>,
}

impl EncodedPush {
    /// A push to encode on demand.
    pub(crate) fn new(reply: Reply) -> Self {
        Self {
            reply,
            json: OnceLock::new(),
            protobuf: OnceLock::new(),
        }
    }

    /// The push in `encoding`.
    pub(crate) fn encoded(&self, encoding: Encoding) -> &[u8] {
        match encoding {
            Encoding::Json => self
                .json
                .get_or_init(|| herald_protocol::frame::encode(&self.reply).unwrap_or_default()),
            Encoding::Protobuf => self
                .protobuf
                .get_or_init(|| herald_protocol::protobuf::encode_reply(&self.reply)),
        }
    }
}

/// What the hub and the server API queue for a connection's writer.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A publication in a subscribed channel.
    Publication(Arc<EncodedPublication>),
    /// A push (join, leave) shared by its recipients.
    Push(Arc<EncodedPush>),
    /// The server ends one subscription.
    Unsubscribe(Box<UnsubscribeOrder>),
}

/// The server ends one subscription of a connection.
#[derive(Debug, Clone)]
pub(crate) struct UnsubscribeOrder {
    /// The channel.
    pub channel: Arc<str>,
    /// The unsubscribe code.
    pub code: herald_protocol::UnsubscribeCode,
}

impl Outgoing {
    /// Tells a connection that the server ended its subscription to `channel`.
    pub(crate) fn unsubscribe(channel: Arc<str>, code: herald_protocol::UnsubscribeCode) -> Self {
        Outgoing::Unsubscribe(Box::new(UnsubscribeOrder { channel, code }))
    }
}

// Every connection's queue holds these: keeping the item two words wide keeps the
// buffer a burst makes small.
const _: () = assert!(std::mem::size_of::<Outgoing>() <= 16);

/// Asks a connection to close itself with a code, from outside its task.
///
/// One task waits for the request: the connection's own (or an admin tail's). Its
/// loop asks on every wake-up, once per delivery at low rates, so asking takes no lock:
/// an atomic flag and one registered waker.
#[derive(Debug, Default)]
pub(crate) struct Closer {
    requested: Mutex<Option<(u16, String)>>,
    /// Set, after `requested`, once a close is requested.
    closing: AtomicBool,
    /// The waiting task.
    waker: AtomicWaker,
}

impl Closer {
    /// Requests a close with one of Herald's codes; the first request wins. True for
    /// the first request.
    pub(crate) fn close(&self, code: DisconnectCode) -> bool {
        self.close_with(code.code(), code.reason())
    }

    /// Requests a close with any code (3000–4999, application codes included) and
    /// reason; the first request wins. True for the first request.
    pub(crate) fn close_with(&self, code: u16, reason: &str) -> bool {
        let mut requested = self.requested.lock();
        let first = requested.is_none();
        if first {
            *requested = Some((code, reason.to_owned()));
        }
        drop(requested);
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
        first
    }

    /// The requested code and reason, once a close was requested.
    pub(crate) fn requested_close(&self) -> Option<(u16, String)> {
        self.requested.lock().clone()
    }

    /// Whether a close was requested.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves when a close is requested. Awaited by one task at a time.
    pub(crate) async fn requested(&self) {
        std::future::poll_fn(|cx| {
            if self.is_closing() {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A request between the check and the registration woke no one.
            if self.is_closing() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// How the hub reaches one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle {
    /// Node-unique number.
    pub id: ConnId,
    /// The client id given in the connect reply.
    pub client: Arc<str>,
    /// The user id ("" = anonymous).
    pub user: Arc<str>,
    /// The connection's bounded queue.
    pub tx: crate::queue::Sender<Outgoing>,
    /// Closes the connection.
    pub closer: Arc<Closer>,
}

impl ConnHandle {
    /// Queues without waiting. A full queue means the client reads too slowly: it is
    /// closed with 3008 and recovers what it missed when it reconnects.
    pub(crate) fn offer(&self, item: Outgoing, metrics: &Metrics) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(crate::queue::TrySendError::Full(_)) => {
                // Counted once, by whichever thread made the first close request.
                if self.closer.close(DisconnectCode::Slow) {
                    metrics.slow_disconnects.inc();
                }
                false
            }
            Err(crate::queue::TrySendError::Closed(_)) => false,
        }
    }
}

/// One local subscriber of a channel.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    /// The connection.
    pub conn: ConnHandle,
    /// Who it is, for presence and join/leave.
    pub info: ClientInfo,
    /// It wants join/leave pushes.
    pub join_leave: bool,
    /// It is listed in the channel's presence (this node keeps the entry fresh).
    pub presence: bool,
    /// It receives fossil deltas.
    pub delta: bool,
}

#[derive(Default)]
struct ChannelSubs {
    name: Option<Arc<str>>,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Subscribers receiving deltas; while there are any, `last` is kept.
    delta_subscribers: usize,
    /// The channel's last publication, the base of the next one's patch.
    last: Mutex<Option<Arc<StoredPublication>>>,
}

/// The node's subscription to one channel at the broker.
#[derive(Debug, Default)]
struct NodeSub {
    /// Local subscribers.
    local: usize,
    /// The node is subscribed at the broker (also while lingering with no subscriber).
    subscribed: bool,
    /// Bumped by every local subscribe, so a linger timer knows it is outdated.
    generation: u64,
}

// One async lock per channel serializes the node's broker (un)subscribe for it, so a
// subscribe can never overtake the unsubscribe of the previous last subscriber.
type NodeSubs = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<NodeSub>>>>>;

/// The local hub.
pub(crate) struct Hub {
    broker: Arc<dyn Broker>,
    metrics: Metrics,
    channels: RwLock<HashMap<Arc<str>, ChannelSubs>>,
    node_subs: NodeSubs,
    /// How long the node stays subscribed after the last local subscriber left.
    linger: Duration,
    /// Where linger timers run: the node's background work, so shutdown waits for them.
    background: TaskTracker,
    /// Ends the linger timers when the node stops its background work.
    background_stop: CancellationToken,
    connections: RwLock<HashMap<ConnId, ConnHandle>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct PushRef<'a> {
    push: PushInner<'a>,
}

#[derive(Serialize)]
struct PushInner<'a> {
    channel: &'a str,
    #[serde(rename = "pub")]
    publication: &'a Publication,
}

/// Encodes a publication push without copying the publication.
pub(crate) fn encode_publication(channel: &str, publication: &Publication) -> Bytes {
    serde_json::to_vec(&PushRef {
        push: PushInner {
            channel,
            publication,
        },
    })
    .map(Bytes::from)
    .unwrap_or_default()
}

impl Hub {
    /// A hub in front of `broker`; the node stays subscribed to a channel for `linger`
    /// after its last local subscriber left. Linger timers run on `background` and end
    /// when `background_stop` is cancelled.
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        metrics: Metrics,
        linger: Duration,
        background: TaskTracker,
        background_stop: CancellationToken,
    ) -> Self {
        Self {
            broker,
            metrics,
            channels: RwLock::new(HashMap::new()),
            node_subs: NodeSubs::default(),
            linger,
            background,
            background_stop,
            connections: RwLock::new(HashMap::new()),
        }
    }

    fn channel_lock(&self, channel: &str) -> Arc<tokio::sync::Mutex<NodeSub>> {
        self.node_subs
            .lock()
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }

    /// Adds a local subscriber; the first one subscribes the node at the broker. When
    /// this returns, every later publication of the channel reaches the subscriber.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        sub: Subscriber,
    ) -> Result<(), BrokerError> {
        let lock = self.channel_lock(channel);
        let mut state = lock.lock().await;
        if !state.subscribed {
            if let Err(e) = self.broker.subscribe(&[channel.to_owned()]).await {
                self.metrics
                    .broker_errors
                    .with_label_values(&["subscribe"])
                    .inc();
                drop(state);
                forget_lock(&self.node_subs, channel, &lock);
                return Err(e);
            }
            state.subscribed = true;
        }
        state.local += 1;
        state.generation += 1;
        let mut channels = self.channels.write();
        let entry = channels.entry(Arc::from(channel)).or_default();
        if entry.name.is_none() {
            entry.name = Some(Arc::from(channel));
            self.metrics.channels.inc();
        }
        entry.delta_subscribers += usize::from(sub.delta);
        if let Some(old) = entry.subscribers.insert(sub.conn.id, sub) {
            entry.delta_subscribers -= usize::from(old.delta);
        }
        self.metrics.subscriptions.inc();
        Ok(())
    }

    /// Offers a publication read from history as the channel's patch base, for a delta
    /// subscriber that recovered up to it. Taken only while the hub has no base yet:
    /// any publication it received since is newer.
    pub(crate) fn seed_delta_base(&self, channel: &str, top: Arc<StoredPublication>) {
        let channels = self.channels.read();
        if let Some(entry) = channels.get(channel)
            && entry.delta_subscribers > 0
        {
            entry.last.lock().get_or_insert(top);
        }
    }

    /// Removes a local subscriber; after the last one the node unsubscribes at the
    /// broker, once the linger time has passed without a new subscriber.
    pub(crate) async fn unsubscribe(&self, channel: &str, conn: ConnId) {
        let lock = self.channel_lock(channel);
        let mut state = lock.lock().await;
        let removed = {
            let mut channels = self.channels.write();
            let removed = channels.get_mut(channel).is_some_and(|e| {
                let Some(sub) = e.subscribers.remove(&conn) else {
                    return false;
                };
                if sub.delta {
                    e.delta_subscribers -= 1;
                    if e.delta_subscribers == 0 {
                        *e.last.lock() = None;
                    }
                }
                true
            });
            if channels
                .get(channel)
                .is_some_and(|e| e.subscribers.is_empty())
            {
                channels.remove(channel);
                self.metrics.channels.dec();
            }
            removed
        };
        if removed {
            self.metrics.subscriptions.dec();
            state.local = state.local.saturating_sub(1);
            if state.local == 0 && state.subscribed {
                if self.linger.is_zero() {
                    leave(self.broker.as_ref(), &self.metrics, channel, &mut state).await;
                } else {
                    self.linger_then_leave(channel, lock.clone(), state.generation);
                }
            }
        }
        drop(state);
        forget_lock(&self.node_subs, channel, &lock);
    }

    /// Unsubscribes the node after the linger time, unless a subscriber came meanwhile.
    fn linger_then_leave(
        &self,
        channel: &str,
        lock: Arc<tokio::sync::Mutex<NodeSub>>,
        generation: u64,
    ) {
        let broker = self.broker.clone();
        let metrics = self.metrics.clone();
        let node_subs = self.node_subs.clone();
        let channel = channel.to_owned();
        let linger = self.linger;
        let stop = self.background_stop.clone();
        self.background.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                // The node is stopping: its broker subscriptions end with the broker.
                () = stop.cancelled() => return,
            }
            let mut state = lock.lock().await;
            if state.local == 0 && state.subscribed && state.generation == generation {
                leave(broker.as_ref(), &metrics, &channel, &mut state).await;
            }
            drop(state);
            forget_lock(&node_subs, &channel, &lock);
        });
    }

    /// Sends a push to every local subscriber of `channel` that asked for
    /// join/leave pushes.
    fn to_join_leave_subscribers(&self, channel: &str, push: Reply) {
        let channels = self.channels.read();
        if let Some(entry) = channels.get(channel) {
            let frame = Arc::new(EncodedPush::new(push));
            for sub in entry.subscribers.values().filter(|s| s.join_leave) {
                sub.conn.offer(Outgoing::Push(frame.clone()), &self.metrics);
            }
        }
    }

    /// Delivers a join or leave (from any node) to the local subscribers that want it.
    fn deliver_join_leave(&self, channel: &str, event: JoinLeave) {
        let mut push = Push {
            channel: channel.to_owned(),
            ..Push::default()
        };
        match event {
            JoinLeave::Join(info) => push.join = Some(Join { info }),
            JoinLeave::Leave(info) => push.leave = Some(Leave { info }),
        }
        self.to_join_leave_subscribers(channel, Reply::push(push));
    }

    /// This node's subscribers listed in presence, to refresh their entries.
    pub(crate) fn presence_entries(&self) -> Vec<(String, ClientInfo)> {
        self.channels
            .read()
            .iter()
            .flat_map(|(name, e)| {
                e.subscribers
                    .values()
                    .filter(|s| s.presence)
                    .map(move |s| (name.to_string(), s.info.clone()))
            })
            .collect()
    }

    /// Channels with local subscribers, and how many each has.
    pub(crate) fn channels(&self) -> Vec<(String, usize)> {
        self.channels
            .read()
            .iter()
            .map(|(name, e)| (name.to_string(), e.subscribers.len()))
            .collect()
    }

    /// How many channels have local subscribers, and how many subscriptions there are.
    pub(crate) fn channel_counts(&self) -> (usize, usize) {
        let channels = self.channels.read();
        let subs = channels.values().map(|e| e.subscribers.len()).sum();
        (channels.len(), subs)
    }

    /// Registers a connection so the server API can reach it.
    pub(crate) fn register(&self, conn: ConnHandle) {
        self.connections.write().insert(conn.id, conn);
    }

    /// Forgets a connection.
    pub(crate) fn unregister(&self, id: ConnId) {
        self.connections.write().remove(&id);
    }

    /// Connections matching a user (and a client id, when not empty).
    fn connections_of(&self, user: &str, client: &str) -> Vec<ConnHandle> {
        self.connections
            .read()
            .values()
            .filter(|c| &*c.user == user && (client.is_empty() || &*c.client == client))
            .cloned()
            .collect()
    }

    /// Closes a user's connections on this node (only client `client`'s, when not
    /// empty) with `code` and `reason`.
    pub(crate) fn disconnect_user(&self, user: &str, client: &str, code: u16, reason: &str) {
        for conn in self.connections_of(user, client) {
            conn.closer.close_with(code, reason);
        }
    }

    /// Unsubscribes a user's connections on this node (only client `client`'s, when not
    /// empty) from `channel`, as the server API asks.
    pub(crate) fn unsubscribe_user(&self, user: &str, client: &str, channel: &str) {
        let channel: Arc<str> = Arc::from(channel);
        for conn in self.connections_of(user, client) {
            conn.offer(
                Outgoing::unsubscribe(channel.clone(), herald_protocol::UnsubscribeCode::Server),
                &self.metrics,
            );
        }
    }

    /// Every registered connection.
    pub(crate) fn all_connections(&self) -> Vec<ConnHandle> {
        self.connections.read().values().cloned().collect()
    }

    /// Registered connections and distinct users.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let conns = self.connections.read();
        let users: std::collections::HashSet<&str> = conns
            .values()
            .map(|c| &*c.user)
            .filter(|u| !u.is_empty())
            .collect();
        (conns.len(), users.len())
    }
}

impl BrokerHandler for Hub {
    fn on_publication(&self, channel: &str, stored: Arc<StoredPublication>) {
        self.metrics.broker_publications.inc();
        let channels = self.channels.read();
        let Some(entry) = channels.get(channel) else {
            return;
        };
        let Some(name) = entry.name.clone() else {
            return;
        };
        let delta = (entry.delta_subscribers > 0).then(|| {
            let previous = entry.last.lock().replace(stored.clone());
            DeltaForms::new(stored.clone(), previous)
        });
        let encoded = Arc::new(EncodedPublication {
            channel: name,
            offset: stored.publication.offset,
            epoch: Arc::from(stored.epoch.as_str()),
            frame: encode_publication(channel, &stored.publication),
            delta,
            stored,
            protobuf: OnceLock::new(),
        });
        for sub in entry.subscribers.values() {
            sub.conn
                .offer(Outgoing::Publication(encoded.clone()), &self.metrics);
        }
    }

    fn on_join_leave(&self, channel: &str, event: JoinLeave) {
        self.deliver_join_leave(channel, event);
    }

    fn on_insufficient_state(&self, channel: &str) {
        let channels = self.channels.read();
        let Some(entry) = channels.get(channel) else {
            return;
        };
        let Some(name) = entry.name.clone() else {
            return;
        };
        tracing::warn!(
            channel,
            subscribers = entry.subscribers.len(),
            "stream continuity lost; subscribers resubscribe with recovery"
        );
        for sub in entry.subscribers.values() {
            sub.conn.offer(
                Outgoing::unsubscribe(
                    name.clone(),
                    herald_protocol::UnsubscribeCode::InsufficientState,
                ),
                &self.metrics,
            );
        }
    }
}

/// Unsubscribes the node from a channel at the broker.
async fn leave(broker: &dyn Broker, metrics: &Metrics, channel: &str, state: &mut NodeSub) {
    state.subscribed = false;
    if let Err(e) = broker.unsubscribe(&[channel.to_owned()]).await {
        metrics
            .broker_errors
            .with_label_values(&["unsubscribe"])
            .inc();
        tracing::warn!(error = %herald_broker::Chain(&e), "broker unsubscribe failed");
    }
}

/// Drops a channel's lock once nothing uses it: only the map and the caller's clone hold
/// it, nobody waits for it, and the node is not subscribed.
fn forget_lock(node_subs: &NodeSubs, channel: &str, lock: &Arc<tokio::sync::Mutex<NodeSub>>) {
    let mut locks = node_subs.lock();
    if Arc::strong_count(lock) == 2 && lock.try_lock().is_ok_and(|s| s.local == 0 && !s.subscribed)
    {
        locks.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, BrokerCall, RecordingBroker, TestClient};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    const LINGER: Duration = Duration::from_secs(10);

    async fn lingering_node() -> (Arc<crate::node::Node>, Arc<RecordingBroker>) {
        let mut config = testing::config();
        config.client.ping_interval = Duration::from_secs(3600);
        config.client.channel_linger = LINGER;
        let broker = Arc::new(RecordingBroker::new());
        (testing::node(config, broker.clone()).await, broker)
    }

    async fn unsubscribe(client: &mut TestClient, channel: &str) {
        let id = client
            .command("unsubscribe", json!({ "channel": channel }))
            .await;
        client.reply(id).await;
    }

    fn sub() -> BrokerCall {
        BrokerCall::Subscribe(vec!["news".into()])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_close_requested_from_another_thread_wakes_the_waiting_task_once() {
        use super::{Closer, DisconnectCode};
        let closer = Arc::new(Closer::default());
        let waiting = tokio::spawn({
            let closer = closer.clone();
            async move {
                closer.requested().await;
                closer.requested_close()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "resolved before any request");
        let other = closer.clone();
        let first = std::thread::spawn(move || other.close(DisconnectCode::Slow))
            .join()
            .expect("the closing thread");
        assert!(first, "the first request says so");
        let requested = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting task is woken")
            .expect("the waiting task");
        let slow = DisconnectCode::Slow.code();
        assert_eq!(requested.map(|(code, _)| code), Some(slow));
        // A later request neither wins nor counts as the first.
        assert!(!closer.close_with(4000, "later"));
        assert_eq!(closer.requested_close().map(|(code, _)| code), Some(slow));
        // Asked after the request, it resolves at once.
        tokio::time::timeout(Duration::from_millis(100), closer.requested())
            .await
            .expect("resolves at once");
    }

    fn unsub() -> BrokerCall {
        BrokerCall::Unsubscribe(vec!["news".into()])
    }

    #[test]
    fn a_publication_is_encoded_in_protobuf_only_on_demand_and_once() {
        use super::EncodedPublication;
        use herald_protocol::{Encoding, Publication, RawJson};
        let stored = Arc::new(herald_broker::StoredPublication {
            publication: Publication {
                data: RawJson::from_string(r#"{"a":1}"#.into()).expect("json"),
                info: None,
                offset: 3,
                tags: Default::default(),
                delta: false,
                origin: None,
            },
            epoch: "e".into(),
        });
        let encoded = EncodedPublication {
            channel: Arc::from("news"),
            offset: 3,
            epoch: Arc::from("e"),
            frame: super::encode_publication("news", &stored.publication),
            delta: None,
            stored,
            protobuf: std::sync::OnceLock::new(),
        };
        assert!(!encoded.encoded(Encoding::Json).is_empty());
        assert!(
            encoded.protobuf.get().is_none(),
            "JSON subscribers cost no Protobuf"
        );
        let first = encoded.encoded(Encoding::Protobuf).as_ptr();
        assert_eq!(
            encoded.encoded(Encoding::Protobuf).as_ptr(),
            first,
            "encoded once"
        );
        let replies = herald_protocol::protobuf::decode_replies(&{
            let mut w = herald_protocol::FrameWriter::new(Encoding::Protobuf, 64);
            w.push_encoded(encoded.encoded(Encoding::Protobuf));
            w.take()
        })
        .expect("valid");
        let p = replies[0].push.as_ref().expect("a push");
        assert_eq!(p.channel, "news");
        assert_eq!(p.publication.as_ref().map(|p| p.offset), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_stays_subscribed_for_the_linger_time() {
        let (node, broker) = lingering_node().await;
        let mut client = testing::connect(&node);
        client.connect("").await;
        let start = Instant::now();
        client.subscribe("news").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        unsubscribe(&mut client, "news").await;

        tokio::time::sleep(Duration::from_secs(30)).await;
        let s = Duration::from_secs;
        assert_eq!(
            broker.calls_since(start),
            [(s(0), sub()), (s(1) + LINGER, unsub())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_within_the_linger_time_keeps_the_subscription() {
        let (node, broker) = lingering_node().await;
        let mut client = testing::connect(&node);
        client.connect("").await;
        let start = Instant::now();
        client.subscribe("news").await;
        unsubscribe(&mut client, "news").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        client.subscribe("news").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        unsubscribe(&mut client, "news").await;

        tokio::time::sleep(Duration::from_secs(30)).await;
        let s = Duration::from_secs;
        assert_eq!(
            broker.calls_since(start),
            [(s(0), sub()), (s(8) + LINGER, unsub())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn linger_runs_on_the_background_tracker_and_ends_with_it() {
        let (node, broker) = lingering_node().await;
        let mut client = testing::connect(&node);
        client.connect("").await;
        let start = Instant::now();
        client.subscribe("news").await;
        let before = node.background.len();
        unsubscribe(&mut client, "news").await;
        assert_eq!(node.background.len(), before + 1);

        node.background_stop.cancel();
        node.background.close();
        node.background.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(broker.calls_since(start), [(Duration::ZERO, sub())]);
    }
}
