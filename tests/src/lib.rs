//! Test support for Herald's integration tests: start real `herald` processes on
//! ports of their own, sign tokens with secrets made at test time, call the server API,
//! and speak the raw protocol over WebSocket.

#![allow(clippy::unwrap_used)]

pub mod balancer;
pub mod raw;
pub mod redis;
pub mod stream;
pub mod wire;

use rand::Rng;
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A random hex secret, made fresh for each test.
pub fn secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A free TCP port below the ephemeral range (32768–60999), so that a server's port
/// never collides with a client's source port.
pub fn free_port() -> u16 {
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

/// A free port for a Redis Cluster node, whose cluster bus listens 10000 above it: both
/// free and both below the ephemeral range. (A node on a port from [`free_port`] may
/// get a bus port inside that range, where a client's source port can hold it; the
/// node then fails to start.)
pub fn free_cluster_port() -> u16 {
    let mut rng = rand::rng();
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..22_000);
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair found in 20000..22000 and 30000..32000");
}

/// The `herald` binary: `HERALD_BIN`, else `target/<profile>/herald` next to this test.
pub fn herald_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HERALD_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("herald");
    assert!(
        bin.is_file(),
        "{} not found: build it first with `cargo build -p herald` (the README's test command does)",
        bin.display()
    );
    bin
}

/// Signs claims with HS256.
pub fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Namespaces most tests use: `default` with history, `tiny` with history of 3, and
/// `locked` where clients may do nothing.
pub const NAMESPACES: &str = r#"
[namespaces.default]
history_size = 100
history_ttl = "5m"
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_history_for_subscriber = true
presence = true
allow_presence_for_subscriber = true
join_leave = true

[namespaces.tiny]
history_size = 3
history_ttl = "5m"
allow_subscribe_for_client = true

[namespaces.live]
allow_subscribe_for_client = true

[namespaces.locked]
"#;

/// A running `herald serve` process, killed on drop.
pub struct Herald {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// Its token secret.
    pub secret: String,
    /// Its API key.
    pub api_key: String,
    dir: PathBuf,
    http: reqwest::Client,
}

impl std::fmt::Debug for Herald {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Herald")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Herald {
    /// Starts a node with [`NAMESPACES`] and `extra` TOML appended (sections only).
    pub async fn start(extra: &str) -> Herald {
        Self::start_with(extra, &[]).await
    }

    /// Starts a node with extra TOML and extra command-line arguments.
    pub async fn start_with(extra: &str, args: &[&str]) -> Herald {
        let port = free_port();
        Self::start_on(port, &secret(), &secret(), extra, args).await
    }

    /// Starts `n` nodes sharing one token secret and API key, all on the Redis broker
    /// at `redis_url`.
    pub async fn group(n: usize, redis_url: &str, extra: &str) -> Vec<Herald> {
        let (secret, key) = (secret(), secret());
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let args = ["--broker", "redis", "--redis-url", redis_url];
            nodes.push(Self::start_on(free_port(), &secret, &key, extra, &args).await);
        }
        nodes
    }

    /// Starts a node on a given port with given secrets (to restart "the same" node).
    pub async fn start_on(
        port: u16,
        secret: &str,
        api_key: &str,
        extra: &str,
        args: &[&str],
    ) -> Herald {
        let auth = format!("[token]\nhmac_secret = \"{secret}\"\n[api]\nkey = \"{api_key}\"\n");
        Self::start_auth(port, secret, api_key, &auth, extra, args).await
    }

    /// Starts a node whose `[token]` and `[api]` sections are `auth` as given (keys
    /// from files, a JWKS); `secret` and `api_key` are what the tests sign and call
    /// with.
    pub async fn start_auth(
        port: u16,
        secret: &str,
        api_key: &str,
        auth: &str,
        extra: &str,
        args: &[&str],
    ) -> Herald {
        let herald = Self::spawn(port, secret, api_key, auth, extra, args);
        herald.wait_ready().await;
        herald
    }

    /// Starts a node without waiting for it to be ready (for nodes that must fail).
    pub fn launch(extra: &str, args: &[&str]) -> Herald {
        let (secret, api_key) = (secret(), secret());
        let auth = format!("[token]\nhmac_secret = \"{secret}\"\n[api]\nkey = \"{api_key}\"\n");
        Self::spawn(free_port(), &secret, &api_key, &auth, extra, args)
    }

    fn spawn(
        port: u16,
        secret: &str,
        api_key: &str,
        auth: &str,
        extra: &str,
        args: &[&str],
    ) -> Herald {
        let dir = std::env::temp_dir().join(format!(
            "herald-test-{}-{port}-{}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = format!(
            "{auth}[shutdown]\ndrain_window = \"300ms\"\ntimeout = \"5s\"\n{extra}\n{NAMESPACES}"
        );
        let path = dir.join("herald.toml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("write config");
        let log = std::fs::File::create(dir.join("herald.log")).expect("log file");
        let mut cmd = Command::new(herald_bin());
        // The test's own HERALD_* variables (seeds, paths) are not the node's.
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("HERALD_")) {
            cmd.env_remove(name);
        }
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("HERALD_LOG", "info,herald_gateway=debug")
            .env_remove("HERALD_API_KEY")
            .env_remove("HERALD_TOKEN_HMAC_SECRET")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn herald");
        Herald {
            child: Some(child),
            port,
            secret: secret.to_owned(),
            api_key: api_key.to_owned(),
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        self.http
            .get(self.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "herald on port {} not ready; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// A connection token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        sign(&self.secret, &json!({ "sub": user, "exp": now() + 3600 }))
    }

    /// Calls a server API method and returns the whole JSON reply.
    pub async fn api(&self, method: &str, params: Value) -> Value {
        self.http
            .post(self.url(&format!("/api/{method}")))
            .header("X-API-Key", &self.api_key)
            .json(&params)
            .send()
            .await
            .expect("api call")
            .json()
            .await
            .expect("api reply is JSON")
    }

    /// Publishes through the API and returns the offset.
    pub async fn publish(&self, channel: &str, data: Value) -> u64 {
        let reply = self
            .api("publish", json!({ "channel": channel, "data": data }))
            .await;
        assert!(reply.get("error").is_none(), "publish failed: {reply}");
        reply["result"]["offset"].as_u64().unwrap_or(0)
    }

    /// The `data` of every publication in the channel's history (at most 100), oldest
    /// first, read through the API.
    pub async fn history_data(&self, channel: &str) -> Vec<Value> {
        let reply = self
            .api("history", json!({"channel": channel, "limit": 100}))
            .await;
        assert!(reply.get("error").is_none(), "history failed: {reply}");
        reply["result"]["publications"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p["data"].clone()).collect())
            .unwrap_or_default()
    }

    /// Publishes `data = 1..=count` to `channel` through this node's API in the
    /// background, `every` apart. The task panics if a publish is refused.
    pub fn spawn_publisher(
        &self,
        channel: &str,
        count: u64,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (url, key, channel) = (
            self.url("/api/publish"),
            self.api_key.clone(),
            channel.to_owned(),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 1..=count {
                let r = http
                    .post(&url)
                    .header("X-API-Key", &key)
                    .json(&json!({ "channel": channel, "data": n }))
                    .send()
                    .await;
                assert!(
                    r.is_ok_and(|r| r.status().is_success()),
                    "publish {n} failed"
                );
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
            }
        })
    }

    /// The node's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("herald.toml")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (e.g. "TERM", "KILL", "STOP") with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "herald did not exit within {within:?}; log:\n{}",
            self.log()
        );
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("herald.log")).unwrap_or_default()
    }

    /// Scrapes `/metrics` and returns the value of one sample (a metric name with its
    /// labels exactly as exported, e.g. `herald_disconnects_total{code="3501"}`).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("herald log ({}):\n{}", self.dir.display(), self.log());
        }
    }
}
