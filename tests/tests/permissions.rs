//! Channel permissions: namespaces, private channels with subscription tokens,
//! user-limited channels, and the allow_* options.

use herald_tests::raw::Raw;
use herald_tests::{Herald, now, sign};
use serde_json::json;

#[tokio::test]
async fn subscribe_rules() {
    let h = Herald::start("[namespaces.dm]\nallow_user_limited_channels = true\n").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("42")).await;
    let code = async |raw: &mut Raw, cmd| raw.call(cmd).await["error"]["code"].as_u64();

    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "locked:x"}})).await,
        Some(103)
    );
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "nope:x"}})).await,
        Some(102)
    );
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": ""}})).await,
        Some(107)
    );
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "$news"}})).await,
        Some(103)
    );
    // User-limited: admitted when listed.
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "dm:chat#41,42"}})).await,
        None
    );
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "dm:chat#41,43"}})).await,
        Some(103)
    );
    // Twice → 105.
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "news"}})).await,
        None
    );
    assert_eq!(
        code(&mut raw, json!({"subscribe": {"channel": "news"}})).await,
        Some(105)
    );
}

#[tokio::test]
async fn private_channels_need_a_matching_subscription_token() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("42")).await;
    let sub = |user: &str, channel: &str, exp: u64| {
        sign(
            &h.secret,
            &json!({"sub": user, "channel": channel, "exp": exp}),
        )
    };
    let later = now() + 600;
    for (token, expected) in [
        (sub("42", "$other", later), Some(103)),
        (sub("7", "$news", later), Some(103)),
        (
            sign(
                &herald_tests::secret(),
                &json!({"sub": "42", "channel": "$news"}),
            ),
            Some(103),
        ),
        (sub("42", "$news", now() - 5), Some(109)),
        (sub("42", "$news", later), None),
    ] {
        let reply = raw
            .call(json!({"subscribe": {"channel": "$news", "token": token}}))
            .await;
        assert_eq!(reply["error"]["code"].as_u64(), expected, "{reply}");
    }
    let offset = h.publish("$news", json!("secret")).await;
    assert_eq!(raw.publications("$news", 1).await, vec![offset]);
    let refreshed = raw
        .call(
            json!({"sub_refresh": {"channel": "$news", "token": sub("42", "$news", later + 600)}}),
        )
        .await;
    assert_eq!(refreshed["sub_refresh"]["expires"], true, "{refreshed}");
}

#[tokio::test]
async fn publish_history_and_presence_follow_namespace_options() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("42")).await;
    // default: publish and history for subscribers only.
    let before = raw
        .call(json!({"publish": {"channel": "news", "data": {"a": 1}}}))
        .await;
    assert_eq!(before["error"]["code"], 103, "{before}");
    raw.call(json!({"subscribe": {"channel": "news"}})).await;
    let ok = raw
        .call(json!({"publish": {"channel": "news", "data": {"a": 1}}}))
        .await;
    assert!(ok.get("publish").is_some(), "{ok}");
    assert_eq!(raw.publications("news", 1).await, vec![1]);
    let missing = raw.call(json!({"publish": {"channel": "news"}})).await;
    assert_eq!(missing["error"]["code"], 107, "{missing}");
    let hist = raw
        .call(json!({"history": {"channel": "news", "limit": 10}}))
        .await;
    assert_eq!(
        hist["history"]["publications"][0]["data"],
        json!({"a": 1}),
        "{hist}"
    );
    // Client publications carry the publisher's info.
    assert_eq!(
        hist["history"]["publications"][0]["info"]["user"], "42",
        "{hist}"
    );
    let presence = raw.call(json!({"presence": {"channel": "news"}})).await;
    assert_eq!(
        presence["presence"]["presence"]
            .as_object()
            .map(|m| m.len()),
        Some(1),
        "{presence}"
    );
    // live: no history, no presence.
    raw.call(json!({"subscribe": {"channel": "live:x"}})).await;
    let no_hist = raw.call(json!({"history": {"channel": "live:x"}})).await;
    assert_eq!(no_hist["error"]["code"], 108, "{no_hist}");
    let no_presence = raw
        .call(json!({"presence_stats": {"channel": "live:x"}}))
        .await;
    assert_eq!(no_presence["error"]["code"], 108, "{no_presence}");
}
