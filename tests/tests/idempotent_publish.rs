//! The client `publish` command's `idempotency_key` (a Herald extension), in raw frames,
//! on the memory broker and on the Redis broker.

use herald_tests::Herald;
use herald_tests::raw::{Event, Raw};
use herald_tests::redis::RedisServer;
use serde_json::{Value, json};
use std::time::Duration;

/// Anonymous connections, and a namespace where they may publish.
const EXTRA: &str = r#"
[client]
allow_anonymous = true

[namespaces.public]
history_size = 10
history_ttl = "1m"
allow_publish_for_anonymous = true
"#;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        herald_tests::secret().get(..10).unwrap_or("x")
    )
}

async fn connected(h: &Herald, user: &str) -> Raw {
    Raw::connect(&h.ws_url(), &h.token(user)).await.0
}

async fn subscribe(raw: &mut Raw, channel: &str) {
    let reply = raw.call(json!({"subscribe": {"channel": channel}})).await;
    assert!(reply.get("error").is_none(), "subscribe failed: {reply}");
}

fn publish(channel: &str, data: Value, key: Option<&str>) -> Value {
    let mut p = json!({ "channel": channel });
    p["data"] = data;
    if let Some(k) = key {
        p["idempotency_key"] = json!(k);
    }
    json!({ "publish": p })
}

/// Publishes and returns the reply's `publish` result, failing on an error reply.
async fn published(raw: &mut Raw, channel: &str, data: Value, key: Option<&str>) -> Value {
    let reply = raw.call(publish(channel, data, key)).await;
    assert!(reply.get("error").is_none(), "publish failed: {reply}");
    reply["publish"].clone()
}

async fn scenario(h: &Herald) {
    // The default namespace keeps history and lets subscribers publish.
    let channel = unique("idem");
    let mut watcher = connected(h, "watcher").await;
    subscribe(&mut watcher, &channel).await;
    let mut alice = connected(h, "alice").await;
    subscribe(&mut alice, &channel).await;

    // A keyed publish gets its position; the same key again gets the same position
    // and publishes nothing, even with other data.
    let first = published(&mut alice, &channel, json!({"n": 1}), Some("order-42")).await;
    assert_eq!(first["offset"], 1, "{first}");
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    assert!(!epoch.is_empty());
    let again = published(&mut alice, &channel, json!({"n": 2}), Some("order-42")).await;
    assert_eq!(again, first);

    // A publish without a key (or with an empty one) replies exactly `{}`, as before.
    let plain = alice
        .call_text(publish(&channel, json!({"n": 3}), None))
        .await;
    let id = serde_json::from_str::<Value>(&plain).expect("json")["id"].clone();
    assert_eq!(plain, format!(r#"{{"id":{id},"publish":{{}}}}"#));
    let empty = alice
        .call_text(publish(&channel, json!({"n": 4}), Some("")))
        .await;
    let id = serde_json::from_str::<Value>(&empty).expect("json")["id"].clone();
    assert_eq!(empty, format!(r#"{{"id":{id},"publish":{{}}}}"#));

    // The same key from another user is another key.
    let mut bob = connected(h, "bob").await;
    subscribe(&mut bob, &channel).await;
    let bobs = published(&mut bob, &channel, json!({"n": 5}), Some("order-42")).await;
    assert_eq!(bobs, json!({"offset": 4, "epoch": epoch}));

    // A user's key covers all of its connections: a retry after a reconnect is a duplicate.
    drop(alice);
    let mut alice = connected(h, "alice").await;
    subscribe(&mut alice, &channel).await;
    let retried = published(&mut alice, &channel, json!({"n": 6}), Some("order-42")).await;
    assert_eq!(retried, first);

    // 256 bytes is the limit.
    let too_long = "k".repeat(257);
    let reply = alice
        .call(publish(&channel, json!({"n": 7}), Some(&too_long)))
        .await;
    assert_eq!(reply["error"]["code"], 107, "{reply}");
    let longest = "k".repeat(256);
    let at_limit = published(&mut alice, &channel, json!({"n": 8}), Some(&longest)).await;
    assert_eq!(at_limit["offset"], 5, "{at_limit}");

    // A refused publish does not consume its key.
    let mut carol = connected(h, "carol").await;
    let reply = carol
        .call(publish(&channel, json!({"n": 9}), Some("carol-1")))
        .await;
    assert_eq!(reply["error"]["code"], 103, "{reply}");
    subscribe(&mut carol, &channel).await;
    let allowed = published(&mut carol, &channel, json!({"n": 10}), Some("carol-1")).await;
    assert_eq!(allowed["offset"], 6, "{allowed}");

    // History holds each publication once (the duplicates, the over-long key and the
    // refused publish are not there); the subscriber got each once, in order.
    let expected: Vec<Value> = [1, 3, 4, 5, 8, 10]
        .iter()
        .map(|n| json!({"n": n}))
        .collect();
    assert_eq!(h.history_data(&channel).await, expected);
    assert_eq!(
        watcher.publications(&channel, 6).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    nothing_more(&mut watcher).await;
}

/// Fails if anything but a ping arrives within half a second.
async fn nothing_more(raw: &mut Raw) {
    while let Some(event) = raw.next_within(Duration::from_millis(500)).await {
        match event {
            Event::Reply(r) if r.is_ping() => continue,
            other => panic!("unexpected after the last publication: {other:?}"),
        }
    }
}

/// Anonymous connections share user "": their keys are scoped to the connection.
async fn anonymous_scenario(h: &Herald) {
    let channel = unique("public:idem");
    let mut one = Raw::connect(&h.ws_url(), "").await.0;
    let mut two = Raw::connect(&h.ws_url(), "").await.0;
    let first = published(&mut one, &channel, json!("one"), Some("k")).await;
    assert_eq!(first["offset"], 1, "{first}");
    assert_eq!(
        published(&mut one, &channel, json!("one again"), Some("k")).await,
        first
    );
    let other = published(&mut two, &channel, json!("two"), Some("k")).await;
    assert_eq!(other["offset"], 2, "{other}");
    assert_eq!(
        h.history_data(&channel).await,
        vec![json!("one"), json!("two")]
    );
}

#[tokio::test]
async fn keyed_client_publish_on_the_memory_broker() {
    let h = Herald::start(EXTRA).await;
    scenario(&h).await;
    anonymous_scenario(&h).await;
}

#[tokio::test]
async fn keyed_client_publish_on_the_redis_broker() {
    let redis = RedisServer::start();
    let url = redis.url();
    let h = Herald::start_with(EXTRA, &["--broker", "redis", "--redis-url", &url]).await;
    scenario(&h).await;
    anonymous_scenario(&h).await;
    // Client keys live in their own namespace, apart from the HTTP API's.
    let keys = redis.cli(&["--scan", "--pattern", "*:idem:*"]);
    assert!(
        keys.lines()
            .any(|k| k.ends_with(":idem:client:user:5:alice:order-42")),
        "{keys}"
    );
}
