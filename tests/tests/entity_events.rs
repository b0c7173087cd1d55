//! Entity events: the HTTP API's `publish_entity` and `herald_redis::Publisher`'s
//! `publish_entity`, against real nodes, with raw clients in both audiences.

use herald_client::{Audience, EntityAction, EntityEvent, RawJson};
use herald_redis::{PublishOptions, Publisher};
use herald_tests::raw::{Event, Raw};
use herald_tests::redis::RedisServer;
use herald_tests::{Herald, now, sign};
use serde_json::{Value, json};
use std::time::Duration;

/// The `entities` namespace as a deployment would configure it.
const ENTITIES: &str = r#"
[namespaces.entities]
history_size = 100
history_ttl = "5m"
allow_subscribe_for_client = true
"#;

fn event(id: &str, action: &str, version: u64) -> Value {
    json!({
        "entity_type": "applications",
        "entity_id": id,
        "action": action,
        "actor": "bob",
        "version": version,
        "timestamp": 1_796_582_373_193_u64,
        "payload": {"name": format!("app {id}"), "restricted": false},
    })
}

/// A client of `user` subscribed to `channel`, with a subscription token for it when
/// `token` is set.
async fn subscribed(h: &Herald, user: &str, channel: &str, token: bool) -> Raw {
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token(user)).await;
    let mut sub = json!({ "channel": channel });
    if token {
        sub["token"] = json!(sign(
            &h.secret,
            &json!({"sub": user, "channel": channel, "exp": now() + 600}),
        ));
    }
    let reply = raw.call(json!({ "subscribe": sub })).await;
    assert!(reply.get("error").is_none(), "subscribe failed: {reply}");
    raw
}

/// The next publication in `channel`: its offset and its data exactly as sent.
async fn next_publication(raw: &mut Raw, channel: &str) -> (u64, String) {
    loop {
        let r = raw.next_reply().await;
        if let Some(push) = r.push
            && push.channel == channel
            && let Some(p) = push.publication
        {
            return (p.offset, p.data.get().to_owned());
        }
    }
}

/// Fails if anything but a ping arrives within half a second.
async fn nothing_more(raw: &mut Raw) {
    while let Some(event) = raw.next_within(Duration::from_millis(500)).await {
        match event {
            Event::Reply(r) if r.is_ping() => continue,
            other => panic!("unexpected: {other:?}"),
        }
    }
}

fn channels_of(reply: &Value) -> Vec<&str> {
    reply["result"]["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .map(|r| r["channel"].as_str().expect("channel"))
        .collect()
}

/// Posts `body` as given (not re-encoded) to `/api/publish_entity`.
async fn post_raw(h: &Herald, body: &str) -> Value {
    reqwest::Client::new()
        .post(h.url("/api/publish_entity"))
        .header("X-API-Key", &h.api_key)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("api call")
        .json()
        .await
        .expect("JSON reply")
}

const PUBLIC: [&str; 3] = [
    "entities:all",
    "entities:applications",
    "entities:applications.42",
];
const RESTRICTED: [&str; 3] = [
    "$entities:all",
    "$entities:applications",
    "$entities:applications.42",
];

#[tokio::test]
async fn publish_entity_reaches_each_audience_once() {
    let h = Herald::start(ENTITIES).await;
    let mut alice = subscribed(&h, "alice", "entities:applications", false).await;
    let mut root = subscribed(&h, "root", "$entities:applications", true).await;

    // The restricted audience needs a subscription token.
    let (mut bob, _) = Raw::connect(&h.ws_url(), &h.token("bob")).await;
    let refused = bob
        .call(json!({"subscribe": {"channel": "$entities:applications"}}))
        .await;
    assert_eq!(refused["error"]["code"], 103, "{refused}");

    // Both audiences: six channels, each reply naming its channel; the event is
    // published as sent, byte for byte.
    let sent = r#"{"entity_type":"applications","entity_id":"42","action":"created","actor":"bob","version":1,"timestamp":1796582373193,"payload":{"z":1,"a":12345678901234567890}}"#;
    let body = format!(
        r#"{{"event": {sent}, "audiences": ["public", "restricted"], "idempotency_key": "change-1"}}"#
    );
    let first = post_raw(&h, &body).await;
    assert!(first.get("error").is_none(), "{first}");
    let all: Vec<&str> = PUBLIC.iter().chain(&RESTRICTED).copied().collect();
    assert_eq!(channels_of(&first), all, "{first}");
    for r in first["result"]["responses"].as_array().expect("responses") {
        assert_eq!(r["result"]["offset"], 1, "{r}");
        assert!(
            r["result"]["epoch"].as_str().is_some_and(|e| !e.is_empty()),
            "{r}"
        );
    }
    assert_eq!(
        next_publication(&mut alice, "entities:applications").await,
        (1, sent.to_owned())
    );
    assert_eq!(
        next_publication(&mut root, "$entities:applications").await,
        (1, sent.to_owned())
    );

    // A retry with the same key publishes nothing and replies the same positions.
    let retried = post_raw(&h, &body).await;
    assert_eq!(retried, first);
    for channel in &all {
        assert_eq!(h.history_data(channel).await.len(), 1, "{channel}");
    }
    nothing_more(&mut alice).await;
    nothing_more(&mut root).await;

    // Restricted only: the public channels get nothing.
    let reply = h
        .api(
            "publish_entity",
            json!({"event": event("43", "updated", 2), "audiences": ["restricted"]}),
        )
        .await;
    assert_eq!(
        channels_of(&reply),
        [
            "$entities:all",
            "$entities:applications",
            "$entities:applications.43"
        ],
        "{reply}"
    );
    let (offset, data) = next_publication(&mut root, "$entities:applications").await;
    assert_eq!(offset, 2);
    assert_eq!(
        serde_json::from_str::<Value>(&data).expect("json"),
        event("43", "updated", 2)
    );
    nothing_more(&mut alice).await;
    assert_eq!(h.history_data("entities:applications").await.len(), 1);
    assert_eq!(h.history_data("entities:all").await.len(), 1);

    // The audiences default to public.
    let reply = h
        .api(
            "publish_entity",
            json!({"event": event("42", "updated", 3)}),
        )
        .await;
    assert_eq!(channels_of(&reply), PUBLIC, "{reply}");
    assert_eq!(
        next_publication(&mut alice, "entities:applications")
            .await
            .0,
        2
    );

    // In a batch, by name.
    let batch = h
        .api(
            "batch",
            json!({"commands": [{"publish_entity": {"event": event("44", "deleted", 9)}}]}),
        )
        .await;
    assert_eq!(
        batch["replies"][0]["publish_entity"]["responses"][2]["channel"],
        "entities:applications.44",
        "{batch}"
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_with_a_reason() {
    let h = Herald::start(ENTITIES).await;
    let mut bad_type = event("42", "created", 1);
    bad_type["entity_type"] = json!("Applications");
    let mut bad_id = event("42", "created", 1);
    bad_id["entity_id"] = json!("4.2");
    let mut reserved = event("42", "created", 1);
    reserved["entity_type"] = json!("all");
    let mut no_actor = event("42", "created", 1);
    no_actor.as_object_mut().expect("object").remove("actor");
    for (params, says) in [
        (json!({"event": bad_type}), "entity_type \"Applications\""),
        (json!({"event": bad_id}), "entity_id \"4.2\""),
        (json!({"event": reserved}), "reserved"),
        (
            json!({"event": event("42", "moved", 1)}),
            "unknown variant `moved`",
        ),
        (json!({"event": no_actor}), "missing field `actor`"),
        (json!({"event": "42"}), "not an entity event"),
        (json!({}), "event is required"),
        (
            json!({"event": event("42", "created", 1), "audiences": []}),
            "audiences is empty",
        ),
        (
            json!({"event": event("42", "created", 1), "audiences": ["public", "public"]}),
            "given twice",
        ),
        (
            json!({"event": event("42", "created", 1), "audiences": ["staff"]}),
            "unknown variant `staff`",
        ),
    ] {
        let reply = h.api("publish_entity", params.clone()).await;
        assert_eq!(reply["error"]["code"], 107, "{params} → {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{params} → {message}");
    }
    // Nothing was published.
    assert!(h.history_data("entities:all").await.is_empty());
}

#[tokio::test]
async fn publish_entity_needs_the_entities_namespace() {
    let h = Herald::start("").await;
    let reply = h
        .api(
            "publish_entity",
            json!({"event": event("42", "created", 1)}),
        )
        .await;
    assert_eq!(reply["error"]["code"], 102, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"namespace "entities" is not configured"#),
        "{reply}"
    );
}

#[tokio::test]
async fn the_rust_publisher_and_the_api_derive_the_same_keys() {
    let redis = RedisServer::start();
    let url = redis.url();
    let h = Herald::start_with(ENTITIES, &["--broker", "redis", "--redis-url", &url]).await;
    let mut alice = subscribed(&h, "alice", "entities:applications.42", false).await;
    let mut root = subscribed(&h, "root", "$entities:all", true).await;

    let publisher = Publisher::connect(&url).await.expect("publisher");
    let payload = RawJson::from_value(&json!({"name": "app 42"})).expect("json");
    let sent = EntityEvent {
        entity_type: "applications".into(),
        entity_id: "42".into(),
        action: EntityAction::Updated,
        actor: "bob".into(),
        version: 3,
        timestamp: 1_796_582_373_193,
        payload: Some(payload),
    };
    let options = PublishOptions {
        history_size: 100,
        history_ttl: Duration::from_secs(300),
        idempotency_key: Some("change-7".into()),
        ..Default::default()
    };
    let published = publisher
        .publish_entity(&sent, &[Audience::Public, Audience::Restricted], options)
        .await
        .expect("publish_entity");
    let channels: Vec<&str> = published.iter().map(|p| p.channel.as_str()).collect();
    let all: Vec<&str> = PUBLIC.iter().chain(&RESTRICTED).copied().collect();
    assert_eq!(channels, all);
    assert!(published.iter().all(|p| p.position.offset == 1));

    for (raw, channel) in [
        (&mut alice, "entities:applications.42"),
        (&mut root, "$entities:all"),
    ] {
        let (offset, data) = next_publication(raw, channel).await;
        assert_eq!(offset, 1);
        assert_eq!(
            serde_json::from_str::<EntityEvent>(&data).expect("an entity event"),
            sent
        );
    }

    // The backend retries through the HTTP API with the same key: recognised on every
    // channel, nothing published twice.
    let reply = h
        .api(
            "publish_entity",
            json!({"event": &sent, "audiences": ["public", "restricted"], "idempotency_key": "change-7"}),
        )
        .await;
    assert_eq!(channels_of(&reply), all, "{reply}");
    for (r, p) in reply["result"]["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .zip(&published)
    {
        assert_eq!(r["result"]["offset"], 1, "{r}");
        assert_eq!(r["result"]["epoch"], p.position.epoch.as_str(), "{r}");
    }
    for channel in &all {
        assert_eq!(h.history_data(channel).await.len(), 1, "{channel}");
    }
    nothing_more(&mut alice).await;
    nothing_more(&mut root).await;

    // An invalid event is refused before anything is published.
    let mut invalid = sent.clone();
    invalid.entity_id = "4 2".into();
    let err = publisher
        .publish_entity(&invalid, &[Audience::Public], PublishOptions::default())
        .await
        .expect_err("invalid");
    assert!(
        matches!(err, herald_redis::PublishEntityError::Invalid(_)),
        "{err:?}"
    );
}
