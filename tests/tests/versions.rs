//! Stale-version drops through the server API: a publication carrying a `version` not
//! newer than the channel's newest (in the same `version_epoch`) is dropped atomically by
//! the broker, so concurrent publishers on two nodes of one Redis can never make a
//! subscriber go back to an older state.

use herald_protocol::Publication;
use herald_tests::Herald;
use herald_tests::raw::Raw;
use serde_json::{Value, json};

const STATE: &str = r#"
[namespaces.state]
history_size = 100
history_ttl = "5m"
allow_subscribe_for_client = true
"#;

#[tokio::test]
async fn a_stale_version_is_dropped_and_says_so() {
    let h = Herald::start(STATE).await;
    let publish = |version: u64, series: &'static str| {
        let h = &h;
        async move {
            h.api(
                "publish",
                json!({"channel": "state:a", "data": {"v": version}, "version": version, "version_epoch": series}),
            )
            .await
        }
    };
    let first = publish(2, "s1").await;
    assert_eq!(first["result"]["offset"], 1, "{first}");
    assert!(first["result"].get("suppressed").is_none(), "{first}");
    let stale = publish(1, "s1").await;
    assert_eq!(stale["result"]["suppressed"], true, "{stale}");
    assert_eq!(
        stale["result"]["offset"], 1,
        "the current position: {stale}"
    );
    let next = publish(1, "s2").await;
    assert_eq!(
        next["result"]["offset"], 2,
        "a new series starts over: {next}"
    );
    assert_eq!(
        h.history_data("state:a").await,
        [json!({"v": 2}), json!({"v": 1})]
    );
}

#[tokio::test]
async fn concurrent_publishers_on_two_nodes_never_go_back() {
    let redis = herald_tests::redis::RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), STATE).await;
    let (mut raw, _) = Raw::connect(&nodes[0].ws_url(), &nodes[0].token("1")).await;
    let reply = raw.call(json!({"subscribe": {"channel": "state:b"}})).await;
    assert!(reply.get("error").is_none(), "{reply}");

    // Versions 1..=200 published in a scrambled order by 8 concurrent publishers
    // spread over both nodes.
    let versions: Vec<u64> = (1..=200u64).map(|i| (i * 73) % 200 + 1).collect();
    let mut tasks = Vec::new();
    for (k, chunk) in versions.chunks(25).enumerate() {
        let node = &nodes[k % 2];
        let http = reqwest::Client::new();
        let url = node.url("/api/publish");
        let key = node.api_key.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut suppressed = 0;
            for v in chunk {
                let reply: Value = http
                    .post(&url)
                    .header("X-API-Key", &key)
                    .json(&json!({"channel": "state:b", "data": {"v": v}, "version": v}))
                    .send()
                    .await
                    .expect("publish")
                    .json()
                    .await
                    .expect("json");
                assert!(reply.get("error").is_none(), "{reply}");
                suppressed += usize::from(reply["result"]["suppressed"] == true);
            }
            suppressed
        }));
    }
    let mut suppressed = 0;
    for t in tasks {
        suppressed += t.await.expect("publisher");
    }
    let published = 200 - suppressed;
    assert!(published >= 1 && suppressed > 0, "{published} published");

    // The subscriber sees exactly the published ones, each newer than the last, ending
    // with 200.
    let mut seen = Vec::new();
    while seen.len() < published {
        let r = raw.next_reply().await;
        if let Some(push) = r.push
            && let Some(p) = push.publication
        {
            seen.push(version_of(&p));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "went back: {seen:?}");
    assert_eq!(seen.last(), Some(&200));
    let history = nodes[1].history_data("state:b").await;
    assert_eq!(history.len(), published);
}

fn version_of(p: &Publication) -> u64 {
    serde_json::from_str::<Value>(p.data.get()).expect("json")["v"]
        .as_u64()
        .expect("v")
}
