//! Excluding one's own publications by a stable origin id: a connection with an origin
//! (chosen by the client in its connect request's `x-herald-origin` header, scoped to
//! its user, or given by its token) never receives publications that carry it, live or
//! recovered, across nodes on Redis and across a reconnect, while its position stays
//! contiguous; its client publications carry it; the HTTP API marks publications with
//! an `origin` field.

use herald_tests::raw::Raw;
use herald_tests::redis::RedisServer;
use herald_tests::{Herald, sign};
use serde_json::{Value, json};
use std::time::Duration;

/// Connects with a token for `user` and the origin `chosen` in the connect headers.
async fn tab(h: &Herald, user: &str, chosen: &str) -> Raw {
    let mut raw = Raw::open(&h.ws_url()).await;
    let reply = raw
        .call(json!({"connect": {"token": h.token(user), "headers": {"X-Herald-Origin": chosen}}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    raw
}

fn n_of(p: &herald_protocol::Publication) -> u64 {
    serde_json::from_str::<Value>(p.data.get()).expect("json")["n"]
        .as_u64()
        .expect("n")
}

async fn publish(h: &Herald, n: u64, origin: &str) {
    let r = h
        .api(
            "publish",
            json!({"channel": "origins", "data": {"n": n}, "origin": origin}),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
}

#[tokio::test]
async fn a_tab_never_gets_its_own_publications_live_or_recovered_on_any_node() {
    let redis = RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), "").await;
    let mut one = tab(&nodes[0], "42", "tab-1").await;
    let mut two = tab(&nodes[1], "42", "tab-2").await;
    let reply = one.call(json!({"subscribe": {"channel": "origins"}})).await;
    let epoch = reply["subscribe"]["epoch"].clone();
    two.call(json!({"subscribe": {"channel": "origins"}})).await;

    // The backend marks what tab 1 did (its user and the tab's own id).
    publish(&nodes[1], 1, "42/tab-1").await;
    publish(&nodes[1], 2, "").await;
    // Tab 1 publishes itself: marked with its origin.
    let reply = one
        .call(json!({"publish": {"channel": "origins", "data": {"n": 3}}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    publish(&nodes[0], 4, "42/tab-2").await;

    let got_two: Vec<u64> = [
        two.next_publication("origins").await,
        two.next_publication("origins").await,
        two.next_publication("origins").await,
    ]
    .iter()
    .map(n_of)
    .collect();
    assert_eq!(got_two, [1, 2, 3]);
    let p = one.next_publication("origins").await;
    assert_eq!((n_of(&p), p.offset), (2, 2));
    // 4 went to tab 1; 1 and 3 never did.
    let p = one.next_publication("origins").await;
    assert_eq!((n_of(&p), p.offset), (4, 4));
    drop(one);

    // Away: 5 (its own), 6, 7 (its own). Back through the other node, recovering from
    // offset 4: 6 alone, and a position at the top.
    publish(&nodes[0], 5, "42/tab-1").await;
    publish(&nodes[0], 6, "").await;
    publish(&nodes[0], 7, "42/tab-1").await;
    let mut back = tab(&nodes[1], "42", "tab-1").await;
    let reply = back
        .call(json!({"subscribe": {"channel": "origins", "recover": true, "offset": 4, "epoch": epoch}}))
        .await;
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], true, "{reply}");
    let ns: Vec<u64> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"]["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(ns, [6], "{reply}");
    assert_eq!(sub["offset"], 7);
    // The origin is never shown to clients.
    assert!(!reply.to_string().contains("tab-1"), "{reply}");
}

#[tokio::test]
async fn a_tokens_origin_is_used_as_is_and_a_chosen_one_cannot_reach_another_user() {
    let h = Herald::start("").await;
    // The backend gives the origin (here: per user, so no tab of the user gets what
    // the user did elsewhere).
    let token = sign(&h.secret, &json!({"sub": "7", "origin": "user-7"}));
    let (mut desk, _) = Raw::connect(&h.ws_url(), &token).await;
    desk.call(json!({"subscribe": {"channel": "origins"}}))
        .await;
    // Another user choosing "user-7" gets "8/user-7": it cannot hide its
    // publications from user 7.
    let mut other = tab(&h, "8", "user-7").await;
    other
        .call(json!({"subscribe": {"channel": "origins"}}))
        .await;
    publish(&h, 1, "user-7").await;
    let reply = other
        .call(json!({"publish": {"channel": "origins", "data": {"n": 2}}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    publish(&h, 3, "8/user-7").await;
    let p = desk.next_publication("origins").await;
    assert_eq!(n_of(&p), 2);
    let p = desk.next_publication("origins").await;
    assert_eq!(n_of(&p), 3);
    let p = other.next_publication("origins").await;
    assert_eq!(n_of(&p), 1);
    assert!(
        other.next_within(Duration::from_millis(300)).await.is_none_or(|e| {
            !matches!(e, herald_tests::raw::Event::Reply(r) if r.push.as_ref().is_some_and(|p| p.publication.is_some()))
        }),
        "2 and 3 are the other tab's own"
    );
}

#[tokio::test]
async fn bad_origins_are_refused() {
    let h = Herald::start("").await;
    for chosen in ["", "has/slash", "has space", &"x".repeat(65)] {
        let mut raw = Raw::open(&h.ws_url()).await;
        raw.command(
            json!({"connect": {"token": h.token("1"), "headers": {"x-herald-origin": chosen}}}),
        )
        .await;
        assert_eq!(
            raw.closed_within(Duration::from_secs(5)).await,
            3501,
            "{chosen:?}"
        );
    }
    let r = h
        .api(
            "publish",
            json!({"channel": "origins", "data": 1, "origin": "x".repeat(257)}),
        )
        .await;
    assert!(r.get("error").is_some(), "{r}");
    let r = h
        .api(
            "publish",
            json!({"channel": "origins", "data": 1, "tags": {"\u{0}origin": "someone"}}),
        )
        .await;
    assert!(r.get("error").is_some(), "{r}");
    assert_eq!(h.history_data("origins").await, Vec::<Value>::new());
}
