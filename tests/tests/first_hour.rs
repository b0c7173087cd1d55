//! What a new user meets in the first hour: help that says where clients connect, errors
//! that name the fix, a `--dev` node whose secret and key survive a restart, a page at
//! `/`, and logs that explain each connection.

use herald_tests::raw::Raw;
use herald_tests::{Herald, free_port, herald_bin};

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(herald_bin())
        .args(args)
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .output()
        .expect("run herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "herald-first-hour-{}-{}-{name}",
        std::process::id(),
        free_port()
    ))
}

#[test]
fn help_says_where_clients_connect_and_lists_the_choices() {
    let out = herald(&["--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("/connection/websocket"), "{help}");
    assert!(help.contains("herald serve --dev"), "{help}");
    let out = herald(&["serve", "--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("[possible values: memory, redis]"), "{help}");
    assert!(help.contains("[possible values: human, json]"), "{help}");
    assert!(help.contains("--dev-reset"), "{help}");
}

#[test]
fn gentoken_refuses_a_secret_no_node_accepts() {
    let out = herald(&["gentoken", "--user", "1", "--token-hmac-secret", "short"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at least 32"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn serve_without_a_key_says_how_to_give_one() {
    let out = herald(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for fix in [
        "--token-hmac-secret",
        "HERALD_TOKEN_HMAC_SECRET",
        "herald serve --dev",
    ] {
        assert!(err.contains(fix), "{fix} missing from: {err}");
    }
}

#[tokio::test]
async fn publish_errors_name_the_fix() {
    let h = Herald::start("").await;
    let url = h.url("");
    // Not JSON, though it looks like it: refused, nothing published.
    let out = herald(&[
        "publish",
        "news",
        "{text:hi}",
        "--url",
        &url,
        "--api-key",
        &h.api_key,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not valid JSON"),
        "{}",
        text(&out.stderr)
    );
    assert!(h.history_data("news").await.is_empty());
    // A bare word is still a string.
    let out = herald(&[
        "publish",
        "news",
        "hello",
        "--url",
        &url,
        "--api-key",
        &h.api_key,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The API path given as the base URL.
    let api = h.url("/api");
    let out = herald(&[
        "publish",
        "news",
        "1",
        "--url",
        &api,
        "--api-key",
        &h.api_key,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("without /api"),
        "{}",
        text(&out.stderr)
    );
    // No key.
    let out = herald(&["publish", "news", "1", "--url", &url]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--api-key") && err.contains("HERALD_API_KEY"),
        "{err}"
    );
    // Nothing there.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let out = herald(&["publish", "news", "1", "--url", &gone, "--api-key", "k"]);
    assert!(
        text(&out.stderr).contains("is a node running there"),
        "{}",
        text(&out.stderr)
    );
}

/// Starts `herald serve ARGS` with the dev state at `state`; returns it and its banner.
fn serve_dev(args: &[&str], state: &PathBuf) -> (Child, String) {
    let mut child = Command::new(herald_bin())
        .arg("serve")
        .args(args)
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .env("HERALD_DEV_STATE", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve --dev");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).expect("read") > 0 {
        banner.push_str(&line);
        if line.contains("In a browser") {
            break;
        }
        line.clear();
    }
    (child, banner)
}

fn banner_value(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn dev_mode_keeps_its_secret_and_key_across_restarts_until_reset() {
    let state = temp_path("dev.json");
    let port = free_port().to_string();
    let listen = format!(":{port}");
    let (mut first, banner) = serve_dev(&["--dev", "--listen", &listen], &state);
    let _ = first.kill();
    let _ = first.wait();
    let (secret, key) = (
        banner_value(&banner, "HMAC secret"),
        banner_value(&banner, "API key"),
    );
    assert_eq!(secret.len(), 48, "{banner}");
    // The admin page is on, with a kept password.
    let admin = banner_value(&banner, "Admin");
    let password = admin
        .split("(password ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_default()
        .to_owned();
    assert!(
        admin.starts_with(&format!("http://127.0.0.1:{port}/admin")) && password.len() >= 12,
        "{banner}"
    );
    assert!(banner.contains(&state.display().to_string()), "{banner}");
    // `:PORT` listens everywhere; the banner's commands use an address that works.
    assert!(
        banner.contains(&format!("ws://127.0.0.1:{port}/")),
        "{banner}"
    );
    // The commands name this binary, not a `herald` the PATH may not have.
    let command = herald_bin().display().to_string();
    assert!(
        banner.contains("herald tail")
            && (banner.contains(&command)
                || banner.contains("./")
                || banner.contains(" herald tail")),
        "{banner}"
    );
    let (mut second, banner) = serve_dev(&["--dev", "--listen", "127.0.0.1:0"], &state);
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(banner_value(&banner, "HMAC secret"), secret);
    assert_eq!(banner_value(&banner, "API key"), key);
    assert!(banner_value(&banner, "Admin").ends_with(&format!("(password {password})")));
    let (mut third, banner) =
        serve_dev(&["--dev", "--dev-reset", "--listen", "127.0.0.1:0"], &state);
    let _ = third.kill();
    let _ = third.wait();
    assert_ne!(banner_value(&banner, "HMAC secret"), secret);
    assert_ne!(banner_value(&banner, "API key"), key);
    assert!(
        !banner_value(&banner, "Admin").contains(&password),
        "{banner}"
    );
    let kept = std::fs::read_to_string(&state).expect("state");
    assert!(kept.contains(&banner_value(&banner, "API key")));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&state).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "only its owner may read it");
    let _ = std::fs::remove_file(state);
}

#[tokio::test]
async fn the_node_page_logs_and_names_explain_the_node() {
    // A node with a key and nothing else: no namespaces, which it says at start.
    let port = free_port();
    let log_path = temp_path("serve.log");
    let mut child = Command::new(herald_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--token-hmac-secret", &herald_tests::secret()])
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .env_remove("HERALD_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        if let Ok(r) = reqwest::get(format!("{base}/")).await {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let html = page.text().await.expect("text");
    for part in [
        "Herald",
        "memory",
        "ready",
        "/connection/websocket",
        "/api/publish",
    ] {
        assert!(html.contains(part), "{part} missing from the page");
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned();
    assert!(
        html.contains(&hostname),
        "the node is named after the machine"
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("no namespaces are configured"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log}");
    let _ = std::fs::remove_file(log_path);
}

#[tokio::test]
async fn each_connection_ends_with_a_summary_line() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("summary-user")).await;
    raw.call(json!({"subscribe": {"channel": "news"}})).await;
    drop(raw);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = h.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("connection closed") && l.contains("summary-user"))
        {
            for part in ["summary-user", "commands=2", "ended_by"] {
                assert!(line.contains(part), "{part} missing from: {line}");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no summary in: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `herald tail ARGS` for at most `within`; its exit code (None: still running,
/// killed) and stderr.
fn tail_for(args: &[&str], within: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(herald_bin())
        .arg("tail")
        .args(args)
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .env_remove("HERALD_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tail");
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    (code, err)
}

#[tokio::test]
async fn tail_says_what_is_wrong_and_stops_when_it_cannot_go_on() {
    // Nothing there: the URL, the cause and the next attempt; it keeps trying.
    let gone = format!("ws://127.0.0.1:{}/connection/websocket", free_port());
    let (code, err) = tail_for(&["news", "--url", &gone], Duration::from_secs(2));
    assert_eq!(code, None, "{err}");
    for part in [
        gone.as_str(),
        "Connection refused",
        "is a node running there",
        "next attempt in",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    assert!(!err.contains("connect called"), "{err}");
    let h = Herald::start("").await;
    // A wrong path.
    let wrong = h.url("/ws").replace("http://", "ws://");
    let (_, err) = tail_for(&["news", "--url", &wrong], Duration::from_secs(2));
    assert!(
        err.contains("404") && err.contains("/connection/websocket"),
        "{err}"
    );
    // No token where one is needed: 3500 is final, so tail ends, saying what to give.
    let (code, err) = tail_for(&["news", "--url", &h.ws_url()], Duration::from_secs(5));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("3500") && err.contains("--token"), "{err}");
    // A `$` channel: a subscription token is signed with the secret.
    let mut tail = Command::new(herald_bin())
        .args([
            "tail",
            "$board",
            "--url",
            &h.ws_url(),
            "--token-hmac-secret",
            &h.secret,
        ])
        .args(["--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tail");
    let mut stderr = BufReader::new(tail.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("subscribed to") {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("read") > 0, "tail ended");
    }
    h.publish("$board", json!({"n": 1})).await;
    let out = tail.wait_with_output().expect("tail");
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains(r#""n":1"#),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn api_errors_say_what_is_wrong_and_malformed_requests_are_400() {
    let h = Herald::start("").await;
    let post = |path: &str, body: &'static str| {
        let request = reqwest::Client::new()
            .post(h.url(path))
            .header("X-API-Key", &h.api_key)
            .body(body);
        async move {
            let r = request.send().await.expect("post");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.expect("json");
            (
                status,
                body["error"]["message"].as_str().unwrap_or("").to_owned(),
                body,
            )
        }
    };
    let (status, message, _) = post("/api/publish", "").await;
    assert_eq!(status, 400);
    assert!(
        message.contains("the body is empty") && message.contains(r#""channel""#),
        "{message}"
    );
    assert!(!message.contains("line 1"), "{message}");
    let (status, message, _) = post("/api/publish", r#"{"channel": "news"}"#).await;
    assert_eq!(status, 400);
    assert!(
        message.contains("data") && message.contains("takes params such as"),
        "{message}"
    );
    let long = format!(r#"{{"channel": "{}", "data": 1}}"#, "x".repeat(5000));
    let r = reqwest::Client::new()
        .post(h.url("/api/publish"))
        .header("X-API-Key", &h.api_key)
        .body(long)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("5000 bytes") && message.contains("at most"),
        "{message}"
    );
    let (status, message, body) = post("/api/publish", r#"{"channel": "nope:x", "data": 1}"#).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (200, Some(102)));
    assert!(message.contains(r#"namespace "nope""#), "{message}");
    assert!(h.log().contains("api call refused"), "refusals are logged");
}

#[test]
fn checkconfig_reports_every_problem_with_its_key_and_variable() {
    let path = temp_path("bad.toml");
    std::fs::write(
        &path,
        "listen = \"not-an-address\"\n[client]\nping_interval = \"soon\"\nqueue_size = \"big\"\nallow_anonymous = \"yes\"\n[namespaces.chat]\nhistory_size = \"x\"\n",
    )
    .expect("write");
    let out = herald(&["checkconfig", "--config", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("5 problem(s)"), "{err}");
    assert!(
        err.contains("listen (") && err.contains("HOST:PORT, e.g. 127.0.0.1:8000"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
    let out = Command::new(herald_bin())
        .args(["checkconfig"])
        .env("HERALD_CLIENT_PING_INTERVAL", "soon")
        .env("HERALD_TOKEN_HMAC_SECRET", herald_tests::secret())
        .output()
        .expect("run");
    assert!(
        text(&out.stderr).contains("HERALD_CLIENT_PING_INTERVAL"),
        "{}",
        text(&out.stderr)
    );
    // A misspelt variable: OK, but the warning is said and counted.
    let out = Command::new(herald_bin())
        .args(["checkconfig"])
        .env("HERALD_CLIENT_PING_INTERVL", "5s")
        .env("HERALD_TOKEN_HMAC_SECRET", herald_tests::secret())
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("HERALD_CLIENT_PING_INTERVL"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("with 1 warning"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_redis_that_is_not_there_is_said_in_words() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let out = herald(&[
        "serve",
        "--broker",
        "redis",
        "--redis-url",
        &url,
        "--token-hmac-secret",
        &herald_tests::secret(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("nothing answers at {url}")), "{err}");
    assert!(
        !err.contains("Os {") && !err.contains("kind:"),
        "debug text: {err}"
    );
}

#[tokio::test]
async fn top_shows_the_nodes_and_the_busiest_channels() {
    let h = Herald::start("").await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("1")).await;
    raw.call(json!({"subscribe": {"channel": "news"}})).await;
    h.publish("news", json!(1)).await;
    let out = herald(&[
        "top",
        "--once",
        "--url",
        &h.url(""),
        "--api-key",
        &h.api_key,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("NODE") && screen.contains("CLIENTS"),
        "{screen}"
    );
    let news = screen
        .lines()
        .find(|l| l.starts_with("news "))
        .expect("news listed");
    assert!(news.trim_end().ends_with(" 1"), "{screen}");
    assert!(!screen.contains('\u{1b}'), "no escape codes off a terminal");
    let out = herald(&["top", "--once", "--url", &h.url("")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--api-key"),
        "{}",
        text(&out.stderr)
    );
}
