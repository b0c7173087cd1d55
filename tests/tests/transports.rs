//! The bidirectional HTTP transports (and what all transport endpoints share) against
//! real nodes: bad input on every endpoint gets its documented status or disconnect code
//! while other sessions keep working; the Origin rule and CORS; admission slots taken
//! and given back; a stream that is not read is cut off as slow; a drain ends the
//! streams with 3001; commands posted on another node reach the session's node through
//! Redis, with 404 and 504 when that node is gone or cannot answer.

use futures_util::{SinkExt, StreamExt};
use herald_tests::Herald;
use herald_tests::redis::RedisServer;
use herald_tests::stream::{
    Framing, MessageStream, disconnect_code, emulate, http_stream_session, open_events,
    open_http_stream, open_uni_http_stream, open_when_free, post_raw,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn bad_input_on_every_endpoint_gets_its_code_and_others_keep_working() {
    let h = Herald::start("").await;
    let emulation = h.url("/emulation");
    let (mut bystander, connect) = http_stream_session(&h, "by").await;
    let (node, session) = (
        connect["node"].as_str().expect("node").to_owned(),
        connect["session"].as_str().expect("session").to_owned(),
    );
    let subscribe = json!({"id": 2, "subscribe": {"channel": "news"}});
    assert_eq!(
        emulate(&http(), &emulation, &node, &session, &[subscribe]).await,
        204
    );
    bystander.until(|m| m["id"] == 2).await;

    // /emulation: undecodable bodies, unknown sessions and nodes, size, type, method.
    let post = |content_type: &'static str, body: Vec<u8>| {
        let url = emulation.clone();
        async move { post_raw(&http(), &url, content_type, body).await }
    };
    let json = "application/json";
    for body in [
        &b"not json"[..],
        b"[1,2]",
        b"{\"session\":\"s\"}",
        b"{\"node\":1,\"session\":\"s\",\"data\":\"{}\"}",
        b"{\"session\":\"\",\"data\":\"{}\"}",
        b"{\"session\":\"s\",\"data\":\"\"}",
        b"{\"session\":\"s\",\"data\":\"\xff\xfe\"}",
        b"",
    ] {
        assert_eq!(
            post(json, body.to_vec()).await,
            400,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let command = [json!({"id": 9, "presence": {"channel": "news"}})];
    assert_eq!(
        emulate(&http(), &emulation, &node, "no-such-session", &command).await,
        404
    );
    assert_eq!(
        emulate(&http(), &emulation, "", "no-such-session", &command).await,
        404
    );
    assert_eq!(
        emulate(&http(), &emulation, "no-such-node", &session, &command).await,
        404
    );
    let huge = json!({"node": node, "session": session, "data": "x".repeat(65 * 1024)});
    assert_eq!(post(json, huge.to_string().into_bytes()).await, 413);
    assert_eq!(
        post("application/octet-stream", vec![0x0a, 0x01, 0x61]).await,
        415
    );
    let get = |path: &str| {
        let url = h.url(path);
        async move { http().get(url).send().await.expect("GET").status().as_u16() }
    };
    assert_eq!(get("/emulation").await, 405);
    assert_eq!(get("/connection/http_stream").await, 405);
    assert_eq!(get("/connection/uni_http_stream").await, 405);

    // The bidirectional streams: size, type, a missing or malformed connect command.
    let big = "x".repeat(65 * 1024);
    assert_eq!(
        open_http_stream(&h, &big).await.expect_err("refused").code,
        413
    );
    let protobuf = http()
        .post(h.url("/connection/http_stream"))
        .header("content-type", "application/octet-stream")
        .body(vec![0x00]);
    let refused = MessageStream::open(protobuf, Framing::Lines).await;
    assert_eq!(refused.expect_err("refused").code, 415);
    let mut garbage = open_http_stream(&h, "{not json").await.expect("a stream");
    assert_eq!(disconnect_code(&mut garbage).await, 3501);
    let missing = open_events(&h, "/connection/sse", None).await;
    assert_eq!(missing.expect_err("refused").code, 400);
    let empty = MessageStream::open(
        http().post(h.url("/connection/sse")).body(""),
        Framing::Events,
    )
    .await;
    assert_eq!(empty.expect_err("refused").code, 400);
    let mut garbage = open_events(&h, "/connection/sse", Some("[1,2]"))
        .await
        .expect("a stream");
    assert_eq!(disconnect_code(&mut garbage).await, 3501);
    let protobuf = http()
        .post(h.url("/connection/sse"))
        .header("content-type", "application/octet-stream")
        .body(vec![0x00]);
    let refused = MessageStream::open(protobuf, Framing::Events).await;
    assert_eq!(refused.expect_err("refused").code, 415);

    // The unidirectional endpoints: an invalid connect request is a 3501 disconnect.
    for request in [
        "not json",
        "{\"token\":42}",
        "\"text\"",
        "{\"subs\":{\"news\":{\"offset\":\"x\"}}}",
    ] {
        let mut s = open_uni_http_stream(&h, request).await.expect("a stream");
        assert_eq!(
            disconnect_code(&mut s).await,
            3501,
            "uni_http_stream {request}"
        );
        let mut s = open_events(&h, "/connection/uni_sse", Some(request))
            .await
            .expect("a stream");
        assert_eq!(disconnect_code(&mut s).await, 3501, "uni_sse {request}");
    }
    assert_eq!(
        open_uni_http_stream(&h, &big)
            .await
            .expect_err("refused")
            .code,
        413
    );
    let put = http()
        .put(h.url("/connection/uni_sse"))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 405);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{}/connection/uni_websocket",
        h.port
    ))
    .await
    .expect("uni_websocket");
    ws.send(Message::text("{oops")).await.expect("send");
    let mut texts = Vec::new();
    let mut close = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match m {
            Message::Text(t) => texts.push(t.to_string()),
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(close, Some(3501), "{texts:?}");
    let last: Value = serde_json::from_str(texts.last().expect("a message")).expect("JSON");
    assert_eq!(last["disconnect"]["code"], 3501, "{texts:?}");

    // The bystander's session is untouched: its commands and publications still flow.
    let presence = json!({"id": 3, "presence_stats": {"channel": "news"}});
    assert_eq!(
        emulate(&http(), &emulation, &node, &session, &[presence]).await,
        204
    );
    let stats = bystander.until(|m| m["id"] == 3).await;
    assert_eq!(stats["presence_stats"]["num_clients"], 1, "{stats}");
    let offset = h.publish("news", json!({"still": "alive"})).await;
    let publication = bystander.until(|m| m["push"]["channel"] == "news").await;
    assert_eq!(
        publication["push"]["pub"]["offset"], offset,
        "{publication}"
    );
    assert!(!h.log().contains("panicked"), "{}", h.log());
    assert!(
        h.metric("herald_emulation_requests_total{outcome=\"no_session\",route=\"local\"}")
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn a_drain_ends_sse_and_http_streams_with_3001() {
    let mut h = Herald::start("").await;
    let (mut lines, _) = http_stream_session(&h, "a").await;
    let connect = json!({"id": 1, "connect": {"token": h.token("b")}}).to_string();
    let mut events = open_events(&h, "/connection/sse", Some(&connect))
        .await
        .expect("200");
    assert_eq!(events.next().await["id"], 1);
    let uni = json!({"token": h.token("c")}).to_string();
    let mut uni = open_uni_http_stream(&h, &uni).await.expect("200");
    assert!(uni.next().await.get("connect").is_some());

    // Nothing between the node and the client may hold the stream back or keep it.
    for s in [&lines, &events, &uni] {
        assert_eq!(s.headers["x-accel-buffering"], "no");
        let cache = s.headers["cache-control"].to_str().expect("ASCII");
        assert!(
            cache.contains("no-cache") && cache.contains("no-store"),
            "{cache}"
        );
    }
    h.signal("TERM");
    assert_eq!(disconnect_code(&mut lines).await, 3001, "{:?}", lines.seen);
    assert_eq!(
        disconnect_code(&mut events).await,
        3001,
        "{:?}",
        events.seen
    );
    assert_eq!(disconnect_code(&mut uni).await, 3001, "{:?}", uni.seen);
    for s in [&lines, &events] {
        let last = s.seen.last().expect("a message");
        assert!(last["push"]["disconnect"]["reason"].is_string(), "{last}");
    }
    assert_eq!(h.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn commands_posted_to_another_node_reach_the_session_over_redis() {
    let redis = RedisServer::start();
    let mut nodes = Herald::group(2, &redis.url(), "").await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut stream, connect) = http_stream_session(a, "x").await;
    let node = connect["node"].as_str().expect("node").to_owned();
    let session = connect["session"].as_str().expect("session").to_owned();
    let on_b = b.url("/emulation");

    let commands = [
        json!({"id": 2, "subscribe": {"channel": "news"}}),
        json!({"id": 3, "publish": {"channel": "news", "data": {"via": "b"}}}),
    ];
    assert_eq!(
        emulate(&http(), &on_b, &node, &session, &commands).await,
        204
    );
    let subscribed = stream.until(|m| m["id"] == 2).await;
    assert!(subscribed.get("error").is_none(), "{subscribed}");
    let published = stream.until(|m| m["id"] == 3).await;
    assert!(published.get("error").is_none(), "{published}");
    let push = stream.until(|m| m["push"]["channel"] == "news").await;
    assert_eq!(push["push"]["pub"]["data"], json!({"via": "b"}), "{push}");
    let forwarded = "herald_emulation_requests_total{outcome=\"delivered\",route=\"forwarded\"}";
    assert_eq!(b.metric(forwarded).await, 1.0);

    // A session A does not have: A answers, B says 404.
    let ping = [json!({"id": 4, "presence": {"channel": "news"}})];
    assert_eq!(
        emulate(&http(), &on_b, &node, "no-such-session", &ping).await,
        404
    );

    // A stopped: it still listens on Redis but cannot answer, and B gives up with 504.
    nodes[0].signal("STOP");
    // kill(1) returns once the signal is sent, not once every thread has stopped.
    wait_all_threads_stopped(nodes[0].pid()).await;
    let started = std::time::Instant::now();
    let status = emulate(&http(), &on_b, &node, &session, &ping).await;
    let waited = started.elapsed();
    nodes[0].signal("CONT");
    assert_eq!(status, 504);
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let timeout = "herald_emulation_requests_total{outcome=\"timeout\",route=\"forwarded\"}";
    assert_eq!(nodes[1].metric(timeout).await, 1.0);

    // A killed: its session's stream breaks, and B knows its node is gone.
    nodes[0].signal("KILL");
    nodes[0].wait_exit(Duration::from_secs(5)).await;
    // (What B gave up on may still have run on A once it resumed: a 504 says the
    // outcome is unknown, and the SDK answers it by reconnecting on a new session.)
    stream.last_before_end(Duration::from_secs(5)).await;
    let b = &nodes[1];
    assert_eq!(emulate(&http(), &on_b, &node, &session, &ping).await, 404);
    assert_eq!(
        b.metric("herald_emulation_requests_total{outcome=\"node_gone\",route=\"forwarded\"}")
            .await,
        1.0
    );
    assert!(b.is_ready().await);
}

#[tokio::test]
async fn the_origin_rule_and_cors_cover_every_transport_endpoint() {
    let h = Herald::start("[client]\nallowed_origins = [\"http://app.example\"]\n").await;
    let (good, evil) = ("http://app.example", "http://evil.example");
    for path in [
        "/emulation",
        "/connection/http_stream",
        "/connection/sse",
        "/connection/uni_http_stream",
        "/connection/uni_sse",
    ] {
        let preflight = http()
            .request(reqwest::Method::OPTIONS, h.url(path))
            .header("origin", good)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .expect("preflight");
        assert_eq!(preflight.status().as_u16(), 204, "{path}");
        let headers = preflight.headers();
        assert_eq!(headers["access-control-allow-origin"], good, "{path}");
        assert_eq!(
            headers["access-control-allow-credentials"], "true",
            "{path}"
        );
        assert_eq!(
            headers["access-control-allow-headers"], "content-type",
            "{path}"
        );
        let refused = http()
            .post(h.url(path))
            .header("origin", evil)
            .body("{}")
            .send()
            .await
            .expect("POST");
        assert_eq!(refused.status().as_u16(), 403, "{path}");
    }
    let request = json!({"token": h.token("o")}).to_string();
    let mut url = reqwest::Url::parse(&h.url("/connection/uni_sse")).expect("url");
    url.query_pairs_mut().append_pair("cf_connect", &request);
    let allowed = http()
        .get(url)
        .header("origin", good)
        .send()
        .await
        .expect("GET");
    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], good);
}

#[tokio::test]
async fn streams_take_admission_slots_and_give_them_back_when_they_end() {
    let h = Herald::start("[client.limits.connections]\nmax = 2\n").await;
    let (first, _) = http_stream_session(&h, "a").await;
    let request = json!({"token": h.token("b")}).to_string();
    let mut second = open_events(&h, "/connection/uni_sse", Some(&request))
        .await
        .expect("200");
    assert!(second.next().await.get("connect").is_some());
    let connect = json!({"id": 1, "connect": {"token": h.token("c")}}).to_string();
    let refused = open_events(&h, "/connection/sse", Some(&connect)).await;
    assert_eq!(refused.expect_err("full").code, 503);
    let refused = open_uni_http_stream(&h, &request).await;
    assert_eq!(refused.expect_err("full").code, 503);

    // A client that goes away gives its slot back at once, not at the next ping.
    drop(first);
    let mut third = open_when_free(&h, &request, Duration::from_secs(3)).await;
    assert!(third.next().await.get("connect").is_some());

    // Streams the server ends (a refused channel) give their slots back too.
    drop(third);
    let refused_channel = json!({"token": h.token("d"), "subs": {"locked:x": {}}}).to_string();
    for _ in 0..5 {
        let mut s = open_when_free(&h, &refused_channel, Duration::from_secs(3)).await;
        assert_eq!(disconnect_code(&mut s).await, 3507);
    }
    let mut last = open_when_free(&h, &request, Duration::from_secs(3)).await;
    assert!(last.next().await.get("connect").is_some());
}

#[tokio::test]
async fn a_stream_that_is_not_read_is_cut_off_as_slow_and_frees_its_slot() {
    let h =
        Herald::start("[client]\nqueue_size = 16\n[client.limits.connections]\nmax = 2\n").await;
    // Read once (the connect push), then never again.
    let request = json!({"token": h.token("slow"), "subs": {"live:firehose": {}}}).to_string();
    let mut stalled = open_uni_http_stream(&h, &request).await.expect("200");
    assert!(stalled.next().await.get("connect").is_some());
    let (mut reader, connect) = http_stream_session(&h, "fast").await;
    let (node, session) = (
        connect["node"].as_str().expect("node"),
        connect["session"].as_str().expect("session"),
    );
    let subscribe = [json!({"id": 2, "subscribe": {"channel": "live:firehose"}})];
    assert_eq!(
        emulate(&http(), &h.url("/emulation"), node, session, &subscribe).await,
        204
    );
    reader.until(|m| m["id"] == 2).await;

    // 64 KiB publications fill the stalled stream's buffers, then its queue.
    let blob = "x".repeat(64 * 1024);
    let got = Arc::new(AtomicUsize::new(0));
    let counted = got.clone();
    let reading = tokio::spawn(async move {
        while counted.load(Ordering::Relaxed) < 400 {
            reader.until(|m| m["push"]["pub"].is_object()).await;
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    for published in 1..=400 {
        h.publish("live:firehose", json!(blob)).await;
        // The reading client stays well within its queue of 16, however slowly this
        // test's own reader runs on a busy machine: only the stalled one overflows.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while published - got.load(Ordering::Relaxed) > 4 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    reading.await.expect("reader");
    assert_eq!(got.load(Ordering::Relaxed), 400);
    assert!(h.metric("herald_disconnects_total{code=\"3008\"}").await >= 1.0);
    // Its slot is free again although the client never read nor closed.
    let other = json!({"token": h.token("next")}).to_string();
    let mut next = open_when_free(&h, &other, Duration::from_secs(5)).await;
    assert!(next.next().await.get("connect").is_some());
    drop(stalled);
}

/// Waits until every thread of process `pid` is stopped (state `T` in `/proc`).
async fn wait_all_threads_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let states: Vec<char> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("the process's threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .filter_map(|stat| stat.rsplit_once(") ")?.1.chars().next())
            .collect();
        if !states.is_empty() && states.iter().all(|s| *s == 'T') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not stopped: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
