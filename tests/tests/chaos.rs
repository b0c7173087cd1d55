//! A randomized chaos run: nodes are SIGKILLed and restarted, pub/sub connections
//! killed, Redis paused and clients forced to reconnect, all while publications flow.
//! At the end every client's sequence in every channel must equal the channel's stream
//! exactly: no gap, no duplicate, same order, same data.
//!
//! The seed is printed; rerun a failure with `HERALD_CHAOS_SEED=<seed>`. The run lasts
//! `HERALD_CHAOS_SECS` seconds (default 8; the full runs in the notes used longer).

use herald_client::{Client, SubscribeOptions, SubscriptionEvent};
use herald_tests::Herald;
use herald_tests::balancer::Balancer;
use herald_tests::redis::{RedisCluster, RedisServer};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANNELS: [&str; 3] = ["chaos:a", "chaos:b", "chaos:c"];
const NAMESPACE: &str = "[namespaces.chaos]\nhistory_size = 100000\nhistory_ttl = \"10m\"\nallow_subscribe_for_client = true\n";

type Seen = Arc<Mutex<BTreeMap<(usize, &'static str), Vec<(u64, serde_json::Value)>>>>;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What the nodes share: one Redis, or a three-primary Redis Cluster.
enum Backbone {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Backbone {
    fn url(&self) -> String {
        match self {
            Backbone::Single(r) => r.url(),
            Backbone::Cluster(c) => c.url(),
        }
    }

    /// A server to abuse: the one, or a random primary.
    fn pick(&self, rng: &mut StdRng) -> &RedisServer {
        match self {
            Backbone::Single(r) => r,
            Backbone::Cluster(c) => &c.nodes[rng.random_range(0..c.nodes.len())],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_ends_with_every_client_holding_the_exact_streams() {
    chaos(Backbone::Single(RedisServer::start()), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_run_on_redis_cluster_with_sharded_pubsub() {
    chaos(Backbone::Cluster(RedisCluster::start()), 6).await;
}

async fn chaos(backbone: Backbone, default_secs: u64) {
    let seed = env_u64("HERALD_CHAOS_SEED").unwrap_or_else(|| rand::rng().random());
    let secs = env_u64("HERALD_CHAOS_SECS").unwrap_or(default_secs);
    let kind = match backbone {
        Backbone::Single(_) => "redis",
        Backbone::Cluster(_) => "redis cluster",
    };
    eprintln!("chaos on {kind}: seed {seed}, {secs} s (rerun with HERALD_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let url = backbone.url();
    let mut nodes: Vec<Option<Herald>> = Herald::group(3, &url, NAMESPACE)
        .await
        .into_iter()
        .map(Some)
        .collect();
    let ports: Vec<u16> = nodes.iter().flatten().map(|n| n.port).collect();
    let (secret, key) = {
        let first = nodes[0].as_ref().expect("node");
        (first.secret.clone(), first.api_key.clone())
    };
    let lb = Balancer::start(ports.clone()).await;

    // Clients through the balancer, each on every channel, recording what they get.
    let seen: Seen = Arc::new(Mutex::new(BTreeMap::new()));
    let confirmed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for i in 0..6 {
        let c = Client::builder(lb.ws_url())
            .token(herald_tests::sign(
                &secret,
                &json!({"sub": format!("u{i}")}),
            ))
            .min_backoff(Duration::from_millis(50))
            .max_backoff(Duration::from_millis(500))
            .build()
            .expect("client");
        for ch in CHANNELS {
            let mut sub = c
                .subscribe(ch, SubscribeOptions::default())
                .await
                .expect("subscribe");
            let (seen, confirmed) = (seen.clone(), confirmed.clone());
            readers.push(tokio::spawn(async move {
                while let Some(event) = sub.next().await {
                    match event {
                        SubscriptionEvent::Subscribed { was_recovering: false, .. } => {
                            confirmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        SubscriptionEvent::Publication(p) => {
                            let data = serde_json::from_str(p.data.get()).expect("json");
                            seen.lock().entry((i, ch)).or_default().push((p.offset, data));
                        }
                        SubscriptionEvent::Subscribed { was_recovering: true, recovered: false, .. } => {
                            panic!("client {i} could not recover {ch}: history is large enough, so this is a loss");
                        }
                        SubscriptionEvent::Unsubscribed { code, reason } => panic!("client {i} unsubscribed from {ch}: {code} {reason}"),
                        SubscriptionEvent::Error { code, message } => panic!("client {i} error on {ch}: {code} {message}"),
                        _ => {}
                    }
                }
            }));
        }
        c.connect().await.expect("connect");
        clients.push(c);
    }
    // Publishing starts once every subscription is confirmed: earlier publications
    // would (rightly) not be delivered to it, and the final check would fail.
    let wanted = clients.len() * CHANNELS.len();
    let confirm_deadline = Instant::now() + Duration::from_secs(20);
    while confirmed.load(std::sync::atomic::Ordering::Relaxed) < wanted {
        assert!(
            Instant::now() < confirm_deadline,
            "subscriptions not confirmed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Publications through the API of whichever node is up.
    let live: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(ports.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (live, stop, key) = (live.clone(), stop.clone(), key.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(8))
                .build()
                .expect("http");
            let mut made = 0u64;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let ch = CHANNELS[rng.random_range(0..CHANNELS.len())];
                let port = {
                    let live = live.lock();
                    live[rng.random_range(0..live.len())]
                };
                let r = http
                    .post(format!("http://127.0.0.1:{port}/api/publish"))
                    .header("X-API-Key", &key)
                    .json(&json!({"channel": ch, "data": {"n": n}}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    made += 1;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..6))).await;
            }
            made
        })
    };

    let (mut kills, mut pubsub_kills, mut pauses, mut forced) = (0, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..700))).await;
        match rng.random_range(0..4) {
            0 => {
                let i = rng.random_range(0..nodes.len());
                let up = nodes.iter().filter(|n| n.is_some()).count();
                if let Some(node) = nodes[i].take_if(|_| up > 1) {
                    live.lock().retain(|p| *p != node.port);
                    node.signal("KILL");
                    drop(node);
                    kills += 1;
                    // Back after a while, on the same port.
                    tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
                    let args = ["--broker", "redis", "--redis-url", url.as_str()];
                    nodes[i] =
                        Some(Herald::start_on(ports[i], &secret, &key, NAMESPACE, &args).await);
                    live.lock().push(ports[i]);
                }
            }
            1 => {
                backbone
                    .pick(&mut rng)
                    .cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                pubsub_kills += 1;
            }
            2 => {
                let ms = rng.random_range(100..500).to_string();
                backbone.pick(&mut rng).cli(&["CLIENT", "PAUSE", &ms]);
                pauses += 1;
            }
            _ => {
                if let Some(node) = nodes.iter().flatten().next() {
                    let user = format!("u{}", rng.random_range(0..6));
                    node.api(
                        "disconnect",
                        json!({"user": user, "disconnect": {"code": 3011, "reason": "chaos"}}),
                    )
                    .await;
                    forced += 1;
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = publisher.await.expect("publisher");

    // The streams are the truth: a publication whose reply was lost to a kill still
    // happened, and every client must have it.
    let node = nodes.iter().flatten().next().expect("a node is up");
    let mut truth = BTreeMap::new();
    for ch in CHANNELS {
        let page = node
            .api("history", json!({"channel": ch, "limit": -1}))
            .await;
        let pubs: Vec<(u64, serde_json::Value)> = page["result"]["publications"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| (p["offset"].as_u64().expect("offset"), p["data"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            pubs.first().map(|p| p.0).unwrap_or(1),
            1,
            "history must hold the whole stream"
        );
        truth.insert(ch, pubs);
    }
    let total: usize = truth.values().map(Vec::len).sum();
    let wait_until = Instant::now() + Duration::from_secs(30);
    loop {
        let complete = {
            let seen = seen.lock();
            (0..clients.len()).all(|i| {
                CHANNELS
                    .iter()
                    .all(|ch| seen.get(&(i, *ch)).map_or(0, Vec::len) >= truth[ch].len())
            })
        };
        if complete || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "chaos on {kind}: {total} publications ({made} acknowledged), {kills} node kills, {pubsub_kills} pub/sub kills, {pauses} pauses, {forced} forced reconnects"
    );
    let seen = seen.lock();
    for i in 0..clients.len() {
        for ch in CHANNELS {
            let got = seen.get(&(i, ch)).cloned().unwrap_or_default();
            assert_eq!(
                got.len(),
                truth[ch].len(),
                "client {i} on {ch}: count (seed {seed})"
            );
            assert!(
                got == truth[ch],
                "client {i} on {ch}: sequence differs from the stream (seed {seed})"
            );
        }
    }
    assert!(total as u64 >= made && made > 0);
    for r in readers {
        r.abort();
    }
}
