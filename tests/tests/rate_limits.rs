//! Rate limits on real nodes: 111 with the connection kept, 3013 when far over, dry run,
//! a namespace's own limit, the per-user limits shared by nodes on one Redis, and a
//! flood that leaves every other client's delivery whole and prompt.

use futures_util::{SinkExt, StreamExt};
use herald_tests::Herald;
use herald_tests::raw::{Event, Raw};
use herald_tests::redis::RedisServer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

fn ping() -> Value {
    json!({"rpc": {"method": herald_protocol::RPC_PING}})
}

fn refused(reply: &Value) -> bool {
    reply["error"]["code"] == json!(111) && reply["error"]["temporary"] == json!(true)
}

/// Sends `n` commands at once, then reads their `n` replies in order.
async fn burst(raw: &mut Raw, cmd: &Value, n: usize) -> Vec<Value> {
    for _ in 0..n {
        raw.command(cmd.clone()).await;
    }
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match raw.next().await {
            Event::Reply(r) if r.is_ping() => {}
            Event::Reply(r) => out.push(serde_json::to_value(*r).expect("json")),
            other => panic!("expected replies, got {other:?}"),
        }
    }
    out
}

fn lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

const CHAT: &str =
    "[namespaces.chat]\nallow_subscribe_for_client = true\nallow_publish_for_client = true\n";

#[tokio::test]
async fn over_the_limit_replies_111_keeps_the_connection_and_far_over_closes_with_3013() {
    let h = Herald::start(
        "[client.rate_limits]\ncommands = \"5/s\"\ndisconnect_after = 30\ndisconnect_window = \"10s\"\n",
    )
    .await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("ann")).await;
    let replies = burst(&mut raw, &ping(), 10).await;
    let ok = replies.iter().filter(|r| r.get("error").is_none()).count();
    assert!(
        (4..=5).contains(&ok),
        "the burst, less the connect: {replies:?}"
    );
    assert!(replies[6..].iter().all(refused), "{replies:?}");
    // Kept: after a pause the client is served again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(raw.call(ping()).await.get("error").is_none());

    // Far over: going on and on is closed with 3013, a code the SDKs reconnect after
    // with backoff. Each command waits for its answer, so that nothing the client sent
    // is still unread when the server closes: closing over unread bytes resets the TCP
    // connection, and the reset can overtake the Close frame.
    let mut sent = 0;
    let code = loop {
        assert!(sent < 100, "still open after 100 commands over the limit");
        raw.command(ping()).await;
        sent += 1;
        // The answer, and whatever follows it at once (a Close right after a refusal
        // must be read before anything more is sent).
        let mut event = raw.next().await;
        while matches!(event, Event::Reply(_)) {
            match raw.next_within(Duration::from_millis(100)).await {
                Some(next) => event = next,
                None => break,
            }
        }
        match event {
            Event::Reply(_) => continue,
            Event::Closed(code, _) => break code,
            Event::Gone => break 0,
        }
    };
    assert_eq!(code, 3013);
    let enforced = h
        .metric("herald_rate_limited_total{limit=\"commands\",mode=\"enforced\"}")
        .await;
    assert!(enforced >= 30.0, "{enforced}");
    assert_eq!(
        h.metric("herald_disconnects_total{code=\"3013\"}").await,
        1.0
    );
    // One line when the client first went over, one when it was closed: not one per command.
    let log = h.log();
    assert_eq!(lines(&log, "client over a rate limit"), 1, "{log}");
    assert_eq!(lines(&log, "closing a client far over"), 1, "{log}");
}

#[tokio::test]
async fn a_dry_run_counts_but_allows() {
    let h = Herald::start(
        "[client.rate_limits]\ncommands = \"2/s\"\ndry_run = true\ndisconnect_after = 3\n",
    )
    .await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("ann")).await;
    let replies = burst(&mut raw, &ping(), 30).await;
    assert!(
        replies.iter().all(|r| r.get("error").is_none()),
        "{replies:?}"
    );
    let counted = h
        .metric("herald_rate_limited_total{limit=\"commands\",mode=\"dry_run\"}")
        .await;
    assert!(counted >= 25.0, "{counted}");
    assert_eq!(
        h.metric("herald_rate_limited_total{limit=\"commands\",mode=\"enforced\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_namespace_override_limits_its_channels_only() {
    let h = Herald::start(&format!(
        "[client.rate_limits]\npublishes = \"100/s\"\n{CHAT}[namespaces.chat.rate_limits]\npublishes = \"2/m\"\n[namespaces.open]\nallow_publish_for_client = true\n"
    ))
    .await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("ann")).await;
    let chat = json!({"publish": {"channel": "chat:room", "data": {"x": 1}}});
    let replies = burst(&mut raw, &chat, 6).await;
    assert_eq!(
        replies.iter().map(refused).collect::<Vec<_>>(),
        [false, false, true, true, true, true]
    );
    let open = json!({"publish": {"channel": "open:room", "data": {"x": 1}}});
    let replies = burst(&mut raw, &open, 20).await;
    assert!(
        replies.iter().all(|r| r.get("error").is_none()),
        "{replies:?}"
    );
    assert!(
        h.metric("herald_rate_limited_total{limit=\"publishes\",mode=\"enforced\"}")
            .await
            >= 4.0
    );
}

#[tokio::test]
async fn two_nodes_share_a_users_publish_budget() {
    let redis = RedisServer::start();
    let nodes = Herald::group(
        2,
        &redis.url(),
        &format!("[client.rate_limits]\nuser_publishes = \"4/m\"\n{CHAT}"),
    )
    .await;
    let (mut a, _) = Raw::connect(&nodes[0].ws_url(), &nodes[0].token("ann")).await;
    let (mut b, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("ann")).await;
    let (mut other, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("bob")).await;
    let publish = json!({"publish": {"channel": "chat:room", "data": {"x": 1}}});
    let mut allowed = 0;
    for i in 0..10 {
        let raw = if i % 2 == 0 { &mut a } else { &mut b };
        let reply = raw.call(publish.clone()).await;
        if reply.get("error").is_none() {
            allowed += 1;
        } else {
            assert!(refused(&reply), "{reply}");
        }
    }
    assert_eq!(allowed, 4, "one budget for both connections of the user");
    assert!(
        other.call(publish).await.get("error").is_none(),
        "another user's own budget"
    );
}

async fn try_connect(url: &str, token: &str) -> Result<Raw, Value> {
    let mut raw = Raw::open(url).await;
    let reply = raw.call(json!({"connect": {"token": token}})).await;
    if reply.get("error").is_some() {
        Err(reply)
    } else {
        Ok(raw)
    }
}

#[tokio::test]
async fn a_users_connections_are_limited_across_nodes() {
    let redis = RedisServer::start();
    let nodes = Herald::group(
        2,
        &redis.url(),
        "[client.rate_limits]\nuser_connections = 2\n",
    )
    .await;
    let token = nodes[0].token("ann");
    let _a = try_connect(&nodes[0].ws_url(), &token)
        .await
        .expect("first");
    let b = try_connect(&nodes[1].ws_url(), &token)
        .await
        .expect("second");
    let refusal = try_connect(&nodes[0].ws_url(), &token)
        .await
        .expect_err("a third is refused");
    assert!(refused(&refusal), "{refusal}");
    assert!(
        try_connect(&nodes[1].ws_url(), &nodes[1].token("bob"))
            .await
            .is_ok()
    );
    assert_eq!(
        nodes[0]
            .metric("herald_rate_limited_total{limit=\"user_connections\",mode=\"enforced\"}")
            .await,
        1.0
    );
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(&nodes[0].ws_url(), &token).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(refused(&e), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the closed connection's slot never came back: {e}"),
        }
    }
}

fn micros() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_micros(),
    )
    .expect("fits")
}

#[tokio::test]
async fn a_flood_leaves_other_clients_whole_and_prompt() {
    let h =
        Herald::start("[client.rate_limits]\ncommands = \"50/s\"\ndisconnect_after = 0\n").await;

    // The flooder: pings as fast as the socket takes them, its replies drained apart.
    let (ws, _) = tokio_tungstenite::connect_async(h.ws_url())
        .await
        .expect("ws");
    let (mut tx, mut rx) = ws.split();
    let connect = json!({"id": 1, "connect": {"token": h.token("flood")}}).to_string();
    tx.send(Message::text(connect)).await.expect("send");
    let refusals = Arc::new(AtomicU64::new(0));
    let counted = refusals.clone();
    let drain = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                let n = t.as_str().matches("\"code\":111").count() as u64;
                counted.fetch_add(n, Ordering::Relaxed);
            }
        }
    });
    let flood = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut id = 2u32;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            // Frames of 50 commands each, back to back.
            let frame: Vec<String> = (0..50)
                .map(|_| {
                    id += 1;
                    json!({"id": id, "rpc": {"method": herald_protocol::RPC_PING}}).to_string()
                })
                .collect();
            if tx.send(Message::text(frame.join("\n"))).await.is_err() {
                break;
            }
            sent += 50;
        }
        sent
    });

    let (mut watcher, _) = Raw::connect(&h.ws_url(), &h.token("watch")).await;
    let sub = watcher
        .call(json!({"subscribe": {"channel": "live:feed"}}))
        .await;
    assert!(sub.get("error").is_none(), "{sub}");
    const COUNT: u64 = 150;
    let api = h.url("/api/publish");
    let key = h.api_key.clone();
    let publisher = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for n in 1..=COUNT {
            let r = http
                .post(&api)
                .header("X-API-Key", &key)
                .json(&json!({"channel": "live:feed", "data": {"n": n, "t": micros()}}))
                .send()
                .await;
            assert!(r.is_ok_and(|r| r.status().is_success()), "publish {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(COUNT as usize);
    let mut seen = Vec::with_capacity(COUNT as usize);
    let mut ready_checked = false;
    while seen.len() < COUNT as usize {
        let reply = watcher.next_reply().await;
        let Some(p) = reply.push.and_then(|p| p.publication) else {
            continue;
        };
        let data: Value = serde_json::from_str(p.data.get()).expect("data");
        seen.push(data["n"].as_u64().expect("n"));
        latencies.push(micros().saturating_sub(data["t"].as_u64().expect("t")));
        if seen.len() == 75 && !ready_checked {
            ready_checked = true;
            let ready = http.get(h.url("/readyz")).send().await.expect("readyz");
            assert!(ready.status().is_success(), "ready during the flood");
        }
    }
    publisher.await.expect("publisher");
    let sent = flood.await.expect("flood");
    assert_eq!(
        seen,
        (1..=COUNT).collect::<Vec<_>>(),
        "every publication, in order"
    );
    latencies.sort_unstable();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("flood: {sent} commands sent; watcher latency p50 {p50} µs, p99 {p99} µs");
    assert!(p99 < 1_000_000, "p99 {p99} µs");
    drain.abort();
    let refusals = refusals.load(Ordering::Relaxed);
    assert!(
        refusals > 100,
        "the flooder was refused ({refusals}) and never closed"
    );
    assert!(lines(&h.log(), "client over a rate limit") <= 1);
}
