//! `herald serve`: build the configuration from its layers, start logging, and run a
//! node until SIGTERM or SIGINT.

use crate::cli::ServeArgs;
use crate::config::{BrokerKind, ConfigError, HeraldConfig, Layers, LogFormat};
use anyhow::Context;
use herald_broker::Broker;
use herald_broker::memory::MemoryBroker;
use herald_gateway::config::{DEFAULT_NAMESPACE, NamespaceConfig, WILDCARD_NAMESPACE};
use herald_redis::RedisBroker;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Builds the configuration: defaults (or `--dev` defaults) < file < env < flags, with
/// `--dev`'s kept secrets from `state`.
fn build_config(
    args: &ServeArgs,
    state: &mut crate::dev::DevState,
) -> Result<HeraldConfig, ConfigError> {
    let mut base = HeraldConfig::default();
    if args.dev {
        base.broker = BrokerKind::Memory;
        base.gateway.client.allow_anonymous = true;
        // Pages served by any local dev server may connect.
        base.gateway.client.allowed_origins = vec!["*".into()];
        // The admin page, with a kept password; a file, the environment or a flag may
        // still turn it off or set other values.
        base.gateway.admin.enabled = true;
        base.gateway.admin.password = herald_gateway::config::Secret(state.admin_password());
        base.gateway.admin.secret = herald_gateway::config::Secret(state.admin_secret());
    }
    let mut b = Layers::from_config(&base);
    if let Some(path) = &args.config.config {
        b = b.file(path);
    }
    b = b.env(std::env::vars());
    let flags: [(&str, &str, &Option<String>); 12] = [
        ("--listen", "listen", &args.listen),
        ("--broker", "broker", &args.broker),
        ("--redis-url", "redis.url", &args.redis_url),
        ("--redis-prefix", "redis.prefix", &args.redis_prefix),
        (
            "--token-hmac-secret",
            "token.hmac_secret",
            &args.token_hmac_secret,
        ),
        (
            "--token-rsa-public-key",
            "token.rsa_public_key",
            &args.token_rsa_public_key,
        ),
        (
            "--token-ec-public-key",
            "token.ec_public_key",
            &args.token_ec_public_key,
        ),
        ("--token-audience", "token.audience", &args.token_audience),
        ("--token-issuer", "token.issuer", &args.token_issuer),
        ("--api-key", "api.key", &args.api_key),
        ("--node-name", "node_name", &args.node_name),
        ("--log-format", "log_format", &args.log_format),
    ];
    for (flag, path, value) in flags {
        if let Some(v) = value {
            // `:8010` is every interface, as in most servers' flags.
            let v = match v.strip_prefix(':') {
                Some(port) if flag == "--listen" => format!("0.0.0.0:{port}"),
                _ => v.clone(),
            };
            b = b.flag(flag, path, &v);
        }
    }
    if args.allow_anonymous {
        b = b.flag("--allow-anonymous", "client.allow_anonymous", "true");
    }
    if args.dev {
        let open = NamespaceConfig::permissive();
        b = b
            .namespace_if_absent(DEFAULT_NAMESPACE, &open)
            .namespace_if_absent(WILDCARD_NAMESPACE, &open);
        // Generated only where nothing was given.
        let probe = b.clone().build();
        let (secret_missing, key_missing) = match &probe {
            Ok(c) => (
                !c.gateway.has_token_key(),
                c.gateway.api.key.is_empty() && c.gateway.api.key_file.is_empty(),
            ),
            Err(_) => (true, true),
        };
        if secret_missing && !has_key_setting(&b) {
            b = b.set("token.hmac_secret", &state.secret());
        }
        if key_missing && args.api_key.is_none() && std::env::var_os("HERALD_API_KEY").is_none() {
            b = b.set("api.key", &state.api_key());
        }
    }
    b.build()
}

fn has_key_setting(b: &Layers) -> bool {
    b.clone().build().is_ok_and(|c| c.gateway.has_token_key())
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}

async fn signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    token.cancel();
}

/// Runs `herald serve`.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut state = crate::dev::DevState::load(args.dev_reset);
    let config = match build_config(&args, &mut state) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            if e.problems.iter().any(|p| p.key == "token") {
                eprintln!(
                    "  To fix: pass --token-hmac-secret (32 bytes or more; e.g. $(openssl rand -hex 32)) or set HERALD_TOKEN_HMAC_SECRET,\n  or try `herald serve --dev` for a development node that needs nothing."
                );
            }
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(config.log_format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if args.dev {
        state.save();
    }
    if config.gateway.namespaces.is_empty() {
        tracing::warn!(
            "no namespaces are configured: every channel is an unknown channel (error 102) until the configuration has one, e.g. [namespaces.default] for channels without ':' (see docs/configuration.md); herald serve --dev allows every channel"
        );
    }
    let broker: Arc<dyn Broker> = match config.broker {
        BrokerKind::Memory => Arc::new(MemoryBroker::new()),
        BrokerKind::Redis => Arc::new(
            RedisBroker::connect(config.redis.clone())
                .await
                .context("the Redis broker could not start")?,
        ),
    };
    let listen = config.gateway.listen;
    let listener = herald_gateway::server::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("listener address")?;
    if config.gateway.api.key.is_empty()
        && config.gateway.api.key_file.is_empty()
        && !config.gateway.api.insecure
    {
        tracing::warn!("no api.key or api.key_file set: the server API (/api/*) is disabled");
    }
    if args.dev {
        // A node on every interface is reached locally at 127.0.0.1.
        let mut shown = addr;
        if shown.ip().is_unspecified() {
            shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        print_dev_banner(&config.gateway, shown, &state);
    }
    tracing::info!(%addr, broker = ?config.broker, version = herald_gateway::node::VERSION, "listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let node = herald_gateway::build(config.gateway, broker, shutdown).await?;
    herald_gateway::serve(node, listener).await?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn print_dev_banner(
    config: &herald_gateway::Config,
    addr: std::net::SocketAddr,
    state: &crate::dev::DevState,
) {
    let secret = config.token.hmac_secret.expose();
    let token = if secret.is_empty() {
        String::from("(no HMAC secret: sign tokens with your configured key)")
    } else {
        crate::token::sign(secret, &serde_json::json!({"sub": "dev-user", "exp": herald_gateway::auth::unix_now() + 86_400}))
            .unwrap_or_else(|e| format!("(cannot sign: {e})"))
    };
    let key = config.api.key.expose();
    let herald = crate::dev::this_command();
    let kept = state.describe();
    let admin = if config.admin.enabled {
        format!(
            "http://{addr}/admin   (password {})",
            config.admin.password.expose()
        )
    } else {
        "off (admin.enabled is false)".to_owned()
    };
    println!(
        r#"
Herald {version} is running in development mode (embedded broker, permissive namespaces,
history on, anonymous clients allowed). Not for production.

  WebSocket   ws://{addr}/connection/websocket
  Server API  http://{addr}/api/...   (X-API-Key below)
  Health      http://{addr}/livez  http://{addr}/readyz   Metrics http://{addr}/metrics
  Admin       {admin}

  HMAC secret {secret}
  API key     {key}
  Token       {token}
              (user "dev-user", valid 24h)
  {kept}

Try it (in another terminal):
  {herald} tail news --url ws://{addr}/connection/websocket
  curl -s -X POST http://{addr}/api/publish -H 'X-API-Key: {key}' \
       -d '{{"channel":"news","data":{{"text":"hello"}}}}'
  {herald} publish news '{{"text":"hi"}}' --url http://{addr} --api-key {key}
  open http://{addr}/ for this node's page

In a browser (npm i centrifuge):
  const c = new Centrifuge('ws://{addr}/connection/websocket', {{ token: '<Token above>' }});
  c.newSubscription('news').on('publication', ctx => console.log(ctx.data)).subscribe();
  c.connect();
"#,
        version = herald_gateway::node::VERSION,
    );
}
