//! Typed configuration: defaults < TOML file < `HERALD_*` environment < command-line
//! flags, merged as TOML tables and checked in one validation pass.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Everything a gateway node needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on for WebSocket clients, the server API, health and metrics.
    pub listen: SocketAddr,
    /// This node's name in `info`, logs and connect replies ("" = hostname-pid).
    pub node_name: String,
    /// Which message backbone to use.
    pub broker: BrokerKind,
    /// Redis URL for `broker = "redis"`: `redis://host:port`, or
    /// `redis-cluster://host:port?node=host:port&node=host:port` for Redis Cluster.
    pub redis_url: String,
    /// Prefix of Herald's Redis keys and channels (several deployments can share a Redis).
    pub redis_prefix: String,
    /// Publications per subscribed channel the node keeps in memory, so that clients
    /// recovering a recent position (a reconnect storm) are answered without reading
    /// Redis (0 = always read Redis).
    pub redis_replay_window: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Connection and subscription token verification.
    pub token: TokenConfig,
    /// The server HTTP API.
    pub api: ApiConfig,
    /// Per-connection behaviour.
    pub client: ClientConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Channel namespaces by name; `default` applies to channels without a `:`, and `*`
    /// to namespaces not configured by name.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Things worth telling the operator that are not errors (unknown `HERALD_*`
    /// variables), to be logged once logging is up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            node_name: String::new(),
            broker: BrokerKind::Memory,
            redis_url: String::new(),
            redis_prefix: "herald".into(),
            redis_replay_window: 256,
            log_format: LogFormat::Human,
            token: TokenConfig::default(),
            api: ApiConfig::default(),
            client: ClientConfig::default(),
            shutdown: ShutdownConfig::default(),
            namespaces: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }
}

/// The message backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// Embedded, in-process: one node, no Redis.
    Memory,
    /// Redis pub/sub and streams: many nodes.
    Redis,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

/// How tokens are verified. At least one key must be set unless anonymous clients are
/// allowed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// HMAC secret for HS256/384/512 tokens.
    pub hmac_secret: Secret,
    /// PEM file with an RSA public key for RS*/PS* tokens.
    pub rsa_public_key: String,
    /// PEM file with an EC public key for ES256/ES384 tokens.
    pub ec_public_key: String,
    /// Required `aud` claim ("" = not checked).
    pub audience: String,
    /// Required `iss` claim ("" = not checked).
    pub issuer: String,
}

/// The server HTTP API (`/api/*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The key callers send in `X-API-Key` (or `Authorization: apikey <key>`).
    pub key: Secret,
    /// Serve the API without a key (only for trusted networks).
    pub insecure: bool,
}

/// Per-connection behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Accept connections without a token (user "").
    pub allow_anonymous: bool,
    /// How often the server pings.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long after a ping the client has to answer before it is closed with 3012.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// How long a new socket may stay without a `connect` command (then 3502).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Extra time after a token expires before the connection is closed with 3005.
    #[serde(with = "humantime_serde")]
    pub expire_grace: Duration,
    /// Messages queued for one client before it is cut off as slow (3008).
    pub queue_size: usize,
    /// Largest frame accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// Most bytes the writer puts in one batched frame.
    pub write_batch_bytes: usize,
    /// Pushes are written to a client at most once per this interval: under a high
    /// message rate they share frames and system calls, at a cost of at most this much
    /// latency; a push after a quiet spell, and every command reply, goes at once
    /// (0 = write every wake-up).
    #[serde(with = "humantime_serde")]
    pub write_interval: Duration,
    /// Channels one connection may subscribe to.
    pub max_channels: usize,
    /// How long a presence entry lives unless its node refreshes it (a crashed node's
    /// subscribers disappear from presence after this).
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
    /// Socket read buffer per connection, in bytes (small keeps idle connections cheap;
    /// it grows to hold a larger frame).
    pub read_buffer_bytes: usize,
    /// Socket write buffer per connection, in bytes.
    pub write_buffer_bytes: usize,
    /// The kernel send buffer of each client socket, in bytes (the kernel doubles it;
    /// 0 = the kernel's automatic sizing, which lets a stalled client pin megabytes).
    pub socket_send_buffer_bytes: usize,
    /// How long the node stays subscribed to a channel after its last local subscriber
    /// left: clients that drop together and come back (a reconnect storm, a deploy) find
    /// the channel live and its replay window warm.
    #[serde(with = "humantime_serde")]
    pub channel_linger: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            expire_grace: Duration::from_secs(5),
            queue_size: 1024,
            max_frame_bytes: 64 * 1024,
            write_batch_bytes: 4 * 1024,
            write_interval: Duration::from_millis(5),
            max_channels: 128,
            presence_ttl: Duration::from_secs(60),
            read_buffer_bytes: 1024,
            write_buffer_bytes: 4 * 1024,
            socket_send_buffer_bytes: 64 * 1024,
            channel_linger: Duration::from_secs(10),
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Clients are closed with 3001 spread over this window, so they reconnect elsewhere
    /// gradually instead of all at once.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Give up waiting for connections to end after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_window: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Options of the channels in one namespace. Everything is off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Publications kept per channel for history and recovery (0 = none).
    pub history_size: usize,
    /// How long publications stay in history.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Any authenticated client may subscribe.
    pub allow_subscribe_for_client: bool,
    /// Anonymous clients may subscribe.
    pub allow_subscribe_for_anonymous: bool,
    /// Any authenticated client may publish.
    pub allow_publish_for_client: bool,
    /// Subscribers of the channel may publish.
    pub allow_publish_for_subscriber: bool,
    /// Anonymous clients may publish.
    pub allow_publish_for_anonymous: bool,
    /// Any authenticated client may read history.
    pub allow_history_for_client: bool,
    /// Subscribers of the channel may read history.
    pub allow_history_for_subscriber: bool,
    /// Anonymous clients may read history.
    pub allow_history_for_anonymous: bool,
    /// Any authenticated client may read presence.
    pub allow_presence_for_client: bool,
    /// Subscribers of the channel may read presence.
    pub allow_presence_for_subscriber: bool,
    /// Anonymous clients may read presence.
    pub allow_presence_for_anonymous: bool,
    /// Channels like `ns:room#42,43` admit only the listed users.
    pub allow_user_limited_channels: bool,
    /// Track who is subscribed.
    pub presence: bool,
    /// Send join/leave pushes to subscribers that ask for them.
    pub join_leave: bool,
}

impl NamespaceConfig {
    /// Whether channels of this namespace keep history (and so can be recovered).
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    /// The permissive namespace `--dev` uses: everything allowed, history on.
    pub fn permissive() -> Self {
        Self {
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
            allow_subscribe_for_client: true,
            allow_subscribe_for_anonymous: true,
            allow_publish_for_client: true,
            allow_publish_for_subscriber: true,
            allow_publish_for_anonymous: true,
            allow_history_for_client: true,
            allow_history_for_subscriber: true,
            allow_history_for_anonymous: true,
            allow_presence_for_client: true,
            allow_presence_for_subscriber: true,
            allow_presence_for_anonymous: true,
            allow_user_limited_channels: true,
            presence: true,
            join_leave: true,
        }
    }
}

/// The name of the namespace for channels without a `:`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace that applies to any namespace not configured by name (`--dev` uses it).
pub const WILDCARD_NAMESPACE: &str = "*";

/// One problem found while loading or validating configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a key path such as `client.ping_interval`, a file, or an env var.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order found.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {}: {}", p.at, p.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                at: at.into(),
                message: message.into(),
            }],
        }
    }
}

/// Builds a [`Config`] from its layers. Each layer is a TOML table merged over the
/// previous one; [`ConfigBuilder::build`] deserializes and validates once.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    table: toml::Table,
    problems: Vec<ConfigProblem>,
    warnings: Vec<String>,
    /// A file or TOML layer failed to load: semantic checks would only add noise.
    load_failed: bool,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// Starts from the defaults.
    pub fn new() -> Self {
        Self::from_config(&Config::default())
    }

    /// Starts from an existing configuration (e.g. the `--dev` defaults).
    pub fn from_config(config: &Config) -> Self {
        let table = toml::Table::try_from(config).unwrap_or_default();
        Self {
            table,
            problems: Vec::new(),
            warnings: Vec::new(),
            load_failed: false,
        }
    }

    /// Merges a TOML file over the current values.
    pub fn file(mut self, path: &Path) -> Self {
        let at = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => {
                self.load_failed = true;
                self.problems.push(ConfigProblem {
                    at,
                    message: format!("cannot read: {e}"),
                });
            }
            Ok(text) => match text.parse::<toml::Table>() {
                Err(e) => {
                    self.load_failed = true;
                    self.problems.push(ConfigProblem {
                        at,
                        message: format!("not valid TOML: {}", e.to_string().trim()),
                    });
                }
                Ok(t) => merge(&mut self.table, t),
            },
        }
        self
    }

    /// Merges TOML text over the current values (for tests and embedded defaults).
    pub fn toml(mut self, text: &str) -> Self {
        match text.parse::<toml::Table>() {
            Err(e) => {
                self.load_failed = true;
                self.problems.push(ConfigProblem {
                    at: "<toml>".into(),
                    message: e.to_string().trim().to_owned(),
                });
            }
            Ok(t) => merge(&mut self.table, t),
        }
        self
    }

    /// Applies `HERALD_*` variables: `HERALD_CLIENT_PING_INTERVAL=10s` sets
    /// `client.ping_interval`. Unknown `HERALD_*` names become warnings (a typo should be
    /// visible), except the ones Kubernetes injects for a Service named `herald`.
    pub fn env<I: IntoIterator<Item = (String, String)>>(mut self, vars: I) -> Self {
        let known = env_names(&self.table);
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("HERALD_") else {
                continue;
            };
            if ENV_IGNORED.contains(&rest) || rest.starts_with("TEST_") {
                continue;
            }
            match known.get(&name) {
                Some(path) => {
                    let path = path.clone();
                    if let Err(message) = self.set_str(&path, &value) {
                        self.problems.push(ConfigProblem { at: name, message });
                    }
                }
                None if is_kubernetes_service_var(rest) => {}
                None => self
                    .warnings
                    .push(format!("ignoring unknown environment variable {name}")),
            }
        }
        self
    }

    /// Sets one key path (such as `client.ping_interval`) from text, converting it to
    /// the type of the key's current value. Used for environment variables and flags.
    pub fn set(mut self, path: &str, value: &str) -> Self {
        if let Err(message) = self.set_str(path, value) {
            self.problems.push(ConfigProblem {
                at: path.to_owned(),
                message,
            });
        }
        self
    }

    /// Sets a namespace (used by `--dev`) unless the file already defines it.
    pub fn namespace_if_absent(mut self, name: &str, ns: &NamespaceConfig) -> Self {
        let table = self
            .table
            .entry("namespaces")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = table
            && !t.contains_key(name)
            && let Ok(v) = toml::Table::try_from(ns)
        {
            t.insert(name.to_owned(), toml::Value::Table(v));
        }
        self
    }

    fn set_str(&mut self, path: &str, value: &str) -> Result<(), String> {
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().ok_or("empty key")?;
        let mut table = &mut self.table;
        for p in parts {
            table = match table
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => return Err(format!("{p} is not a section")),
            };
        }
        let converted = match table.get(last) {
            Some(toml::Value::Boolean(_)) => match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                _ => return Err(format!("expected true or false, got {value:?}")),
            },
            Some(toml::Value::Integer(_)) => value
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| format!("expected a whole number, got {value:?}"))?,
            Some(toml::Value::Table(_)) => return Err("is a section, not a value".into()),
            _ => toml::Value::String(value.to_owned()),
        };
        table.insert(last.to_owned(), converted);
        Ok(())
    }

    /// Deserializes and validates, reporting every problem at once.
    pub fn build(self) -> Result<Config, ConfigError> {
        let mut problems = self.problems;
        if self.load_failed {
            return Err(ConfigError { problems });
        }
        let config = match Config::deserialize(toml::Value::Table(self.table)) {
            Ok(c) => c,
            Err(e) => {
                problems.push(ConfigProblem {
                    at: "config".into(),
                    message: e.message().trim().to_owned(),
                });
                return Err(ConfigError { problems });
            }
        };
        problems.extend(config.problems());
        if problems.is_empty() {
            let mut config = config;
            config.warnings = self.warnings;
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Kubernetes sets `<SERVICE>_PORT`, `<SERVICE>_PORT_<n>_TCP...` and
/// `<SERVICE>_SERVICE_HOST/PORT...` for every Service in the namespace.
fn is_kubernetes_service_var(rest: &str) -> bool {
    rest == "PORT" || rest.starts_with("PORT_") || rest.starts_with("SERVICE_")
}

// Read by the `herald` tools and test harnesses, not configuration keys: `serve` must
// start in a shell where they are set.
const ENV_IGNORED: &[&str] = &["LOG", "CONFIG", "URL", "WS_URL", "TOKEN", "BIN"];

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Every `HERALD_*` name and the key path it sets (namespaces are file-only).
fn env_names(table: &toml::Table) -> BTreeMap<String, String> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            if prefix.is_empty() && k == "namespaces" {
                continue;
            }
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(inner, &path, out),
                _ => {
                    out.insert(
                        format!("HERALD_{}", path.replace('.', "_").to_ascii_uppercase()),
                        path,
                    );
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(table, "", &mut out);
    out
}

/// The environment variables Herald reads, with the key each sets.
pub fn env_reference() -> Vec<(String, String)> {
    let table = toml::Table::try_from(Config::default()).unwrap_or_default();
    env_names(&table).into_iter().collect()
}

impl Config {
    /// The namespace options for a namespace name, if configured.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        self.namespaces.get(name)
    }

    /// Whether any token key is configured.
    pub fn has_token_key(&self) -> bool {
        !self.token.hmac_secret.is_empty()
            || !self.token.rsa_public_key.is_empty()
            || !self.token.ec_public_key.is_empty()
    }

    /// Every semantic problem with this configuration.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |at: &str, message: String| {
            out.push(ConfigProblem {
                at: at.to_owned(),
                message,
            })
        };
        if self.broker == BrokerKind::Redis && self.redis_url.is_empty() {
            bad("redis_url", "required when broker = \"redis\"".into());
        }
        if self.redis_url.starts_with("rediss") {
            // Refused rather than silently connecting in plain text.
            bad(
                "redis_url",
                "TLS to Redis (rediss://) is not supported yet; use redis:// or \
                 redis-cluster:// on a trusted network, or a TLS sidecar"
                    .into(),
            );
        }
        if self.redis_prefix.is_empty()
            || !self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            bad(
                "redis_prefix",
                "must be non-empty: letters, digits, '_', '-', '.', ':'".into(),
            );
        }
        if !self.has_token_key() && !self.client.allow_anonymous {
            bad(
                "token",
                "no token key is set (token.hmac_secret, token.rsa_public_key or token.ec_public_key) and client.allow_anonymous is false: nobody could connect".into(),
            );
        }
        if !self.token.hmac_secret.is_empty() && self.token.hmac_secret.expose().len() < 32 {
            bad(
                "token.hmac_secret",
                "must be at least 32 bytes long to resist brute force".into(),
            );
        }
        for (key, path) in [
            ("token.rsa_public_key", &self.token.rsa_public_key),
            ("token.ec_public_key", &self.token.ec_public_key),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                bad(key, format!("file {path:?} does not exist"));
            }
        }
        if self.api.key.is_empty() && !self.api.insecure {
            // Not an error: the API is simply off. Reported by the server at start.
        }
        let c = &self.client;
        if c.ping_interval < Duration::from_secs(1) {
            bad("client.ping_interval", "must be at least 1s".into());
        }
        if c.pong_timeout.is_zero() || c.pong_timeout >= c.ping_interval {
            bad(
                "client.pong_timeout",
                "must be more than 0 and less than client.ping_interval".into(),
            );
        }
        if c.connect_timeout.is_zero() {
            bad("client.connect_timeout", "must be more than 0".into());
        }
        if c.queue_size < 16 {
            bad("client.queue_size", "must be at least 16".into());
        }
        if c.max_frame_bytes < 1024 {
            bad("client.max_frame_bytes", "must be at least 1024".into());
        }
        if c.write_interval > Duration::from_secs(1) {
            bad("client.write_interval", "must be at most 1s".into());
        }
        if c.write_batch_bytes < 1024 {
            bad("client.write_batch_bytes", "must be at least 1024".into());
        }
        if c.presence_ttl < Duration::from_secs(3) {
            bad("client.presence_ttl", "must be at least 3s".into());
        }
        if c.max_channels == 0 {
            bad("client.max_channels", "must be at least 1".into());
        }
        if c.read_buffer_bytes < 256 || c.write_buffer_bytes < 256 {
            bad(
                "client.read_buffer_bytes",
                "socket buffers must be at least 256 bytes".into(),
            );
        }
        if self.shutdown.timeout < self.shutdown.drain_window {
            bad(
                "shutdown.timeout",
                "must be at least shutdown.drain_window".into(),
            );
        }
        for (name, ns) in &self.namespaces {
            let at = format!("namespaces.{name}");
            if name != WILDCARD_NAMESPACE
                && (name.is_empty()
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'))
            {
                bad(&at, "names use letters, digits, '_' and '-' only (or \"*\" for any other namespace)".into());
            }
            if (ns.history_size > 0) == ns.history_ttl.is_zero() {
                bad(
                    &at,
                    "history_size and history_ttl must both be set or both be zero".into(),
                );
            }
        }
        out
    }
}

/// Loads `path` as the only layer over the defaults (used by `herald checkconfig`).
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::one(
            path.display().to_string(),
            "file does not exist",
        ));
    }
    ConfigBuilder::new().file(path).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn layers_apply_in_order() {
        let config = ConfigBuilder::new()
            .toml(&format!(
                "listen = \"127.0.0.1:9000\"\n[token]\nhmac_secret = \"{SECRET}\"\n[client]\nqueue_size = 64\n"
            ))
            .env([
                ("HERALD_CLIENT_QUEUE_SIZE".to_owned(), "128".to_owned()),
                ("HERALD_CLIENT_PING_INTERVAL".to_owned(), "10s".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned()),
            ])
            .set("client.queue_size", "256")
            .build()
            .expect("valid");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.client.queue_size, 256);
        assert_eq!(config.client.ping_interval, Duration::from_secs(10));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = ConfigBuilder::new()
            .toml(
                "broker = \"redis\"\n[client]\nping_interval = \"2s\"\npong_timeout = \"5s\"\nqueue_size = 1\n[namespaces.chat]\nhistory_size = 10\n[namespaces.\"bad name\"]\n",
            )
            .set("client.allow_anonymous", "maybe")
            .build()
            .expect_err("invalid");
        let at: Vec<&str> = err.problems.iter().map(|p| p.at.as_str()).collect();
        for expected in [
            "client.allow_anonymous",
            "redis_url",
            "token",
            "client.pong_timeout",
            "client.queue_size",
            "namespaces.chat",
            "namespaces.bad name",
        ] {
            assert!(at.contains(&expected), "{expected} missing from {at:?}");
        }
    }

    #[test]
    fn unknown_env_vars_warn_and_kubernetes_service_vars_are_ignored() {
        let config = ConfigBuilder::new()
            .set("client.allow_anonymous", "true")
            .env([
                ("HERALD_NOPE".to_owned(), "1".to_owned()),
                ("HERALD_PORT".to_owned(), "tcp://10.0.0.1:80".to_owned()),
                ("HERALD_PORT_80_TCP_ADDR".to_owned(), "10.0.0.1".to_owned()),
                ("HERALD_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
            ])
            .build()
            .expect("warnings are not errors");
        assert_eq!(
            config.warnings,
            vec!["ignoring unknown environment variable HERALD_NOPE".to_owned()]
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors() {
        let err = ConfigBuilder::new()
            .toml("[client]\nping_intervall = \"2s\"\n")
            .build()
            .expect_err("unknown key");
        assert!(err.to_string().contains("ping_intervall"), "{err}");
        let err = ConfigBuilder::new()
            .toml("[client]\nping_interval = \"soon\"\n")
            .build()
            .expect_err("bad duration");
        assert_eq!(err.problems.len(), 1);
    }

    #[test]
    fn short_hmac_secret_is_rejected_and_secrets_are_redacted() {
        let err = ConfigBuilder::new()
            .set("token.hmac_secret", "short")
            .build()
            .expect_err("short");
        assert_eq!(err.problems[0].at, "token.hmac_secret");
        let config = ConfigBuilder::new()
            .set("token.hmac_secret", SECRET)
            .set("api.key", "k")
            .build()
            .expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET) && debug.contains("<redacted>"));
    }

    #[test]
    fn tls_redis_urls_are_refused_not_downgraded() {
        for url in ["rediss://redis:6380", "rediss-cluster://a:7000"] {
            let err = ConfigBuilder::new()
                .set("broker", "redis")
                .set("redis_url", url)
                .build()
                .expect_err("TLS is not supported");
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.at == "redis_url" && p.message.contains("TLS")),
                "{url}: {:?}",
                err.problems
            );
        }
    }

    #[test]
    fn env_reference_lists_nested_keys() {
        let names: Vec<String> = env_reference().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"HERALD_TOKEN_HMAC_SECRET".to_owned()));
        assert!(names.contains(&"HERALD_SHUTDOWN_DRAIN_WINDOW".to_owned()));
        assert!(!names.iter().any(|n| n.starts_with("HERALD_NAMESPACES")));
    }
}
