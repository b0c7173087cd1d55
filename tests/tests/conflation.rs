//! Per-subscription conflation: a subscriber that asked (through its subscription
//! token, or its namespace's default) gets at most one publication per key per
//! interval, the latest one, with offsets that only grow, while other subscribers of
//! the channel get everything; recovery brings the newest of each key.

use herald_tests::raw::Raw;
use herald_tests::{Herald, sign};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TILES: &str = r#"
[namespaces.tiles]
history_size = 1000
history_ttl = "5m"
allow_subscribe_for_client = true

[namespaces.status]
history_size = 1000
history_ttl = "5m"
allow_subscribe_for_client = true
conflation = { key = "tile", interval = "300ms" }
"#;

const TILE_COUNT: u64 = 4;

/// Publishes `count` publications over `tiles`, round robin, as fast as the API
/// answers; returns the last `n` of each tile.
async fn publish_burst(h: &Herald, channel: &str, from: u64, count: u64) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    for n in from..from + count {
        let tile = format!("t{}", n % TILE_COUNT);
        let r = h
            .api(
                "publish",
                json!({"channel": channel, "data": {"n": n}, "tags": {"tile": tile}}),
            )
            .await;
        assert!(r.get("error").is_none(), "{r}");
        last.insert(tile, n);
    }
    last
}

/// (arrival, offset, tile, n) of every publication on `channel` until `quiet` passes
/// without one.
async fn received(
    raw: &mut Raw,
    channel: &str,
    quiet: Duration,
) -> Vec<(Instant, u64, String, u64)> {
    let mut out = Vec::new();
    while let Some(event) = raw.next_within(quiet).await {
        if let herald_tests::raw::Event::Reply(r) = event
            && let Some(push) = r.push
            && push.channel == channel
            && let Some(p) = push.publication
        {
            let n = serde_json::from_str::<Value>(p.data.get()).expect("json")["n"]
                .as_u64()
                .expect("n");
            let tile = p.tags.get("tile").cloned().unwrap_or_default();
            out.push((Instant::now(), p.offset, tile, n));
        }
    }
    out
}

fn check_conflated(
    got: &[(Instant, u64, String, u64)],
    last: &BTreeMap<String, u64>,
    interval: Duration,
) {
    // Offsets only grow.
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}");
    // At most one per tile per window: two of a tile are an interval apart (less the
    // timer's and the socket's jitter).
    let slack = Duration::from_millis(60);
    for tile in last.keys() {
        let times: Vec<Instant> = got.iter().filter(|g| &g.2 == tile).map(|g| g.0).collect();
        for w in times.windows(2) {
            assert!(
                w[1] - w[0] + slack >= interval,
                "{tile}: two within {:?}",
                w[1] - w[0]
            );
        }
    }
    // The latest wins: each tile's last delivery is its last publication.
    for (tile, n) in last {
        let delivered = got.iter().rev().find(|g| &g.2 == tile).map(|g| g.3);
        assert_eq!(delivered, Some(*n), "{tile}");
    }
}

#[tokio::test]
async fn a_token_asks_for_at_most_one_per_key_per_interval_and_the_latest_wins() {
    let h = Herald::start(TILES).await;
    let interval = Duration::from_millis(300);
    let token = sign(
        &h.secret,
        &json!({"sub": "1", "channel": "tiles:kpi", "conflation": {"key": "tile", "interval": "300ms"}}),
    );
    let (mut conflated, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let reply = conflated
        .call(json!({"subscribe": {"channel": "tiles:kpi", "token": token}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let epoch = reply["subscribe"]["epoch"].clone();
    let (mut all, _) = Raw::connect(&h.ws_url(), &h.token("2")).await;
    all.call(json!({"subscribe": {"channel": "tiles:kpi"}}))
        .await;

    let count = 400;
    // Read while publishing: arrival times are what is checked.
    let reader = tokio::spawn(async move {
        let got = received(&mut conflated, "tiles:kpi", Duration::from_millis(800)).await;
        (conflated, got)
    });
    let started = Instant::now();
    let last = publish_burst(&h, "tiles:kpi", 1, count).await;
    let took = started.elapsed();
    let (conflated, got) = reader.await.expect("reader");
    check_conflated(&got, &last, interval);
    // Far fewer than everything: about one per tile per window.
    let windows = took.as_millis() / interval.as_millis() + 2;
    assert!(
        (got.len() as u128) <= windows * u128::from(TILE_COUNT),
        "{} delivered in {took:?}",
        got.len()
    );
    let everything = received(&mut all, "tiles:kpi", Duration::from_millis(300)).await;
    assert_eq!(everything.len() as u64, count);

    // Away and back: recovery from the last offset seen brings each tile's newest.
    let seen = got.last().expect("some").1;
    drop(conflated);
    let last = publish_burst(&h, "tiles:kpi", count + 1, 40).await;
    let (mut back, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let reply = back
        .call(json!({"subscribe": {"channel": "tiles:kpi", "token": token, "recover": true, "offset": seen, "epoch": epoch}}))
        .await;
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], true, "{reply}");
    let recovered: BTreeMap<String, u64> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| {
            (
                p["tags"]["tile"].as_str().expect("tile").to_owned(),
                p["data"]["n"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(recovered, last);
    assert_eq!(
        sub["publications"].as_array().map(Vec::len),
        Some(TILE_COUNT as usize)
    );
}

#[tokio::test]
async fn a_namespace_conflates_every_subscription_by_default() {
    let h = Herald::start(TILES).await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    raw.call(json!({"subscribe": {"channel": "status:svc"}}))
        .await;
    let reader =
        tokio::spawn(
            async move { received(&mut raw, "status:svc", Duration::from_millis(800)).await },
        );
    let started = Instant::now();
    let last = publish_burst(&h, "status:svc", 1, 200).await;
    let took = started.elapsed();
    let got = reader.await.expect("reader");
    check_conflated(&got, &last, Duration::from_millis(300));
    assert!(got.len() < 200, "{} of 200 in {took:?}", got.len());
}

#[tokio::test]
async fn a_bad_conflation_setting_stops_the_node() {
    let mut h = Herald::launch(
        "[namespaces.bad]\nallow_subscribe_for_client = true\nconflation = { key = \"tile\", interval = \"1ms\" }\n",
        &[],
    );
    assert_ne!(h.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert!(h.log().contains("namespaces.bad.conflation"), "{}", h.log());
}

#[tokio::test]
async fn every_key_published_throughout_goes_out_in_every_window() {
    // Keys published all the time must each go out once per window: a window whose end
    // a publication reaches before the timer does must still send what it held.
    let h = Herald::start(TILES).await;
    let interval = Duration::from_millis(400);
    let token = sign(
        &h.secret,
        &json!({"sub": "1", "channel": "tiles:all", "conflation": {"key": "tile", "interval": "400ms"}}),
    );
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let reply = raw
        .call(json!({"subscribe": {"channel": "tiles:all", "token": token}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let reader =
        tokio::spawn(
            async move { received(&mut raw, "tiles:all", Duration::from_millis(1000)).await },
        );
    let started = Instant::now();
    let mut n = 1;
    let mut last = BTreeMap::new();
    while started.elapsed() < Duration::from_millis(2500) {
        last.extend(publish_burst(&h, "tiles:all", n, TILE_COUNT).await);
        n += TILE_COUNT;
    }
    let got = reader.await.expect("reader");
    check_conflated(&got, &last, interval);
    for tile in last.keys() {
        let times: Vec<Instant> = got.iter().filter(|g| &g.2 == tile).map(|g| g.0).collect();
        let widest = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        assert!(
            widest <= interval * 8 / 5,
            "{tile} went {widest:?} without an update while published throughout"
        );
    }
}
