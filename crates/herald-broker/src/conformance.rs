//! The conformance suite every [`Broker`] implementation must pass.
//!
//! Each check takes a freshly made broker that has not been started, and uses channel
//! names of its own, so a suite may share one backend (a Redis server) between checks.
//! Use [`broker_conformance_tests!`](crate::broker_conformance_tests) to turn the suite
//! into `#[tokio::test]` functions for an implementation.

use crate::{Broker, BrokerHandler, HistoryQuery, JoinLeave, PublishRequest, StoredPublication};
use herald_protocol::{ClientInfo, HistoryLimit, RawJson, StreamPosition};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a check waits for a delivery before it fails.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handler that records every delivery.
pub struct Collector {
    tx: mpsc::UnboundedSender<(String, Arc<StoredPublication>)>,
    joins: Mutex<Vec<(String, JoinLeave)>>,
    node_messages: Mutex<Vec<bytes::Bytes>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

impl Collector {
    /// Join/leave events received so far.
    pub fn join_leaves(&self) -> Vec<(String, JoinLeave)> {
        self.joins.lock().clone()
    }
}

impl BrokerHandler for Collector {
    fn on_publication(&self, channel: &str, publication: Arc<StoredPublication>) {
        let _ = self.tx.send((channel.to_owned(), publication));
    }

    fn on_join_leave(&self, channel: &str, event: JoinLeave) {
        self.joins.lock().push((channel.to_owned(), event));
    }

    fn on_insufficient_state(&self, channel: &str) {
        panic!("a healthy broker reported insufficient state for {channel}");
    }

    fn on_node_message(&self, message: bytes::Bytes) {
        self.node_messages.lock().push(message);
    }
}

/// Starts `broker` with a [`Collector`] and returns the receiving end.
pub async fn start<B: Broker>(
    broker: &B,
) -> mpsc::UnboundedReceiver<(String, Arc<StoredPublication>)> {
    start_with_collector(broker).await.0
}

/// Starts `broker` with a [`Collector`] and returns it with the receiving end.
pub async fn start_with_collector<B: Broker>(
    broker: &B,
) -> (
    mpsc::UnboundedReceiver<(String, Arc<StoredPublication>)>,
    Arc<Collector>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = Arc::new(Collector {
        tx,
        joins: Mutex::new(Vec::new()),
        node_messages: Mutex::new(Vec::new()),
    });
    broker
        .start(crate::BrokerContext::standalone(collector.clone()))
        .await
        .expect("broker starts");
    (rx, collector)
}

/// A channel name unique to this run.
pub fn channel(tag: &str) -> String {
    format!("conf-{tag}-{}", crate::new_epoch())
}

fn data(n: u64) -> RawJson {
    RawJson::from_value(&serde_json::json!({ "n": n })).expect("json")
}

fn history(size: usize) -> impl Fn(u64) -> PublishRequest {
    move |n| PublishRequest::new(data(n)).with_history(size, Duration::from_secs(60))
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(String, Arc<StoredPublication>)>,
) -> (String, Arc<StoredPublication>) {
    tokio::time::timeout(DELIVERY_TIMEOUT, rx.recv())
        .await
        .expect("a delivery within the timeout")
        .expect("the broker keeps its handler")
}

async fn nothing_more(rx: &mut mpsc::UnboundedReceiver<(String, Arc<StoredPublication>)>) {
    // Deliveries of a single broker arrive in milliseconds; a quiet half second means none.
    if let Ok(Some((c, p))) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        panic!("unexpected delivery on {c}: {p:?}");
    }
}

/// Offsets start at 1 and are contiguous; the epoch does not change between publishes.
pub async fn offsets_are_contiguous<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("offsets");
    let req = history(100);
    let first = broker.publish(&ch, req(1)).await.expect("publish");
    assert_eq!(first.position.offset, 1);
    assert!(!first.position.epoch.is_empty());
    for n in 2..=20 {
        let out = broker.publish(&ch, req(n)).await.expect("publish");
        assert_eq!(out.position.offset, n);
        assert_eq!(out.position.epoch, first.position.epoch);
        assert!(!out.duplicate);
    }
}

/// A subscribed node gets publications of its channels only, in order, and stops
/// getting them after unsubscribing.
pub async fn delivers_subscribed_channels_only<B: Broker>(broker: B) {
    let mut rx = start(&broker).await;
    let (a, b) = (channel("sub-a"), channel("sub-b"));
    broker
        .subscribe(std::slice::from_ref(&a))
        .await
        .expect("subscribe");
    let req = history(10);
    for n in 1..=5 {
        broker.publish(&a, req(n)).await.expect("publish a");
        broker.publish(&b, req(n)).await.expect("publish b");
    }
    for n in 1..=5 {
        let (c, p) = next(&mut rx).await;
        assert_eq!(c, a);
        assert_eq!(p.publication.offset, n);
        assert_eq!(p.publication.data, data(n));
        assert!(!p.epoch.is_empty());
    }
    nothing_more(&mut rx).await;
    broker
        .unsubscribe(std::slice::from_ref(&a))
        .await
        .expect("unsubscribe");
    broker.publish(&a, req(6)).await.expect("publish");
    nothing_more(&mut rx).await;
}

/// Without history a publication has no offset, is not stored, and is still delivered.
pub async fn publish_without_history<B: Broker>(broker: B) {
    let mut rx = start(&broker).await;
    let ch = channel("nohist");
    broker
        .subscribe(std::slice::from_ref(&ch))
        .await
        .expect("subscribe");
    let out = broker
        .publish(&ch, PublishRequest::new(data(1)))
        .await
        .expect("publish");
    assert_eq!(out.position.offset, 0);
    let (c, p) = next(&mut rx).await;
    assert_eq!((c.as_str(), p.publication.offset), (ch.as_str(), 0));
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    assert!(page.publications.is_empty());
}

/// Concurrent publishers: every node sees the offsets in order with no gap.
pub async fn concurrent_publishers_deliver_in_order<B: Broker>(broker: B) {
    let broker = Arc::new(broker);
    let mut rx = start(broker.as_ref()).await;
    let ch = channel("concurrent");
    broker
        .subscribe(std::slice::from_ref(&ch))
        .await
        .expect("subscribe");
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (broker, ch) = (broker.clone(), ch.clone());
            tokio::spawn(async move {
                for n in 0..50 {
                    broker
                        .publish(&ch, history(1000)(t * 100 + n))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher task");
    }
    for expected in 1..=200 {
        let (_, p) = next(&mut rx).await;
        assert_eq!(
            p.publication.offset, expected,
            "delivery order must be offset order"
        );
    }
}

/// History reads: since, limit, reverse, and the position.
pub async fn history_queries<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("history");
    let req = history(100);
    for n in 1..=10 {
        broker.publish(&ch, req(n)).await.expect("publish");
    }
    let offsets = |page: &crate::HistoryPage| -> Vec<u64> {
        page.publications.iter().map(|p| p.offset).collect()
    };
    let all = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(offsets(&all), (1..=10).collect::<Vec<_>>());
    assert_eq!(all.position.offset, 10);
    assert_eq!(all.publications[2].data, data(3));

    let q = |since_offset, limit, reverse| HistoryQuery {
        since_offset,
        limit,
        reverse,
        not_before: None,
    };
    let since = broker
        .history(&ch, q(Some(7), HistoryLimit::All, false))
        .await
        .expect("since");
    assert_eq!(offsets(&since), vec![8, 9, 10]);
    let limited = broker
        .history(&ch, q(Some(2), HistoryLimit::at_most(3), false))
        .await
        .expect("limit");
    assert_eq!(offsets(&limited), vec![3, 4, 5]);
    let newest = broker
        .history(&ch, q(None, HistoryLimit::at_most(2), true))
        .await
        .expect("reverse");
    assert_eq!(offsets(&newest), vec![10, 9]);
    let before = broker
        .history(&ch, q(Some(4), HistoryLimit::at_most(10), true))
        .await
        .expect("reverse since");
    assert_eq!(offsets(&before), vec![3, 2, 1]);
    let position_only = broker
        .history(&ch, q(None, HistoryLimit::PositionOnly, false))
        .await
        .expect("position");
    assert!(position_only.publications.is_empty());
    assert_eq!(position_only.position, all.position);
    // Nothing is older than offset 0; no `since` at all means from the newest.
    let before_first = broker
        .history(&ch, q(Some(0), HistoryLimit::All, true))
        .await
        .expect("reverse since 0");
    assert!(before_first.publications.is_empty());
    let at_top = broker
        .history(&ch, q(Some(10), HistoryLimit::All, false))
        .await
        .expect("at top");
    assert!(at_top.publications.is_empty());
}

/// History keeps at most `history_size` publications; offsets keep counting.
pub async fn history_is_trimmed_to_size<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("trim");
    let req = history(3);
    for n in 1..=8 {
        broker.publish(&ch, req(n)).await.expect("publish");
    }
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![6, 7, 8]);
    assert_eq!(page.position.offset, 8);
}

/// Publications leave history after their TTL; the position and epoch stay.
pub async fn history_expires<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("ttl");
    let out = broker
        .publish(
            &ch,
            PublishRequest::new(data(1)).with_history(10, Duration::from_secs(1)),
        )
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    assert!(
        page.publications.is_empty(),
        "expired publication still in history"
    );
    assert_eq!(page.position, out.position);
}

/// The same idempotency key publishes once and returns the first result; the same key
/// in another channel is another key.
pub async fn idempotent_publish<B: Broker>(broker: B) {
    let mut rx = start(&broker).await;
    let ch = channel("idem");
    broker
        .subscribe(std::slice::from_ref(&ch))
        .await
        .expect("subscribe");
    let mut req = history(10)(1);
    req.idempotency_key = Some("order-42".into());
    let first = broker.publish(&ch, req.clone()).await.expect("publish");
    let again = broker
        .publish(&ch, req.clone())
        .await
        .expect("publish again");
    assert_eq!(again.position, first.position);
    assert!(again.duplicate && !first.duplicate);
    let (_, p) = next(&mut rx).await;
    assert_eq!(p.publication.offset, 1);
    nothing_more(&mut rx).await;
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(page.publications.len(), 1);

    // The gateway relies on this: it scopes client keys by user, not by channel.
    let other = channel("idem-other");
    let elsewhere = broker
        .publish(&other, req)
        .await
        .expect("publish elsewhere");
    assert!(!elsewhere.duplicate);
    assert_eq!(elsewhere.position.offset, 1);
    assert_ne!(elsewhere.position.epoch, first.position.epoch);
    let page = broker
        .history(&other, HistoryQuery::default())
        .await
        .expect("history elsewhere");
    assert_eq!(page.publications.len(), 1);
}

/// A publication whose version is not newer than the channel's newest in the same
/// version epoch is dropped: not stored, not delivered, the current position returned.
/// A new version epoch starts over; versions work without history too.
pub async fn stale_versions_are_dropped<B: Broker>(broker: B) {
    let mut rx = start(&broker).await;
    let ch = channel("versions");
    broker
        .subscribe(std::slice::from_ref(&ch))
        .await
        .expect("subscribe");
    let versioned = |n: u64, version: u64, series: &str| {
        let mut req = history(10)(n);
        req.version = version;
        req.version_epoch = series.to_owned();
        req
    };
    let first = broker
        .publish(&ch, versioned(1, 5, "a"))
        .await
        .expect("publish");
    assert!(!first.suppressed && first.position.offset == 1);
    for stale in [versioned(2, 5, "a"), versioned(3, 4, "a")] {
        let out = broker.publish(&ch, stale).await.expect("publish");
        assert!(out.suppressed, "{out:?}");
        assert_eq!(out.position, first.position, "the current position");
    }
    let newer = broker
        .publish(&ch, versioned(4, 6, "a"))
        .await
        .expect("publish");
    assert!(!newer.suppressed && newer.position.offset == 2);
    // Another series: its version 1 is new.
    let restarted = broker
        .publish(&ch, versioned(5, 1, "b"))
        .await
        .expect("publish");
    assert!(!restarted.suppressed && restarted.position.offset == 3);
    // Unversioned publications are never dropped, and do not reset the version.
    let plain = broker.publish(&ch, history(10)(6)).await.expect("publish");
    assert!(!plain.suppressed);
    assert!(
        broker
            .publish(&ch, versioned(7, 1, "b"))
            .await
            .expect("publish")
            .suppressed
    );
    let delivered: Vec<u64> = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ]
    .iter()
    .map(|(_, p)| p.publication.offset)
    .collect();
    assert_eq!(delivered, [1, 2, 3, 4]);
    nothing_more(&mut rx).await;
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(page.publications.len(), 4);

    // Without history: still dropped, with no position.
    let live = channel("versions-live");
    broker
        .subscribe(std::slice::from_ref(&live))
        .await
        .expect("subscribe");
    let mut req = PublishRequest::new(data(1));
    req.version = 3;
    assert!(
        !broker
            .publish(&live, req.clone())
            .await
            .expect("publish")
            .suppressed
    );
    let (_, p) = next(&mut rx).await;
    assert_eq!(p.publication.offset, 0);
    let again = broker.publish(&live, req).await.expect("publish");
    assert!(again.suppressed);
    assert_eq!(again.position, StreamPosition::default());
    nothing_more(&mut rx).await;
}

/// A publication's origin reaches subscribing nodes and history with it, apart from
/// its tags; publications without one have none.
pub async fn origins_travel_with_publications<B: Broker>(broker: B) {
    let mut rx = start(&broker).await;
    let ch = channel("origins");
    broker
        .subscribe(std::slice::from_ref(&ch))
        .await
        .expect("subscribe");
    let mut marked = history(10)(1);
    marked.origin = "42/tab-1".into();
    marked.tags = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    broker.publish(&ch, marked).await.expect("publish");
    broker.publish(&ch, history(10)(2)).await.expect("publish");
    let (_, first) = next(&mut rx).await;
    let (_, second) = next(&mut rx).await;
    assert_eq!(first.publication.origin.as_deref(), Some("42/tab-1"));
    assert_eq!(
        first.publication.tags,
        BTreeMap::from([("k".to_owned(), "v".to_owned())])
    );
    assert_eq!(second.publication.origin, None);
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    let origins: Vec<Option<&str>> = page
        .publications
        .iter()
        .map(|p| p.origin.as_deref())
        .collect();
    assert_eq!(origins, [Some("42/tab-1"), None]);
    assert_eq!(page.publications[0].tags.len(), 1);
}

/// Removing history keeps the position, so recovery from before it fails visibly.
pub async fn remove_history_keeps_position<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("remove");
    for n in 1..=3 {
        broker.publish(&ch, history(10)(n)).await.expect("publish");
    }
    broker.remove_history(&ch).await.expect("remove");
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    assert!(page.publications.is_empty());
    assert_eq!(page.position.offset, 3);
    let next_pub = broker.publish(&ch, history(10)(4)).await.expect("publish");
    assert_eq!(next_pub.position.offset, 4);
    assert_eq!(next_pub.position.epoch, page.position.epoch);
}

/// A channel that was never published to has offset 0 and an epoch that its first
/// publication keeps, so a client that subscribed early can recover it.
pub async fn position_before_first_publish<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("early");
    let early = broker
        .history(
            &ch,
            HistoryQuery {
                limit: HistoryLimit::PositionOnly,
                ..HistoryQuery::default()
            },
        )
        .await
        .expect("position");
    assert_eq!(early.position.offset, 0);
    assert!(!early.position.epoch.is_empty());
    let out = broker.publish(&ch, history(10)(1)).await.expect("publish");
    assert_eq!(out.position.epoch, early.position.epoch);
    assert!(broker.health().ready);
}

fn who(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: Some(RawJson::from_value(&serde_json::json!({ "name": user })).expect("json")),
        chan_info: None,
    }
}

/// Presence: added entries are listed with their info, removed ones are not, and
/// entries not refreshed within their TTL expire (a crashed node's subscribers).
pub async fn presence_lifecycle<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let ch = channel("presence");
    let long = Duration::from_secs(60);
    broker
        .add_presence(&ch, &who("1", "c1"), long)
        .await
        .expect("add");
    broker
        .add_presence(&ch, &who("1", "c2"), long)
        .await
        .expect("add");
    broker
        .add_presence(&ch, &who("2", "c3"), Duration::from_secs(1))
        .await
        .expect("add");
    let clients = |list: Vec<ClientInfo>| {
        let mut c: Vec<String> = list.into_iter().map(|i| i.client).collect();
        c.sort();
        c
    };
    assert_eq!(
        clients(broker.presence(&ch).await.expect("presence")),
        vec!["c1", "c2", "c3"]
    );
    let listed = broker.presence(&ch).await.expect("presence");
    let c1 = listed.iter().find(|i| i.client == "c1").expect("c1");
    assert_eq!(c1, &who("1", "c1"), "info kept verbatim");
    broker.remove_presence(&ch, "c2").await.expect("remove");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        clients(broker.presence(&ch).await.expect("presence")),
        vec!["c1"],
        "c2 removed, c3 expired"
    );
    assert!(
        broker
            .presence(&channel("nobody"))
            .await
            .expect("presence")
            .is_empty()
    );
}

/// Join and leave events reach subscribed nodes, and only those.
pub async fn join_leave_reaches_subscribed_nodes<B: Broker>(broker: B) {
    let (mut rx, collector) = start_with_collector(&broker).await;
    let ch = channel("joins");
    broker
        .subscribe(std::slice::from_ref(&ch))
        .await
        .expect("subscribe");
    broker
        .publish_join_leave(&ch, JoinLeave::Join(who("1", "c1")))
        .await
        .expect("join");
    broker.publish(&ch, history(10)(1)).await.expect("publish");
    broker
        .publish_join_leave(&ch, JoinLeave::Leave(who("1", "c1")))
        .await
        .expect("leave");
    broker
        .publish_join_leave(&channel("unheard"), JoinLeave::Join(who("2", "c2")))
        .await
        .expect("join elsewhere");
    next(&mut rx).await;
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while collector.join_leaves().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        collector.join_leaves(),
        vec![
            (ch.clone(), JoinLeave::Join(who("1", "c1"))),
            (ch, JoinLeave::Leave(who("1", "c1"))),
        ]
    );
}

/// The per-user limits every node shares: a user's publish bucket allows its burst and
/// refills at its rate, another user's is separate; a user's connections are admitted up
/// to the limit, a refresh of an admitted one is no new slot, a released slot and an
/// expired admission (a node that died) come back.
pub async fn user_limits<B: Broker>(broker: B) {
    let _rx = start(&broker).await;
    let user = channel("user");
    let other = channel("other-user");
    let quota = crate::Quota::new(10, Duration::from_secs(1), 3).expect("a quota");
    let mut allowed = 0;
    for _ in 0..5 {
        if broker.take_user_publish(&user, quota).await.expect("take") {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "the burst, and nothing more at once");
    assert!(
        broker.take_user_publish(&other, quota).await.expect("take"),
        "another user"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        broker.take_user_publish(&user, quota).await.expect("take"),
        "refilled"
    );

    let ttl = Duration::from_secs(1);
    let admit = |client: &'static str| broker.admit_connection(&user, client, 2, ttl);
    assert!(admit("c1").await.expect("admit"));
    assert!(admit("c2").await.expect("admit"));
    assert!(!admit("c3").await.expect("admit"), "over the limit");
    assert!(
        admit("c1").await.expect("admit"),
        "a refresh is no new slot"
    );
    assert!(
        broker
            .admit_connection(&other, "c9", 2, ttl)
            .await
            .expect("admit"),
        "another user's slots are their own"
    );
    broker
        .release_connection(&user, "c2")
        .await
        .expect("release");
    assert!(admit("c3").await.expect("admit"), "a released slot");
    assert!(!admit("c4").await.expect("admit"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        admit("c4").await.expect("admit"),
        "expired admissions free their slots"
    );
    assert!(admit("c5").await.expect("admit"));
    assert!(!admit("c6").await.expect("admit"));
}

/// A message sent to the broker's own node reaches its handler; one sent to a node
/// that does not exist is reported undelivered.
pub async fn node_messages<B: Broker>(broker: B) {
    let (tx, _rx) = mpsc::unbounded_channel();
    let collector = Arc::new(Collector {
        tx,
        joins: Mutex::new(Vec::new()),
        node_messages: Mutex::new(Vec::new()),
    });
    let context = crate::BrokerContext::standalone(collector.clone());
    let node = context.node.clone();
    broker.start(context).await.expect("broker starts");
    let sent = broker
        .send_to_node(&node, bytes::Bytes::from_static(b"to myself"))
        .await
        .expect("send");
    assert!(sent, "the node's own id is live");
    let unknown = broker
        .send_to_node("no-such-node", bytes::Bytes::from_static(b"lost"))
        .await
        .expect("send");
    assert!(
        !unknown,
        "a message to an unknown node is reported undelivered"
    );
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while collector.node_messages.lock().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = collector.node_messages.lock().clone();
    assert_eq!(got, [bytes::Bytes::from_static(b"to myself")]);
}

/// Node reports: each node's newest report is listed until it expires or the node
/// forgets it. Other tests may share the broker, so only this test's reports count.
pub async fn node_reports<B: Broker>(broker: B) {
    let (tx, _rx) = mpsc::unbounded_channel();
    let collector = Arc::new(Collector {
        tx,
        joins: Mutex::new(Vec::new()),
        node_messages: Mutex::new(Vec::new()),
    });
    broker
        .start(crate::BrokerContext::standalone(collector))
        .await
        .expect("broker starts");
    let tag = crate::new_epoch();
    let a = format!("a-{tag}");
    let b = format!("b-{tag}");
    let report = |node: &str, n: u32| bytes::Bytes::from(format!("{node} report {n}"));
    let ours = |reports: Vec<bytes::Bytes>| {
        let mut own: Vec<String> = reports
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .filter(|r| r.contains(&tag))
            .collect();
        own.sort();
        own
    };
    let long = Duration::from_secs(60);
    broker
        .report_node(&a, report(&a, 1), long)
        .await
        .expect("report");
    broker
        .report_node(&b, report(&b, 1), long)
        .await
        .expect("report");
    broker
        .report_node(&a, report(&a, 2), long)
        .await
        .expect("report");
    assert_eq!(
        ours(broker.nodes().await.expect("nodes")),
        [format!("{a} report 2"), format!("{b} report 1")],
        "each node's newest report"
    );
    broker.forget_node(&a).await.expect("forget");
    assert_eq!(
        ours(broker.nodes().await.expect("nodes")),
        [format!("{b} report 1")]
    );
    broker
        .report_node(&b, report(&b, 2), Duration::from_millis(1500))
        .await
        .expect("report");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        ours(broker.nodes().await.expect("nodes")).is_empty(),
        "an expired report is not listed"
    );
}

/// Generates one `#[tokio::test]` per conformance check for a broker made by `$make`
/// (an expression evaluating to a closure that returns a future of the broker).
#[macro_export]
macro_rules! broker_conformance_tests {
    ($make:expr) => {
        $crate::broker_conformance_tests!(@each $make;
            offsets_are_contiguous,
            delivers_subscribed_channels_only,
            publish_without_history,
            concurrent_publishers_deliver_in_order,
            history_queries,
            history_is_trimmed_to_size,
            history_expires,
            idempotent_publish,
            stale_versions_are_dropped,
            origins_travel_with_publications,
            remove_history_keeps_position,
            position_before_first_publish,
            presence_lifecycle,
            join_leave_reaches_subscribed_nodes,
            user_limits,
            node_messages,
            node_reports,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let make = $make;
                    $crate::conformance::$check(make().await).await;
                }
            )*
        }
    };
}
