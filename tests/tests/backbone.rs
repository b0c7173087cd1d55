//! Several gateway nodes on one Redis: every client gets every publication of its
//! channels once and in order, whichever node it is on and whatever fails meanwhile.

use herald_client::{Client, SubscribeOptions, Subscription, SubscriptionEvent};
use herald_tests::balancer::Balancer;
use herald_tests::raw::{Event, Raw};
use herald_tests::redis::RedisServer;
use herald_tests::{Herald, herald_bin};
use serde_json::json;
use std::time::Duration;

/// Publishes through the function library with `redis-cli`, exactly as a publisher in
/// any language would (the contract documented in the README).
fn fcall_publish(redis: &RedisServer, channel: &str, data: &str) -> String {
    let stream = format!("herald:{{{channel}}}:stream");
    let meta = format!("herald:{{{channel}}}:meta");
    let pubsub = format!("herald:{{{channel}}}:pub");
    redis.cli(&[
        "FCALL",
        "herald_publish",
        "2",
        &stream,
        &meta,
        &pubsub,
        data,
        "100",
        "300",
        "2592000",
        "cli-epoch",
        "",
        "",
        "300",
        "0",
    ])
}

async fn subscribed_raw(node: &Herald, user: &str, channel: &str) -> Raw {
    let (mut raw, _) = Raw::connect(&node.ws_url(), &node.token(user)).await;
    let reply = raw.call(json!({"subscribe": {"channel": channel}})).await;
    assert!(reply.get("subscribe").is_some(), "{reply}");
    raw
}

/// One raw client per channel, all subscribing at once.
async fn subscribe_concurrently(node: &Herald, user: &str, channels: &[String]) -> Vec<Raw> {
    let subscribing = channels.iter().map(|ch| subscribed_raw(node, user, ch));
    futures_util::future::join_all(subscribing).await
}

/// Reads publications of `channel` until `n` arrived; any unsubscribe or close fails.
async fn read_all(raw: &mut Raw, channel: &str, n: usize) -> Vec<(u64, serde_json::Value)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match raw.next_within(Duration::from_secs(15)).await {
            Some(Event::Reply(r)) => {
                if let Some(push) = r.push {
                    assert!(push.unsubscribe.is_none(), "unsubscribed: {push:?}");
                    if push.channel == channel
                        && let Some(p) = push.publication
                    {
                        got.push((p.offset, serde_json::from_str(p.data.get()).expect("json")));
                    }
                }
            }
            other => panic!("after {} publications: {other:?}", got.len()),
        }
    }
    got
}

#[tokio::test]
async fn three_nodes_deliver_every_publisher_once_in_order() {
    let redis = RedisServer::start();
    let nodes = Herald::group(3, &redis.url(), "").await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            clients.push(subscribed_raw(node, &format!("u{i}{j}"), "news").await);
        }
    }
    // Four kinds of publisher, interleaved: redis-cli FCALL, a node's HTTP API, the CLI
    // publishing straight to Redis, and the Rust Publisher.
    let publisher = herald_redis::Publisher::connect(&redis.url())
        .await
        .expect("publisher");
    for n in 1..=40u64 {
        match n % 4 {
            3 => {
                let data = herald_client::RawJson::from_value(&json!({ "n": n })).expect("json");
                let options = herald_redis::PublishOptions {
                    history_size: 100,
                    history_ttl: Duration::from_secs(300),
                    ..Default::default()
                };
                let position = publisher
                    .publish("news", data, options)
                    .await
                    .expect("publish");
                assert_eq!(position.offset, n);
            }
            0 => {
                let out = fcall_publish(&redis, "news", &json!({ "n": n }).to_string());
                assert!(out.starts_with(&n.to_string()), "FCALL said {out}");
            }
            1 => assert_eq!(nodes[1].publish("news", json!({ "n": n })).await, n),
            _ => {
                let out = std::process::Command::new(herald_bin())
                    .args([
                        "publish",
                        "news",
                        &json!({ "n": n }).to_string(),
                        "--redis-url",
                        &redis.url(),
                    ])
                    .arg("--config")
                    .arg(nodes[0].config_path())
                    .output()
                    .expect("herald publish");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    for c in &mut clients {
        let got = read_all(c, "news", 40).await;
        let expected: Vec<(u64, serde_json::Value)> =
            (1..=40).map(|n| (n, json!({ "n": n }))).collect();
        assert_eq!(got, expected);
    }
}

fn sdk(url: &str, token: String) -> Client {
    Client::builder(url)
        .token(token)
        .min_backoff(Duration::from_millis(50))
        .max_backoff(Duration::from_millis(400))
        .build()
        .expect("client")
}

/// Collects offsets until `n` arrived; returns them with how many resubscribes recovered.
async fn collect_offsets(sub: &mut Subscription, n: usize) -> (Vec<u64>, usize) {
    let (mut offsets, mut recovered) = (Vec::new(), 0);
    while offsets.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(Some(SubscriptionEvent::Publication(p))) => offsets.push(p.offset),
            Ok(Some(SubscriptionEvent::Subscribed {
                was_recovering: true,
                recovered: r,
                ..
            })) => {
                assert!(r, "a recovery failed after {} publications", offsets.len());
                recovered += 1;
            }
            Ok(Some(SubscriptionEvent::Subscribed { .. })) => {}
            other => panic!("after {} publications: {other:?}", offsets.len()),
        }
    }
    (offsets, recovered)
}

#[tokio::test]
async fn killed_node_clients_recover_on_other_nodes_without_loss() {
    let redis = RedisServer::start();
    let mut nodes = Herald::group(3, &redis.url(), "").await;
    let lb = Balancer::start(nodes.iter().map(|n| n.port).collect()).await;
    let mut subs = Vec::new();
    let mut clients = Vec::new();
    for i in 0..6 {
        let c = sdk(&lb.ws_url(), nodes[0].token(&format!("u{i}")));
        let mut sub = c
            .subscribe("news", SubscribeOptions::default())
            .await
            .expect("subscribe");
        c.connect().await.expect("connect");
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(SubscriptionEvent::Subscribed { .. })) => {}
            other => panic!("not subscribed: {other:?}"),
        }
        subs.push(sub);
        clients.push(c);
    }
    let publisher = nodes.pop().expect("node 2");
    let publishing = publisher.spawn_publisher("news", 300, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(150)).await;
    nodes[0].signal("KILL");
    tokio::time::sleep(Duration::from_millis(150)).await;
    nodes[1].signal("KILL");
    publishing.await.expect("publisher");
    let mut recoveries = 0;
    for sub in &mut subs {
        let (offsets, recovered) = collect_offsets(sub, 300).await;
        assert_eq!(
            offsets,
            (1..=300).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        recoveries += recovered;
    }
    // Clients on the killed nodes had to reconnect elsewhere and recover.
    assert!(recoveries >= 1, "no client was on a killed node");
    drop(publisher);
}

#[tokio::test]
async fn pubsub_kills_pauses_and_stops_lose_nothing() {
    let redis = RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), "").await;
    let mut clients = vec![
        subscribed_raw(&nodes[0], "a", "news").await,
        subscribed_raw(&nodes[1], "b", "news").await,
    ];
    // A steady stream of publications through node 0 while Redis is abused.
    let publishing = nodes[0].spawn_publisher("news", 250, Duration::from_millis(10));
    let at = |ms| tokio::time::sleep(Duration::from_millis(ms));
    at(300).await;
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 2,
        "killed {killed}"
    );
    at(400).await;
    redis.cli(&["CLIENT", "PAUSE", "800"]);
    at(1200).await;
    redis.signal("STOP");
    at(1500).await;
    redis.signal("CONT");
    at(400).await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    publishing.await.expect("publisher");
    for c in &mut clients {
        let got: Vec<u64> = read_all(c, "news", 250)
            .await
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(got, (1..=250).collect::<Vec<_>>());
    }
    assert!(
        nodes[0]
            .metric("herald_redis_pubsub_reconnects_total")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn redis_restart_without_persistence_is_reported_never_papered_over() {
    let mut redis = RedisServer::start();
    let nodes = Herald::group(1, &redis.url(), "").await;
    let node = &nodes[0];
    let (mut raw, _) = Raw::connect(&node.ws_url(), &node.token("u")).await;
    let sub = raw.call(json!({"subscribe": {"channel": "news"}})).await;
    let epoch = sub["subscribe"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    for n in 1..=5 {
        node.publish("news", json!(n)).await;
    }
    raw.publications("news", 5).await;
    redis.restart();
    // The node notices the lost stream and asks its subscriber to resubscribe.
    let mut told = false;
    while let Some(Event::Reply(r)) = raw.next_within(Duration::from_secs(15)).await {
        if let Some(u) = r.push.and_then(|p| p.unsubscribe) {
            assert_eq!(u.code, 2500);
            told = true;
            break;
        }
    }
    assert!(told, "the subscriber was not told that history was lost");
    let again = raw
        .call(
            json!({"subscribe": {"channel": "news", "recover": true, "offset": 5, "epoch": epoch}}),
        )
        .await;
    let again = &again["subscribe"];
    assert_eq!(again["was_recovering"], true, "{again}");
    assert!(again.get("recovered").is_none(), "{again}");
    assert_ne!(again["epoch"], epoch.as_str());
    // Told once: the node follows the new epoch and does not keep resetting the
    // channel at every top-offset check (one runs every 2 s).
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Some(event) = raw
        .next_within(quiet_until - tokio::time::Instant::now())
        .await
    {
        if let Event::Reply(r) = event {
            assert!(
                r.push.and_then(|p| p.unsubscribe).is_none(),
                "told again after the reset"
            );
        }
    }
    let (mut strict, _) = Raw::connect(&node.ws_url(), &node.token("v")).await;
    let rejected = strict
        .call(json!({"subscribe": {"channel": "news", "recover": true, "offset": 5, "epoch": epoch, "flag": 2}}))
        .await;
    assert_eq!(rejected["error"]["code"], 112, "{rejected}");
}

#[tokio::test]
async fn redis_down_at_start_fails_fast_and_readyz_follows_redis() {
    let port = herald_tests::free_port();
    let out = std::process::Command::new(herald_bin())
        .args([
            "serve",
            "--broker",
            "redis",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
            "--allow-anonymous",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{}", herald_tests::free_port()))
        .output()
        .expect("herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Redis"), "{err}");

    let redis = RedisServer::start();
    let nodes = Herald::group(1, &redis.url(), "").await;
    redis.signal("STOP");
    let http = reqwest::Client::new();
    let mut unready = false;
    for _ in 0..100 {
        let status = http
            .get(nodes[0].url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status();
        if status == 503 {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.signal("CONT");
    assert!(unready, "/readyz stayed ready while Redis was stopped");
}

#[tokio::test]
async fn redis_cluster_with_sharded_pubsub_delivers_and_recovers_across_nodes() {
    let cluster = herald_tests::redis::RedisCluster::start();
    let nodes = Herald::group(2, &cluster.url(), "").await;
    // Channels whose keys land in different slots, so on different primaries.
    let channels: Vec<String> = (0..6).map(|i| format!("room-{i}")).collect();
    // Concurrent subscriptions: a node merges them into batches that span slots.
    let mut on_a = subscribe_concurrently(&nodes[0], "a", &channels).await;
    let mut on_b = subscribe_concurrently(&nodes[1], "b", &channels).await;
    for round in 1..=5u64 {
        for (i, ch) in channels.iter().enumerate() {
            let via = &nodes[i % 2];
            assert_eq!(via.publish(ch, json!({ "round": round })).await, round);
        }
    }
    for (i, ch) in channels.iter().enumerate() {
        for raw in [&mut on_a[i], &mut on_b[i]] {
            let got: Vec<u64> = read_all(raw, ch, 5)
                .await
                .into_iter()
                .map(|(o, _)| o)
                .collect();
            assert_eq!(got, vec![1, 2, 3, 4, 5], "channel {ch}");
        }
    }
    // A client that leaves node A at offset 5 and comes back to node B recovers.
    let epoch = nodes[0].api("history", json!({"channel": "room-3"})).await["result"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    for round in 6..=8 {
        nodes[0].publish("room-3", json!({ "round": round })).await;
    }
    let (mut back, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("a")).await;
    let sub = back
        .call(json!({"subscribe": {"channel": "room-3", "recover": true, "offset": 5, "epoch": epoch}}))
        .await;
    assert_eq!(sub["subscribe"]["recovered"], true, "{sub}");
    let recovered: Vec<u64> = sub["subscribe"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .filter_map(|p| p["offset"].as_u64())
        .collect();
    assert_eq!(recovered, vec![6, 7, 8]);
    let keys = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).trim().parse::<u32>().unwrap_or(0));
    assert!(
        keys.filter(|&k| k > 0).count() >= 2,
        "keys should spread over the primaries"
    );
}

#[tokio::test]
async fn presence_and_join_leave_span_nodes_and_a_dead_nodes_entries_expire() {
    let redis = RedisServer::start();
    let mut nodes = Herald::group(2, &redis.url(), "[client]\npresence_ttl = \"3s\"\n").await;
    // A watcher on node B hears joins and leaves made on node A.
    let (mut watcher, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("watcher")).await;
    watcher
        .call(json!({"subscribe": {"channel": "news", "join_leave": true}}))
        .await;
    let on_a = subscribed_raw(&nodes[0], "ann", "news").await;
    let mut joined = Vec::new();
    while joined.len() < 2 {
        if let Some(j) = watcher.next_reply().await.push.and_then(|p| p.join) {
            joined.push(j.info.user);
        }
    }
    assert_eq!(joined, vec!["watcher".to_owned(), "ann".to_owned()]);
    // Presence asked on node B lists the subscriber on node A, through the API too.
    let listed = watcher
        .call(json!({"presence_stats": {"channel": "news"}}))
        .await;
    assert_eq!(
        listed["presence_stats"],
        json!({"num_clients": 2, "num_users": 2}),
        "{listed}"
    );
    let api = nodes[1].api("presence", json!({"channel": "news"})).await;
    assert_eq!(
        api["result"]["presence"].as_object().map(|m| m.len()),
        Some(2),
        "{api}"
    );
    drop(on_a);
    loop {
        if let Some(l) = watcher.next_reply().await.push.and_then(|p| p.leave) {
            assert_eq!(l.info.user, "ann");
            break;
        }
    }
    // A node that dies cannot say goodbye: its subscribers expire from presence.
    let _on_a_again = subscribed_raw(&nodes[0], "bob", "news").await;
    let stats = nodes[1]
        .api("presence_stats", json!({"channel": "news"}))
        .await;
    assert_eq!(stats["result"]["num_clients"], 2, "{stats}");
    nodes[0].signal("KILL");
    nodes[0].wait_exit(Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        let stats = nodes[1]
            .api("presence_stats", json!({"channel": "news"}))
            .await;
        if stats["result"]["num_clients"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dead node's presence never expired: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The live subscriber stays present beyond the TTL: its node refreshes it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats = nodes[1]
        .api("presence_stats", json!({"channel": "news"}))
        .await;
    assert_eq!(stats["result"]["num_clients"], 1, "{stats}");
}

#[tokio::test]
async fn an_eviction_policy_that_can_drop_history_is_warned_about() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let nodes = Herald::group(1, &redis.url(), "").await;
    assert!(
        nodes[0].log().contains("maxmemory-policy can evict"),
        "no warning in:\n{}",
        nodes[0].log()
    );
}

#[tokio::test]
async fn history_trimmed_by_maxlen_is_not_recovered_on_another_node() {
    let redis = RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), "").await;
    let mut raw = subscribed_raw(&nodes[0], "u", "tiny:t").await;
    nodes[0].publish("tiny:t", json!(1)).await;
    assert_eq!(raw.publications("tiny:t", 1).await, vec![1]);
    let epoch = nodes[0].api("history", json!({"channel": "tiny:t"})).await["result"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    drop(raw);
    // The namespace keeps 3: offsets 2..=7 are trimmed from the stream.
    for n in 2..=10 {
        nodes[1].publish("tiny:t", json!(n)).await;
    }
    let (mut back, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("u")).await;
    let recover = json!({"channel": "tiny:t", "recover": true, "offset": 1, "epoch": epoch});
    let sub = back.call(json!({ "subscribe": recover.clone() })).await["subscribe"].clone();
    assert_eq!(sub["was_recovering"], true, "{sub}");
    assert!(sub.get("recovered").is_none(), "{sub}");
    assert!(sub.get("publications").is_none(), "partial recovery: {sub}");
    assert_eq!(sub["offset"], 10);
    let mut strict = recover;
    strict["flag"] = json!(2);
    let (mut other, _) = Raw::connect(&nodes[0].ws_url(), &nodes[0].token("v")).await;
    let rejected = other.call(json!({ "subscribe": strict })).await;
    assert_eq!(rejected["error"]["code"], 112, "{rejected}");
}
