//! Tests of the layering and of the composed configuration's checks.

use super::layers::Origin;
use super::*;
use std::path::PathBuf;
use std::time::Duration;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Writes `text` to a fresh file; the file is removed when the guard drops.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "herald-config-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn layers_apply_in_order() {
    let config = Layers::new()
        .toml(&format!(
            "listen = \"127.0.0.1:9000\"\n[token]\nhmac_secret = \"{SECRET}\"\n[client]\nqueue_size = 64\n"
        ))
        .env(env(&[
            ("HERALD_CLIENT_QUEUE_SIZE", "128"),
            ("HERALD_CLIENT_PING_INTERVAL", "10s"),
            ("PATH", "/bin"),
        ]))
        .flag("--queue-size", "client.queue_size", "256")
        .build()
        .expect("valid");
    assert_eq!(config.gateway.listen.port(), 9000);
    assert_eq!(config.gateway.client.queue_size, 256);
    assert_eq!(config.gateway.client.ping_interval, Duration::from_secs(10));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn every_type_and_key_problem_is_reported_with_its_file_and_line() {
    let file = TempFile::new(
        "herald.toml",
        "broker = \"kafka\"\n\
         [client]\n\
         ping_interval = \"soon\"\n\
         queue_size = \"many\"\n\
         ping_intervall = \"2s\"\n\
         [redis]\n\
         workers = \"four\"\n\
         probe_timout = \"1s\"\n\
         [namespaces.chat]\n\
         history_ttl = 5\n",
    );
    let err = Layers::new().file(&file.0).build().expect_err("invalid");
    let found: Vec<(&str, Option<usize>)> = err
        .problems
        .iter()
        .map(|p| match &p.origin {
            Origin::File { path, line } if *path == file.0 => (p.key.as_str(), *line),
            other => panic!("{} has origin {other:?}", p.key),
        })
        .collect();
    assert_eq!(
        found,
        [
            ("broker", Some(1)),
            ("client.ping_interval", Some(3)),
            ("client.ping_intervall", Some(5)),
            ("client.queue_size", Some(4)),
            ("namespaces.chat.history_ttl", Some(10)),
            ("redis.probe_timout", Some(8)),
            ("redis.workers", Some(7)),
        ]
    );
    let text = err.to_string();
    let shown = format!(
        "client.ping_interval ({}:3): invalid duration \"soon\"",
        file.0.display()
    );
    assert!(text.contains(&shown), "{text}");
    assert!(text.contains("unknown field `ping_intervall`"), "{text}");
}

#[test]
fn an_unknown_top_level_key_lists_every_section() {
    let err = Layers::new()
        .toml("no_such_setting = 1\n")
        .build()
        .expect_err("unknown");
    assert_eq!(err.problems.len(), 1);
    let problem = &err.problems[0];
    assert_eq!(problem.origin, Origin::Text { line: Some(1) });
    for key in [
        "`listen`",
        "`broker`",
        "`log_format`",
        "`redis`",
        "`client`",
    ] {
        assert!(problem.message.contains(key), "{key}: {}", problem.message);
    }
}

#[test]
fn environment_problems_name_the_variable() {
    let err = Layers::new()
        .set("client.allow_anonymous", "true")
        .env(env(&[
            ("HERALD_CLIENT_PING_INTERVAL", "x"),
            ("HERALD_CLIENT_QUEUE_SIZE", "lots"),
            ("HERALD_REDIS_PROBE_TIMEOUT", "later"),
        ]))
        .build()
        .expect_err("invalid");
    let lines: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        "HERALD_CLIENT_QUEUE_SIZE: expected a whole number, got \"lots\""
    );
    assert_eq!(
        lines[1],
        "HERALD_CLIENT_PING_INTERVAL: invalid duration \"x\": expected number at 0"
    );
    assert!(
        lines[2].starts_with("HERALD_REDIS_PROBE_TIMEOUT: invalid duration \"later\""),
        "{lines:?}"
    );
}

#[test]
fn every_value_problem_is_reported_at_once() {
    let err = Layers::new()
        .toml(
            "broker = \"redis\"\n[client]\nping_interval = \"2s\"\npong_timeout = \"5s\"\nqueue_size = 1\n[namespaces.chat]\nhistory_size = 10\n[namespaces.\"bad name\"]\n[redis]\nworkers = 0\n",
        )
        .flag("--allow-anonymous", "client.allow_anonymous", "maybe")
        .build()
        .expect_err("invalid");
    let at: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "client.allow_anonymous",
        "redis.url",
        "redis.workers",
        "token",
        "client.pong_timeout",
        "client.queue_size",
        "namespaces.chat",
        "namespaces.bad name",
    ] {
        assert!(at.contains(&expected), "{expected} missing from {at:?}");
    }
    let pong = err.problems.iter().find(|p| p.key == "client.pong_timeout");
    assert_eq!(
        pong.map(|p| &p.origin),
        Some(&Origin::Text { line: Some(4) })
    );
    let flag = err
        .problems
        .iter()
        .find(|p| p.key == "client.allow_anonymous");
    assert_eq!(
        flag.map(ToString::to_string).as_deref(),
        Some("--allow-anonymous: expected true or false, got \"maybe\"")
    );
}

#[test]
fn the_redis_url_is_required_only_by_the_redis_broker() {
    let memory = Layers::new().set("client.allow_anonymous", "true").build();
    assert!(memory.is_ok(), "{memory:?}");
    let err = Layers::new()
        .set("client.allow_anonymous", "true")
        .env(env(&[("HERALD_BROKER", "redis")]))
        .build()
        .expect_err("no URL");
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].key, "redis.url");
    assert!(
        err.to_string().contains("redis_url"),
        "names the old key too"
    );
}

#[test]
fn old_redis_keys_still_work_and_warn() {
    let config = Layers::new()
        .toml(
            "broker = \"redis\"\nredis_url = \"redis://r:6379\"\nredis_prefix = \"app\"\nredis_replay_window = 32\n[client]\nallow_anonymous = true\n",
        )
        .build()
        .expect("valid");
    assert_eq!(config.redis.url, "redis://r:6379");
    assert_eq!(config.redis.prefix, "app");
    assert_eq!(config.redis.replay_window, 32);
    assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("redis_url (<toml>:2) is deprecated: set url in [redis]"),
        "{:?}",
        config.warnings
    );

    // A problem with an old key is reported at its new name and its own line.
    let err = Layers::new()
        .toml("broker = \"redis\"\nredis_url = \"http://r:6380\"\n")
        .set("client.allow_anonymous", "true")
        .build()
        .expect_err("not a Redis URL");
    assert_eq!(err.problems[0].key, "redis.url");
    assert_eq!(err.problems[0].origin, Origin::Text { line: Some(2) });

    // The new key wins over the old one in the same file.
    let config = Layers::new()
        .toml("redis_prefix = \"old\"\n[redis]\nprefix = \"new\"\n")
        .set("client.allow_anonymous", "true")
        .build()
        .expect("valid");
    assert_eq!(config.redis.prefix, "new");
    assert!(
        config.warnings[0].contains("ignored"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn new_redis_keys_reach_the_redis_config() {
    let config = Layers::new()
        .toml(
            "broker = \"redis\"\n[redis]\nurl = \"redis-cluster://a:7000\"\nmeta_ttl = \"7d\"\nidempotency_ttl = \"10m\"\nconnect_timeout = \"2s\"\ncommand_timeout = \"3s\"\nworkers = 8\ntop_check_interval = \"500ms\"\nprobe_interval = \"2s\"\n[client]\nallow_anonymous = true\n",
        )
        .env(env(&[
            ("HERALD_REDIS_PROBE_TIMEOUT", "9s"),
            ("HERALD_REDIS_REPLAY_WINDOW", "1000"),
        ]))
        .flag("--redis-prefix", "redis.prefix", "tenant-a")
        .build()
        .expect("valid");
    let r = &config.redis;
    assert_eq!(r.url, "redis-cluster://a:7000");
    assert_eq!(r.prefix, "tenant-a");
    assert_eq!(r.meta_ttl, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(r.idempotency_ttl, Duration::from_secs(600));
    assert_eq!(r.connect_timeout, Duration::from_secs(2));
    assert_eq!(r.command_timeout, Duration::from_secs(3));
    assert_eq!(r.workers, 8);
    assert_eq!(r.top_check_interval, Duration::from_millis(500));
    assert_eq!(r.probe_interval, Duration::from_secs(2));
    assert_eq!(r.probe_timeout, Duration::from_secs(9));
    assert_eq!(r.replay_window, 1000);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn redis_tls_and_acl_keys_are_read_from_file_and_environment() {
    let dir = std::env::temp_dir().join(format!("herald-tls-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, "x").expect("write");
        path.display().to_string()
    };
    let (ca, cert, key, password) = (
        file("ca.pem"),
        file("client.pem"),
        file("client.key"),
        file("password"),
    );
    let config = Layers::new()
        .toml(&format!(
            "broker = \"redis\"\n[redis]\nurl = \"rediss://redis:6380\"\ntls_ca_file = \"{ca}\"\ntls_server_name = \"redis.internal\"\n[client]\nallow_anonymous = true\n"
        ))
        .env(env(&[
            ("HERALD_REDIS_USERNAME", "herald"),
            ("HERALD_REDIS_PASSWORD_FILE", &password),
            ("HERALD_REDIS_TLS_CERT_FILE", &cert),
            ("HERALD_REDIS_TLS_KEY_FILE", &key),
        ]))
        .build()
        .expect("valid");
    let r = &config.redis;
    assert_eq!(r.url, "rediss://redis:6380");
    assert_eq!(r.username, "herald");
    assert_eq!(r.password_file, password);
    assert_eq!(r.tls_ca_file, ca);
    assert_eq!(r.tls_cert_file, cert);
    assert_eq!(r.tls_key_file, key);
    assert_eq!(r.tls_server_name, "redis.internal");

    // A password in the URL and a file, and TLS settings with a plain URL: every
    // problem with the setting it is about, and never the password.
    let err = Layers::new()
        .set("broker", "redis")
        .set("client.allow_anonymous", "true")
        .flag("--redis-url", "redis.url", "redis://u:hunter2@redis:6379")
        .env(env(&[
            ("HERALD_REDIS_PASSWORD_FILE", &password),
            ("HERALD_REDIS_TLS_CA_FILE", &ca),
        ]))
        .build()
        .expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["redis.password_file", "redis.tls_ca_file"], "{err}");
    assert!(
        err.to_string().contains("HERALD_REDIS_TLS_CA_FILE"),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_env_vars_warn_and_kubernetes_service_vars_are_ignored() {
    let config = Layers::new()
        .set("client.allow_anonymous", "true")
        .env(env(&[
            ("HERALD_NOPE", "1"),
            ("HERALD_PORT", "tcp://10.0.0.1:80"),
            ("HERALD_PORT_80_TCP_ADDR", "10.0.0.1"),
            ("HERALD_SERVICE_HOST", "10.0.0.1"),
            ("HERALD_CONFIG", "/etc/herald.toml"),
        ]))
        .build()
        .expect("warnings are not errors");
    assert_eq!(
        config.warnings,
        vec!["ignoring unknown environment variable HERALD_NOPE".to_owned()]
    );
}

#[test]
fn a_file_that_does_not_parse_stops_with_its_name() {
    let file = TempFile::new("broken.toml", "[client\n");
    let err = Layers::new().file(&file.0).build().expect_err("broken");
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.to_string()
            .contains(&format!("{}: not valid TOML", file.0.display())),
        "{err}"
    );
    let missing = Layers::new()
        .file(&file.0.with_file_name("absent.toml"))
        .build()
        .expect_err("absent");
    assert!(missing.problems[0].message.starts_with("cannot read"));
}

#[test]
fn env_reference_lists_every_section() {
    let names: Vec<String> = env_reference().into_iter().map(|(n, _)| n).collect();
    for name in [
        "HERALD_TOKEN_HMAC_SECRET",
        "HERALD_SHUTDOWN_DRAIN_WINDOW",
        "HERALD_BROKER",
        "HERALD_LOG_FORMAT",
        "HERALD_REDIS_URL",
        "HERALD_REDIS_PREFIX",
        "HERALD_REDIS_REPLAY_WINDOW",
        "HERALD_REDIS_WORKERS",
        "HERALD_REDIS_PROBE_TIMEOUT",
        "HERALD_REDIS_META_TTL",
        "HERALD_TOKEN_HMAC_SECRET_FILE",
        "HERALD_TOKEN_JWKS_URL",
        "HERALD_TOKEN_JWKS_TIMEOUT",
        "HERALD_TOKEN_JWKS_REFRESH_INTERVAL",
        "HERALD_TOKEN_JWKS_MIN_REFRESH_INTERVAL",
        "HERALD_TOKEN_JWKS_MAX_BYTES",
        "HERALD_API_KEY_FILE",
        "HERALD_REDIS_USERNAME",
        "HERALD_REDIS_PASSWORD_FILE",
        "HERALD_REDIS_TLS_CA_FILE",
        "HERALD_REDIS_TLS_CERT_FILE",
        "HERALD_REDIS_TLS_KEY_FILE",
        "HERALD_REDIS_TLS_SERVER_NAME",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} missing");
    }
    assert!(!names.iter().any(|n| n.starts_with("HERALD_NAMESPACES")));
}

#[test]
fn secret_files_and_the_jwks_are_set_from_the_environment() {
    let key = TempFile::new("api-key", "from-a-file\n");
    let config = Layers::new()
        .env(env(&[
            ("HERALD_TOKEN_JWKS_URL", "http://keys.internal/jwks.json"),
            ("HERALD_TOKEN_JWKS_TIMEOUT", "2s"),
            ("HERALD_TOKEN_JWKS_MAX_BYTES", "65536"),
            ("HERALD_API_KEY_FILE", key.0.to_str().expect("utf-8")),
        ]))
        .build()
        .expect("valid");
    let t = &config.gateway.token;
    assert_eq!(t.jwks_url, "http://keys.internal/jwks.json");
    assert_eq!(t.jwks_timeout, Duration::from_secs(2));
    assert_eq!(t.jwks_max_bytes, 65536);
    assert_eq!(config.gateway.api.key_file, key.0.to_str().expect("utf-8"));
    let both = Layers::new()
        .toml(&format!("[token]\nhmac_secret = \"{SECRET}\"\n"))
        .env(env(&[(
            "HERALD_TOKEN_HMAC_SECRET_FILE",
            "/run/secrets/hmac",
        )]))
        .build()
        .expect_err("both set");
    assert!(
        both.problems
            .iter()
            .any(|p| p.key == "token.hmac_secret_file"),
        "{both}"
    );
}

#[test]
fn admission_settings_come_from_file_and_environment() {
    let config = Layers::new()
        .toml(&format!(
            "[token]\nhmac_secret = \"{SECRET}\"\n[client]\nallowed_origins = [\"https://a.example\"]\n[client.limits.connections]\nmax = 100\n"
        ))
        .env(env(&[
            (
                "HERALD_CLIENT_TRUSTED_PROXIES",
                "10.0.0.0/8, 192.168.1.1",
            ),
            ("HERALD_CLIENT_LIMITS_CONNECT_RATE_PER_IP_PER_SECOND", "5"),
            ("HERALD_CLIENT_LIMITS_CONNECTIONS_DRY_RUN", "true"),
        ]))
        .build()
        .expect("valid");
    let c = &config.gateway.client;
    assert_eq!(c.allowed_origins, ["https://a.example"]);
    assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "192.168.1.1"]);
    assert_eq!(c.limits.connections.max, 100);
    assert!(c.limits.connections.dry_run);
    assert_eq!(c.limits.connect_rate_per_ip.per_second, 5);
    let names: Vec<String> = env_reference().into_iter().map(|(n, _)| n).collect();
    for name in [
        "HERALD_CLIENT_ALLOWED_ORIGINS",
        "HERALD_CLIENT_TRUSTED_PROXIES",
        "HERALD_CLIENT_LIMITS_CONNECTIONS_MAX",
        "HERALD_CLIENT_LIMITS_CONNECTIONS_PER_USER_DRY_RUN",
        "HERALD_CLIENT_LIMITS_CONNECT_RATE_BURST",
        "HERALD_CLIENT_LIMITS_RETRY_AFTER",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} missing");
    }
    let bad = Layers::new()
        .toml(&format!("[token]\nhmac_secret = \"{SECRET}\"\n"))
        .env(env(&[
            ("HERALD_CLIENT_TRUSTED_PROXIES", "10.0.0.0/40"),
            ("HERALD_CLIENT_ALLOWED_ORIGINS", "https://a.example:x"),
        ]))
        .build()
        .expect_err("invalid");
    let at: Vec<&str> = bad.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(at.contains(&"client.allowed_origins"), "{at:?}");
    assert!(at.contains(&"client.trusted_proxies"), "{at:?}");
}

#[test]
fn rate_limits_come_from_file_and_environment() {
    let names: Vec<String> = env_reference().into_iter().map(|(n, _)| n).collect();
    for name in [
        "HERALD_CLIENT_RATE_LIMITS_COMMANDS",
        "HERALD_CLIENT_RATE_LIMITS_USER_PUBLISHES",
        "HERALD_CLIENT_RATE_LIMITS_DRY_RUN",
        "HERALD_CLIENT_RATE_LIMITS_USER_CONNECTIONS",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} missing");
    }
    let config = Layers::new()
        .set("client.allow_anonymous", "true")
        .toml("[client.rate_limits]\npublishes = \"10/s\"\n[namespaces.chat.rate_limits]\npublishes = \"2/s\"\n")
        .env(env(&[
            ("HERALD_CLIENT_RATE_LIMITS_COMMANDS", "600/m, burst 20"),
            ("HERALD_CLIENT_RATE_LIMITS_USER_CONNECTIONS", "3"),
            ("HERALD_CLIENT_RATE_LIMITS_DRY_RUN", "true"),
        ]))
        .build()
        .expect("valid");
    let limits = &config.gateway.client.rate_limits;
    assert_eq!(limits.commands.to_string(), "600/m, burst 20");
    assert_eq!(limits.publishes.to_string(), "10/s");
    assert_eq!(limits.user_connections, 3);
    assert!(limits.dry_run);
    let chat = config.gateway.namespace("chat").expect("chat");
    assert_eq!(
        chat.rate_limits.publishes.map(|r| r.to_string()).as_deref(),
        Some("2/s")
    );
    let err = Layers::new()
        .set("client.allow_anonymous", "true")
        .env(env(&[("HERALD_CLIENT_RATE_LIMITS_COMMANDS", "fast")]))
        .build()
        .expect_err("not a rate");
    assert!(
        err.problems[0].to_string().contains("is not a rate"),
        "{err}"
    );
}
