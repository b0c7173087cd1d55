//! The `herald` command line: help, version, config checking, tokens, publish,
//! publish-entity and tail.

use herald_tests::raw::Raw;
use herald_tests::{Herald, free_port, herald_bin, secret};
use serde_json::json;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where `serve --dev` keeps its secret and key in these tests (never the user's own).
fn dev_state() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("herald-cli-test-{}-dev.json", std::process::id()))
}

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(herald_bin())
        .args(args)
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .env("HERALD_DEV_STATE", dev_state())
        .output()
        .expect("run herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `herald tail ARGS` with the extra environment `env`, and returns once it
/// reports its subscription (so publishing after this cannot race it).
fn start_tail(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut tail = Command::new(herald_bin())
        .arg("tail")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tail");
    let mut stderr = BufReader::new(tail.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("subscribed to ") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0,
            "tail exited before subscribing"
        );
    }
    // Keep reading its stderr, so that its later messages never hit a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    tail
}

/// Waits for a tail started by [`start_tail`] to exit successfully; what it printed.
fn finish_tail(mut tail: Child) -> String {
    let mut stdout = String::new();
    tail.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    assert!(tail.wait().expect("wait").success(), "tail failed");
    stdout
}

#[test]
fn help_and_version() {
    let out = herald(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "serve",
        "gentoken",
        "publish",
        "publish-entity",
        "tail",
        "checkconfig",
        "healthcheck",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    let out = herald(&["--version"]);
    assert!(text(&out.stdout).starts_with("herald "));
}

#[test]
fn checkconfig_reports_every_problem_and_serve_refuses_bad_config() {
    let dir = std::env::temp_dir().join(format!("herald-cli-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "broker = \"redis\"\n[client]\nqueue_size = 1\nping_interval = \"1s\"\n",
    )
    .expect("write");
    let out = herald(&["checkconfig", "--config", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for key in [
        "redis_url",
        "token",
        "client.queue_size",
        "client.pong_timeout",
    ] {
        assert!(err.contains(key), "{key} missing:\n{err}");
    }
    let out = herald(&["serve", "--config", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid configuration"));

    let good = dir.join("good.toml");
    std::fs::write(&good, format!("[token]\nhmac_secret = \"{}\"\n", secret())).expect("write");
    let out = herald(&["checkconfig", "--config", good.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configuration OK"));
    let out = herald(&["checkconfig", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_fails_fast_on_a_taken_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let out = herald(&["serve", "--dev", "--listen", &addr]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot listen"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn gentoken_publish_and_tail_work_against_a_node() {
    let h = Herald::start("").await;
    let token = text(
        &herald(&[
            "gentoken",
            "--user",
            "cli",
            "--ttl",
            "10m",
            "--token-hmac-secret",
            &h.secret,
        ])
        .stdout,
    )
    .trim()
    .to_owned();
    let (_raw, connect) = Raw::connect(&h.ws_url(), &token).await;
    assert_eq!(connect["expires"], true);

    let ws_url = h.ws_url();
    let tail = start_tail(
        &["news", "--url", &ws_url, "--token", &token, "--count", "3"],
        &[],
    );
    let url = h.url("");
    for n in 1..=3 {
        let out = herald(&[
            "publish",
            "news",
            &json!({"n": n}).to_string(),
            "--url",
            &url,
            "--api-key",
            &h.api_key,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["offset"],
            n
        );
    }
    let stdout = finish_tail(tail);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[2]["offset"], 3);
    assert_eq!(lines[2]["data"], json!({"n": 3}));

    // --since resumes from a position: the two publications after offset 1.
    let epoch = h.api("history", json!({"channel": "news"})).await["result"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let out = Command::new(herald_bin())
        .args([
            "tail",
            "news",
            "--url",
            &h.ws_url(),
            "--token",
            &token,
            "--count",
            "2",
            "--since",
            &format!("1:{epoch}"),
        ])
        .output()
        .expect("tail");
    let offsets: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["offset"]
                .as_u64()
                .expect("offset")
        })
        .collect();
    assert_eq!(offsets, vec![2, 3]);

    let wrong = herald(&["publish", "news", "1", "--url", &url, "--api-key", "wrong"]);
    assert!(!wrong.status.success());
    let health = herald(&["healthcheck", "--url", &h.url("/readyz")]);
    assert!(health.status.success());
}

#[tokio::test]
async fn dev_mode_prints_a_working_token_and_api_key() {
    let port = free_port();
    let mut child = Command::new(herald_bin())
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .env("HERALD_DEV_STATE", dev_state())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve --dev");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut token, mut key) = (String::new(), String::new());
    let mut line = String::new();
    while out.read_line(&mut line).expect("read") > 0 {
        if let Some(v) = line.trim().strip_prefix("Token") {
            token = v.trim().to_owned();
        }
        if let Some(v) = line.trim().strip_prefix("API key") {
            key = v.trim().to_owned();
        }
        if !token.is_empty() && !key.is_empty() {
            break;
        }
        line.clear();
    }
    let ws = format!("ws://127.0.0.1:{port}/connection/websocket");
    let (mut raw, _) = Raw::connect(&ws, &token).await;
    // Permissive namespaces: any namespace, history on.
    let sub = raw
        .call(json!({"subscribe": {"channel": "anything:here"}}))
        .await;
    assert_eq!(sub["subscribe"]["recoverable"], true, "{sub}");
    let reply = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/publish"))
        .header("X-API-Key", &key)
        .json(&json!({"channel": "anything:here", "data": "hi"}))
        .send()
        .await
        .expect("publish")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(reply["result"]["offset"], 1, "{reply}");
    assert_eq!(raw.publications("anything:here", 1).await, vec![1]);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn cli_tokens_carry_the_audience_and_issuer_a_node_requires() {
    let (aud, iss) = ("herald-test", "https://auth.test");
    let h = Herald::start_with("", &["--token-audience", aud, "--token-issuer", iss]).await;
    let gentoken = |claims: &[&str]| {
        let mut args = vec![
            "gentoken",
            "--user",
            "cli",
            "--token-hmac-secret",
            &h.secret,
        ];
        args.extend_from_slice(claims);
        let out = herald(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    // Without the claims the node refuses the token (terminal close 3500).
    let mut raw = Raw::open(&h.ws_url()).await;
    raw.command(json!({"connect": {"token": gentoken(&["--issuer", iss])}}))
        .await;
    assert_eq!(raw.closed_within(Duration::from_secs(5)).await, 3500);
    let (_raw, _) = Raw::connect(
        &h.ws_url(),
        &gentoken(&["--audience", aud, "--issuer", iss]),
    )
    .await;

    // `tail` signs its own token with them too, here from the environment as the
    // chart's `helm test` pod passes them.
    let ws_url = h.ws_url();
    let tail = start_tail(
        &["news", "--url", &ws_url, "--count", "1"],
        &[
            ("HERALD_TOKEN_HMAC_SECRET", &h.secret),
            ("HERALD_TOKEN_AUDIENCE", aud),
            ("HERALD_TOKEN_ISSUER", iss),
        ],
    );
    h.publish("news", json!({"n": 1})).await;
    let stdout = finish_tail(tail);
    assert!(stdout.contains(r#""n":1"#), "{stdout}");
}

#[tokio::test]
async fn publish_entity_publishes_through_a_node() {
    let h = Herald::start(
        "[namespaces.entities]\nhistory_size = 10\nhistory_ttl = \"1m\"\nallow_subscribe_for_client = true\n",
    )
    .await;
    let (mut raw, _) = Raw::connect(&h.ws_url(), &h.token("alice")).await;
    let sub = raw
        .call(json!({"subscribe": {"channel": "entities:applications.42"}}))
        .await;
    assert!(sub.get("error").is_none(), "{sub}");
    let url = h.url("");
    let publish_entity = |extra: &[&str]| {
        let mut args = vec![
            "publish-entity",
            "--type",
            "applications",
            "--id",
            "42",
            "--url",
            &url,
            "--api-key",
            &h.api_key,
        ];
        args.extend_from_slice(extra);
        herald(&args)
    };

    let before = herald_tests::now() * 1000;
    let out = publish_entity(&[
        "--action",
        "updated",
        "--actor",
        "bob",
        "--version",
        "3",
        "--payload",
        r#"{"name":"x"}"#,
        "--idempotency-key",
        "cli-1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let responses = reply["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 3, "{reply}");
    assert_eq!(responses[2]["channel"], "entities:applications.42");
    assert_eq!(responses[2]["result"]["offset"], 1);

    let push = raw.next_reply().await.push.expect("a push");
    let data: serde_json::Value =
        serde_json::from_str(push.publication.expect("publication").data.get()).expect("json");
    let timestamp = data["timestamp"].as_u64().expect("timestamp");
    assert!(
        (before..before + 60_000).contains(&timestamp),
        "{timestamp} is not now"
    );
    assert_eq!(
        data,
        json!({
            "entity_type": "applications", "entity_id": "42", "action": "updated",
            "actor": "bob", "version": 3, "timestamp": timestamp, "payload": {"name": "x"},
        })
    );

    // The restricted audience only, as a repeated flag or a list.
    let out = publish_entity(&["--action", "deleted", "--audience", "restricted"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["responses"][0]["channel"], "$entities:all", "{reply}");
    let out = publish_entity(&["--action", "deleted", "--audience", "public,restricted"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["responses"].as_array().map(Vec::len), Some(6));

    // Errors are explained and exit non-zero.
    for (args, says) in [
        (vec!["--action", "moved"], "unknown action \"moved\""),
        (vec!["--action", "created", "--payload", "{x"], "--payload"),
        (
            vec!["--action", "created", "--audience", "staff"],
            "unknown audience",
        ),
    ] {
        let out = publish_entity(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    let out = herald(&[
        "publish-entity",
        "--type",
        "Apps",
        "--id",
        "1",
        "--action",
        "created",
        "--url",
        &url,
        "--api-key",
        &h.api_key,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("entity_type \"Apps\""),
        "{}",
        text(&out.stderr)
    );
    let out = herald(&[
        "publish-entity",
        "--type",
        "a",
        "--id",
        "1",
        "--action",
        "created",
        "--url",
        &url,
        "--api-key",
        "wrong",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refused the API key"),
        "{}",
        text(&out.stderr)
    );
}
