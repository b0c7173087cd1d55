//! Fossil delta subscriptions over the raw protocol: the first publication comes full
//! (its JSON text as a string), later ones as patches that rebuild the exact text, in
//! live delivery, in recovery and on every node of a Redis cluster; a namespace that does
//! not allow deltas sends plain publications, and an unknown delta type is a protocol
//! error.

use herald_protocol::Publication;
use herald_protocol::fossil::apply;
use herald_tests::Herald;
use herald_tests::raw::Raw;
use serde_json::{Value, json};

const KPI: &str = r#"
[namespaces.kpi]
history_size = 100
history_ttl = "5m"
allow_subscribe_for_client = true
allowed_delta_types = ["fossil"]
"#;

/// A ~2 KB state object; `round` changes 3 of its 60 values.
fn state(round: u64) -> Value {
    let mut fields = serde_json::Map::new();
    for i in 0..60u64 {
        let changes = i % 20 == round % 20;
        let value = if changes {
            1000 + i * 37 + round * 7919
        } else {
            1000 + i * 37
        };
        fields.insert(
            format!("metric_{i:03}"),
            json!({"value": value, "unit": "ms", "label": "naïve €"}),
        );
    }
    Value::Object(fields)
}

async fn subscribe(raw: &mut Raw, channel: &str, extra: Value) -> Value {
    let mut req = json!({"channel": channel, "delta": "fossil"});
    if let (Some(req), Some(extra)) = (req.as_object_mut(), extra.as_object()) {
        req.extend(extra.clone());
    }
    let reply = raw.call(json!({ "subscribe": req })).await;
    assert!(reply.get("error").is_none(), "subscribe failed: {reply}");
    reply["subscribe"].clone()
}

/// Rebuilds delta publications the way an SDK does; returns each full text.
#[derive(Default)]
struct Decoder {
    previous: Option<Vec<u8>>,
}

impl Decoder {
    fn decode(&mut self, p: &Publication) -> String {
        let data: String = serde_json::from_str(p.data.get()).expect("delta data is a JSON string");
        let full = if p.delta {
            let base = self
                .previous
                .as_deref()
                .expect("a patch comes after a full one");
            apply(base, data.as_bytes()).expect("the patch applies")
        } else {
            data.into_bytes()
        };
        self.previous = Some(full.clone());
        String::from_utf8(full).expect("utf8")
    }
}

#[tokio::test]
async fn live_publications_come_full_then_as_patches() {
    let h = Herald::start(KPI).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let (mut plain, _) = Raw::connect(&h.ws_url(), &h.token("2")).await;
    let result = subscribe(&mut raw, "kpi:a", json!({})).await;
    assert_eq!(result["delta"], true, "{result}");
    let plain_result = plain.call(json!({"subscribe": {"channel": "kpi:a"}})).await;
    assert!(plain_result["subscribe"].get("delta").is_none());

    let mut decoder = Decoder::default();
    for round in 1..=6 {
        let data = state(round);
        let text = serde_json::to_string(&data).expect("json");
        h.publish("kpi:a", data.clone()).await;
        let p = raw.next_publication("kpi:a").await;
        assert_eq!(p.offset, round);
        // The first after subscribing is full; the rest are patches well under the size.
        assert_eq!(p.delta, round > 1, "round {round}");
        if p.delta {
            assert!(
                p.data.get().len() < text.len() / 5,
                "{} byte patch",
                p.data.get().len()
            );
        }
        assert_eq!(decoder.decode(&p), text);
        // The plain subscriber on the same channel gets the object itself.
        let q = plain.next_publication("kpi:a").await;
        assert!(!q.delta);
        assert_eq!(q.data.get(), text);
    }
}

#[tokio::test]
async fn recovery_sends_the_first_recovered_full_and_patches_after() {
    let h = Herald::start(KPI).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let result = subscribe(&mut raw, "kpi:r", json!({})).await;
    let epoch = result["epoch"].as_str().expect("epoch").to_owned();
    h.publish("kpi:r", state(1)).await;
    let mut decoder = Decoder::default();
    let first = raw.next_publication("kpi:r").await;
    decoder.decode(&first);
    drop(raw);

    for round in 2..=5 {
        h.publish("kpi:r", state(round)).await;
    }
    let (mut back, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let result = subscribe(
        &mut back,
        "kpi:r",
        json!({"recover": true, "offset": 1, "epoch": epoch}),
    )
    .await;
    assert_eq!(result["recovered"], true, "{result}");
    assert_eq!(result["delta"], true);
    let recovered: Vec<Publication> =
        serde_json::from_value(result["publications"].clone()).expect("publications");
    let flags: Vec<bool> = recovered.iter().map(|p| p.delta).collect();
    assert_eq!(flags, [false, true, true, true]);
    // The client's decoder starts over with the full one.
    let mut decoder = Decoder::default();
    for (p, round) in recovered.iter().zip(2..) {
        assert_eq!(
            decoder.decode(p),
            serde_json::to_string(&state(round)).expect("json")
        );
    }
    // Live ones continue as patches against the last recovered publication.
    h.publish("kpi:r", state(6)).await;
    let live = back.next_publication("kpi:r").await;
    assert_eq!(live.offset, 6);
    assert!(
        live.delta,
        "the first live publication after recovery is a patch"
    );
    assert_eq!(
        decoder.decode(&live),
        serde_json::to_string(&state(6)).expect("json")
    );
}

#[tokio::test]
async fn a_namespace_without_deltas_sends_plain_publications() {
    let h = Herald::start(KPI).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    // `default` keeps history but allows no delta type; `live` keeps no history.
    for channel in ["plain", "live:x"] {
        let result = subscribe(&mut raw, channel, json!({})).await;
        assert!(result.get("delta").is_none(), "{result}");
        h.publish(channel, json!({"n": 1})).await;
        let p = raw.next_publication(channel).await;
        assert!(!p.delta);
        assert_eq!(p.data.get(), r#"{"n":1}"#);
    }
}

#[tokio::test]
async fn an_unknown_delta_type_closes_with_bad_request() {
    let h = Herald::start(KPI).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    raw.command(json!({"subscribe": {"channel": "kpi:a", "delta": "xdelta"}}))
        .await;
    assert_eq!(
        raw.closed_within(std::time::Duration::from_secs(5)).await,
        3501
    );
}

#[tokio::test]
async fn patches_follow_the_redis_stream_on_every_node() {
    let redis = herald_tests::redis::RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), KPI).await;
    let mut subscribers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (mut raw, _) = Raw::connect(&node.ws_url(), &node.token(&format!("u{i}"))).await;
        let result = subscribe(&mut raw, "kpi:shared", json!({})).await;
        assert_eq!(result["delta"], true, "{result}");
        subscribers.push((raw, Decoder::default()));
    }
    // Published through one node, delivered by both from Redis: each node patches
    // against the publication before, in stream order.
    for round in 1..=8 {
        let text = serde_json::to_string(&state(round)).expect("json");
        nodes[0].publish("kpi:shared", state(round)).await;
        for (raw, decoder) in &mut subscribers {
            let p = raw.next_publication("kpi:shared").await;
            assert_eq!((p.offset, p.delta), (round, round > 1));
            assert_eq!(decoder.decode(&p), text);
        }
    }
}
