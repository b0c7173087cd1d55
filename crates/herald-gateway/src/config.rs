//! The gateway's settings: listener, tokens, server API, connections, shutdown and
//! channel namespaces, with the checks that need no other component. Reading them from
//! files, the environment and flags is the binary's job.

pub use crate::rate_limits::{NamespaceRateLimits, Rate, RateError, RateLimits};
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            node_name: String::new(),
            token: TokenConfig::default(),
            api: ApiConfig::default(),
            client: ClientConfig::default(),
            shutdown: ShutdownConfig::default(),
            namespaces: BTreeMap::new(),
        }
    }
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
    /// Rate limits per connection and per user (all off by default).
    pub rate_limits: RateLimits,
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
            rate_limits: RateLimits::default(),
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
    /// This namespace's own rate limits (absent keys keep `client.rate_limits`).
    #[serde(skip_serializing_if = "NamespaceRateLimits::is_empty")]
    pub rate_limits: NamespaceRateLimits,
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
            rate_limits: NamespaceRateLimits::default(),
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
    /// The setting, as a key path such as `client.ping_interval` or `namespaces.chat`.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with a gateway configuration, reported at once.
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

    /// Checks every setting and reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
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
        // No api.key (and not insecure) is not an error: the API is simply off, which
        // the server reports at start.
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
        for (key, message) in c.rate_limits.problems() {
            bad(&format!("client.rate_limits.{key}"), message);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Config {
        toml::from_str(text).expect("well-typed")
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = parse(
            "[client]\nping_interval = \"2s\"\npong_timeout = \"5s\"\nqueue_size = 1\n[namespaces.chat]\nhistory_size = 10\n[namespaces.\"bad name\"]\n",
        );
        let err = config.validate().expect_err("invalid");
        let at: Vec<&str> = err.problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "token",
                "client.pong_timeout",
                "client.queue_size",
                "namespaces.bad name",
                "namespaces.chat",
            ]
        );
        assert!(
            err.to_string()
                .starts_with("invalid configuration (5 problem(s)):")
        );
    }

    #[test]
    fn short_hmac_secret_is_rejected_and_secrets_are_redacted() {
        let mut config = Config::default();
        config.token.hmac_secret = Secret("short".into());
        let err = config.validate().expect_err("short");
        assert_eq!(err.problems[0].at, "token.hmac_secret");
        config.token.hmac_secret = Secret(SECRET.into());
        config.api.key = Secret("k".into());
        assert_eq!(config.validate(), Ok(()));
        let debug = format!("{config:?}");
        assert!(!debug.contains(SECRET) && debug.contains("<redacted>"));
    }

    #[test]
    fn settings_of_other_components_are_unknown_here() {
        for key in [
            "broker = \"redis\"",
            "redis_url = \"redis://r\"",
            "log_format = \"json\"",
        ] {
            let err = toml::from_str::<Config>(key).expect_err(key);
            assert!(err.message().contains("unknown field"), "{key}: {err}");
        }
    }
}
