//! Redis over TLS and with ACL users, as managed Redis services require: real
//! `redis-server` processes with certificates made at test time, a node that delivers
//! and recovers through them, and clear start-up errors when the CA, the password, a
//! permission or the client certificate is wrong.

use herald_tests::Herald;
use herald_tests::raw::Raw;
use herald_tests::redis::{Certs, RedisCluster, RedisOptions, RedisServer};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The ACL rule docs/operations.md gives for Herald with the default prefix: its own
/// keys and pub/sub channels, and only the commands it runs (some from inside its
/// function library).
const MINIMAL_RULE: &str = "resetkeys ~herald:* resetchannels &herald:* -@all \
    +hello +ping +select +client|setname +client|id +info +role \
    +cluster|info +cluster|slots +cluster|shards \
    +function|load +fcall +fcall_ro \
    +publish +spublish +subscribe +ssubscribe +unsubscribe +sunsubscribe \
    +del +expire +hdel +hget +hgetall +hincrby +hmget +hset +time \
    +xadd +xrange +xrevrange +zadd +zrangebyscore +zrem +zremrangebyscore";

/// The coarser rule docs/operations.md also gives.
const COARSE_RULE: &str = "~herald:* &herald:* +@all -@dangerous +info";

/// `[redis]` with `url` and extra `key = "value"` lines, short timeouts.
fn redis_section(url: &str, extra: &[(&str, &Path)]) -> String {
    let mut out = format!("[redis]\nurl = \"{url}\"\nconnect_timeout = \"3s\"\n");
    for (key, path) in extra {
        out.push_str(&format!("{key} = \"{}\"\n", path.display()));
    }
    out
}

fn broker_redis() -> [&'static str; 2] {
    ["--broker", "redis"]
}

/// A client on `node` subscribed to `channel` gets a publication sent through the
/// node's API, then recovers what it missed after it left.
async fn delivers_and_recovers(node: &Herald, channel: &str) {
    let (mut raw, _) = Raw::connect(&node.ws_url(), &node.token("alice")).await;
    let reply = raw
        .call(json!({"subscribe": {"channel": channel, "recoverable": true}}))
        .await;
    let epoch = reply["subscribe"]["epoch"]
        .as_str()
        .expect("an epoch")
        .to_owned();
    let offset = node.publish(channel, json!({"n": 1})).await;
    assert_eq!(raw.publications(channel, 1).await, [offset]);
    drop(raw);
    node.publish(channel, json!({"n": 2})).await;
    node.publish(channel, json!({"n": 3})).await;
    let (mut raw, _) = Raw::connect(&node.ws_url(), &node.token("alice")).await;
    let reply = raw
        .call(json!({"subscribe": {"channel": channel, "recover": true, "offset": offset, "epoch": epoch}}))
        .await;
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], true, "{reply}");
    // The node may answer from its replay window before publication 3 reached it over
    // pub/sub; it then follows as a push, right after the recovered ones.
    let mut offsets: Vec<u64> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .filter_map(|p| p["offset"].as_u64())
        .collect();
    let missing = 2usize.saturating_sub(offsets.len());
    offsets.extend(raw.publications(channel, missing).await);
    assert_eq!(offsets, [offset + 1, offset + 2], "{reply}");
}

/// Starts a node that must fail; returns its log once it exited, after checking that
/// it never became ready and did not panic.
async fn fails_to_start(extra: &str) -> String {
    let mut node = Herald::launch(extra, &broker_redis());
    let mut ready = false;
    let code = loop {
        ready |= node.is_ready().await;
        if let Ok(code) = tokio::time::timeout(
            Duration::from_millis(100),
            node.wait_exit(Duration::from_secs(10)),
        )
        .await
        {
            break code;
        }
    };
    let log = node.log();
    assert!(!ready, "a node without Redis became ready:\n{log}");
    assert_ne!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

fn password_file(dir: &Path, password: &str) -> std::path::PathBuf {
    let path = dir.join(format!("password-{}", rand::random::<u32>()));
    std::fs::write(&path, format!("{password}\n")).expect("password file");
    path
}

#[tokio::test]
async fn a_node_over_rediss_with_an_acl_user_delivers_and_recovers() {
    let certs = Certs::generate();
    let redis = RedisServer::start_with(
        RedisOptions::tls(&certs)
            .user(&format!("herald on >s3cret-pw {MINIMAL_RULE}"))
            .user(&format!("coarse on >coarse-pw {COARSE_RULE}")),
    );
    let url = format!("rediss://herald:s3cret-pw@127.0.0.1:{}", redis.port);
    let node = Herald::start_with(
        &redis_section(&url, &[("tls_ca_file", &certs.ca())]),
        &broker_redis(),
    )
    .await;
    delivers_and_recovers(&node, "news").await;
    assert!(
        !node.log().contains("s3cret-pw"),
        "the password is in the log:\n{}",
        node.log()
    );
    // The publication went through Redis, over TLS, as the ACL user.
    let clients = redis.cli(&["CLIENT", "LIST"]);
    assert!(clients.contains("user=herald"), "{clients}");
    drop(node);

    let url = format!("rediss://coarse:coarse-pw@127.0.0.1:{}", redis.port);
    let node = Herald::start_with(
        &redis_section(&url, &[("tls_ca_file", &certs.ca())]),
        &broker_redis(),
    )
    .await;
    delivers_and_recovers(&node, "coarse").await;
}

#[tokio::test]
async fn a_password_file_and_a_username_setting_work_and_a_wrong_password_is_named() {
    let certs = Certs::generate();
    let redis = RedisServer::start_with(
        RedisOptions::tls(&certs).user(&format!("herald on >file-pw {MINIMAL_RULE}")),
    );
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let good = password_file(&certs.path(""), "file-pw");
    let mut section = redis_section(
        &url,
        &[("tls_ca_file", &certs.ca()), ("password_file", &good)],
    );
    section.push_str("username = \"herald\"\n");
    let node = Herald::start_with(&section, &broker_redis()).await;
    delivers_and_recovers(&node, "files").await;
    drop(node);

    let wrong = password_file(&certs.path(""), "not-the-pw");
    let mut section = redis_section(
        &url,
        &[("tls_ca_file", &certs.ca()), ("password_file", &wrong)],
    );
    section.push_str("username = \"herald\"\n");
    let log = fails_to_start(&section).await;
    assert!(log.contains("refused authentication"), "{log}");
    assert!(log.contains("WRONGPASS"), "{log}");
    assert!(
        !log.contains("not-the-pw"),
        "the password is in the log:\n{log}"
    );

    // The same in the URL: redacted wherever the URL is shown.
    let url = format!("rediss://herald:not-the-pw@127.0.0.1:{}", redis.port);
    let log = fails_to_start(&redis_section(&url, &[("tls_ca_file", &certs.ca())])).await;
    assert!(log.contains("refused authentication"), "{log}");
    assert!(log.contains("herald:***@127.0.0.1"), "{log}");
    assert!(
        !log.contains("not-the-pw"),
        "the password is in the log:\n{log}"
    );
}

#[tokio::test]
async fn a_missing_permission_is_named() {
    let certs = Certs::generate();
    // Everything but the function library's calls.
    let rule = MINIMAL_RULE.replace("+fcall +fcall_ro", "");
    let redis =
        RedisServer::start_with(RedisOptions::tls(&certs).user(&format!("herald on >pw {rule}")));
    let url = format!("rediss://herald:pw@127.0.0.1:{}", redis.port);
    let log = fails_to_start(&redis_section(&url, &[("tls_ca_file", &certs.ca())])).await;
    assert!(log.contains("lacks a permission Herald needs"), "{log}");
    assert!(log.contains("NOPERM"), "{log}");
}

#[tokio::test]
async fn an_unknown_ca_or_name_fails_the_handshake_clearly_and_tls_server_name_is_checked() {
    let certs = Certs::generate();
    let redis = RedisServer::start_with(RedisOptions::tls(&certs));
    let log = fails_to_start(&redis_section(
        &redis.url(),
        &[("tls_ca_file", &certs.other_ca())],
    ))
    .await;
    assert!(log.contains("TLS handshake with Redis"), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");

    // The certificate names 127.0.0.1 and localhost, not this.
    let mut section = redis_section(&redis.url(), &[("tls_ca_file", &certs.ca())]);
    section.push_str("tls_server_name = \"redis.invalid\"\n");
    let log = fails_to_start(&section).await;
    assert!(log.contains("TLS handshake with Redis"), "{log}");
    assert!(log.contains("NotValidForName"), "{log}");

    // Verified against the name set, not the address connected to.
    let mut section = redis_section(&redis.url(), &[("tls_ca_file", &certs.ca())]);
    section.push_str("tls_server_name = \"localhost\"\n");
    let node = Herald::start_with(&section, &broker_redis()).await;
    delivers_and_recovers(&node, "named").await;
}

#[tokio::test]
async fn a_client_certificate_is_sent_when_the_server_requires_one() {
    let certs = Certs::generate();
    let redis = RedisServer::start_with(RedisOptions {
        tls_auth_clients: true,
        ..RedisOptions::tls(&certs)
    });
    let node = Herald::start_with(
        &redis_section(
            &redis.url(),
            &[
                ("tls_ca_file", &certs.ca()),
                ("tls_cert_file", &certs.path("client.pem")),
                ("tls_key_file", &certs.path("client.key")),
            ],
        ),
        &broker_redis(),
    )
    .await;
    delivers_and_recovers(&node, "mtls").await;
    drop(node);

    let log = fails_to_start(&redis_section(
        &redis.url(),
        &[("tls_ca_file", &certs.ca())],
    ))
    .await;
    assert!(log.contains("TLS handshake with Redis"), "{log}");
}

#[tokio::test]
async fn a_tls_cluster_with_an_acl_user_delivers_and_recovers() {
    let certs = Certs::generate();
    let cluster = RedisCluster::start_with(
        &RedisOptions::tls(&certs).user(&format!("herald on >cluster-pw {MINIMAL_RULE}")),
    );
    let url = cluster
        .url()
        .replace("rediss-cluster://", "rediss-cluster://herald:cluster-pw@");
    let node = Herald::start_with(
        &redis_section(&url, &[("tls_ca_file", &certs.ca())]),
        &broker_redis(),
    )
    .await;
    // Channels on different slots, so more than one primary is used.
    for channel in ["a", "b", "c", "d"] {
        delivers_and_recovers(&node, channel).await;
    }
    assert!(!node.log().contains("cluster-pw"), "{}", node.log());
}
