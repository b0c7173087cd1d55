//! The unidirectional transports against real nodes: uni_http_stream, uni_sse and
//! uni_websocket subscribe by the connect request's `subs` (recovering missed
//! publications from the positions given) and by the token's `channels`; a refused
//! connect or channel ends the stream with its disconnect code; a position that cannot
//! be recovered is said plainly.

use futures_util::{SinkExt, StreamExt};
use herald_tests::stream::{
    Framing, MessageStream, disconnect_code, open_events, open_uni_http_stream,
};
use herald_tests::{Herald, now, sign};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn offsets(publications: &Value) -> Vec<u64> {
    publications
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["offset"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn uni_streams_recover_missed_publications_by_subs_and_take_token_channels() {
    let h = Herald::start("").await;
    let mut epoch = String::new();
    for n in 1..=5 {
        let reply = h
            .api("publish", json!({"channel": "news", "data": n}))
            .await;
        epoch = reply["result"]["epoch"].as_str().expect("epoch").to_owned();
    }
    let request = json!({
        "token": h.token("u1"),
        "subs": {"news": {"recover": true, "offset": 2, "epoch": epoch}},
    })
    .to_string();

    let mut lines = open_uni_http_stream(&h, &request).await.expect("200");
    let mut events = open_events(&h, "/connection/uni_sse", Some(&request))
        .await
        .expect("200");
    for stream in [&mut lines, &mut events] {
        let connect = stream.next().await;
        let result = &connect["connect"];
        assert!(
            result["session"].as_str().is_some_and(|s| !s.is_empty()),
            "{connect}"
        );
        assert!(result.get("pong").is_none(), "no pongs expected: {connect}");
        let news = &result["subs"]["news"];
        assert_eq!(news["recovered"], true, "{connect}");
        assert_eq!(news["was_recovering"], true, "{connect}");
        assert_eq!(offsets(&news["publications"]), vec![3, 4, 5], "{connect}");
    }
    let offset = h.publish("news", json!(6)).await;
    for stream in [&mut lines, &mut events] {
        let push = stream.next().await;
        assert_eq!(push["channel"], "news", "a bare push: {push}");
        assert_eq!(push["pub"]["offset"], offset, "{push}");
        assert_eq!(push["pub"]["data"], 6, "{push}");
    }

    // Without a position: no recovery, but live publications from then on. A POST to
    // uni_sse works like the GET.
    let token = sign(
        &h.secret,
        &json!({"sub": "u2", "exp": now() + 60, "channels": ["tokened"]}),
    );
    let request = json!({"token": token, "subs": {"news": {}}}).to_string();
    let post = reqwest::Client::new()
        .post(h.url("/connection/uni_sse"))
        .header("content-type", "application/json")
        .body(request);
    let mut stream = MessageStream::open(post, Framing::Events)
        .await
        .expect("200");
    let connect = stream.next().await;
    let subs = connect["connect"]["subs"].as_object().expect("subs");
    assert!(
        subs.contains_key("news") && subs.contains_key("tokened"),
        "{connect}"
    );
    let tokened = h.publish("tokened", json!("t")).await;
    let news = h.publish("news", json!(7)).await;
    let first = stream.next().await;
    let second = stream.next().await;
    assert_eq!(
        (&first["channel"], &first["pub"]["offset"]),
        (&json!("tokened"), &json!(tokened)),
        "{first}"
    );
    assert_eq!(
        (&second["channel"], &second["pub"]["offset"]),
        (&json!("news"), &json!(news)),
        "{second}"
    );
}

#[tokio::test]
async fn a_refused_connect_or_channel_ends_a_uni_stream_with_its_disconnect() {
    let h = Herald::start("").await;
    let expired = sign(&h.secret, &json!({"sub": "u", "exp": now() - 10}));
    let cases = [
        (
            json!({"token": h.token("u"), "subs": {"locked:x": {}}}),
            3507,
        ),
        (
            json!({"token": h.token("u"), "subs": {"$secret": {}}}),
            3507,
        ),
        (
            json!({"token": h.token("u"), "subs": {"news": {}, "locked:y": {}}}),
            3507,
        ),
        (json!({"token": expired}), 3005),
        (json!({"token": "not.a.token"}), 3500),
    ];
    for (request, code) in cases {
        let text = request.to_string();
        let mut s = open_uni_http_stream(&h, &text).await.expect("a stream");
        assert_eq!(
            disconnect_code(&mut s).await,
            code,
            "uni_http_stream {request}"
        );
        let mut s = open_events(&h, "/connection/uni_sse", Some(&text))
            .await
            .expect("a stream");
        assert_eq!(disconnect_code(&mut s).await, code, "uni_sse {request}");
        assert!(
            !s.seen.iter().any(|m| m.get("connect").is_some()),
            "no connect push before a refusal: {:?}",
            s.seen
        );
    }
    assert_eq!(
        h.api("info", json!({})).await["result"]["nodes"][0]["num_clients"],
        0
    );
}

/// Reads text messages of a uni WebSocket until one matches `pred`.
async fn ws_until(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("one JSON message per frame");
            if pred(&v) {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn uni_websocket_connects_by_first_message_and_by_cf_connect() {
    let h = Herald::start("").await;
    let base = format!("ws://127.0.0.1:{}/connection/uni_websocket", h.port);
    let request = json!({"token": h.token("w"), "subs": {"news": {}}}).to_string();

    let (mut first, _) = tokio_tungstenite::connect_async(&base).await.expect("open");
    first
        .send(Message::text(request.clone()))
        .await
        .expect("send");
    let connect = ws_until(&mut first, |v| v.get("connect").is_some()).await;
    assert!(
        connect["connect"]["subs"].get("news").is_some(),
        "{connect}"
    );

    let mut url = reqwest::Url::parse(&base).expect("url");
    url.query_pairs_mut().append_pair("cf_connect", &request);
    let (mut by_url, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("open");
    let connect = ws_until(&mut by_url, |v| v.get("connect").is_some()).await;
    assert!(
        connect["connect"]["subs"].get("news").is_some(),
        "{connect}"
    );
    // Later messages from the client are ignored.
    by_url.send(Message::text("ignored")).await.expect("send");

    let offset = h.publish("news", json!({"n": 1})).await;
    for ws in [&mut first, &mut by_url] {
        let push = ws_until(ws, |v| v.get("pub").is_some()).await;
        assert_eq!(push["channel"], "news", "{push}");
        assert_eq!(push["pub"]["offset"], offset, "{push}");
    }

    // A refused channel: the disconnect message, then a close frame with its code.
    let refused = json!({"token": h.token("w"), "subs": {"locked:x": {}}}).to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(&base).await.expect("open");
    ws.send(Message::text(refused)).await.expect("send");
    let disconnect = ws_until(&mut ws, |v| v.get("disconnect").is_some()).await;
    assert_eq!(disconnect["disconnect"]["code"], 3507, "{disconnect}");
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a close frame within 5 s");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 3507),
        other => panic!("expected a close frame with 3507, got {other:?}"),
    }
}

#[tokio::test]
async fn a_uni_position_that_cannot_be_recovered_is_said_plainly() {
    let h = Herald::start("").await;
    let mut epoch = String::new();
    for n in 1..=6 {
        let reply = h
            .api("publish", json!({"channel": "tiny:t", "data": n}))
            .await;
        epoch = reply["result"]["epoch"].as_str().expect("epoch").to_owned();
    }
    // History keeps 3: offset 1 is too far behind.
    let behind = json!({"recover": true, "offset": 1, "epoch": epoch});
    let request = json!({"token": h.token("t"), "subs": {"tiny:t": behind}}).to_string();
    let mut s = open_uni_http_stream(&h, &request).await.expect("200");
    let connect = s.next().await;
    let tiny = &connect["connect"]["subs"]["tiny:t"];
    assert_eq!(tiny["was_recovering"], true, "{connect}");
    assert!(tiny.get("recovered").is_none(), "{connect}");
    assert!(tiny.get("publications").is_none(), "{connect}");
    assert_eq!(tiny["offset"], 6, "{connect}");

    // With the reject-unrecovered flag the client is told with a disconnect (3010), so
    // it reloads its state instead of believing it is up to date.
    let strict = json!({"recover": true, "offset": 1, "epoch": epoch, "flag": 2});
    let request = json!({"token": h.token("t"), "subs": {"tiny:t": strict}}).to_string();
    let mut s = open_events(&h, "/connection/uni_sse", Some(&request))
        .await
        .expect("200");
    assert_eq!(disconnect_code(&mut s).await, 3010);
}

/// A unidirectional client cannot resubscribe to recover a channel whose stream was
/// lost (here Redis loses the channel's keys, and its next publication starts a new
/// epoch): it is disconnected with 3010, not left subscribed to a channel that no
/// longer delivers.
#[tokio::test]
async fn a_lost_channel_stream_disconnects_a_unidirectional_client_with_3010() {
    let redis = herald_tests::redis::RedisServer::start();
    let nodes = Herald::group(1, &redis.url(), "").await;
    let h = &nodes[0];
    h.publish("news", json!(1)).await;
    let request = json!({"token": h.token("u1"), "subs": {"news": {}}}).to_string();
    let mut stream = open_uni_http_stream(h, &request).await.expect("200");
    assert!(stream.next().await.get("connect").is_some());
    h.publish("news", json!(2)).await;
    assert_eq!(stream.next().await["pub"]["data"], 2);
    // The channel's history and position are gone; the next publication is offset 1
    // of a new epoch.
    redis.cli(&["DEL", "herald:{news}:stream", "herald:{news}:meta"]);
    h.publish("news", json!(3)).await;
    assert_eq!(disconnect_code(&mut stream).await, 3010);
}
