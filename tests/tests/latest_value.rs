//! Latest-value channels (`latest_value = true` on a namespace): every subscribe reply
//! carries the channel's newest publication, whether the client is new or comes back
//! from any position, on the memory broker and across two nodes on Redis; a client that
//! already holds the newest gets none; live publications continue after it without a
//! repeat; deltas start from it.

use herald_protocol::Publication;
use herald_tests::Herald;
use herald_tests::raw::Raw;
use serde_json::{Value, json};

const STATUS: &str = r#"
[namespaces.status]
history_size = 1
history_ttl = "5m"
allow_subscribe_for_client = true
latest_value = true
allowed_delta_types = ["fossil"]
"#;

async fn subscribe(raw: &mut Raw, request: Value) -> Value {
    let reply = raw.call(json!({ "subscribe": request })).await;
    assert!(reply.get("error").is_none(), "subscribe failed: {reply}");
    reply["subscribe"].clone()
}

fn publications(result: &Value) -> Vec<Publication> {
    serde_json::from_value(result["publications"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_new_subscriber_gets_the_newest_publication_at_once() {
    let h = Herald::start(STATUS).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    // Nothing published yet: an empty reply, positioned at 0.
    let empty = subscribe(&mut raw, json!({"channel": "status:empty"})).await;
    assert!(publications(&empty).is_empty(), "{empty}");
    assert_eq!(empty["recovered"], true, "{empty}");

    for n in 1..=3 {
        h.publish("status:api", json!({"state": "degraded", "n": n}))
            .await;
    }
    let result = subscribe(&mut raw, json!({"channel": "status:api"})).await;
    let pubs = publications(&result);
    assert_eq!(pubs.len(), 1, "only the newest: {result}");
    assert_eq!(pubs[0].offset, 3);
    let data: Value = serde_json::from_str(pubs[0].data.get()).expect("json");
    assert_eq!(data, json!({"state": "degraded", "n": 3}));
    assert_eq!(result["offset"], 3);
    assert_eq!(result["recovered"], true);
    assert!(result.get("was_recovering").is_none(), "{result}");

    // Live publications follow, none repeated.
    h.publish("status:api", json!({"state": "ok", "n": 4}))
        .await;
    let live = raw.next_publication("status:api").await;
    assert_eq!(live.offset, 4);
}

#[tokio::test]
async fn a_returning_subscriber_gets_only_the_newest_unless_it_holds_it() {
    let h = Herald::start(STATUS).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let first = subscribe(&mut raw, json!({"channel": "status:db"})).await;
    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    h.publish("status:db", json!({"n": 1})).await;
    assert_eq!(raw.next_publication("status:db").await.offset, 1);
    drop(raw);
    for n in 2..=5 {
        h.publish("status:db", json!({ "n": n })).await;
    }

    // Away for four publications: the newest only (history_size 1 keeps no more, and a
    // latest-value channel never needs more).
    let (mut back, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let result = subscribe(
        &mut back,
        json!({"channel": "status:db", "recover": true, "offset": 1, "epoch": epoch}),
    )
    .await;
    assert_eq!(result["recovered"], true, "{result}");
    assert_eq!(result["was_recovering"], true);
    let pubs = publications(&result);
    assert_eq!(pubs.iter().map(|p| p.offset).collect::<Vec<_>>(), [5]);
    drop(back);

    // Already at the top: nothing to send.
    let (mut current, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let result = subscribe(
        &mut current,
        json!({"channel": "status:db", "recover": true, "offset": 5, "epoch": epoch}),
    )
    .await;
    assert_eq!(result["recovered"], true, "{result}");
    assert!(publications(&result).is_empty(), "{result}");
    drop(current);

    // A position from another epoch (history lost, say): the newest, still recovered.
    let (mut stale, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let result = subscribe(
        &mut stale,
        json!({"channel": "status:db", "recover": true, "offset": 9, "epoch": "gone"}),
    )
    .await;
    assert_eq!(result["recovered"], true, "{result}");
    assert_eq!(
        publications(&result)
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        [5]
    );
}

#[tokio::test]
async fn with_deltas_the_newest_comes_full_and_the_next_as_a_patch() {
    let h = Herald::start(STATUS).await;
    let state = |n: u64| json!({"tiles": (0..40).map(|i| json!({"id": i, "value": if i == n { n } else { 0 }})).collect::<Vec<_>>()});
    h.publish("status:kpi", state(1)).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let result = subscribe(
        &mut raw,
        json!({"channel": "status:kpi", "delta": "fossil"}),
    )
    .await;
    assert_eq!(result["delta"], true, "{result}");
    let pubs = publications(&result);
    assert_eq!(pubs.len(), 1);
    assert!(!pubs[0].delta, "the newest comes full");
    let full: String = serde_json::from_str(pubs[0].data.get()).expect("delta data is a string");
    assert_eq!(full, state(1).to_string());
    h.publish("status:kpi", state(2)).await;
    let next = raw.next_publication("status:kpi").await;
    assert!(next.delta, "the next one is patched against it");
    let patch: String = serde_json::from_str(next.data.get()).expect("string");
    let rebuilt =
        herald_protocol::fossil::apply(full.as_bytes(), patch.as_bytes()).expect("applies");
    assert_eq!(
        String::from_utf8(rebuilt).expect("utf8"),
        state(2).to_string()
    );
}

#[tokio::test]
async fn every_node_of_a_redis_cluster_serves_the_newest() {
    let redis = herald_tests::redis::RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), STATUS).await;
    for n in 1..=3 {
        nodes[0].publish("status:edge", json!({ "n": n })).await;
    }
    for node in &nodes {
        let (mut raw, _) = Raw::connect(&node.ws_url(), &node.token("1")).await;
        let result = subscribe(&mut raw, json!({"channel": "status:edge"})).await;
        let pubs = publications(&result);
        assert_eq!(pubs.len(), 1, "{result}");
        assert_eq!(pubs[0].data.get(), r#"{"n":3}"#);
    }
}

#[tokio::test]
async fn latest_value_without_history_is_a_configuration_error() {
    let mut h = Herald::launch(
        "[namespaces.bad]\nlatest_value = true\nallow_subscribe_for_client = true\n",
        &[],
    );
    let code = h.wait_exit(std::time::Duration::from_secs(10)).await;
    assert_ne!(code, Some(0), "the node must refuse to start");
    assert!(h.log().contains("latest_value"), "{}", h.log());
}
