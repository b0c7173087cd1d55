//! The Redis broker's settings.

use std::time::Duration;

/// How the broker reaches and uses Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port`, or `redis-cluster://host:port?node=host:port&node=...`.
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several deployments can share a Redis.
    pub prefix: String,
    /// How long a channel's epoch and top offset live after its last publication.
    pub meta_ttl: Duration,
    /// How long an idempotency key's result is remembered.
    pub idempotency_ttl: Duration,
    /// Give up connecting at start after this long.
    pub connect_timeout: Duration,
    /// A command that gets no answer within this fails (and its connection is recycled).
    pub command_timeout: Duration,
    /// Dispatch workers; a channel always goes to the same one, which keeps its order.
    pub workers: usize,
    /// How often idle channels' top offsets are compared with what the node delivered.
    pub top_check_interval: Duration,
    /// How often the pub/sub connection is probed.
    pub probe_interval: Duration,
    /// A probe with no echo for this long marks pub/sub unhealthy and reconnects it.
    pub probe_timeout: Duration,
    /// Publications per subscribed channel kept in memory, so that subscribers
    /// recovering a recent position (a reconnect storm) are answered without Redis.
    pub replay_window: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "herald".into(),
            meta_ttl: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            workers: 4,
            top_check_interval: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(4),
            replay_window: 256,
        }
    }
}
