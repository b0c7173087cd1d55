//! Tag filters: a subscriber receives only the publications whose tags pass the filters
//! that apply to it: its own (`tf`, where the namespace allows it), the subscription
//! token's and the connection token's, which it cannot change. Live and recovered
//! delivery alike, across two nodes on Redis, with the client's position moving past
//! what was filtered out; token filters follow token refreshes.

use herald_protocol::Publication;
use herald_tests::raw::Raw;
use herald_tests::{Herald, now, sign};
use serde_json::{Value, json};

const TASKS: &str = r#"
[namespaces.tasks]
history_size = 100
history_ttl = "5m"
allow_subscribe_for_client = true
allow_tags_filter = true

[namespaces.plain]
history_size = 100
history_ttl = "5m"
allow_subscribe_for_client = true
"#;

fn board(id: &str) -> Value {
    json!({"key": "board", "cmp": "eq", "val": id})
}

async fn publish_tagged(h: &Herald, channel: &str, n: u64, board: &str) {
    let reply = h
        .api(
            "publish",
            json!({"channel": channel, "data": {"n": n}, "tags": {"board": board}}),
        )
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
}

/// The `n` of every publication pushed on `channel` until one with `last` arrives.
async fn received_until(raw: &mut Raw, channel: &str, last: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    loop {
        let r = raw.next_reply().await;
        if let Some(push) = r.push
            && push.channel == channel
            && let Some(p) = push.publication
        {
            let n = n_of(&p);
            out.push((p.offset, n));
            if n == last {
                return out;
            }
        }
    }
}

fn n_of(p: &Publication) -> u64 {
    serde_json::from_str::<Value>(p.data.get()).expect("json")["n"]
        .as_u64()
        .expect("n")
}

#[tokio::test]
async fn a_client_filter_passes_only_matching_publications_live() {
    let h = Herald::start(TASKS).await;
    let (mut filtered, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let (mut all, _) = Raw::connect(&h.ws_url(), &h.token("2")).await;
    let tf = json!({"op": "or", "nodes": [board("7"), board("9")]});
    let reply = filtered
        .call(json!({"subscribe": {"channel": "tasks:b", "tf": tf}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    all.call(json!({"subscribe": {"channel": "tasks:b"}})).await;
    for n in 1..=9 {
        publish_tagged(&h, "tasks:b", n, &(6 + n % 4).to_string()).await;
    }
    // Boards 7 8 9 6 7 8 9 6 7: the filtered client gets the 7s and 9s, with their
    // own offsets.
    assert_eq!(
        received_until(&mut filtered, "tasks:b", 9).await,
        [(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)]
    );
    assert_eq!(received_until(&mut all, "tasks:b", 9).await.len(), 9);
    // The filter does not stall the position: a later match still arrives.
    publish_tagged(&h, "tasks:b", 10, "9").await;
    assert_eq!(
        received_until(&mut filtered, "tasks:b", 10).await,
        [(10, 10)]
    );
}

#[tokio::test]
async fn a_filter_is_refused_where_not_allowed_or_not_valid() {
    let h = Herald::start(TASKS).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    for (channel, tf) in [
        ("plain:b", board("7")),
        ("tasks:b", json!({"op": "not", "nodes": []})),
        (
            "tasks:b",
            json!({"key": "board", "cmp": "like", "val": "7"}),
        ),
        ("tasks:b", json!({"key": "board", "cmp": "in", "val": "7"})),
    ] {
        let reply = raw
            .call(json!({"subscribe": {"channel": channel, "tf": tf}}))
            .await;
        assert_eq!(reply["error"]["code"], 107, "{channel} {tf}: {reply}");
    }
    // The connection is still fine.
    let reply = raw
        .call(json!({"subscribe": {"channel": "tasks:b", "tf": board("7")}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
}

#[tokio::test]
async fn recovery_on_another_node_skips_what_the_filter_excludes() {
    let redis = herald_tests::redis::RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), TASKS).await;
    let (mut raw, _) = Raw::connect(&nodes[0].ws_url(), &nodes[0].token("1")).await;
    let reply = raw
        .call(json!({"subscribe": {"channel": "tasks:r", "tf": board("7")}}))
        .await;
    let epoch = reply["subscribe"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    publish_tagged(&nodes[0], "tasks:r", 1, "7").await;
    assert_eq!(received_until(&mut raw, "tasks:r", 1).await, [(1, 1)]);
    drop(raw);
    for n in 2..=8 {
        publish_tagged(&nodes[1], "tasks:r", n, if n % 3 == 0 { "7" } else { "8" }).await;
    }
    let (mut back, _) = Raw::connect(&nodes[1].ws_url(), &nodes[1].token("1")).await;
    let reply = back
        .call(json!({"subscribe": {"channel": "tasks:r", "tf": board("7"),
            "recover": true, "offset": 1, "epoch": epoch}}))
        .await;
    let result = &reply["subscribe"];
    assert_eq!(result["recovered"], true, "{reply}");
    assert_eq!(result["offset"], 8, "the position is the stream's top");
    let recovered: Vec<Publication> =
        serde_json::from_value(result["publications"].clone()).expect("publications");
    assert_eq!(
        recovered
            .iter()
            .map(|p| (p.offset, n_of(p)))
            .collect::<Vec<_>>(),
        [(3, 3), (6, 6)]
    );
    publish_tagged(&nodes[0], "tasks:r", 9, "7").await;
    assert_eq!(received_until(&mut back, "tasks:r", 9).await, [(9, 9)]);
}

#[tokio::test]
async fn token_filters_bind_the_client_and_follow_refreshes() {
    let h = Herald::start(TASKS).await;
    let later = now() + 600;
    // The connection token limits every subscription to tenant "acme".
    let tenant = json!({"key": "tenant", "cmp": "eq", "val": "acme"});
    let token = sign(
        &h.secret,
        &json!({"sub": "1", "exp": later, "tags_filter": tenant}),
    );
    let (mut raw, _) = Raw::connect(&h.ws_url(), &token).await;
    // The subscription token further limits $tasks:x to board 7; the client's own
    // filter cannot widen either.
    let sub_token = sign(
        &h.secret,
        &json!({"sub": "1", "channel": "$tasks:x", "exp": later, "tags_filter": board("7")}),
    );
    let reply = raw
        .call(
            json!({"subscribe": {"channel": "$tasks:x", "token": sub_token,
            "tf": {"key": "board", "cmp": "ex"}}}),
        )
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let publish = |n: u64, tenant: &'static str, board: &'static str| {
        let h = &h;
        async move {
            h.api(
                "publish",
                json!({"channel": "$tasks:x", "data": {"n": n}, "tags": {"tenant": tenant, "board": board}}),
            )
            .await
        }
    };
    publish(1, "acme", "7").await;
    publish(2, "globex", "7").await;
    publish(3, "acme", "8").await;
    publish(4, "acme", "7").await;
    assert_eq!(
        received_until(&mut raw, "$tasks:x", 4).await,
        [(1, 1), (4, 4)]
    );

    // A refreshed connection token without a filter lifts the tenant limit; a
    // refreshed subscription token with board 8 moves the channel's.
    let plain = sign(&h.secret, &json!({"sub": "1", "exp": later}));
    let reply = raw.call(json!({"refresh": {"token": plain}})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    let board8 = sign(
        &h.secret,
        &json!({"sub": "1", "channel": "$tasks:x", "exp": later, "tags_filter": board("8")}),
    );
    let reply = raw
        .call(json!({"sub_refresh": {"channel": "$tasks:x", "token": board8}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    publish(5, "globex", "8").await;
    publish(6, "acme", "7").await;
    publish(7, "acme", "8").await;
    assert_eq!(
        received_until(&mut raw, "$tasks:x", 7).await,
        [(5, 5), (7, 7)]
    );
}

#[tokio::test]
async fn an_invalid_filter_in_a_token_refuses_it() {
    let h = Herald::start(TASKS).await;
    let later = now() + 600;
    let bad = json!({"op": "maybe"});
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub_token = sign(
        &h.secret,
        &json!({"sub": "1", "channel": "$tasks:y", "exp": later, "tags_filter": bad}),
    );
    let reply = raw
        .call(json!({"subscribe": {"channel": "$tasks:y", "token": sub_token}}))
        .await;
    assert_eq!(reply["error"]["code"], 103, "{reply}");
    let token = sign(
        &h.secret,
        &json!({"sub": "1", "exp": later, "tags_filter": bad}),
    );
    let mut conn = Raw::open(&h.ws_url()).await;
    conn.command(json!({"connect": {"token": token}})).await;
    assert_eq!(
        conn.closed_within(std::time::Duration::from_secs(5)).await,
        3500
    );
}
