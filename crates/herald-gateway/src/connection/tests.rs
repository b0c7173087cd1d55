//! The connection task's timers and write pacing, under paused time, over a channel pair.

use crate::auth::unix_now;
use crate::testing::{self, Received, TestClient};
use herald_broker::memory::MemoryBroker;
use herald_protocol::DisconnectCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn closed_with(code: DisconnectCode) -> Received {
    Received::Close(code.code(), code.reason().to_owned())
}

fn is_ping(frame: &[Value]) -> bool {
    frame == [json!({})]
}

async fn connected(config: crate::Config, token: &str) -> (TestClient, Value) {
    let node = testing::node(config, Arc::new(MemoryBroker::new())).await;
    let mut client = testing::connect(&node);
    let result = client.connect(token).await;
    (client, result)
}

#[tokio::test(start_paused = true)]
async fn pings_every_interval_and_a_pong_keeps_the_connection() {
    let mut config = testing::config();
    config.client.ping_interval = Duration::from_secs(25);
    config.client.pong_timeout = Duration::from_secs(8);
    let (mut client, _) = connected(config, "").await;
    let start = Instant::now();

    assert!(is_ping(&client.frame().await));
    assert_eq!(start.elapsed(), Duration::from_secs(25));
    client.pong().await;

    // Answered in time: the next ping comes a full interval later, not a close.
    assert!(is_ping(&client.frame().await));
    assert_eq!(start.elapsed(), Duration::from_secs(50));
}

#[tokio::test(start_paused = true)]
async fn closes_with_no_pong_after_the_pong_timeout() {
    let mut config = testing::config();
    config.client.ping_interval = Duration::from_secs(25);
    config.client.pong_timeout = Duration::from_secs(8);
    let (mut client, _) = connected(config, "").await;
    let start = Instant::now();

    assert!(is_ping(&client.frame().await));
    assert_eq!(client.recv().await, closed_with(DisconnectCode::NoPong));
    assert_eq!(start.elapsed(), Duration::from_secs(33));
    assert_eq!(client.recv().await, Received::Gone);
}

fn expiry_config() -> crate::Config {
    let mut config = testing::config();
    // No pings in the way: these tests are about the token.
    config.client.ping_interval = Duration::from_secs(3600);
    config.client.expire_grace = Duration::from_secs(5);
    config
}

fn ttl_of(result: &Value) -> Duration {
    assert_eq!(result["expires"], json!(true), "{result}");
    Duration::from_secs(result["ttl"].as_u64().expect("a ttl"))
}

#[tokio::test(start_paused = true)]
async fn an_expired_connection_closes_after_the_grace() {
    let token = testing::sign(&json!({ "sub": "ann", "exp": unix_now() + 60 }));
    let (mut client, result) = connected(expiry_config(), &token).await;
    let start = Instant::now();
    let ttl = ttl_of(&result);

    assert_eq!(client.recv().await, closed_with(DisconnectCode::Expired));
    assert_eq!(start.elapsed(), ttl + Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_in_time_keeps_the_connection() {
    let token = testing::sign(&json!({ "sub": "ann", "exp": unix_now() + 60 }));
    let (mut client, _) = connected(expiry_config(), &token).await;
    let start = Instant::now();

    // Inside the token's life plus grace, the client refreshes.
    assert!(client.quiet_for(Duration::from_secs(62)).await);
    let fresh = testing::sign(&json!({ "sub": "ann", "exp": unix_now() + 120 }));
    let id = client.command("refresh", json!({ "token": fresh })).await;
    let reply = client.reply(id).await;
    let ttl = ttl_of(&reply["refresh"]);

    assert_eq!(client.recv().await, closed_with(DisconnectCode::Expired));
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(62) + ttl + Duration::from_secs(5)
    );
}

/// Subscribes to a private channel with a subscription token that expires in 60 s.
async fn subscribed_with_expiring_token(client: &mut TestClient, channel: &str) -> Value {
    let token = testing::sign(&json!({ "sub": "ann", "channel": channel, "exp": unix_now() + 60 }));
    let id = client
        .command("subscribe", json!({ "channel": channel, "token": token }))
        .await;
    let reply = client.reply(id).await;
    assert!(reply.get("error").is_none(), "subscribe refused: {reply}");
    reply["subscribe"].clone()
}

fn unsubscribed(frame: &[Value], channel: &str) -> Option<u64> {
    frame
        .iter()
        .find(|v| v["push"]["channel"] == json!(channel))
        .and_then(|v| v["push"]["unsubscribe"]["code"].as_u64())
}

#[tokio::test(start_paused = true)]
async fn an_expired_subscription_ends_after_the_grace_and_the_connection_stays() {
    let token = testing::sign(&json!({ "sub": "ann" }));
    let (mut client, _) = connected(expiry_config(), &token).await;
    let result = subscribed_with_expiring_token(&mut client, "$desk").await;
    let start = Instant::now();
    let ttl = ttl_of(&result);

    let frame = client.frame().await;
    assert_eq!(
        unsubscribed(&frame, "$desk"),
        Some(u64::from(herald_protocol::UnsubscribeCode::Expired.code())),
        "{frame:?}"
    );
    assert_eq!(start.elapsed(), ttl + Duration::from_secs(5));
    // Only the subscription ended: the connection still answers.
    let id = client
        .command("rpc", json!({ "method": herald_protocol::RPC_PING }))
        .await;
    assert!(client.reply(id).await.get("error").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_subscription_refreshed_in_time_stays() {
    let token = testing::sign(&json!({ "sub": "ann" }));
    let (mut client, _) = connected(expiry_config(), &token).await;
    subscribed_with_expiring_token(&mut client, "$desk").await;
    let start = Instant::now();

    assert!(client.quiet_for(Duration::from_secs(62)).await);
    let fresh =
        testing::sign(&json!({ "sub": "ann", "channel": "$desk", "exp": unix_now() + 120 }));
    let id = client
        .command("sub_refresh", json!({ "channel": "$desk", "token": fresh }))
        .await;
    let reply = client.reply(id).await;
    let ttl = ttl_of(&reply["sub_refresh"]);

    let frame = client.frame().await;
    assert_eq!(
        unsubscribed(&frame, "$desk"),
        Some(u64::from(herald_protocol::UnsubscribeCode::Expired.code())),
        "{frame:?}"
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(62) + ttl + Duration::from_secs(5)
    );
}

fn publications(frame: &[Value]) -> Vec<u64> {
    frame
        .iter()
        .filter_map(|v| v["push"]["pub"]["offset"].as_u64())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pushes_inside_the_write_interval_share_a_frame_and_replies_never_wait() {
    let mut config = testing::config();
    config.client.ping_interval = Duration::from_secs(3600);
    config.client.write_interval = Duration::from_millis(100);
    let node = testing::node(config, Arc::new(MemoryBroker::new())).await;
    let mut client = testing::connect(&node);
    client.connect("").await;
    client.subscribe("news").await;
    let publish = |n: u32| {
        let node = node.clone();
        async move {
            crate::api::call(
                &node,
                "publish",
                &json!({"channel": "news", "data": {"n": n}}).to_string(),
            )
            .await
            .expect("published");
        }
    };
    let ms = Duration::from_millis;

    // After a quiet spell the first push goes at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    publish(1).await;
    assert_eq!(publications(&client.frame().await), [1]);
    assert_eq!(start.elapsed(), ms(0));

    // Pushes arriving faster wait for the next write and share its frame.
    tokio::time::sleep(ms(10)).await;
    publish(2).await;
    tokio::time::sleep(ms(10)).await;
    publish(3).await;
    assert_eq!(publications(&client.frame().await), [2, 3]);
    assert_eq!(start.elapsed(), ms(100));

    // A reply goes at once, and takes the waiting push along.
    tokio::time::sleep(ms(10)).await;
    publish(4).await;
    tokio::time::sleep(ms(10)).await;
    let id = client
        .command("rpc", json!({ "method": herald_protocol::RPC_PING }))
        .await;
    let frame = client.frame().await;
    assert_eq!(start.elapsed(), ms(120));
    assert_eq!(publications(&frame), [4]);
    assert!(frame.iter().any(|v| v["id"] == json!(id)), "{frame:?}");
}

#[tokio::test(start_paused = true)]
async fn a_socket_without_connect_closes_as_stale() {
    let mut config = testing::config();
    config.client.connect_timeout = Duration::from_secs(10);
    let node = testing::node(config, Arc::new(MemoryBroker::new())).await;
    let mut client = testing::connect(&node);
    let start = Instant::now();
    assert_eq!(client.recv().await, closed_with(DisconnectCode::Stale));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

/// The connection task stays small: every idle connection holds one, so a command's
/// large future must stay boxed rather than inline, and the socket and the connection's
/// state are held once (see `serve`).
#[test]
fn the_connection_future_stays_small() {
    fn future_size<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    let size = future_size(super::serve::<crate::transport::websocket::AnySocket>);
    eprintln!(
        "connection future: {size} bytes; socket {} bytes, Conn {} bytes",
        std::mem::size_of::<crate::transport::websocket::AnySocket>(),
        std::mem::size_of::<super::Conn>(),
    );
    assert!(size <= 1664, "connection future grew to {size} bytes");
}

#[test]
fn websocket_read_errors_map_to_the_rfc_close_codes() {
    use super::read_error_code;
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
    let code = |e: WsError| read_error_code(axum::Error::new(e));
    assert_eq!(
        code(WsError::Protocol(ProtocolError::NonZeroReservedBits)),
        Some(DisconnectCode::WsProtocolError)
    );
    assert_eq!(
        code(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient)),
        Some(DisconnectCode::WsProtocolError)
    );
    assert_eq!(
        code(WsError::Utf8("invalid".into())),
        Some(DisconnectCode::WsInvalidPayload)
    );
    assert_eq!(
        code(WsError::Capacity(CapacityError::MessageTooLong {
            size: 2,
            max_size: 1
        })),
        Some(DisconnectCode::WsMessageTooBig)
    );
    // A client that vanishes is not a protocol error: nothing to send it.
    assert_eq!(
        code(WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
        )),
        None
    );
    assert_eq!(code(WsError::ConnectionClosed), None);
}
