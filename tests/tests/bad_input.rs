//! Every bad input gets its code, and the server keeps serving everyone else.

use herald_tests::raw::{Event, Raw};
use herald_tests::{Herald, now, sign};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn closes_with(h: &Herald, send: impl AsyncFnOnce(&mut Raw), code: u16) {
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    send(&mut raw).await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, code);
}

#[tokio::test]
async fn malformed_input_closes_with_its_code_and_others_keep_working() {
    let h = Herald::start("[client]\nmax_frame_bytes = 4096\n").await;
    let (mut bystander, _) = Raw::connect(&h.ws_url(), &h.token("by")).await;
    let sub = bystander
        .call(json!({"subscribe": {"channel": "news"}}))
        .await;
    assert!(sub.get("error").is_none(), "{sub}");

    closes_with(&h, async |r| r.send_text("{not json").await, 3501).await;
    closes_with(&h, async |r| r.send_text("[1,2]").await, 3501).await;
    closes_with(
        &h,
        async |r| {
            r.send_text("{\"id\":1,\"subscribe\":{\"channel\":42}}")
                .await
        },
        3501,
    )
    .await;
    closes_with(
        &h,
        async |r| r.send(Message::binary(vec![1u8, 2, 3])).await,
        3501,
    )
    .await;
    // WebSocket-level violations get the RFC 6455 codes (close_handshake.rs has them all).
    closes_with(&h, async |r| r.send_text(&"x".repeat(10_000)).await, 1009).await;
    closes_with(
        &h,
        async |r| {
            let frame =
                Frame::message(vec![0xff, 0xfe, b'{', b'}'], OpCode::Data(Data::Text), true);
            r.send(Message::Frame(frame)).await
        },
        1007,
    )
    .await;
    // A command without an id (other than a pong or send) is a protocol error.
    closes_with(
        &h,
        async |r| r.send_text("{\"presence\":{\"channel\":\"news\"}}").await,
        3501,
    )
    .await;

    // The bystander still gets publications.
    let offset = h.publish("news", json!({"still": "alive"})).await;
    assert_eq!(bystander.publications("news", 1).await, vec![offset]);
    assert!(h.metric("herald_disconnects_total{code=\"3501\"}").await >= 5.0);
    assert!(h.metric("herald_disconnects_total{code=\"1009\"}").await >= 1.0);
    assert!(h.metric("herald_disconnects_total{code=\"1007\"}").await >= 1.0);
}

#[tokio::test]
async fn unknown_method_gets_104_and_connection_stays() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let reply = raw.call(json!({"frobnicate": {}})).await;
    assert_eq!(reply["error"]["code"], 104, "{reply}");
    let reply = raw
        .call(json!({"presence": {"channel": "a"}, "history": {"channel": "a"}}))
        .await;
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    let reply = raw.call(json!({"rpc": {"method": "x"}})).await;
    assert_eq!(reply["error"]["code"], 108, "{reply}");
    // The one method a node answers itself: a round-trip probe with an empty result.
    let reply = raw.call(json!({"rpc": {"method": "herald.ping"}})).await;
    assert_eq!(reply["rpc"], json!({}), "{reply}");
    let ok = raw.call(json!({"subscribe": {"channel": "news"}})).await;
    assert_eq!(ok["subscribe"]["recoverable"], true, "{ok}");
}

#[tokio::test]
async fn commands_before_connect_and_second_connect_are_refused() {
    let h = Herald::start("").await;
    let mut raw = Raw::open(&h.ws_url()).await;
    raw.command(json!({"subscribe": {"channel": "news"}})).await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3501);

    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    raw.command(json!({"connect": {"token": h.token("1")}}))
        .await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3501);
}

#[tokio::test]
async fn no_connect_in_time_closes_with_3502() {
    let h = Herald::start("[client]\nconnect_timeout = \"1s\"\n").await;
    let mut raw = Raw::open(&h.ws_url()).await;
    let started = std::time::Instant::now();
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3502);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn unanswered_pings_close_with_3012_and_answered_ones_do_not() {
    let h = Herald::start("[client]\nping_interval = \"1s\"\npong_timeout = \"500ms\"\n").await;
    let (mut silent, connect) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    assert_eq!(connect["ping"], 1);
    assert_eq!(connect["pong"], true);
    let (mut polite, _) = Raw::connect(&h.ws_url(), &h.token("2")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    while tokio::time::Instant::now() < deadline {
        if let Some(Event::Reply(r)) = polite.next_within(Duration::from_millis(200)).await
            && r.is_ping()
        {
            pings += 1;
            polite.send_text("{}").await;
        }
    }
    assert!(pings >= 2, "saw {pings} pings");
    assert_eq!(silent.closed_within(Duration::from_secs(1)).await, 3012);
    let still = polite.call(json!({"subscribe": {"channel": "news"}})).await;
    assert!(still.get("subscribe").is_some(), "{still}");
}

#[tokio::test]
async fn tokens_invalid_expired_and_anonymous() {
    let h = Herald::start("[client]\nexpire_grace = \"1s\"\n").await;
    // Signed with another secret: terminal close 3500.
    let mut raw = Raw::open(&h.ws_url()).await;
    raw.command(json!({"connect": {"token": sign(&herald_tests::secret(), &json!({"sub": "1"}))}}))
        .await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3500);
    // alg: none.
    let mut raw = Raw::open(&h.ws_url()).await;
    raw.command(
        json!({"connect": {"token": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0."}}),
    )
    .await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3500);
    // Anonymous is not allowed by default.
    let mut raw = Raw::open(&h.ws_url()).await;
    raw.command(json!({"connect": {}})).await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3500);
    // Expired: reply 109 so the SDK fetches a new token; the socket stays open.
    let mut raw = Raw::open(&h.ws_url()).await;
    let reply = raw
        .call(
            json!({"connect": {"token": sign(&h.secret, &json!({"sub": "1", "exp": now() - 10}))}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], 109, "{reply}");
    let reply = raw.call(json!({"connect": {"token": h.token("1")}})).await;
    assert!(reply.get("connect").is_some(), "{reply}");
}

#[tokio::test]
async fn unrefreshed_connection_expires_with_3005_and_refresh_extends_it() {
    let h = Herald::start("[client]\nexpire_grace = \"1s\"\n").await;
    let short = |user: &str| sign(&h.secret, &json!({"sub": user, "exp": now() + 1}));
    let (mut lazy, connect) = Raw::connect(&h.ws_url(), &short("1")).await;
    assert_eq!(connect["expires"], true);
    let (mut diligent, _) = Raw::connect(&h.ws_url(), &short("2")).await;
    let refreshed = diligent
        .call(json!({"refresh": {"token": h.token("2")}}))
        .await;
    assert_eq!(refreshed["refresh"]["expires"], true, "{refreshed}");
    assert!(refreshed["refresh"]["ttl"].as_u64().unwrap_or(0) > 3000);
    // A refresh for another user is an invalid token.
    let (mut thief, _) = Raw::connect(&h.ws_url(), &h.token("3")).await;
    thief
        .command(json!({"refresh": {"token": h.token("4")}}))
        .await;
    assert_eq!(thief.closed_within(Duration::from_secs(5)).await, 3500);

    assert_eq!(lazy.closed_within(Duration::from_secs(6)).await, 3005);
    let alive = diligent
        .call(json!({"subscribe": {"channel": "news"}}))
        .await;
    assert!(alive.get("subscribe").is_some(), "{alive}");
}
