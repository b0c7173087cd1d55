//! The gateway's settings: listener, tokens, server API, connections, shutdown and
//! channel namespaces, with the checks that need no other component. Reading them from
//! files, the environment and flags is the binary's job.

pub use crate::proxy::{HookConfig, ProxyConfig};
pub use crate::rate_limits::{NamespaceRateLimits, Rate, RateError, RateLimits};
use herald_protocol::DeltaType;
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
    /// Proxy hooks to the application's backend.
    pub proxy: ProxyConfig,
    /// The admin page (`/admin`).
    pub admin: AdminConfig,
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
            proxy: ProxyConfig::default(),
            admin: AdminConfig::default(),
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// File holding the HMAC secret (a mounted Kubernetes Secret), instead of
    /// `hmac_secret`; one trailing newline is ignored.
    pub hmac_secret_file: String,
    /// URL of a JWKS document with RSA and EC keys chosen by the token's `kid` ("" = off;
    /// `https://` or `http://`). Configuration only: no part of a token ever goes into a
    /// URL.
    pub jwks_url: String,
    /// PEM file of the CA certificates an `https://` key server is checked against,
    /// instead of the system's roots (a key server behind a private CA); "" = the
    /// system's roots.
    pub jwks_ca_file: String,
    /// How long one JWKS fetch may take.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// How often the key set is fetched again in the background (a `Cache-Control:
    /// max-age` shorter than this, but not below `jwks_min_refresh_interval`, wins).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// Least time between two fetches caused by tokens with an unknown `kid`, so a storm
    /// of made-up kids costs the key server at most one request per interval.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// Largest JWKS document accepted, in bytes.
    pub jwks_max_bytes: usize,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            hmac_secret: Secret::default(),
            rsa_public_key: String::new(),
            ec_public_key: String::new(),
            audience: String::new(),
            issuer: String::new(),
            hmac_secret_file: String::new(),
            jwks_url: String::new(),
            jwks_ca_file: String::new(),
            jwks_timeout: Duration::from_secs(5),
            jwks_refresh_interval: Duration::from_secs(300),
            jwks_min_refresh_interval: Duration::from_secs(10),
            jwks_max_bytes: 256 * 1024,
        }
    }
}

/// The server HTTP API (`/api/*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The key callers send in `X-API-Key` (or `Authorization: apikey <key>`).
    pub key: Secret,
    /// Serve the API without a key (only for trusted networks).
    pub insecure: bool,
    /// File holding the API key (a mounted Kubernetes Secret), instead of `key`; one
    /// trailing newline is ignored.
    pub key_file: String,
}

/// The admin page (`/admin`): the cluster's nodes, channels, a live tail and a publish
/// form, for people who run Herald. Off unless enabled; a login with its own password
/// opens it, never the API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin page.
    pub enabled: bool,
    /// The password that opens the page (12 characters or more).
    pub password: Secret,
    /// Signs admin sessions (32 bytes or more). The same on every node, so that a login
    /// made through one node works on every node behind the balancer.
    pub secret: Secret,
    /// How long a login lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl AdminConfig {
    /// The shortest password accepted, in characters.
    pub const MIN_PASSWORD_CHARS: usize = 12;
    /// The shortest session secret accepted, in bytes.
    pub const MIN_SECRET_BYTES: usize = 32;

    /// Whether the password is long enough.
    pub fn password_long_enough(&self) -> bool {
        self.password.expose().chars().count() >= Self::MIN_PASSWORD_CHARS
    }

    /// Whether the session secret is long enough.
    pub fn secret_long_enough(&self) -> bool {
        self.secret.expose().len() >= Self::MIN_SECRET_BYTES
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            password: Secret::default(),
            secret: Secret::default(),
            session_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

/// A secret file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {key} from {path}")]
pub struct SecretFileError {
    /// The setting that names the file.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Reads a secret from a file, without one trailing newline (`echo` and most editors
/// add one; Kubernetes Secrets keep whatever was stored).
pub fn read_secret_file(key: &'static str, path: &str) -> Result<Secret, SecretFileError> {
    let mut text = std::fs::read_to_string(path).map_err(|source| SecretFileError {
        key,
        path: path.to_owned(),
        source,
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret(text))
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
    /// Largest frame (and message) accepted from a client, in bytes; a larger one closes
    /// the connection with 1009.
    pub max_frame_bytes: usize,
    /// Most bytes the writer puts in one batched frame.
    pub write_batch_bytes: usize,
    /// gzip the HTTP-streaming and SSE responses of clients that accept it. Off by
    /// default: each compressed stream keeps a compressor of its own (see the README's
    /// numbers), a large cost per connection next to an idle connection's few KiB.
    pub stream_gzip: bool,
    /// Offer permessage-deflate to WebSocket clients (RFC 7692). Off by default. When on,
    /// a client that offers the extension on HTTP/1.1 gets it without context takeover
    /// either way: each
    /// message is compressed on its own by a compressor shared per thread, so a
    /// connection keeps no compression state (its cost is CPU; see the README's numbers).
    pub websocket_compression: bool,
    /// zlib level for WebSocket compression, 1 (fastest) to 9 (smallest).
    pub websocket_compression_level: u32,
    /// WebSocket messages shorter than this go uncompressed, where deflate saves little.
    pub websocket_compression_min_bytes: usize,
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
    /// The most one read from a connection takes (up to 4 KiB), and the step its read
    /// buffer grows by while a frame is partly read, in bytes. Between messages a
    /// connection holds no read buffer (on HTTP/2, the library's WebSocket keeps one of
    /// this size).
    pub read_buffer_bytes: usize,
    /// Queued bytes past which a connection's write waits for the socket. Once written,
    /// nothing is kept (on HTTP/2, the library's WebSocket keeps its buffer).
    pub write_buffer_bytes: usize,
    /// The kernel send buffer of each client socket, in bytes (the kernel doubles it;
    /// 0 = the kernel's automatic sizing, which lets a stalled client pin megabytes).
    pub socket_send_buffer_bytes: usize,
    /// How long the node stays subscribed to a channel after its last local subscriber
    /// left: clients that drop together and come back (a reconnect storm, a deploy) find
    /// the channel live and its replay window warm.
    #[serde(with = "humantime_serde")]
    pub channel_linger: Duration,
    /// Browser origins allowed to open connections and call the server API besides the
    /// request's own host: exact origins (`https://app.example.com`, `http://host:8080`),
    /// `*.example.com` patterns (any subdomain, with or without a scheme), `null`, or
    /// `*` for any. Requests without an `Origin` (non-browser clients) are always
    /// allowed.
    pub allowed_origins: Vec<String>,
    /// Proxies (IP addresses or CIDRs) whose `X-Forwarded-For` is believed: the client's
    /// address is then the nearest untrusted address in it. Empty = the TCP peer is the
    /// client.
    pub trusted_proxies: Vec<String>,
    /// Connection admission limits (all off by default).
    pub limits: LimitsConfig,
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
            stream_gzip: false,
            websocket_compression: false,
            websocket_compression_level: 1,
            websocket_compression_min_bytes: 128,
            write_interval: Duration::from_millis(5),
            max_channels: 128,
            presence_ttl: Duration::from_secs(60),
            read_buffer_bytes: 1024,
            write_buffer_bytes: 4 * 1024,
            socket_send_buffer_bytes: 64 * 1024,
            channel_linger: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

/// Limits on who may open a connection and how fast, each off at 0 and each with a
/// `dry_run` mode that only counts (metrics and log) and admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open sockets on this node, authenticated or not (more: HTTP 503).
    pub connections: ConnectionLimit,
    /// Open sockets from one client address on this node (more: HTTP 429).
    pub connections_per_ip: ConnectionLimit,
    /// Connections of one user on this node (more: error 111 to `connect`).
    pub connections_per_user: ConnectionLimit,
    /// New sockets per second on this node (more: HTTP 429).
    pub connect_rate: RateLimit,
    /// New sockets per second from one client address (more: HTTP 429).
    pub connect_rate_per_ip: RateLimit,
    /// The `Retry-After` sent with a refusal for a full connection limit (a refused
    /// rate gets the time until its next token instead).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connections: ConnectionLimit::default(),
            connections_per_ip: ConnectionLimit::default(),
            connections_per_user: ConnectionLimit::default(),
            connect_rate: RateLimit::default(),
            connect_rate_per_ip: RateLimit::default(),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// A limit on connections open at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimit {
    /// Most connections at once (0 = no limit).
    pub max: u32,
    /// Count and log what would be refused, but admit it.
    pub dry_run: bool,
}

/// A token bucket on new connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per second (0 = no limit).
    pub per_second: u32,
    /// Bucket size: how many may arrive at once (0 = `per_second`).
    pub burst: u32,
    /// Count and log what would be refused, but admit it.
    pub dry_run: bool,
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
    /// Delta compressions subscribers may ask for (`["fossil"]`); a subscription asking
    /// for another gets full publications. Needs history: patches chain publications
    /// by offset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_delta_types: Vec<DeltaType>,
    /// Latest-value channels (what Centrifugo calls cache recovery): every subscribe
    /// reply carries the channel's newest publication, so a status tile shows the
    /// current value at once, and a client that comes back gets only the newest one
    /// instead of everything it missed. Needs history (`history_size = 1` is enough).
    pub latest_value: bool,
    /// Subscribers may choose a tag filter (`tf` in the subscribe request, the SDK's
    /// `tagsFilter`): they then receive only the publications whose tags pass it, live
    /// and recovered. Filters set by tokens apply whatever this says.
    pub allow_tags_filter: bool,
    /// Subscriptions without a token are authorized by the `proxy.subscribe` hook
    /// (instead of `allow_subscribe_*`).
    pub subscribe_proxy: bool,
    /// Client publications go through the `proxy.publish` hook, which authorizes
    /// them (instead of `allow_publish_*`) and may rewrite them.
    pub publish_proxy: bool,
    /// Subscriptions the subscribe hook gave an expiry are extended by the
    /// `proxy.sub_refresh` hook (otherwise they end when they expire).
    pub sub_refresh_proxy: bool,
    /// Every subscription is conflated so, unless its token or the subscribe hook
    /// says otherwise: `{ key = "tile", interval = "2s" }`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflation: Option<crate::conflation::ConflationConfig>,
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
            allowed_delta_types: vec![DeltaType::Fossil],
            latest_value: false,
            allow_tags_filter: true,
            subscribe_proxy: false,
            publish_proxy: false,
            sub_refresh_proxy: false,
            conflation: None,
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
            || !self.token.hmac_secret_file.is_empty()
            || !self.token.rsa_public_key.is_empty()
            || !self.token.ec_public_key.is_empty()
            || !self.token.jwks_url.is_empty()
    }

    /// Reads `token.hmac_secret_file` and `api.key_file` into `token.hmac_secret` and
    /// `api.key`, so the rest of the node sees one place for each secret.
    pub fn load_secret_files(&mut self) -> Result<(), SecretFileError> {
        if !self.token.hmac_secret_file.is_empty() {
            self.token.hmac_secret =
                read_secret_file("token.hmac_secret_file", &self.token.hmac_secret_file)?;
            self.token.hmac_secret_file.clear();
        }
        if !self.api.key_file.is_empty() {
            self.api.key = read_secret_file("api.key_file", &self.api.key_file)?;
            self.api.key_file.clear();
        }
        Ok(())
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
        if !self.has_token_key() && !self.client.allow_anonymous && self.proxy.connect.is_none() {
            bad(
                "token",
                "no token key is set (token.hmac_secret, token.hmac_secret_file, token.rsa_public_key, token.ec_public_key or token.jwks_url), no proxy.connect hook, and client.allow_anonymous is false: nobody could connect".into(),
            );
        }
        let t = &self.token;
        if !t.hmac_secret.is_empty() && !t.hmac_secret_file.is_empty() {
            bad(
                "token.hmac_secret_file",
                "set either token.hmac_secret or token.hmac_secret_file, not both".into(),
            );
        }
        if !self.api.key.is_empty() && !self.api.key_file.is_empty() {
            bad(
                "api.key_file",
                "set either api.key or api.key_file, not both".into(),
            );
        }
        // The secret's length is checked wherever it comes from; the file's contents
        // never appear in a message.
        let hmac = if t.hmac_secret_file.is_empty() {
            Some(t.hmac_secret.clone())
        } else {
            match read_secret_file("token.hmac_secret_file", &t.hmac_secret_file) {
                Ok(s) => Some(s),
                Err(e) => {
                    bad(
                        "token.hmac_secret_file",
                        format!("cannot read {:?}: {}", e.path, e.source),
                    );
                    None
                }
            }
        };
        if let Some(s) = hmac
            && !s.is_empty()
            && s.expose().len() < 32
        {
            let at = if t.hmac_secret_file.is_empty() {
                "token.hmac_secret"
            } else {
                "token.hmac_secret_file"
            };
            bad(
                at,
                "must be at least 32 bytes long to resist brute force".into(),
            );
        }
        if !self.api.key_file.is_empty() {
            match read_secret_file("api.key_file", &self.api.key_file) {
                Ok(k) if k.is_empty() => {
                    bad("api.key_file", format!("{:?} is empty", self.api.key_file));
                }
                Ok(_) => {}
                Err(e) => bad(
                    "api.key_file",
                    format!("cannot read {:?}: {}", e.path, e.source),
                ),
            }
        }
        if !t.jwks_url.is_empty() {
            if !t.jwks_url.starts_with("http://") && !t.jwks_url.starts_with("https://") {
                bad(
                    "token.jwks_url",
                    "must be an http:// or https:// URL".into(),
                );
            }
            if !t.jwks_ca_file.is_empty() && !t.jwks_url.starts_with("https://") {
                bad(
                    "token.jwks_ca_file",
                    "is only used with an https:// token.jwks_url".into(),
                );
            }
            if t.jwks_timeout.is_zero() {
                bad("token.jwks_timeout", "must be more than 0".into());
            }
            if t.jwks_min_refresh_interval < Duration::from_secs(1) {
                bad(
                    "token.jwks_min_refresh_interval",
                    "must be at least 1s".into(),
                );
            }
            if t.jwks_refresh_interval < t.jwks_min_refresh_interval {
                bad(
                    "token.jwks_refresh_interval",
                    "must be at least token.jwks_min_refresh_interval".into(),
                );
            }
            if t.jwks_max_bytes < 1024 {
                bad("token.jwks_max_bytes", "must be at least 1024".into());
            }
        }
        for (key, path) in [
            ("token.rsa_public_key", &self.token.rsa_public_key),
            ("token.ec_public_key", &self.token.ec_public_key),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                bad(key, format!("file {path:?} does not exist"));
            }
        }
        let a = &self.admin;
        if a.enabled {
            if !a.password_long_enough() {
                bad(
                    "admin.password",
                    format!(
                        "must be at least {} characters when admin.enabled is true (HERALD_ADMIN_PASSWORD)",
                        AdminConfig::MIN_PASSWORD_CHARS
                    ),
                );
            }
            if !a.secret_long_enough() {
                bad(
                    "admin.secret",
                    format!(
                        "must be at least {} bytes when admin.enabled is true, and the same on every node (HERALD_ADMIN_SECRET; e.g. $(openssl rand -hex 32))",
                        AdminConfig::MIN_SECRET_BYTES
                    ),
                );
            }
            if !a.secret.is_empty() && a.secret == self.token.hmac_secret {
                bad(
                    "admin.secret",
                    "must differ from token.hmac_secret, or a client's token could open the admin page and an admin session could connect as a client".into(),
                );
            }
            if a.session_ttl < Duration::from_secs(60)
                || a.session_ttl > Duration::from_secs(30 * 86_400)
            {
                bad("admin.session_ttl", "must be from 1m to 30 days".into());
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
        if !(1024..=64 << 20).contains(&c.max_frame_bytes) {
            bad(
                "client.max_frame_bytes",
                "must be from 1024 bytes to 64 MiB".into(),
            );
        }
        if !(1..=9).contains(&c.websocket_compression_level) {
            bad(
                "client.websocket_compression_level",
                "must be from 1 (fastest) to 9 (smallest)".into(),
            );
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
        for origin in &c.allowed_origins {
            if let Err(e) = crate::admission::OriginPattern::parse(origin) {
                bad("client.allowed_origins", format!("{origin:?}: {e}"));
            }
        }
        for proxy in &c.trusted_proxies {
            if let Err(e) = crate::admission::Cidr::parse(proxy) {
                bad("client.trusted_proxies", format!("{proxy:?}: {e}"));
            }
        }
        for (at, rate) in [
            ("client.limits.connect_rate", c.limits.connect_rate),
            (
                "client.limits.connect_rate_per_ip",
                c.limits.connect_rate_per_ip,
            ),
        ] {
            if rate.per_second == 0 && rate.burst > 0 {
                bad(at, "burst is set but per_second is 0 (no limit)".into());
            }
        }
        if c.limits.retry_after < Duration::from_secs(1) {
            bad("client.limits.retry_after", "must be at least 1s".into());
        }
        for (key, message) in c.rate_limits.problems() {
            bad(&format!("client.rate_limits.{key}"), message);
        }
        for (key, message) in self.proxy.problems() {
            bad(&format!("proxy.{key}"), message);
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
            if ns.latest_value && !ns.history_enabled() {
                bad(
                    &format!("{at}.latest_value"),
                    "latest-value channels need history (history_size = 1 and a history_ttl are enough)".into(),
                );
            }
            for (on, key, hook) in [
                (ns.subscribe_proxy, "subscribe_proxy", &self.proxy.subscribe),
                (ns.publish_proxy, "publish_proxy", &self.proxy.publish),
                (
                    ns.sub_refresh_proxy,
                    "sub_refresh_proxy",
                    &self.proxy.sub_refresh,
                ),
            ] {
                if on && hook.is_none() {
                    let name = key.trim_end_matches("_proxy");
                    bad(
                        &format!("{at}.{key}"),
                        format!("needs the proxy.{name} hook (proxy.{name}.url)"),
                    );
                }
            }
            if let Some(problem) = ns.conflation.as_ref().and_then(|c| c.problem()) {
                bad(&format!("{at}.conflation"), problem.into());
            }
            if !ns.allowed_delta_types.is_empty() && !ns.history_enabled() {
                bad(
                    &format!("{at}.allowed_delta_types"),
                    "delta compression needs history (history_size and history_ttl): patches chain publications by offset".into(),
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
    fn delta_types_are_checked_and_need_history() {
        let err = toml::from_str::<Config>("[namespaces.a]\nallowed_delta_types = [\"xdelta\"]\n")
            .expect_err("unknown type");
        assert!(
            err.to_string()
                .contains("unknown delta type \"xdelta\" (the only one is \"fossil\")"),
            "{err}"
        );
        let mut config = parse(
            "[namespaces.a]\nallowed_delta_types = [\"fossil\"]\n[namespaces.b]\nhistory_size = 10\nhistory_ttl = \"1m\"\nallowed_delta_types = [\"fossil\"]\n",
        );
        config.token.hmac_secret = Secret(SECRET.into());
        let err = config.validate().expect_err("no history");
        let at: Vec<&str> = err.problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(at, ["namespaces.a.allowed_delta_types"]);
        assert_eq!(
            config.namespaces["b"].allowed_delta_types,
            [DeltaType::Fossil]
        );
        assert!(NamespaceConfig::permissive().allowed_delta_types == [DeltaType::Fossil]);
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

    #[test]
    fn secret_files_are_read_checked_and_exclusive() {
        let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let secret = dir.join("secret");
        let key = dir.join("key");
        let short = dir.join("short");
        std::fs::write(&secret, format!("{SECRET}\n")).expect("write");
        std::fs::write(&key, "api-key\n").expect("write");
        std::fs::write(&short, "short\n").expect("write");
        let mut config = Config::default();
        config.token.hmac_secret_file = secret.display().to_string();
        config.api.key_file = key.display().to_string();
        assert_eq!(config.validate(), Ok(()));
        config.load_secret_files().expect("readable");
        assert_eq!(config.token.hmac_secret.expose(), SECRET);
        assert_eq!(config.api.key.expose(), "api-key");
        assert!(config.token.hmac_secret_file.is_empty() && config.api.key_file.is_empty());

        let mut both = Config::default();
        both.token.hmac_secret = Secret(SECRET.into());
        both.token.hmac_secret_file = secret.display().to_string();
        both.api.key = Secret("k".into());
        both.api.key_file = dir.join("missing").display().to_string();
        let err = both.validate().expect_err("both set");
        let at: Vec<&str> = err.problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            ["token.hmac_secret_file", "api.key_file", "api.key_file"]
        );
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!err.to_string().contains(SECRET));

        let mut weak = Config::default();
        weak.token.hmac_secret_file = short.display().to_string();
        let err = weak.validate().expect_err("short");
        assert_eq!(err.problems[0].at, "token.hmac_secret_file");
        assert!(!err.to_string().contains("short\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jwks_settings_are_checked() {
        let mut config = Config::default();
        config.token.jwks_url = "file:///etc/passwd".into();
        let mut https = Config::default();
        https.token.jwks_url = "https://keys.example/jwks.json".into();
        https.validate().expect("https is fine");
        https.token.jwks_url = "http://keys.internal/jwks.json".into();
        https.token.jwks_ca_file = "/etc/herald/ca.pem".into();
        assert_eq!(
            https.validate().expect_err("a CA for plain http").problems[0].at,
            "token.jwks_ca_file"
        );
        config.token.jwks_timeout = Duration::ZERO;
        config.token.jwks_min_refresh_interval = Duration::from_secs(60);
        config.token.jwks_refresh_interval = Duration::from_secs(30);
        config.token.jwks_max_bytes = 10;
        let err = config.validate().expect_err("bad jwks settings");
        let at: Vec<&str> = err.problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "token.jwks_url",
                "token.jwks_timeout",
                "token.jwks_refresh_interval",
                "token.jwks_max_bytes"
            ]
        );
        config.token = TokenConfig {
            jwks_url: "http://127.0.0.1:1/keys".into(),
            ..TokenConfig::default()
        };
        assert_eq!(config.validate(), Ok(()), "a JWKS URL is a token key");
    }
}
