//! Recovery: a client that comes back with its last offset gets exactly what it missed,
//! in order, or is told plainly that it cannot — never a partial history.

use herald_tests::Herald;
use herald_tests::raw::Raw;
use serde_json::json;

async fn subscribe(
    raw: &mut Raw,
    channel: &str,
    recover_from: Option<(u64, &str)>,
    flag: i64,
) -> serde_json::Value {
    let mut req = json!({"channel": channel, "flag": flag});
    if let Some((offset, epoch)) = recover_from {
        req["recover"] = json!(true);
        req["offset"] = json!(offset);
        req["epoch"] = json!(epoch);
    }
    raw.call(json!({ "subscribe": req })).await
}

#[tokio::test]
async fn reconnect_recovers_exactly_the_missed_publications() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut raw, "news", None, 0).await;
    let epoch = sub["subscribe"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_eq!(sub["subscribe"]["positioned"], true);
    for n in 1..=5 {
        h.publish("news", json!({ "n": n })).await;
    }
    assert_eq!(raw.publications("news", 5).await, vec![1, 2, 3, 4, 5]);
    drop(raw);

    for n in 6..=12 {
        h.publish("news", json!({ "n": n })).await;
    }
    let (mut back, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut back, "news", Some((5, &epoch)), 0).await["subscribe"].clone();
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(sub["was_recovering"], true);
    // The reply names the stream's top (the last recovered publication), not the
    // position recovered from.
    assert_eq!(sub["offset"], 12);
    let recovered: Vec<u64> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(recovered, (6..=12).collect::<Vec<_>>());
    assert_eq!(sub["publications"][0]["data"], json!({"n": 6}));
    // And it continues live without a gap or a duplicate.
    h.publish("news", json!({"n": 13})).await;
    assert_eq!(back.publications("news", 1).await, vec![13]);
    assert_eq!(
        h.metric("herald_recoveries_total{outcome=\"recovered\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn recovery_at_the_top_is_recovered_with_nothing_missed() {
    let h = Herald::start("").await;
    let top = h.publish("news", json!(1)).await;
    let epoch = h.api("history", json!({"channel": "news"})).await["result"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut raw, "news", Some((top, &epoch)), 0).await["subscribe"].clone();
    assert_eq!(sub["recovered"], true, "{sub}");
    assert!(sub.get("publications").is_none());
}

#[tokio::test]
async fn trimmed_history_is_not_recovered_and_never_partial() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut raw, "tiny:t", None, 0).await;
    let epoch = sub["subscribe"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    h.publish("tiny:t", json!(1)).await;
    assert_eq!(raw.publications("tiny:t", 1).await, vec![1]);
    drop(raw);
    for n in 2..=10 {
        h.publish("tiny:t", json!(n)).await;
    }
    let (mut back, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut back, "tiny:t", Some((1, &epoch)), 0).await["subscribe"].clone();
    assert_eq!(sub["was_recovering"], true, "{sub}");
    assert!(sub.get("recovered").is_none(), "{sub}");
    assert!(sub.get("publications").is_none(), "partial recovery: {sub}");
    assert_eq!(sub["offset"], 10);
    assert_eq!(sub["epoch"], epoch.as_str());
    // Asking to be rejected instead: error 112.
    let (mut strict, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let reply = subscribe(&mut strict, "tiny:t", Some((1, &epoch)), 2).await;
    assert_eq!(reply["error"]["code"], 112, "{reply}");
    // The rejected subscription left nothing behind: subscribing again works.
    let again = subscribe(&mut strict, "tiny:t", None, 0).await;
    assert!(again.get("subscribe").is_some(), "{again}");
}

#[tokio::test]
async fn a_changed_epoch_is_not_recovered() {
    let h = Herald::start("").await;
    h.publish("news", json!(1)).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut raw, "news", Some((1, "stale-epoch")), 0).await["subscribe"].clone();
    assert!(sub.get("recovered").is_none(), "{sub}");
    let reply = raw
        .call(
            json!({"history": {"channel": "news", "since": {"offset": 0, "epoch": "stale-epoch"}}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], 112, "{reply}");
}

#[tokio::test]
async fn history_remove_makes_older_positions_unrecoverable() {
    let h = Herald::start("").await;
    for n in 1..=3 {
        h.publish("news", json!(n)).await;
    }
    let epoch = h.api("history", json!({"channel": "news"})).await["result"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_eq!(
        h.api("history_remove", json!({"channel": "news"})).await,
        json!({"result": {}})
    );
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut raw, "news", Some((1, &epoch)), 0).await["subscribe"].clone();
    assert!(sub.get("recovered").is_none(), "{sub}");
    assert_eq!(sub["offset"], 3);
}

#[tokio::test]
async fn concurrent_publishing_while_subscribing_loses_and_duplicates_nothing() {
    // Subscribe with recovery while publications flow: whatever is in the reply must
    // not arrive again live, and nothing may be skipped.
    let h = Herald::start("[namespaces.big]\nhistory_size = 10000\nhistory_ttl = \"5m\"\nallow_subscribe_for_client = true\n").await;
    let (mut first, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut first, "big:feed", None, 0).await;
    let epoch = sub["subscribe"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    drop(first);
    let publisher = h.spawn_publisher("big:feed", 300, std::time::Duration::ZERO);
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscribe(&mut raw, "big:feed", Some((0, &epoch)), 0).await["subscribe"].clone();
    assert_eq!(sub["recovered"], true, "{sub}");
    let mut seen: Vec<u64> = sub["publications"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["offset"].as_u64()).collect())
        .unwrap_or_default();
    publisher.await.expect("publisher");
    let rest = 300 - seen.len();
    seen.extend(raw.publications("big:feed", rest).await);
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
}
