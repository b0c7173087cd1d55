//! Who may connect: Origin checks, connection limits per node, address and user, connect
//! rates, dry runs, CORS on the server API, and `X-Forwarded-For` from trusted proxies,
//! against real `herald` processes.

use herald_tests::Herald;
use herald_tests::raw::{Raw, Refused};
use serde_json::json;
use std::net::IpAddr;
use std::time::Duration;

const HOME: &str = "127.0.0.1";
const AWAY: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

async fn open(h: &Herald, from: &str, headers: &[(&str, &str)]) -> Result<Raw, Refused> {
    Raw::try_open(&h.ws_url(), ip(from), headers).await
}

fn refused(status: u16, retry_after: Option<&str>) -> Refused {
    Refused {
        status,
        retry_after: retry_after.map(str::to_owned),
    }
}

/// Retries `open` until the node admits it: a released slot is freed when the closed
/// connection's task has ended, a moment after the client sees the close.
async fn admitted_soon(h: &Herald, from: &str, headers: &[(&str, &str)]) -> Raw {
    for _ in 0..100 {
        if let Ok(raw) = open(h, from, headers).await {
            return raw;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never admitted again; log:\n{}", h.log());
}

async fn refusals(h: &Herald, limit: &str, mode: &str) -> f64 {
    h.metric(&format!(
        "herald_admission_refusals_total{{limit=\"{limit}\",mode=\"{mode}\"}}"
    ))
    .await
}

#[tokio::test]
async fn cross_site_origins_are_refused_and_the_own_host_is_not() {
    let h = Herald::start("").await;
    let own = format!("http://127.0.0.1:{}", h.port);
    let other_port = format!("http://127.0.0.1:{}", h.port + 1);
    assert_eq!(
        open(&h, HOME, &[("Origin", "https://evil.example")])
            .await
            .err(),
        Some(refused(403, None))
    );
    assert_eq!(
        open(&h, HOME, &[("Origin", &other_port)]).await.err(),
        Some(refused(403, None))
    );
    assert_eq!(
        open(&h, HOME, &[("Origin", "null")]).await.err(),
        Some(refused(403, None))
    );
    // The page's own host on any scheme, and clients that send no Origin at all.
    let mut same = open(&h, HOME, &[("Origin", &own)]).await.expect("own host");
    let reply = same.call(json!({"connect": {"token": h.token("1")}})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    open(
        &h,
        HOME,
        &[("Origin", &format!("https://127.0.0.1:{}", h.port))],
    )
    .await
    .expect("own host, other scheme");
    open(&h, HOME, &[]).await.expect("no Origin");
    assert_eq!(refusals(&h, "origin", "enforced").await, 3.0);
    // One log line for the first refusal; the next ones are held back and counted.
    let lines = h
        .log()
        .lines()
        .filter(|l| l.contains("connection refused by a limit") && l.contains("origin"))
        .count();
    assert_eq!(lines, 1, "{}", h.log());
}

#[tokio::test]
async fn allowed_origins_admit_listed_origins_and_dev_admits_all() {
    let h = Herald::start(
        "[client]\nallowed_origins = [\"https://app.example.com\", \"*.example.org\"]\n",
    )
    .await;
    for origin in [
        "https://app.example.com",
        "https://a.example.org",
        "http://b.example.org",
    ] {
        open(&h, HOME, &[("Origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e:?}"));
    }
    for origin in [
        "http://app.example.com",
        "https://example.org",
        "https://evil-example.org",
        "https://evil.example",
    ] {
        assert_eq!(
            open(&h, HOME, &[("Origin", origin)]).await.err(),
            Some(refused(403, None)),
            "{origin}"
        );
    }

    let dev = Herald::start_with("", &["--dev"]).await;
    open(&dev, HOME, &[("Origin", "https://evil.example")])
        .await
        .expect("--dev allows every origin");
}

#[tokio::test]
async fn a_full_node_answers_503_and_keeps_serving_its_connections() {
    let h = Herald::start("[client.limits.connections]\nmax = 2\n").await;
    let (mut subscriber, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    let sub = subscriber
        .call(json!({"subscribe": {"channel": "news"}}))
        .await;
    assert!(sub.get("error").is_none(), "{sub}");
    // A socket that never authenticated takes a place too.
    let idle = open(&h, HOME, &[]).await.expect("second of two");
    assert_eq!(
        open(&h, AWAY, &[]).await.err(),
        Some(refused(503, Some("5")))
    );
    h.publish("news", json!({"n": 1})).await;
    assert_eq!(subscriber.publications("news", 1).await.len(), 1);
    assert_eq!(refusals(&h, "connections", "enforced").await, 1.0);
    assert!(
        h.log().contains("connection refused by a limit"),
        "{}",
        h.log()
    );
    drop(idle);
    admitted_soon(&h, AWAY, &[]).await;
}

#[tokio::test]
async fn one_address_at_its_limit_does_not_stop_another() {
    let h = Herald::start("[client.limits.connections_per_ip]\nmax = 1\n").await;
    let first = open(&h, HOME, &[]).await.expect("first from home");
    assert_eq!(
        open(&h, HOME, &[]).await.err(),
        Some(refused(429, Some("5")))
    );
    let _away = open(&h, AWAY, &[]).await.expect("another address");
    drop(first);
    admitted_soon(&h, HOME, &[]).await;
}

#[tokio::test]
async fn the_connect_rate_answers_429_until_its_bucket_refills() {
    let h = Herald::start(
        "[client.limits.connect_rate_per_ip]\nper_second = 1\nburst = 2\n[client.limits.connect_rate]\nper_second = 1000\n",
    )
    .await;
    let _a = open(&h, HOME, &[]).await.expect("1 of the burst");
    let _b = open(&h, HOME, &[]).await.expect("2 of the burst");
    assert_eq!(
        open(&h, HOME, &[]).await.err(),
        Some(refused(429, Some("1")))
    );
    let _away = open(&h, AWAY, &[])
        .await
        .expect("another address has its own bucket");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _c = open(&h, HOME, &[]).await.expect("a token came back");
    assert_eq!(refusals(&h, "connect_rate_per_ip", "enforced").await, 1.0);
}

#[tokio::test]
async fn the_user_limit_refuses_the_extra_connect_with_a_temporary_111() {
    let h = Herald::start("[client.limits.connections_per_user]\nmax = 1\n").await;
    let (first, _) = Raw::connect(&h.ws_url(), &h.token("alice")).await;
    let mut extra = open(&h, HOME, &[]).await.expect("the socket opens");
    let reply = extra
        .call(json!({"connect": {"token": h.token("alice")}}))
        .await;
    assert_eq!(reply["error"]["code"], 111, "{reply}");
    assert_eq!(reply["error"]["temporary"], true, "{reply}");
    let (_bob, _) = Raw::connect(&h.ws_url(), &h.token("bob")).await;
    assert_eq!(refusals(&h, "connections_per_user", "enforced").await, 1.0);
    // Released when the connection ends, however it ends (here: the socket just drops).
    drop(first);
    for attempt in 0.. {
        let mut again = open(&h, HOME, &[]).await.expect("opens");
        let reply = again
            .call(json!({"connect": {"token": h.token("alice")}}))
            .await;
        if reply.get("connect").is_some() {
            break;
        }
        assert!(attempt < 50, "alice's place was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dry_run_admits_and_counts() {
    let h = Herald::start(
        "[client.limits.connections_per_ip]\nmax = 1\ndry_run = true\n[client.limits.connections_per_user]\nmax = 1\ndry_run = true\n",
    )
    .await;
    let (_a, _) = Raw::connect(&h.ws_url(), &h.token("alice")).await;
    let (_b, _) = Raw::connect(&h.ws_url(), &h.token("alice")).await;
    assert_eq!(refusals(&h, "connections_per_ip", "dry_run").await, 1.0);
    assert_eq!(refusals(&h, "connections_per_user", "dry_run").await, 1.0);
    assert_eq!(refusals(&h, "connections_per_ip", "enforced").await, 0.0);
    assert!(
        h.log()
            .contains("connection over a limit admitted (dry run)"),
        "{}",
        h.log()
    );
}

#[tokio::test]
async fn the_api_answers_preflights_for_allowed_origins_only() {
    let h = Herald::start("[client]\nallowed_origins = [\"https://admin.example.com\"]\n").await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, h.url("/api/publish"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key, content-type")
            .send()
    };
    let ok = preflight("https://admin.example.com")
        .await
        .expect("answered");
    assert_eq!(ok.status(), 204);
    let header = |name: &str| {
        ok.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("access-control-allow-origin"),
        "https://admin.example.com"
    );
    assert!(header("access-control-allow-headers").contains("X-API-Key"));
    assert!(header("access-control-allow-methods").contains("POST"));
    let evil = preflight("https://evil.example").await.expect("answered");
    assert_eq!(evil.status(), 403);

    let call = |origin: Option<&'static str>| {
        let mut r = http
            .post(h.url("/api/info"))
            .header("X-API-Key", &h.api_key)
            .body("{}");
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        r.send()
    };
    let allowed = call(Some("https://admin.example.com")).await.expect("sent");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    assert_eq!(
        call(Some("https://evil.example"))
            .await
            .expect("sent")
            .status(),
        403
    );
    // Server-to-server calls carry no Origin and are unchanged.
    let plain = call(None).await.expect("sent");
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let h = Herald::start(
        "[client]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[client.limits.connections_per_ip]\nmax = 1\n",
    )
    .await;
    let xff = |client: &'static str| [("X-Forwarded-For", client)];
    // From the trusted proxy: each forwarded client is counted on its own.
    let _c1 = open(&h, HOME, &xff("203.0.113.1")).await.expect("client 1");
    assert_eq!(
        open(&h, HOME, &xff("203.0.113.1")).await.err(),
        Some(refused(429, Some("5"))),
        "the same client again"
    );
    let _c2 = open(&h, HOME, &xff("198.51.100.7, 203.0.113.2"))
        .await
        .expect("the nearest untrusted entry is the client");
    // From anyone else the header is ignored: the peer is the client.
    let _away = open(&h, AWAY, &xff("203.0.113.3"))
        .await
        .expect("first from away");
    assert_eq!(
        open(&h, AWAY, &xff("203.0.113.4")).await.err(),
        Some(refused(429, Some("5"))),
        "a forged header from an untrusted peer changes nothing"
    );
}
