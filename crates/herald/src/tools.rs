//! Small tools: `gentoken`, `publish`, `publish-entity`, `checkconfig`, `healthcheck`.

use crate::cli::{
    CheckconfigArgs, ConfigArgs, GentokenArgs, HealthcheckArgs, PublishArgs, PublishEntityArgs,
};
use crate::config::{Layers, env_reference};
use crate::token::sign;
use anyhow::{Context, bail};
use herald_gateway::auth::unix_now;
use herald_protocol::{Audience, EntityEvent, RawJson};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

fn config_secret(config: &ConfigArgs) -> anyhow::Result<String> {
    let mut b = Layers::new();
    if let Some(path) = &config.config {
        b = b.file(path);
    }
    // Only the secret matters here; other problems (e.g. no key at all) are not ours.
    let b =
        b.env(std::env::vars().filter(|(k, _)| {
            k == "HERALD_TOKEN_HMAC_SECRET" || k == "HERALD_TOKEN_HMAC_SECRET_FILE"
        }));
    let mut gateway = b
        .set("client.allow_anonymous", "true")
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .gateway;
    gateway.load_secret_files()?;
    let secret = gateway.token.hmac_secret.expose().to_owned();
    if secret.is_empty() {
        bail!(
            "no HMAC secret: pass --token-hmac-secret, set HERALD_TOKEN_HMAC_SECRET or HERALD_TOKEN_HMAC_SECRET_FILE, or --config a file with token.hmac_secret or token.hmac_secret_file"
        );
    }
    Ok(secret)
}

/// `herald gentoken`.
#[allow(clippy::print_stdout)]
pub(crate) fn gentoken(args: GentokenArgs) -> anyhow::Result<ExitCode> {
    let secret = match args.token_hmac_secret {
        Some(s) => s,
        None => config_secret(&args.config)?,
    };
    // A node refuses a shorter secret at start, so no node would accept the token.
    if secret.len() < 32 {
        bail!(
            "the HMAC secret is {} bytes; nodes require at least 32 (token.hmac_secret), so no node would accept this token",
            secret.len()
        );
    }
    let ttl = if args.ttl == "0" {
        None
    } else {
        Some(
            humantime::parse_duration(&args.ttl)
                .with_context(|| format!("invalid --ttl {:?}", args.ttl))?,
        )
    };
    let mut claims = json!({ "sub": args.user });
    if let Some(ttl) = ttl {
        claims["exp"] = json!(unix_now() + ttl.as_secs());
    }
    if let Some(channel) = args.channel {
        claims["channel"] = json!(channel);
    }
    if let Some(info) = args.info {
        claims["info"] = serde_json::from_str(&info).context("--info is not valid JSON")?;
    }
    args.claims.apply(&mut claims);
    println!("{}", sign(&secret, &claims)?);
    Ok(ExitCode::SUCCESS)
}

/// Parses publish data: JSON as given; a bare word (text that does not start like JSON)
/// as a JSON string. Text that starts like JSON but is not (`{text:hi}`) is an error,
/// not a string: it is almost always a quoting mistake.
pub(crate) fn parse_data(data: &str) -> anyhow::Result<Value> {
    match serde_json::from_str(data) {
        Ok(v) => Ok(v),
        Err(e) if data.trim_start().starts_with(['{', '[', '"']) => bail!(
            "the data is not valid JSON ({e}): {data}\n  keys and strings need double quotes, e.g. '{{\"text\":\"hi\"}}' (single quotes around it in a shell)"
        ),
        Err(_) => Ok(Value::String(data.to_owned())),
    }
}

/// `herald publish --redis-url`: through the function library, as any publisher could.
#[allow(clippy::print_stdout)]
async fn publish_to_redis(args: &PublishArgs, url: &str) -> anyhow::Result<ExitCode> {
    use herald_broker::{Broker, PublishRequest};
    let mut b = Layers::new();
    if let Some(path) = &args.config.config {
        b = b.file(path);
    }
    b = b
        .flag("--redis-url", "redis.url", url)
        .set("client.allow_anonymous", "true");
    if let Some(prefix) = &args.redis_prefix {
        b = b.flag("--redis-prefix", "redis.prefix", prefix);
    }
    let config = b.build().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ch = herald_gateway::channel::Channel::resolve(&config.gateway, &args.channel).map_err(
        |code| {
            anyhow::anyhow!(
                "channel {:?}: {} (namespaces come from --config)",
                args.channel,
                code.message()
            )
        },
    )?;
    let data = herald_protocol::RawJson::from_value(&parse_data(&args.data)?).context("data")?;
    let mut req = PublishRequest::new(data).with_history(ch.ns.history_size, ch.ns.history_ttl);
    req.idempotency_key = args.idempotency_key.clone();
    let broker = herald_redis::RedisBroker::connect(config.redis)
        .await
        .context("cannot connect to Redis")?;
    let out = broker
        .publish(&args.channel, req)
        .await
        .context("publish failed")?;
    let mut reply = json!({});
    if out.position.offset > 0 {
        reply = json!({ "offset": out.position.offset, "epoch": out.position.epoch });
    }
    println!("{reply}");
    Ok(ExitCode::SUCCESS)
}

/// `herald publish`.
#[allow(clippy::print_stdout)]
pub(crate) async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.redis_url {
        return publish_to_redis(&args, url).await;
    }
    let mut body = json!({ "channel": args.channel, "data": parse_data(&args.data)? });
    if let Some(key) = args.idempotency_key {
        body["idempotency_key"] = json!(key);
    }
    let result = call_api(&args.url, args.api_key.as_deref(), "publish", &body).await?;
    println!("{}", result.get());
    Ok(ExitCode::SUCCESS)
}

/// Calls a server API method; its `result` as the node wrote it (keys in the node's
/// order), or an error carrying the reply's `error`.
pub(crate) async fn call_api(
    base_url: &str,
    api_key: Option<&str>,
    method: &str,
    body: &Value,
) -> anyhow::Result<Box<serde_json::value::RawValue>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let url = format!("{}/api/{method}", base_url.trim_end_matches('/'));
    let mut req = client.post(&url).json(body);
    if let Some(key) = api_key {
        req = req.header("X-API-Key", key);
    }
    let resp = req.send().await.with_context(|| {
        format!("cannot reach {url} (is a node running there? --url or HERALD_URL names it)")
    })?;
    let status = resp.status();
    match status.as_u16() {
        401 => bail!(
            "the node at {base_url} refused the API key ({status}): pass --api-key or set HERALD_API_KEY to the node's api.key (herald serve --dev prints it)"
        ),
        404 => bail!(
            "{url} is not a Herald API ({status}): --url is the node's base URL, such as http://127.0.0.1:8000, without /api"
        ),
        _ => {}
    }
    let text = resp.text().await.context("reading the reply")?;
    #[derive(serde::Deserialize)]
    struct Reply {
        result: Option<Box<serde_json::value::RawValue>>,
        error: Option<Value>,
    }
    let reply: Reply = serde_json::from_str(&text).with_context(|| {
        format!(
            "the reply from {url} ({status}) is not JSON: {}",
            text.chars().take(200).collect::<String>()
        )
    })?;
    if let Some(err) = reply.error {
        bail!("{method} failed ({status}): {err}");
    }
    reply
        .result
        .ok_or_else(|| anyhow::anyhow!("the reply from {url} has no result: {text}"))
}

/// Milliseconds since the Unix epoch.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `herald publish-entity`.
#[allow(clippy::print_stdout)]
pub(crate) async fn publish_entity(args: PublishEntityArgs) -> anyhow::Result<ExitCode> {
    let payload = args
        .payload
        .map(|p| RawJson::from_string(p).map_err(|e| anyhow::anyhow!("--payload: {e}")))
        .transpose()?;
    let event = EntityEvent {
        entity_type: args.entity_type,
        entity_id: args.entity_id,
        action: args.action,
        actor: args.actor,
        version: args.version,
        timestamp: args.timestamp.unwrap_or_else(now_millis),
        payload,
    };
    let audiences = if args.audiences.is_empty() {
        vec![Audience::Public]
    } else {
        args.audiences
    };
    // The same rule the node applies, checked before anything is sent.
    event.channels(&audiences)?;
    let mut body = json!({ "event": event, "audiences": audiences });
    if let Some(key) = args.idempotency_key {
        body["idempotency_key"] = json!(key);
    }
    let raw = call_api(&args.url, args.api_key.as_deref(), "publish_entity", &body).await?;
    let result: Value = serde_json::from_str(raw.get()).context("the reply's result")?;
    let responses = result["responses"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let failed: Vec<&Value> = responses
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    if !failed.is_empty() {
        bail!(
            "publish_entity failed in {} of {} channels: {}",
            failed.len(),
            responses.len(),
            Value::from_iter(failed.into_iter().cloned())
        );
    }
    println!("{result}");
    Ok(ExitCode::SUCCESS)
}

/// `herald checkconfig`.
#[allow(clippy::print_stdout)]
pub(crate) fn checkconfig(args: &CheckconfigArgs) -> anyhow::Result<ExitCode> {
    if args.env {
        for (name, key) in env_reference() {
            println!("{name:<40} {key}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut b = Layers::new();
    if let Some(path) = &args.config.config {
        b = b.file(path);
    }
    match b.env(std::env::vars()).build() {
        Ok(c) => {
            for warning in &c.warnings {
                eprintln!("herald: warning: {warning}");
            }
            let g = &c.gateway;
            let warnings = match c.warnings.len() {
                0 => String::new(),
                1 => " (with 1 warning above)".to_owned(),
                n => format!(" (with {n} warnings above)"),
            };
            let broker = format!("{:?}", c.broker).to_lowercase();
            println!(
                "configuration OK{warnings}: listen {}, broker {broker}, {} namespace(s){}, server API {}",
                g.listen,
                g.namespaces.len(),
                if g.namespaces.is_empty() {
                    " (every channel is unknown until one is configured)"
                } else {
                    ""
                },
                if g.api.key.is_empty() && g.api.key_file.is_empty() && !g.api.insecure {
                    "disabled (no api.key or api.key_file)"
                } else {
                    "on"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprint!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `herald healthcheck`.
pub(crate) async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .context("HTTP client")?;
    match client.get(&args.url).send().await {
        Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("herald: not ready: {}", r.status());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("herald: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
