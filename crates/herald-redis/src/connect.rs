//! Reaching Redis at start: the command and pub/sub clients with Herald's timeouts and
//! reconnect policy, the server version check, the eviction warning and the library.

use crate::access::{client_config, redact_url};
use crate::config::RedisConfig;
use crate::error::RedisStartError;
use crate::library::{Library, LoadError};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::ConnectHandle;
use fred::types::config::UnresponsiveConfig;
use std::time::Duration;

/// Both connections to Redis, up and checked.
pub(crate) struct Connected {
    /// Commands (publish, reads, presence).
    pub(crate) client: Client,
    /// The node's pub/sub.
    pub(crate) subscriber: SubscriberClient,
    /// The tasks that drive the two connections.
    pub(crate) tasks: Vec<ConnectHandle>,
    /// Redis Cluster (sharded pub/sub, commands routed by slot).
    pub(crate) cluster: bool,
}

/// Slots of each event channel of the command client (fred's default is 32). Each of
/// a client's channels allocates all its slots at once: at 65,536 the command client's
/// alone held about 47 MB that nothing used.
const COMMAND_CLIENT_EVENTS: usize = 256;
/// Slots of each event channel of the subscriber client, whose message channel carries
/// every publication the node receives.
const SUBSCRIBER_EVENTS: usize = 1 << 16;

/// Connects, checks the server, and loads the function library.
pub(crate) async fn connect(config: &RedisConfig) -> Result<Connected, RedisStartError> {
    let url = redact_url(&config.url);
    let fred_config = client_config(config)?;
    let cluster = fred_config.server.is_clustered();
    let mut builder = Builder::from_config(fred_config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = config.connect_timeout;
            c.internal_command_timeout = config.command_timeout;
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(config.command_timeout),
                interval: Duration::from_millis(500),
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = config.command_timeout;
            // Every event channel of a client (messages, errors, reconnects, keyspace
            // and cluster events, ...) is a broadcast with this many slots, allocated
            // at once. The command client receives no messages: a small capacity.
            p.broadcast_channel_capacity = COMMAND_CLIENT_EVENTS;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    let redis_err = |source| RedisStartError::from_redis(url.clone(), source);
    let client = builder.build().map_err(redis_err)?;
    // Pub/sub messages wait in the subscriber's message channel for the dispatcher; a
    // lagging reader loses messages (then repaired), so leave room for bursts.
    builder.with_performance_config(|p| p.broadcast_channel_capacity = SUBSCRIBER_EVENTS);
    let subscriber = builder.build_subscriber_client().map_err(redis_err)?;
    let mut tasks = Vec::with_capacity(2);
    // One deadline for both connections: "within 5s" means 5 s in all.
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    for c in [&client, &subscriber.to_client()] {
        match tokio::time::timeout_at(deadline, c.init()).await {
            Ok(Ok(task)) => tasks.push(task),
            Ok(Err(source)) => {
                abort(&tasks);
                return Err(RedisStartError::from_redis(url, source));
            }
            Err(_) => {
                let _ = c.quit().await;
                abort(&tasks);
                return Err(RedisStartError::Unreachable {
                    url,
                    timeout: config.connect_timeout,
                });
            }
        }
    }
    let checked = check(&client, cluster, &url).await;
    if let Err(e) = checked {
        abort(&tasks);
        return Err(e);
    }
    Ok(Connected {
        client,
        subscriber,
        tasks,
        cluster,
    })
}

/// Ends connection tasks of clients that will not be used (no QUIT: nothing awaits it).
pub(crate) fn abort(tasks: &[ConnectHandle]) {
    for task in tasks {
        task.abort();
    }
}

/// Checks the server version and loads the library.
async fn check(client: &Client, cluster: bool, url: &str) -> Result<(), RedisStartError> {
    let redis_err = |source| RedisStartError::from_redis(url.to_owned(), source);
    let info: String = client
        .info(Some(fred::types::InfoKind::Server))
        .await
        .map_err(redis_err)?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(RedisStartError::TooOld { found: version });
    }
    warn_on_eviction(client).await;
    Library::new(client.clone(), cluster)
        .load()
        .await
        .map_err(|e| match e {
            LoadError::Redis(source) => redis_err(source),
            LoadError::Version(found) => RedisStartError::FunctionVersion { found },
        })?;
    tracing::info!(redis = %version, cluster, "connected to Redis");
    Ok(())
}

/// An eviction policy may drop history or meta keys, and then "recovered" could be
/// claimed over a hole; only `noeviction` is safe.
async fn warn_on_eviction(client: &Client) {
    let reply: Result<Value, _> = client
        .custom(
            fred::types::CustomCommand::new_static("CONFIG", None, false),
            vec!["GET", "maxmemory-policy"],
        )
        .await;
    let policy = reply
        .ok()
        .map(Value::into_array)
        .and_then(|a| a.get(1).and_then(Value::as_string));
    match policy.as_deref() {
        Some("noeviction") => {}
        Some(p) => tracing::warn!(
            policy = p,
            "Redis maxmemory-policy can evict Herald's history keys, which breaks recovery; use noeviction"
        ),
        None => tracing::warn!("cannot read Redis maxmemory-policy; make sure it is noeviction"),
    }
}
