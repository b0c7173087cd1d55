//! Node behaviour: slow consumers, graceful shutdown, the server API, health and metrics.

use herald_tests::raw::{Event, Raw};
use herald_tests::redis::RedisServer;
use herald_tests::{Herald, now, sign};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn slow_consumer_is_cut_off_with_3008_and_others_are_unaffected() {
    let h = Herald::start("[client]\nqueue_size = 16\n").await;
    let (mut stalled, _) = Raw::connect(&h.ws_url(), &h.token("slow")).await;
    stalled
        .call(json!({"subscribe": {"channel": "live:firehose"}}))
        .await;
    let (mut reader, _) = Raw::connect(&h.ws_url(), &h.token("fast")).await;
    reader
        .call(json!({"subscribe": {"channel": "live:firehose"}}))
        .await;
    // 64 KiB publications fill the stalled client's socket buffers, then its queue.
    let blob = "x".repeat(64 * 1024);
    let reading = tokio::spawn(async move {
        let mut got = 0;
        while got < 400 {
            match reader.next_within(Duration::from_secs(10)).await {
                Some(Event::Reply(r)) if r.push.is_some() => got += 1,
                Some(Event::Reply(_)) => {}
                other => panic!("reader lost its connection: {other:?}"),
            }
        }
        got
    });
    for _ in 0..400 {
        h.publish("live:firehose", json!(blob)).await;
    }
    assert_eq!(reading.await.expect("reader"), 400);
    assert!(h.metric("herald_slow_consumer_disconnects_total").await >= 1.0);
    assert!(h.metric("herald_disconnects_total{code=\"3008\"}").await >= 1.0);
    // The stalled socket is gone (dropped without a close frame: it could not take one).
    let code = stalled.closed_within(Duration::from_secs(20)).await;
    assert!(code == 0 || code == 3008, "code {code}");
}

#[tokio::test]
async fn sigterm_drains_clients_with_3001_and_exits_cleanly() {
    let mut h = Herald::start("").await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(Raw::connect(&h.ws_url(), &h.token(&i.to_string())).await.0);
    }
    let started = Instant::now();
    h.signal("TERM");
    for c in &mut clients {
        assert_eq!(c.closed_within(Duration::from_secs(5)).await, 3001);
    }
    assert_eq!(h.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn readyz_turns_false_while_draining() {
    let mut h = Herald::start("").await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(Raw::connect(&h.ws_url(), &h.token(&i.to_string())).await.0);
    }
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(h.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    assert_eq!(
        http.get(h.url("/livez"))
            .send()
            .await
            .expect("livez")
            .status(),
        200
    );
    h.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut saw_unready = false;
    while Instant::now() < deadline {
        match http.get(h.url("/readyz")).send().await {
            Ok(r) if r.status() == 503 => {
                saw_unready = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("/readyz unreachable during the drain: {e:?}"),
        }
    }
    assert!(saw_unready, "/readyz never reported draining");
    h.wait_exit(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn server_api_shapes() {
    let h = Herald::start("").await;
    let (mut raw, connect) = Raw::connect(
        &h.ws_url(),
        &sign(
            &h.secret,
            &json!({"sub": "42", "exp": now() + 600, "info": {"name": "Ann"}}),
        ),
    )
    .await;
    let client = connect["client"].as_str().expect("client").to_owned();
    raw.call(json!({"subscribe": {"channel": "news"}})).await;

    let published = h
        .api(
            "publish",
            json!({"channel": "news", "data": {"a": 1}, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(published["result"]["offset"], 1, "{published}");
    let again = h
        .api(
            "publish",
            json!({"channel": "news", "data": {"a": 1}, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(again["result"], published["result"], "idempotent publish");
    assert_eq!(raw.publications("news", 1).await, vec![1]);

    let b = h
        .api(
            "broadcast",
            json!({"channels": ["news", "tiny:x", "nope:y"], "data": 2}),
        )
        .await;
    let responses = b["result"]["responses"].as_array().expect("responses");
    assert_eq!(responses[0]["result"]["offset"], 2, "{b}");
    assert_eq!(responses[1]["result"]["offset"], 1, "{b}");
    assert_eq!(responses[2]["error"]["code"], 102, "{b}");

    let hist = h
        .api(
            "history",
            json!({"channel": "news", "limit": 10, "reverse": true}),
        )
        .await;
    assert_eq!(hist["result"]["publications"][0]["offset"], 2, "{hist}");
    assert_eq!(hist["result"]["offset"], 2);

    let presence = h.api("presence", json!({"channel": "news"})).await;
    assert_eq!(
        presence["result"]["presence"][&client]["user"], "42",
        "{presence}"
    );
    assert_eq!(
        presence["result"]["presence"][&client]["conn_info"],
        json!({"name": "Ann"})
    );
    let stats = h.api("presence_stats", json!({"channel": "news"})).await;
    assert_eq!(stats["result"], json!({"num_clients": 1, "num_users": 1}));

    let info = h.api("info", json!({})).await;
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 1, "{info}");
    let channels = h.api("channels", json!({"pattern": "n*"})).await;
    assert_eq!(
        channels["result"]["channels"]["news"]["num_clients"], 1,
        "{channels}"
    );

    let batch = h
        .api(
            "batch",
            json!({"commands": [{"publish": {"channel": "news", "data": 3}}, {"nope": {}}]}),
        )
        .await;
    assert_eq!(batch["replies"][0]["publish"]["offset"], 3, "{batch}");
    assert_eq!(batch["replies"][1]["error"]["code"], 104, "{batch}");

    for bad in [
        json!({"channel": "news"}),
        json!({"data": 1}),
        json!({"channel": "news", "data": 1, "bogus": true}),
    ] {
        let reply = h.api("publish", bad).await;
        assert_eq!(reply["error"]["code"], 107, "{reply}");
    }

    let unsub = h
        .api("unsubscribe", json!({"user": "42", "channel": "news"}))
        .await;
    assert_eq!(unsub, json!({"result": {}}));
    loop {
        let r = raw.next_reply().await;
        if let Some(u) = r.push.and_then(|p| p.unsubscribe) {
            assert_eq!(u.code, 2000);
            break;
        }
    }
    h.api(
        "disconnect",
        json!({"user": "42", "disconnect": {"code": 3503, "reason": "bye"}}),
    )
    .await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3503);
}

/// A user's connections may be on any node: the server API's `unsubscribe` and
/// `disconnect` reach them wherever the call lands, and a client id narrows them to one.
#[tokio::test]
async fn api_unsubscribe_and_disconnect_reach_every_node() {
    let redis = RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), "").await;
    // The call goes to node 0 once it knows node 1 (nodes report every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].api("info", json!({})).await["result"]["nodes"]
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "node 0 never saw node 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut here, _) = Raw::connect(&nodes[0].ws_url(), &nodes[0].token("ann")).await;
    let (mut there, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("ann")).await;
    let (mut other, other_info) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("ann")).await;
    for raw in [&mut here, &mut there, &mut other] {
        let reply = raw.call(json!({"subscribe": {"channel": "news"}})).await;
        assert!(reply.get("error").is_none(), "{reply}");
    }
    async fn unsubscribed(raw: &mut Raw) -> u32 {
        loop {
            let r = raw.next_reply().await;
            if let Some(u) = r.push.and_then(|p| p.unsubscribe) {
                return u.code;
            }
        }
    }
    let reply = nodes[0]
        .api("unsubscribe", json!({"user": "ann", "channel": "news"}))
        .await;
    assert_eq!(reply, json!({"result": {}}));
    for raw in [&mut here, &mut there, &mut other] {
        let code = tokio::time::timeout(Duration::from_secs(5), unsubscribed(raw))
            .await
            .expect("an unsubscribe push on each node");
        assert_eq!(code, 2000);
    }
    // One client of the user, on the other node.
    let client = other_info["client"].as_str().expect("client id");
    nodes[0]
        .api(
            "disconnect",
            json!({"user": "ann", "client": client, "disconnect": {"code": 4001, "reason": "moved"}}),
        )
        .await;
    assert_eq!(other.closed_within(Duration::from_secs(5)).await, 4001);
    // The rest of the user's connections, on both nodes.
    nodes[0].api("disconnect", json!({"user": "ann"})).await;
    assert_eq!(here.closed_within(Duration::from_secs(5)).await, 3503);
    assert_eq!(there.closed_within(Duration::from_secs(5)).await, 3503);
}

#[tokio::test]
async fn server_api_requires_the_key() {
    let h = Herald::start("").await;
    let http = reqwest::Client::new();
    for key in [None, Some("wrong")] {
        let mut req = http
            .post(h.url("/api/publish"))
            .json(&json!({"channel": "news", "data": 1}));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.expect("api");
        assert_eq!(resp.status(), 401);
    }
    let ok = http
        .post(h.url("/api/info"))
        .header("Authorization", format!("apikey {}", h.api_key))
        .send()
        .await
        .expect("api");
    assert_eq!(ok.status(), 200);
    let bad_json = http
        .post(h.url("/api/publish"))
        .header("X-API-Key", &h.api_key)
        .body("{oops")
        .send()
        .await
        .expect("api");
    assert_eq!(bad_json.status(), 400);
    // The newline-separated pipeline form.
    let piped = http
        .post(h.url("/api"))
        .header("X-API-Key", &h.api_key)
        .body("{\"method\":\"publish\",\"params\":{\"channel\":\"news\",\"data\":1}}\n{\"method\":\"info\",\"params\":{}}")
        .send()
        .await
        .expect("api")
        .text()
        .await
        .expect("text");
    let lines: Vec<serde_json::Value> = piped
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["result"]["offset"], 1, "{piped}");
    assert!(lines[1]["result"]["nodes"].is_array(), "{piped}");
}

#[tokio::test]
async fn join_leave_and_server_side_subscriptions() {
    let h = Herald::start("").await;
    let (mut watcher, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = watcher
        .call(json!({"subscribe": {"channel": "news", "join_leave": true}}))
        .await;
    assert_eq!(sub["subscribe"]["join_leave"], true, "{sub}");
    // The watcher hears its own join first.
    let token = sign(&h.secret, &json!({"sub": "2", "channels": ["news"]}));
    let (mut server_sub, connect) = Raw::connect(&h.ws_url(), &token).await;
    assert!(connect["subs"]["news"].is_object(), "{connect}");
    let mut joins = Vec::new();
    while joins.len() < 2 {
        if let Some(j) = watcher.next_reply().await.push.and_then(|p| p.join) {
            joins.push(j.info.user);
        }
    }
    assert_eq!(joins, vec!["1".to_owned(), "2".to_owned()]);
    let offset = h.publish("news", json!("hi")).await;
    assert_eq!(server_sub.publications("news", 1).await, vec![offset]);
    drop(server_sub);
    loop {
        if let Some(l) = watcher.next_reply().await.push.and_then(|p| p.leave) {
            assert_eq!(l.info.user, "2");
            break;
        }
    }
}

#[tokio::test]
async fn metrics_are_exported_with_herald_prefix() {
    let h = Herald::start("").await;
    let (_raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let text = reqwest::get(h.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "herald_connections 1",
        "herald_subscriptions",
        "herald_channels",
        "herald_messages_sent_total",
        "herald_build_info{version=",
        "herald_ready 1",
    ] {
        assert!(text.contains(name), "{name} missing from metrics:\n{text}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("herald_"), "unprefixed metric: {line}");
    }
}
