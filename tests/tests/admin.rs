//! The admin page (`/admin`) against real nodes: off by default, its own login, a
//! session that opens only the page's API (never the API key), a live tail, and the
//! cluster's nodes, channels and disconnects seen from any node of a Redis cluster.

use herald_tests::raw::Raw;
use herald_tests::redis::RedisServer;
use herald_tests::{Herald, now, secret, sign};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";

fn admin_section(admin_secret: &str) -> String {
    format!("[admin]\nenabled = true\npassword = \"{PASSWORD}\"\nsecret = \"{admin_secret}\"\n")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Signs in and returns the `Cookie` header value.
async fn login(h: &Herald) -> String {
    let r = http()
        .post(h.url("/admin/login"))
        .header("x-herald-admin", "1")
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    set.split(';').next().expect("name=value").to_owned()
}

/// Calls a method through the page's API with a session cookie.
async fn admin_call(h: &Herald, cookie: &str, method: &str, params: Value) -> (StatusCode, Value) {
    let r = http()
        .post(h.url(&format!("/admin/api/{method}")))
        .header("x-herald-admin", "1")
        .header("cookie", cookie)
        .json(&params)
        .send()
        .await
        .expect("call");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_page_is_off_unless_enabled() {
    let h = Herald::start("").await;
    for (method, path) in [
        ("GET", "/admin"),
        ("POST", "/admin/api/info"),
        ("POST", "/admin/login"),
    ] {
        let r = http()
            .request(method.parse().expect("method"), h.url(path))
            .header("x-herald-admin", "1")
            .header("x-api-key", &h.api_key)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body = r.text().await.expect("body");
        assert!(body.contains("admin.enabled"), "{body}");
    }
    let home = http().get(h.url("/")).send().await.expect("home");
    let home = home.text().await.expect("body");
    assert!(home.contains("Admin page: off"), "{home}");
}

#[tokio::test]
async fn a_password_guesser_locks_out_only_its_own_address() {
    let extra = format!(
        "{}[client]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        admin_section(&secret())
    );
    let h = Herald::start(&extra).await;
    let attempt = |from: &'static str, password: &'static str| {
        let url = h.url("/admin/login");
        async move {
            http()
                .post(url)
                .header("x-herald-admin", "1")
                .header("x-forwarded-for", from)
                .json(&json!({ "password": password }))
                .send()
                .await
                .expect("login")
                .status()
        }
    };
    let guesses = (0..20).map(|_| attempt("203.0.113.7", "a wrong password guess"));
    for status in futures_util::future::join_all(guesses).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Spent: even the right password from that address waits out the minute.
    assert_eq!(
        attempt("203.0.113.7", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("198.51.100.2", PASSWORD).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn bad_admin_settings_stop_the_node_and_name_the_fix() {
    let mut h = Herald::launch("[admin]\nenabled = true\npassword = \"short\"\n", &[]);
    let code = h.wait_exit(Duration::from_secs(10)).await;
    assert!(code.is_some_and(|c| c != 0), "{code:?}");
    let log = h.log();
    assert!(
        log.contains("admin.password") && log.contains("12 characters"),
        "{log}"
    );
    assert!(
        log.contains("admin.secret") && log.contains("HERALD_ADMIN_SECRET"),
        "{log}"
    );

    // The admin secret must not be the token secret (a client's token would open the
    // page), and a login lasts at most 30 days.
    let same = secret();
    let file = std::env::temp_dir().join(format!("herald-admin-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "[token]\nhmac_secret = \"{same}\"\n[admin]\nenabled = true\npassword = \"{PASSWORD}\"\nsecret = \"{same}\"\nsession_ttl = \"90d\"\n"
        ),
    )
    .expect("write");
    let out = std::process::Command::new(herald_tests::herald_bin())
        .args(["checkconfig", "--config"])
        .arg(&file)
        .output()
        .expect("checkconfig");
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("must differ from token.hmac_secret"), "{err}");
    assert!(err.contains("admin.session_ttl"), "{err}");
}

#[tokio::test]
async fn only_a_signed_in_page_calls_the_api() {
    let admin_secret = secret();
    let h = Herald::start(&admin_section(&admin_secret)).await;
    let client = http();

    // The page and its assets, with a policy that loads nothing from elsewhere.
    let page = client.get(h.url("/admin")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.expect("html");
    assert!(
        html.contains("/admin/admin.js") && !html.contains("http"),
        "{html}"
    );
    for asset in ["/admin/admin.js", "/admin/admin.css"] {
        let r = client.get(h.url(asset)).send().await.expect("asset");
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
    }

    // No session: 401, whatever else the request carries (the API key included).
    let r = client
        .post(h.url("/admin/api/info"))
        .header("x-herald-admin", "1")
        .header("x-api-key", &h.api_key)
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A wrong password, and a login without the page's header.
    let r = client
        .post(h.url("/admin/login"))
        .header("x-herald-admin", "1")
        .json(&json!({ "password": "correct horse battery stapl" }))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    let r = client
        .post(h.url("/admin/login"))
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let cookie = login(&h).await;
    let (status, info) = admin_call(&h, &cookie, "info", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(
        info["result"]["nodes"].as_array().map(Vec::len),
        Some(1),
        "{info}"
    );
    assert_eq!(info["result"]["nodes"][0]["broker"], "memory", "{info}");
    assert_eq!(info["result"]["nodes"][0]["ready"], true, "{info}");

    // The session without the page's header (what another site could make a browser
    // send) is refused.
    let r = client
        .post(h.url("/admin/api/info"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Forged sessions: signed with another secret, or a connection token of the node.
    let forged = sign(
        &secret(),
        &json!({ "sub": "admin", "aud": "herald-admin", "exp": now() + 600 }),
    );
    let connection_token = sign(&h.secret, &json!({ "sub": "admin", "exp": now() + 600 }));
    let expired = sign(
        &admin_secret,
        &json!({ "sub": "admin", "aud": "herald-admin", "exp": now() - 5 }),
    );
    for token in [forged, connection_token, expired] {
        let (status, _) = admin_call(&h, &format!("herald_admin={token}"), "info", json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    // Publishing and its errors, as the API gives them.
    let (status, reply) = admin_call(
        &h,
        &cookie,
        "publish",
        json!({"channel": "news", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["result"]["offset"], 1, "{reply}");
    let (status, reply) = admin_call(
        &h,
        &cookie,
        "publish",
        json!({"channel": "nope:x", "data": 1}),
    )
    .await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        "{status} {reply}"
    );

    // Signing out clears the cookie.
    let r = client
        .post(h.url("/admin/logout"))
        .header("x-herald-admin", "1")
        .header("cookie", &cookie)
        .send()
        .await
        .expect("logout");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        set.starts_with("herald_admin=;") && set.contains("Max-Age=0"),
        "{set}"
    );
}

/// Reads server-sent events from a streaming response until one named `name` comes.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = "";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if event == name {
                return serde_json::from_str(&data).expect("event data is JSON");
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {name} event"))
            .expect("stream");
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended before a {name} event"));
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_live_tail_follows_a_channel_and_ends_its_subscription() {
    let h = Herald::start(&admin_section(&secret())).await;
    let cookie = login(&h).await;
    let client = http();

    let r = client
        .get(h.url("/admin/tail?channel=nope:x"))
        .header("cookie", &cookie)
        .header("x-herald-admin", "1")
        .send()
        .await
        .expect("tail");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("nope"));
    let r = client
        .get(h.url("/admin/tail?channel=news"))
        .header("x-herald-admin", "1")
        .send()
        .await
        .expect("tail");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .get(h.url("/admin/tail?channel=news"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("tail");
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a tail wants the page's header too"
    );

    let mut tail = client
        .get(h.url("/admin/tail?channel=news"))
        .header("cookie", &cookie)
        .header("x-herald-admin", "1")
        .send()
        .await
        .expect("tail");
    assert_eq!(tail.status(), StatusCode::OK);
    assert_eq!(tail.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let open = next_event(&mut tail, &mut buffer, "open").await;
    assert_eq!(open["channel"], "news");
    for n in 1..=3 {
        h.publish("news", json!({ "n": n })).await;
    }
    for n in 1..=3 {
        let push = next_event(&mut tail, &mut buffer, "publication").await;
        assert_eq!(push["push"]["pub"]["data"]["n"], n, "{push}");
        assert_eq!(push["push"]["pub"]["offset"], n, "{push}");
    }
    let subs = |info: &Value| info["result"]["nodes"][0]["num_subs"].as_u64();
    assert_eq!(subs(&h.api("info", json!({})).await), Some(1));
    drop(tail);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subs(&h.api("info", json!({})).await) != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tail's subscription stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn any_node_shows_the_whole_cluster() {
    let redis = RedisServer::start();
    let admin_secret = secret();
    let mut nodes = Herald::group(2, &redis.url(), &admin_section(&admin_secret)).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    // A subscriber on b, and a connection b closes with 3500.
    let (mut reader, _) = Raw::connect(&b.ws_url(), &b.token("reader")).await;
    let reply = reader
        .call(json!({ "subscribe": { "channel": "news" } }))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    let mut bad = Raw::open(&b.ws_url()).await;
    bad.command(json!({ "connect": { "token": "not-a-token" } }))
        .await;
    assert_eq!(bad.closed_within(Duration::from_secs(5)).await, 3500);

    // A session made through a works on b: one secret for the cluster.
    let cookie = login(a).await;
    let (status, _) = admin_call(b, &cookie, "info", json!({})).await;
    assert_eq!(status, StatusCode::OK);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let info = loop {
        let (_, info) = admin_call(a, &cookie, "info", json!({})).await;
        let nodes = info["result"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let seen_3500 = nodes.iter().any(|n| {
            n["recent_disconnects"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["code"] == 3500))
        });
        let reader_counted = nodes
            .iter()
            .any(|n| n["num_subs"] == 1 && n["num_clients"] == 1);
        if nodes.len() == 2 && seen_3500 && reader_counted {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster view: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<&str> = info["result"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["broker"].as_str())
        .collect();
    assert_eq!(names, ["redis", "redis"], "{info}");

    // The channel subscribed on b, listed through a (and found by a pattern).
    for params in [json!({}), json!({ "pattern": "*ew*" })] {
        let (_, channels) = admin_call(a, &cookie, "channels", params.clone()).await;
        assert_eq!(
            channels["result"]["channels"]["news"]["num_clients"], 1,
            "{params} {channels}"
        );
        assert!(
            channels["result"].get("missing_nodes").is_none(),
            "{channels}"
        );
    }
    let (_, channels) = admin_call(a, &cookie, "channels", json!({ "pattern": "chat:*" })).await;
    assert_eq!(channels["result"]["channels"], json!({}), "{channels}");

    // A tail opened on a gets what is published through b.
    let mut tail = http()
        .get(a.url("/admin/tail?channel=news"))
        .header("cookie", &cookie)
        .header("x-herald-admin", "1")
        .send()
        .await
        .expect("tail");
    let mut buffer = String::new();
    next_event(&mut tail, &mut buffer, "open").await;
    b.publish("news", json!({ "via": "b" })).await;
    let push = next_event(&mut tail, &mut buffer, "publication").await;
    assert_eq!(push["push"]["pub"]["data"]["via"], "b", "{push}");
    drop(tail);

    // A node that stops leaves the list at once (it removes its report).
    let mut b = nodes.pop().expect("b");
    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(10)).await.is_some());
    let a = &nodes[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, info) = admin_call(a, &cookie, "info", json!({})).await;
        if info["result"]["nodes"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b is still listed: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
