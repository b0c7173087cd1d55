//! The Rust client SDK against a real `herald` process: reconnects recover exactly the
//! missed publications; lost history is reported, never papered over.

use herald_client::{
    Client, RawJson, StreamPosition, SubscribeOptions, Subscription, SubscriptionEvent,
};
use herald_tests::Herald;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn client(h: &Herald, user: &str, min_backoff: Duration) -> Client {
    Client::builder(h.ws_url())
        .token(h.token(user))
        .min_backoff(min_backoff)
        .max_backoff(min_backoff * 2)
        .build()
        .expect("client")
}

async fn next(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("subscription open")
}

/// Waits for the subscription to be confirmed by the server (publications made before
/// that are, correctly, not delivered live).
async fn subscribed(sub: &mut Subscription) -> (bool, bool) {
    match next(sub).await {
        SubscriptionEvent::Subscribed {
            was_recovering,
            recovered,
            ..
        } => (was_recovering, recovered),
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

/// Collects publication offsets until `n` arrived, returning every `Subscribed` seen.
async fn collect(sub: &mut Subscription, offsets: &mut Vec<u64>, n: usize) -> Vec<(bool, bool)> {
    let mut subscribed = Vec::new();
    while offsets.len() < n {
        match next(sub).await {
            SubscriptionEvent::Publication(p) => offsets.push(p.offset),
            SubscriptionEvent::Subscribed {
                recovered,
                was_recovering,
                ..
            } => subscribed.push((was_recovering, recovered)),
            other => panic!("unexpected {other:?}"),
        }
    }
    subscribed
}

#[tokio::test]
async fn forced_reconnect_recovers_every_publication_exactly_once() {
    let h = Herald::start("").await;
    let c = client(&h, "7", Duration::from_millis(400));
    let mut sub = c
        .subscribe("news", SubscribeOptions::default())
        .await
        .expect("subscribe");
    c.connect().await.expect("connect");
    let mut offsets = Vec::new();
    assert_eq!(subscribed(&mut sub).await, (false, false));
    for n in 1..=5 {
        h.publish("news", json!(n)).await;
    }
    assert!(collect(&mut sub, &mut offsets, 5).await.is_empty());
    // 3011: the server asks the client to reconnect; publish while it is away.
    h.api(
        "disconnect",
        json!({"user": "7", "disconnect": {"code": 3011, "reason": "test"}}),
    )
    .await;
    for n in 6..=20 {
        h.publish("news", json!(n)).await;
    }
    let subscribed = collect(&mut sub, &mut offsets, 20).await;
    assert_eq!(
        offsets,
        (1..=20).collect::<Vec<_>>(),
        "every publication once, in order"
    );
    assert_eq!(
        subscribed,
        vec![(true, true)],
        "one recovering resubscribe that recovered"
    );
    // Publishing from the client works too.
    c.publish(
        "news",
        RawJson::from_value(&json!({"from": "client"})).expect("json"),
    )
    .await
    .expect("publish");
    collect(&mut sub, &mut offsets, 21).await;
    c.disconnect().await;
}

#[tokio::test]
async fn lost_history_is_reported_as_not_recovered() {
    let h = Herald::start("").await;
    let c = client(&h, "7", Duration::from_millis(200));
    c.connect().await.expect("connect");
    let mut sub = c
        .subscribe("tiny:t", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let mut offsets = Vec::new();
    subscribed(&mut sub).await;
    h.publish("tiny:t", json!(1)).await;
    collect(&mut sub, &mut offsets, 1).await;
    let epoch = h.api("history", json!({"channel": "tiny:t"})).await["result"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    drop(sub);
    // Nine more while away: the namespace keeps three, so offsets 2..=7 are gone.
    for n in 2..=10 {
        h.publish("tiny:t", json!(n)).await;
    }
    let since = StreamPosition { offset: 1, epoch };
    let mut sub = c
        .subscribe(
            "tiny:t",
            SubscribeOptions {
                since: Some(since),
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    match next(&mut sub).await {
        SubscriptionEvent::Subscribed {
            was_recovering,
            recovered,
            position,
            ..
        } => {
            assert!(was_recovering && !recovered, "must report the loss");
            assert_eq!(position.offset, 10);
        }
        other => panic!("unexpected {other:?}"),
    }
    h.publish("tiny:t", json!(11)).await;
    let mut live = Vec::new();
    collect(&mut sub, &mut live, 1).await;
    assert_eq!(live, vec![11], "no partial history, then live");
}

#[tokio::test]
async fn restarted_node_means_new_epoch_and_reject_flag_gives_112() {
    let h = Herald::start("").await;
    h.publish("news", json!(1)).await;
    let page = h.api("history", json!({"channel": "news"})).await;
    let old = StreamPosition {
        offset: 1,
        epoch: page["result"]["epoch"].as_str().expect("epoch").to_owned(),
    };
    let (port, secret, key) = (h.port, h.secret.clone(), h.api_key.clone());
    drop(h);
    let h = Herald::start_on(port, &secret, &key, "", &[]).await;
    let c = client(&h, "7", Duration::from_millis(200));
    c.connect().await.expect("connect");
    let mut lenient = c
        .subscribe(
            "news",
            SubscribeOptions {
                since: Some(old.clone()),
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    match next(&mut lenient).await {
        SubscriptionEvent::Subscribed {
            was_recovering,
            recovered,
            position,
            ..
        } => {
            assert!(was_recovering && !recovered);
            assert_ne!(position.epoch, old.epoch);
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut strict = c
        .subscribe(
            "tiny:x",
            SubscribeOptions {
                since: Some(old),
                reject_unrecovered: true,
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    match next(&mut strict).await {
        SubscriptionEvent::Error { code, .. } => assert_eq!(code, 112),
        other => panic!("unexpected {other:?}"),
    }
}
