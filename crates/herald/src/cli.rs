//! Command-line flags.

use clap::{Args, Parser, Subcommand};
use herald_protocol::{Audience, EntityAction};
use std::path::PathBuf;

/// Herald: a horizontally scaled WebSocket fan-out server.
#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Clients connect with any Centrifuge protocol v2 SDK (e.g. npm `centrifuge`) to \
ws://HOST:PORT/connection/websocket; publishers use the HTTP API at http://HOST:PORT/api/*.\n\
Try it: herald serve --dev   (then open http://127.0.0.1:8000/)"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a gateway node.
    Serve(Box<ServeArgs>),
    /// Print a signed connection (or, with --channel, subscription) token.
    Gentoken(GentokenArgs),
    /// Publish one message through a node's HTTP API.
    Publish(PublishArgs),
    /// Publish an entity event (created/updated/deleted) to its entity channels through
    /// a node's HTTP API.
    #[command(disable_version_flag = true)]
    PublishEntity(PublishEntityArgs),
    /// Print a channel's publications as JSON lines, resuming across reconnects.
    Tail(TailArgs),
    /// Validate configuration (file, HERALD_* environment) and report every problem.
    Checkconfig(CheckconfigArgs),
    /// Exit 0 if a node answers ready (for container health checks).
    Healthcheck(HealthcheckArgs),
    /// Print shell exports of the `serve --dev` node's API key and token secret, for
    /// `eval "$(herald dev-env)"` in another terminal.
    DevEnv,
    /// A node's overview in the terminal, refreshed every second: nodes, rates, the
    /// busiest channels, recent close codes.
    Top(TopArgs),
}

/// `herald top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The node's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// The server API key.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Channels to list.
    #[arg(long, default_value_t = 15)]
    pub rows: usize,
    /// Print one screen and exit.
    #[arg(long)]
    pub once: bool,
}

/// Where configuration comes from.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `herald checkconfig`.
#[derive(Debug, Args)]
pub(crate) struct CheckconfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print every HERALD_* environment variable and the setting it sets, and exit.
    #[arg(long)]
    pub env: bool,
}

/// `herald serve`. Precedence: defaults < --config file < HERALD_* env < flags.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Development mode: embedded broker, generated token secret and API key, permissive
    /// namespaces with history, anonymous clients allowed; prints a token and examples.
    /// Explicit flags still win. The generated secret and key are kept in a state file
    /// (printed at start) so that restarts keep them.
    #[arg(long)]
    pub dev: bool,
    /// With --dev: make a new secret and API key (and keep those).
    #[arg(long, requires = "dev")]
    pub dev_reset: bool,
    /// Address to listen on, HOST:PORT or :PORT for every interface [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Message backbone: memory (one node) or redis.
    #[arg(long, value_name = "KIND", value_parser = ["memory", "redis"])]
    pub broker: Option<String>,
    /// Redis URL: redis://HOST:PORT, or redis-cluster://HOST:PORT?node=HOST:PORT&node=... .
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of Herald's Redis keys and channels [default: herald].
    #[arg(long, value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// HMAC secret (≥ 32 bytes) for HS256/384/512 tokens.
    #[arg(long, value_name = "SECRET")]
    pub token_hmac_secret: Option<String>,
    /// PEM file with an RSA public key for RS*/PS* tokens.
    #[arg(long, value_name = "FILE")]
    pub token_rsa_public_key: Option<String>,
    /// PEM file with an EC public key for ES256/ES384 tokens.
    #[arg(long, value_name = "FILE")]
    pub token_ec_public_key: Option<String>,
    /// Required `aud` claim.
    #[arg(long, value_name = "AUD")]
    pub token_audience: Option<String>,
    /// Required `iss` claim.
    #[arg(long, value_name = "ISS")]
    pub token_issuer: Option<String>,
    /// Key for the server API (X-API-Key).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Accept connections without a token.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// This node's name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
    pub log_format: Option<String>,
}

/// `herald gentoken`.
#[derive(Debug, Args)]
pub(crate) struct GentokenArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The user id (`sub` claim).
    #[arg(long, short = 'u')]
    pub user: String,
    /// Lifetime, e.g. 1h, 30m, 7d; 0 for a token that never expires.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Make a subscription token for this channel instead of a connection token.
    #[arg(long)]
    pub channel: Option<String>,
    /// Public info to attach (JSON).
    #[arg(long, value_name = "JSON")]
    pub info: Option<String>,
    /// HMAC secret (else from --config / HERALD_TOKEN_HMAC_SECRET).
    #[arg(long, value_name = "SECRET")]
    pub token_hmac_secret: Option<String>,
    #[command(flatten)]
    pub claims: AudienceIssuerArgs,
}

/// The `aud` and `iss` claims of a token made by the CLI, for nodes that require them.
#[derive(Debug, Args)]
pub(crate) struct AudienceIssuerArgs {
    /// `aud` claim (the node's token.audience).
    #[arg(long, env = "HERALD_TOKEN_AUDIENCE")]
    pub audience: Option<String>,
    /// `iss` claim (the node's token.issuer).
    #[arg(long, env = "HERALD_TOKEN_ISSUER")]
    pub issuer: Option<String>,
}

impl AudienceIssuerArgs {
    /// Adds the claims that were given (empty values are left out).
    pub(crate) fn apply(&self, claims: &mut serde_json::Value) {
        for (name, value) in [("aud", &self.audience), ("iss", &self.issuer)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                claims[name] = serde_json::Value::from(v);
            }
        }
    }
}

/// `herald publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The channel.
    pub channel: String,
    /// The data: JSON, e.g. '{"text":"hi"}' (a bare word such as hello is sent as the
    /// JSON string "hello"; text that starts like JSON must be valid JSON).
    pub data: String,
    /// The node's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// The server API key.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Publish at most once for this key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Publish straight to Redis instead of through a node (history settings come from
    /// the channel's namespace in --config).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of Herald's Redis keys with --redis-url [default: herald].
    #[arg(long, value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `herald publish-entity`.
#[derive(Debug, Args)]
pub(crate) struct PublishEntityArgs {
    /// The entity's type, e.g. applications (1–64 of a-z, 0-9, _, -).
    #[arg(long = "type", value_name = "TYPE")]
    pub entity_type: String,
    /// The entity's id, e.g. 42 (1–128 of A-Z, a-z, 0-9, _, -).
    #[arg(long = "id", value_name = "ID")]
    pub entity_id: String,
    /// What happened: created, updated or deleted.
    #[arg(long)]
    pub action: EntityAction,
    /// The user who made the change.
    #[arg(long, default_value = "")]
    pub actor: String,
    /// The entity's version after the change.
    #[arg(long, default_value_t = 0)]
    pub version: u64,
    /// When it happened, in milliseconds since the Unix epoch [default: now].
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<u64>,
    /// The entity's new state (JSON).
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// Audiences to publish to: public, restricted (repeat, or separate with commas)
    /// [default: public].
    #[arg(long = "audience", value_name = "AUDIENCE", value_delimiter = ',')]
    pub audiences: Vec<Audience>,
    /// Publish at most once for this key (each channel gets its own key from it).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The node's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// The server API key.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// `herald tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The channel.
    pub channel: String,
    /// The node's WebSocket URL.
    #[arg(
        long,
        env = "HERALD_WS_URL",
        default_value = "ws://127.0.0.1:8000/connection/websocket"
    )]
    pub url: String,
    /// Connection token (else one is made from --token-hmac-secret, else anonymous).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Subscription token, for channels that need one (`$private:...`); with
    /// --token-hmac-secret one is signed for such a channel.
    #[arg(long, value_name = "TOKEN")]
    pub sub_token: Option<String>,
    /// Secret to sign a token for --user.
    #[arg(long, env = "HERALD_TOKEN_HMAC_SECRET", hide_env_values = true)]
    pub token_hmac_secret: Option<String>,
    /// User for a token made from the secret.
    #[arg(long, default_value = "herald-tail")]
    pub user: String,
    #[command(flatten)]
    pub claims: AudienceIssuerArgs,
    /// Start after this position (OFFSET:EPOCH) and print what was missed first.
    #[arg(long, value_name = "OFFSET:EPOCH")]
    pub since: Option<String>,
    /// Exit after this many publications.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `herald healthcheck`.
#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// The readiness URL.
    #[arg(long, default_value = "http://127.0.0.1:8000/readyz")]
    pub url: String,
}
