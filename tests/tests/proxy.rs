//! Proxy hooks against a real HTTP backend (an axum app in the test process) that
//! implements every hook: connects let in by cookie or refused, identity headers the
//! client made up never forwarded, a slow backend and one that is down answered with a
//! temporary 100, subscriptions authorized with the backend's tag filter applied live
//! and recovered across two nodes on Redis, publications rewritten, RPC routed, and
//! expiries the backend extends or ends.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use herald_tests::raw::Raw;
use herald_tests::redis::RedisServer;
use herald_tests::{Herald, free_port, now};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One call the backend received.
#[derive(Debug, Clone)]
struct Call {
    hook: &'static str,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Backend {
    calls: Mutex<Vec<Call>>,
    refreshes: AtomicU32,
    sub_refreshes: AtomicU32,
    /// Calls being answered now, and the most at once.
    busy: AtomicU32,
    most_busy: AtomicU32,
}

impl Backend {
    fn calls(&self, hook: &str) -> Vec<Call> {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.hook == hook)
            .cloned()
            .collect()
    }
}

type Shared = Arc<Backend>;

fn record(b: &Backend, hook: &'static str, headers: &HeaderMap, body: &Value) {
    b.calls.lock().push(Call {
        hook,
        headers: headers.clone(),
        body: body.clone(),
    });
}

fn cookie(headers: &HeaderMap) -> String {
    headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn connect(
    State(b): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&b, "connect", &headers, &body);
    let cookie = cookie(&headers);
    Json(if cookie.contains("session=alice") {
        json!({"result": {
            "user": "alice",
            "info": {"name": "Alice"},
            "data": {"welcome": "alice"},
            "channels": ["live:alice"],
        }})
    } else if cookie.contains("session=brief") {
        json!({"result": {"user": "brief", "expire_at": now() + 4}})
    } else if cookie.contains("session=banned") {
        json!({"disconnect": {"code": 4501, "reason": "banned"}})
    } else if cookie.contains("session=sleepy") {
        let now_busy = b.busy.fetch_add(1, Ordering::SeqCst) + 1;
        b.most_busy.fetch_max(now_busy, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        b.busy.fetch_sub(1, Ordering::SeqCst);
        json!({"result": {"user": "sleepy"}})
    } else if cookie.contains("session=slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        json!({"result": {"user": "slow"}})
    } else {
        json!({"error": {"code": 101, "message": "unauthorized"}})
    })
}

async fn refresh(
    State(b): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&b, "refresh", &headers, &body);
    // The first refresh extends the connection by four seconds, the second ends it.
    Json(if b.refreshes.fetch_add(1, Ordering::SeqCst) == 0 {
        json!({"result": {"expire_at": now() + 4, "info": {"refreshed": true}}})
    } else {
        json!({"result": {"expired": true}})
    })
}

async fn subscribe(
    State(b): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&b, "subscribe", &headers, &body);
    let channel = body["channel"].as_str().unwrap_or("");
    Json(match channel {
        "board:open" => json!({"result": {"data": {"columns": 3}}}),
        // Only board 7's tasks, whatever the client asks for.
        "board:tasks" => json!({"result": {
            "tags_filter": {"key": "board", "cmp": "eq", "val": "7"}
        }}),
        "board:brief" => json!({"result": {"expire_at": now() + 2}}),
        "board:tiles" => json!({"result": {"conflation": {"key": "tile", "interval": "400ms"}}}),
        "board:later" => {
            json!({"error": {"code": 1003, "message": "try later", "temporary": true}})
        }
        _ => json!({"error": {"code": 103, "message": "permission denied"}}),
    })
}

async fn sub_refresh(
    State(b): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&b, "sub_refresh", &headers, &body);
    Json(if b.sub_refreshes.fetch_add(1, Ordering::SeqCst) == 0 {
        json!({"result": {"expire_at": now() + 2}})
    } else {
        json!({"result": {"expired": true}})
    })
}

async fn publish(
    State(b): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&b, "publish", &headers, &body);
    if body["channel"] == "board:readonly" {
        return Json(json!({"error": {"code": 103, "message": "read only"}}));
    }
    let text = body["data"]["text"].as_str().unwrap_or("").to_uppercase();
    Json(json!({"result": {
        "data": {"text": text, "by": body["user"]},
        "tags": {"kind": "note"},
    }}))
}

async fn rpc(State(b): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    record(&b, "rpc", &headers, &body);
    Json(match body["method"].as_str().unwrap_or("") {
        "whoami" => json!({"result": {"data": {"user": body["user"], "echo": body["data"]}}}),
        "kick" => json!({"disconnect": {"code": 4000, "reason": "kicked"}}),
        _ => json!({"error": {"code": 1001, "message": "unknown method"}}),
    })
}

/// Starts the backend on a free port; returns it and its base URL.
async fn backend() -> (Shared, String) {
    let state: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/connect", post(connect))
        .route("/refresh", post(refresh))
        .route("/subscribe", post(subscribe))
        .route("/sub_refresh", post(sub_refresh))
        .route("/publish", post(publish))
        .route("/rpc", post(rpc))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, base)
}

/// The hooks at `base`, and a `board` namespace whose access the backend decides.
fn hooks(base: &str) -> String {
    format!(
        r#"
[proxy]
forward_headers = ["cookie"]
static_headers = {{ "x-herald-key" = "backend-secret" }}
[proxy.connect]
url = "{base}/connect"
timeout = "500ms"
[proxy.refresh]
url = "{base}/refresh"
[proxy.subscribe]
url = "{base}/subscribe"
[proxy.sub_refresh]
url = "{base}/sub_refresh"
[proxy.publish]
url = "{base}/publish"
[proxy.rpc]
url = "{base}/rpc"

[namespaces.board]
history_size = 100
history_ttl = "5m"
subscribe_proxy = true
publish_proxy = true
sub_refresh_proxy = true
"#
    )
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Opens a socket with `headers` and sends a connect command without a token.
async fn connect_with(h: &Herald, headers: &[(&str, &str)]) -> (Raw, Value) {
    let mut raw = Raw::try_open(&h.ws_url(), LOCAL, headers)
        .await
        .expect("upgrade");
    let reply = raw.call(json!({"connect": {"name": "test"}})).await;
    (raw, reply)
}

#[tokio::test]
async fn the_connect_hook_lets_in_by_cookie_and_never_sees_forged_identity_headers() {
    let (backend, base) = backend().await;
    let h = Herald::start(&hooks(&base)).await;
    let (mut raw, reply) = connect_with(
        &h,
        &[
            ("Cookie", "session=alice"),
            ("X-User-Id", "admin"),
            ("Authorization", "Bearer forged"),
        ],
    )
    .await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["connect"]["data"], json!({"welcome": "alice"}));
    // The backend's server-side subscription is there.
    assert!(
        reply["connect"]["subs"].get("live:alice").is_some(),
        "{reply}"
    );
    let call = backend.calls("connect").pop().expect("a connect call");
    assert_eq!(call.headers.get("cookie").expect("cookie"), "session=alice");
    assert!(call.headers.get("x-user-id").is_none());
    // Authorization is not in this node's forward_headers.
    assert!(call.headers.get("authorization").is_none());
    assert_eq!(
        call.headers.get("x-herald-key").expect("static"),
        "backend-secret"
    );
    assert_eq!(call.body["transport"], "websocket");
    assert_eq!(call.body["protocol"], "json");
    assert_eq!(call.body["name"], "test");
    assert!(call.body.get("user").is_none(), "{}", call.body);

    // Later calls carry the identity the backend gave, and the same headers.
    let reply = raw
        .call(json!({"rpc": {"method": "whoami", "data": {"user": "admin"}}}))
        .await;
    assert_eq!(
        reply["rpc"]["data"],
        json!({"user": "alice", "echo": {"user": "admin"}}),
        "{reply}"
    );
    let call = backend.calls("rpc").pop().expect("an rpc call");
    assert_eq!(call.body["user"], "alice");
    assert!(call.body["client"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(call.headers.get("cookie").expect("cookie"), "session=alice");
    assert_eq!(
        h.metric(r#"herald_proxy_calls_total{hook="connect",outcome="ok"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn refusals_errors_and_disconnects_from_the_backend_reach_the_client() {
    let (_backend, base) = backend().await;
    let h = Herald::start(&hooks(&base)).await;
    // No session: the backend's error, as it gave it; the socket stays.
    let (_raw, reply) = connect_with(&h, &[("X-User-Id", "alice")]).await;
    assert_eq!(reply["error"]["code"], 101, "{reply}");
    assert_eq!(reply["error"]["message"], "unauthorized");
    // Banned: closed with the backend's code.
    let (mut raw, _) = {
        let mut raw = Raw::try_open(&h.ws_url(), LOCAL, &[("Cookie", "session=banned")])
            .await
            .expect("upgrade");
        raw.command(json!({"connect": {}})).await;
        (raw, ())
    };
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 4501);

    let (mut raw, _) = connect_with(&h, &[("Cookie", "session=alice")]).await;
    let reply = raw.call(json!({"rpc": {"method": "nope"}})).await;
    assert_eq!(reply["error"]["code"], 1001, "{reply}");
    assert_eq!(reply["error"]["message"], "unknown method");
    let reply = raw
        .call(json!({"subscribe": {"channel": "board:closed"}}))
        .await;
    assert_eq!(reply["error"]["code"], 103, "{reply}");
    let reply = raw
        .call(json!({"subscribe": {"channel": "board:later"}}))
        .await;
    assert_eq!(reply["error"]["code"], 1003, "{reply}");
    assert_eq!(reply["error"]["temporary"], true, "{reply}");
    raw.command(json!({"rpc": {"method": "kick"}})).await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 4000);
    assert_eq!(
        h.metric(r#"herald_disconnects_total{code="application"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_slow_or_down_backend_lets_nobody_in_and_says_try_again() {
    let (_backend, base) = backend().await;
    let h = Herald::start(&hooks(&base)).await;
    let started = std::time::Instant::now();
    let (_raw, reply) = connect_with(&h, &[("Cookie", "session=slow")]).await;
    assert_eq!(reply["error"]["code"], 100, "{reply}");
    assert_eq!(reply["error"]["temporary"], true, "{reply}");
    // The hook's 500 ms timeout, not the backend's 3 s.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        h.metric(r#"herald_proxy_calls_total{hook="connect",outcome="timeout"}"#)
            .await,
        1.0
    );

    // Nothing listens at the backend's address.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let down = Herald::start(&hooks(&gone)).await;
    let (_raw, reply) = connect_with(&down, &[("Cookie", "session=alice")]).await;
    assert_eq!(reply["error"]["code"], 100, "{reply}");
    assert_eq!(reply["error"]["temporary"], true, "{reply}");
    assert_eq!(
        down.metric(r#"herald_proxy_calls_total{hook="connect",outcome="unreachable"}"#)
            .await,
        1.0
    );
    // A token still works without the backend, and so does everything that does not
    // ask it; what does ask it gets the same temporary error.
    let (mut raw, _) = Raw::connect(&down.ws_url(), &down.token("42")).await;
    let reply = raw
        .call(json!({"subscribe": {"channel": "board:open"}}))
        .await;
    assert_eq!(reply["error"]["code"], 100, "{reply}");
    assert_eq!(reply["error"]["temporary"], true);
    let reply = raw.call(json!({"subscribe": {"channel": "live:x"}})).await;
    assert!(reply.get("error").is_none(), "{reply}");
}

#[tokio::test]
async fn the_subscribe_hooks_filter_applies_live_and_in_recovery_across_nodes() {
    let (backend, base) = backend().await;
    let redis = RedisServer::start();
    let nodes = Herald::group(2, &redis.url(), &hooks(&base)).await;
    let (mut a, _) = connect_with(&nodes[0], &[("Cookie", "session=alice")]).await;
    let reply = a
        .call(json!({"subscribe": {"channel": "board:open"}}))
        .await;
    assert_eq!(reply["subscribe"]["data"], json!({"columns": 3}), "{reply}");
    let reply = a
        .call(json!({"subscribe": {"channel": "board:tasks"}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let epoch = reply["subscribe"]["epoch"].clone();
    let call = backend.calls("subscribe").pop().expect("a subscribe call");
    assert_eq!(call.body["user"], "alice");
    assert_eq!(call.body["channel"], "board:tasks");

    let publish = |n: u64, board: &'static str| {
        let node = &nodes[1];
        async move {
            let r = node
                .api(
                    "publish",
                    json!({"channel": "board:tasks", "data": {"n": n}, "tags": {"board": board}}),
                )
                .await;
            assert!(r.get("error").is_none(), "{r}");
        }
    };
    for (n, board) in [(1, "7"), (2, "8"), (3, "7")] {
        publish(n, board).await;
    }
    let first = a.next_publication("board:tasks").await;
    let second = a.next_publication("board:tasks").await;
    assert_eq!((first.offset, second.offset), (1, 3));
    drop(a);

    // Missed while away: 4 (board 8), 5 (board 7), 6 (board 9). Recovery through the
    // other node gives 5 alone, and a position at the top.
    for (n, board) in [(4, "8"), (5, "7"), (6, "9")] {
        publish(n, board).await;
    }
    let (mut b, _) = connect_with(&nodes[1], &[("Cookie", "session=alice")]).await;
    let reply = b
        .call(json!({"subscribe": {"channel": "board:tasks", "recover": true, "offset": 3, "epoch": epoch}}))
        .await;
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], true, "{reply}");
    let offsets: Vec<u64> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [5]);
    assert_eq!(sub["offset"], 6);
}

#[tokio::test]
async fn the_publish_hook_authorizes_and_rewrites_client_publications() {
    let (backend, base) = backend().await;
    let h = Herald::start(&hooks(&base)).await;
    let (mut raw, _) = connect_with(&h, &[("Cookie", "session=alice")]).await;
    raw.call(json!({"subscribe": {"channel": "board:open"}}))
        .await;
    // The namespace allows no client publications: the backend does.
    let reply = raw
        .call(json!({"publish": {"channel": "board:open", "data": {"text": "hello"}}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let p = raw.next_publication("board:open").await;
    let data: Value = serde_json::from_str(p.data.get()).expect("json");
    assert_eq!(data, json!({"text": "HELLO", "by": "alice"}));
    assert_eq!(p.tags.get("kind").map(String::as_str), Some("note"));
    let reply = raw
        .call(json!({"publish": {"channel": "board:readonly", "data": {"text": "x"}}}))
        .await;
    assert_eq!(reply["error"]["code"], 103, "{reply}");
    assert_eq!(reply["error"]["message"], "read only");
    assert_eq!(h.history_data("board:readonly").await, Vec::<Value>::new());
    let call = backend.calls("publish").pop().expect("a publish call");
    assert_eq!(call.body["data"], json!({"text": "x"}));
}

#[tokio::test]
async fn the_refresh_hooks_extend_and_then_end_connections_and_subscriptions() {
    let (backend, base) = backend().await;
    let h = Herald::start(&hooks(&base)).await;
    let (mut raw, reply) = connect_with(&h, &[("Cookie", "session=brief")]).await;
    // The server refreshes: the client is never asked for a token.
    assert!(reply["connect"].get("expires").is_none(), "{reply}");
    let reply = raw
        .call(json!({"subscribe": {"channel": "board:brief"}}))
        .await;
    assert!(reply["subscribe"].get("expires").is_none(), "{reply}");
    // board:brief: extended once at ~2 s, ended at ~4 s with 2501.
    let started = std::time::Instant::now();
    let unsubscribed = loop {
        let r = raw.next_reply().await;
        if let Some(push) = r.push
            && let Some(u) = push.unsubscribe
        {
            break (push.channel, u.code);
        }
    };
    assert_eq!(unsubscribed, ("board:brief".to_owned(), 2501));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend.sub_refreshes.load(Ordering::SeqCst), 2);
    // The connection (four seconds at a time): extended once, then ended with 3005.
    assert_eq!(raw.closed_within(Duration::from_secs(12)).await, 3005);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(backend.refreshes.load(Ordering::SeqCst), 2);
    let call = backend.calls("refresh").pop().expect("a refresh call");
    assert_eq!(call.body["user"], "brief");
    assert_eq!(call.headers.get("cookie").expect("cookie"), "session=brief");
}

#[tokio::test]
async fn proxy_settings_are_checked_before_the_node_starts() {
    let mut node = Herald::launch(
        r#"
[proxy.connect]
url = "backend/connect"
[namespaces.board]
subscribe_proxy = true
"#,
        &[],
    );
    assert_ne!(node.wait_exit(Duration::from_secs(10)).await, Some(0));
    let log = node.log();
    assert!(log.contains("proxy.connect.url"), "{log}");
    assert!(log.contains("namespaces.board.subscribe_proxy"), "{log}");
}

#[tokio::test]
async fn calls_in_flight_are_bounded_per_node() {
    let (backend, base) = backend().await;
    let config = hooks(&base)
        .replace("[proxy]\n", "[proxy]\nmax_in_flight = 2\n")
        .replace("timeout = \"500ms\"", "timeout = \"3s\"");
    let h = Herald::start(&config).await;
    // Six connects at once, each answered in 150 ms: two at a time, all let in.
    let connects = (0..6).map(|_| connect_with(&h, &[("Cookie", "session=sleepy")]));
    let replies = futures_util::future::join_all(connects).await;
    for (_, reply) in &replies {
        assert!(reply.get("error").is_none(), "{reply}");
    }
    assert_eq!(backend.most_busy.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_subscribe_hook_can_ask_for_conflation() {
    let (_backend, base) = backend().await;
    let h = Herald::start(&hooks(&base)).await;
    let (mut raw, _) = connect_with(&h, &[("Cookie", "session=alice")]).await;
    let reply = raw
        .call(json!({"subscribe": {"channel": "board:tiles"}}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    for n in 1..=30 {
        let r = h
            .api(
                "publish",
                json!({"channel": "board:tiles", "data": {"n": n}, "tags": {"tile": "a"}}),
            )
            .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    // The first at once, then the newest when the window ends: 30 went out as far
    // fewer, the last one last.
    let mut got = Vec::new();
    while let Some(herald_tests::raw::Event::Reply(r)) =
        raw.next_within(Duration::from_millis(900)).await
    {
        if let Some(p) = r.push.and_then(|p| p.publication) {
            let data: Value = serde_json::from_str(p.data.get()).expect("json");
            got.push(data["n"].as_u64().expect("n"));
        }
    }
    assert!(got.len() < 30 && got.first() == Some(&1), "{got:?}");
    assert_eq!(got.last(), Some(&30), "{got:?}");
}
