//! [`Publisher`]: publish from Rust straight into Herald's Redis backbone, through the
//! same atomic function the gateways use (enabled by the `redis` feature).

use herald_broker::{Broker, PublishRequest};
use herald_protocol::{RawJson, StreamPosition};
use herald_redis::{RedisBroker, RedisConfig, RedisStartError};
use std::collections::BTreeMap;
use std::time::Duration;

/// Publishes to Herald channels through Redis, without a gateway in between.
pub struct Publisher {
    broker: RedisBroker,
}

/// How one publication is kept; match it to the channel's namespace in the gateways'
/// configuration (`history_size`, `history_ttl`).
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Publications kept in the channel's history (0 = none, no offsets).
    pub history_size: usize,
    /// How long they are kept.
    pub history_ttl: Duration,
    /// Publish at most once for this key (within 5 minutes).
    pub idempotency_key: Option<String>,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
}

/// A publish did not go through.
#[derive(Debug, thiserror::Error)]
#[error("publish failed")]
pub struct PublishError(#[source] herald_broker::BrokerError);

impl Publisher {
    /// Connects to Redis (`redis://…` or `redis-cluster://…`) with Herald's default key
    /// prefix `herald`.
    pub async fn connect(url: &str) -> Result<Self, RedisStartError> {
        Self::connect_with_prefix(url, "herald").await
    }

    /// Connects with a key prefix matching the gateways' `redis_prefix`.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, RedisStartError> {
        let broker = RedisBroker::connect(RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            ..RedisConfig::default()
        })
        .await?;
        Ok(Self { broker })
    }

    /// Publishes `data` (valid JSON) to `channel`; returns its offset and epoch (zero
    /// and empty without history).
    pub async fn publish(
        &self,
        channel: &str,
        data: RawJson,
        options: PublishOptions,
    ) -> Result<StreamPosition, PublishError> {
        let mut request =
            PublishRequest::new(data).with_history(options.history_size, options.history_ttl);
        request.idempotency_key = options.idempotency_key;
        request.tags = options.tags;
        self.broker
            .publish(channel, request)
            .await
            .map(|out| out.position)
            .map_err(PublishError)
    }
}
