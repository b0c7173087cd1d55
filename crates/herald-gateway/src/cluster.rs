//! What a node tells the rest of the cluster about itself, and what it asks of it.
//!
//! Every node writes a [`NodeReport`] (its counts, health, publication rate and recent
//! disconnects) to the broker every [`REPORT_INTERVAL`], so that any node can list the
//! whole cluster: the `info` API, the admin page and `herald top` all read that list.
//! A report lives [`REPORT_TTL`], so a node that died leaves the list by itself.
//!
//! Channels are too many to report: `channels` asks every listed node for the ones
//! matching a pattern, over the broker's node messages, and waits a short while for the
//! answers. The server API's `disconnect` and `unsubscribe` reach the other nodes'
//! connections the same way.

use crate::hub::Hub;
use crate::node::Node;
use herald_broker::{Broker, Chain};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a node reports itself.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a report lives: a node is listed until it missed several reports.
pub(crate) const REPORT_TTL: Duration = Duration::from_secs(10);
/// How long a channel survey waits for the other nodes.
const SURVEY_TIMEOUT: Duration = Duration::from_secs(1);
/// The most channels one node sends in answer to a survey (the most subscribed ones):
/// an answer stays near 100 KB, so even many nodes answering at once stay far below
/// what Redis buffers for the asking node's subscriber connection.
pub(crate) const SURVEY_MAX_CHANNELS: usize = 2_000;
/// How many disconnects a node remembers, and how many of them it reports.
const DISCONNECTS_KEPT: usize = 100;
const DISCONNECTS_REPORTED: usize = 20;

/// One connection the server closed, for the admin page's list of recent disconnects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Disconnect {
    /// When, in Unix milliseconds.
    pub at: u64,
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// The user ("" for anonymous, or a connection that never authenticated).
    #[serde(default)]
    pub user: String,
    /// The client id ("" before the connect reply).
    #[serde(default)]
    pub client: String,
}

/// What one node says of itself. The first eight fields have the shapes of the `info`
/// API's nodes; the rest are Herald's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeReport {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub num_clients: usize,
    pub num_users: usize,
    pub num_channels: usize,
    pub num_subs: usize,
    /// Seconds since the node started.
    pub uptime: u64,
    /// `memory` or `redis`.
    #[serde(default)]
    pub broker: String,
    /// Whether the node takes traffic (`/readyz`).
    #[serde(default)]
    pub ready: bool,
    /// Why it does not, when it does not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_ready: String,
    /// Publications per second the node received from the broker, over the last
    /// report interval.
    #[serde(default)]
    pub publication_rate: f64,
    /// The newest server-side closes, newest first.
    #[serde(default)]
    pub recent_disconnects: Vec<Disconnect>,
    /// When the report was made, in Unix milliseconds.
    #[serde(default)]
    pub updated: u64,
}

/// A node's channels matching a pattern, in answer to a survey.
#[derive(Debug, Serialize, Deserialize)]
struct ChannelsAnswer {
    req: u64,
    node: String,
    channels: Vec<(String, usize)>,
    truncated: bool,
}

/// Messages between nodes about the cluster. Their tags differ from the emulated
/// sessions' messages, which share the node channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum ClusterMessage {
    /// Asks for the channels matching `pattern`; answer to `from` with `req`.
    ChannelsSurvey {
        from: String,
        req: u64,
        pattern: String,
    },
    /// The answer.
    Channels(ChannelsAnswer),
    /// The server API's `disconnect`, for this node's connections of `user` (of
    /// `client` only, when not empty).
    Disconnect {
        user: String,
        #[serde(default)]
        client: String,
        code: u16,
        reason: String,
    },
    /// The server API's `unsubscribe`, for this node's connections of `user` (of
    /// `client` only, when not empty).
    Unsubscribe {
        user: String,
        #[serde(default)]
        client: String,
        channel: String,
    },
}

/// The cluster's channels, as the nodes that answered know them.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// Channel → subscribers on all nodes that answered.
    pub channels: BTreeMap<String, usize>,
    /// Nodes that did not answer in time (their names).
    pub missing: Vec<String>,
    /// Some node had more matching channels than it sends.
    pub truncated: bool,
}

struct Rate {
    count: u64,
    at: tokio::time::Instant,
    per_second: f64,
}

/// This node's part in the cluster: its reports, its surveys and its memory of recent
/// disconnects.
pub(crate) struct Cluster {
    uid: String,
    broker: Arc<dyn Broker>,
    hub: Arc<Hub>,
    disconnects: Mutex<VecDeque<Disconnect>>,
    rate: Mutex<Rate>,
    next_req: AtomicU64,
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<ChannelsAnswer>>>,
    /// Held while a report is written and while it is removed, so that a report in
    /// flight cannot land after the removal; `true` once the node has left.
    left: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The hub's channels matching `pattern` ("" = all), the most subscribed first, at most
/// `max`; and whether there were more.
fn local_channels(hub: &Hub, pattern: &str, max: usize) -> (Vec<(String, usize)>, bool) {
    let mut channels: Vec<(String, usize)> = hub
        .channels()
        .into_iter()
        .filter(|(name, _)| pattern.is_empty() || glob_match(pattern, name))
        .collect();
    let truncated = channels.len() > max;
    if truncated {
        channels.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        channels.truncate(max);
    }
    (channels, truncated)
}

impl Cluster {
    /// The cluster part of node `uid`.
    pub(crate) fn new(uid: String, broker: Arc<dyn Broker>, hub: Arc<Hub>) -> Self {
        Self {
            uid,
            broker,
            hub,
            disconnects: Mutex::new(VecDeque::with_capacity(DISCONNECTS_KEPT)),
            rate: Mutex::new(Rate {
                count: 0,
                at: tokio::time::Instant::now(),
                per_second: 0.0,
            }),
            next_req: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            left: tokio::sync::Mutex::new(false),
        }
    }

    /// Remembers a connection the server closed.
    pub(crate) fn record_disconnect(&self, code: u16, reason: &str, user: &str, client: &str) {
        let mut list = self.disconnects.lock();
        if list.len() == DISCONNECTS_KEPT {
            list.pop_back();
        }
        list.push_front(Disconnect {
            at: unix_ms(),
            code,
            reason: reason.to_owned(),
            user: user.to_owned(),
            client: client.to_owned(),
        });
    }

    /// Moves the publication rate on to now (once per report).
    fn update_rate(&self, count: u64) {
        let mut rate = self.rate.lock();
        let now = tokio::time::Instant::now();
        let secs = now.duration_since(rate.at).as_secs_f64();
        if secs > 0.0 {
            rate.per_second = count.saturating_sub(rate.count) as f64 / secs;
        }
        rate.count = count;
        rate.at = now;
    }

    /// This node's report, made now.
    pub(crate) fn report(&self, node: &Node) -> NodeReport {
        let (clients, users) = self.hub.counts();
        let (channels, subs) = self.hub.channel_counts();
        let (ready, not_ready) = node.ready();
        NodeReport {
            uid: self.uid.clone(),
            name: node.name.clone(),
            version: crate::node::VERSION.to_owned(),
            num_clients: clients,
            num_users: users,
            num_channels: channels,
            num_subs: subs,
            uptime: node.started.elapsed().as_secs(),
            broker: self.broker.kind().to_owned(),
            ready,
            not_ready,
            publication_rate: (self.rate.lock().per_second * 10.0).round() / 10.0,
            recent_disconnects: self
                .disconnects
                .lock()
                .iter()
                .take(DISCONNECTS_REPORTED)
                .cloned()
                .collect(),
            updated: unix_ms(),
        }
    }

    /// Writes this node's report to the broker (not after it left).
    pub(crate) async fn publish_report(&self, node: &Node) {
        let left = self.left.lock().await;
        if *left {
            return;
        }
        self.update_rate(node.metrics.broker_publications.get());
        let report = self.report(node);
        let bytes = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "node report not encoded");
                return;
            }
        };
        if let Err(e) = self
            .broker
            .report_node(&self.uid, bytes.into(), REPORT_TTL)
            .await
        {
            tracing::debug!(error = %Chain(&e), "node report not written");
        }
        drop(left);
    }

    /// Removes this node's report for good (the node is stopping), after any report in
    /// flight.
    pub(crate) async fn leave(&self) {
        let mut left = self.left.lock().await;
        *left = true;
        if let Err(e) = self.broker.forget_node(&self.uid).await {
            tracing::debug!(error = %Chain(&e), "node report not removed; it expires");
        }
    }

    /// The other live nodes' reports, as they last wrote them; none when the broker
    /// cannot be read.
    async fn others(&self) -> Vec<NodeReport> {
        match self.broker.nodes().await {
            Ok(reports) => reports
                .iter()
                .filter_map(|r| serde_json::from_slice::<NodeReport>(r).ok())
                .filter(|r| r.uid != self.uid)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "cannot read the other nodes' reports");
                Vec::new()
            }
        }
    }

    /// Every live node's report, this one's made now; sorted by name. When the broker
    /// cannot be read, this node alone.
    pub(crate) async fn nodes(&self, node: &Node) -> Vec<NodeReport> {
        let mut nodes = self.others().await;
        nodes.push(self.report(node));
        nodes.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.uid.cmp(&b.uid)));
        nodes
    }

    /// The channels matching `pattern` ("" = all) on every node, with their subscriber
    /// counts summed. Nodes that do not answer within a second are named in
    /// [`Survey::missing`].
    pub(crate) async fn channels(&self, pattern: &str) -> Survey {
        let mut survey = Survey::default();
        // This node's own channels do not cross the network: all of them.
        let (own, _) = local_channels(&self.hub, pattern, usize::MAX);
        for (name, n) in own {
            *survey.channels.entry(name).or_default() += n;
        }
        let others = self.others().await;
        if others.is_empty() {
            return survey;
        }
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(req, tx);
        // However the survey ends (answered, timed out, its caller gone), it is no
        // longer waited for.
        let _waiting = crate::scopeguard(|| {
            self.pending.lock().remove(&req);
        });
        let message = ClusterMessage::ChannelsSurvey {
            from: self.uid.clone(),
            req,
            pattern: pattern.to_owned(),
        };
        let bytes = bytes::Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        let mut waiting: HashMap<String, String> = HashMap::new();
        for other in &others {
            match self.broker.send_to_node(&other.uid, bytes.clone()).await {
                Ok(true) => {
                    waiting.insert(other.uid.clone(), other.name.clone());
                }
                // Stopped since its last report.
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %Chain(&e), "channel survey not sent");
                    survey.missing.push(other.name.clone());
                }
            }
        }
        let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(answer)) => {
                    if waiting.remove(&answer.node).is_none() {
                        continue;
                    }
                    survey.truncated |= answer.truncated;
                    for (name, n) in answer.channels {
                        *survey.channels.entry(name).or_default() += n;
                    }
                }
                _ => break,
            }
        }
        survey.missing.extend(waiting.into_values());
        survey.missing.sort();
        survey
    }

    /// Closes `user`'s connections (of `client` only, when not empty) on this node and
    /// on every other live one. Returns once the requests are sent.
    pub(crate) async fn disconnect_everywhere(
        &self,
        user: &str,
        client: &str,
        code: u16,
        reason: &str,
    ) {
        self.hub.disconnect_user(user, client, code, reason);
        self.tell_others(&ClusterMessage::Disconnect {
            user: user.to_owned(),
            client: client.to_owned(),
            code,
            reason: reason.to_owned(),
        })
        .await;
    }

    /// Unsubscribes `user`'s connections (of `client` only, when not empty) from
    /// `channel` on this node and on every other live one.
    pub(crate) async fn unsubscribe_everywhere(&self, user: &str, client: &str, channel: &str) {
        self.hub.unsubscribe_user(user, client, channel);
        self.tell_others(&ClusterMessage::Unsubscribe {
            user: user.to_owned(),
            client: client.to_owned(),
            channel: channel.to_owned(),
        })
        .await;
    }

    /// Sends `message` to every other live node, all at once and within
    /// [`SURVEY_TIMEOUT`], without waiting for them to act.
    async fn tell_others(&self, message: &ClusterMessage) {
        let bytes = bytes::Bytes::from(serde_json::to_vec(message).unwrap_or_default());
        let send = async {
            let others = self.others().await;
            let sends = others.iter().map(|other| {
                let bytes = bytes.clone();
                async move {
                    if let Err(e) = self.broker.send_to_node(&other.uid, bytes).await {
                        tracing::warn!(node = %other.name, error = %Chain(&e), "a server API request did not reach a node");
                    }
                }
            });
            futures_util::future::join_all(sends).await;
        };
        if tokio::time::timeout(SURVEY_TIMEOUT, send).await.is_err() {
            tracing::warn!("a server API request did not reach every node in time");
        }
    }

    /// Handles a message from another node, if it is one of the cluster's; `false`
    /// leaves it to the emulated sessions.
    pub(crate) fn on_node_message(&self, message: &[u8]) -> bool {
        let Ok(message) = serde_json::from_slice::<ClusterMessage>(message) else {
            return false;
        };
        match message {
            ClusterMessage::ChannelsSurvey { from, req, pattern } => {
                let broker = self.broker.clone();
                let hub = self.hub.clone();
                let uid = self.uid.clone();
                // The broker's delivery path must not wait for the listing or the send.
                tokio::spawn(async move {
                    let (channels, truncated) = local_channels(&hub, &pattern, SURVEY_MAX_CHANNELS);
                    let answer = ClusterMessage::Channels(ChannelsAnswer {
                        req,
                        node: uid,
                        channels,
                        truncated,
                    });
                    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                    if let Err(e) = broker.send_to_node(&from, bytes.into()).await {
                        tracing::debug!(error = %Chain(&e), "channel survey answer not sent");
                    }
                });
            }
            ClusterMessage::Channels(answer) => {
                if let Some(waiting) = self.pending.lock().get(&answer.req) {
                    let _ = waiting.send(answer);
                }
            }
            // Off the broker's delivery path: finding the user's connections scans them.
            ClusterMessage::Disconnect {
                user,
                client,
                code,
                reason,
            } => {
                let hub = self.hub.clone();
                tokio::spawn(async move {
                    hub.disconnect_user(&user, &client, code, &reason);
                });
            }
            ClusterMessage::Unsubscribe {
                user,
                client,
                channel,
            } => {
                let hub = self.hub.clone();
                tokio::spawn(async move {
                    hub.unsubscribe_user(&user, &client, &channel);
                });
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("news", "news"));
        assert!(!glob_match("news", "news2"));
        assert!(glob_match("chat:*", "chat:room-1"));
        assert!(glob_match("*room*", "chat:room-1"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abde"));
    }

    #[test]
    fn messages_do_not_look_like_emulation_messages() {
        let survey = ClusterMessage::ChannelsSurvey {
            from: "n1".into(),
            req: 3,
            pattern: "chat:*".into(),
        };
        let text = serde_json::to_string(&survey).expect("encode");
        assert!(text.contains(r#""t":"channels_survey""#), "{text}");
        let disconnect = ClusterMessage::Disconnect {
            user: "ann".into(),
            client: String::new(),
            code: 4001,
            reason: "moved".into(),
        };
        let text = serde_json::to_string(&disconnect).expect("encode");
        assert!(text.contains(r#""t":"disconnect""#), "{text}");
        assert!(matches!(
            serde_json::from_str::<ClusterMessage>(&text),
            Ok(ClusterMessage::Disconnect { code: 4001, .. })
        ));
        assert!(serde_json::from_str::<ClusterMessage>(r#"{"t":"ack","req":1}"#).is_err());
        assert!(
            serde_json::from_str::<ClusterMessage>(
                r#"{"t":"commands","from":"a","req":1,"session":"s","data":""}"#
            )
            .is_err()
        );
    }

    #[test]
    fn reports_round_trip_and_old_ones_still_read() {
        let old = r#"{"uid":"u","name":"n","version":"0.1.0","num_clients":1,"num_users":1,"num_channels":2,"num_subs":3,"uptime":4}"#;
        let report: NodeReport = serde_json::from_str(old).expect("decode");
        assert_eq!((report.num_subs, report.publication_rate), (3, 0.0));
        assert!(report.recent_disconnects.is_empty());
    }
}
