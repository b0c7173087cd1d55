//! [`Publisher`]: publish from Rust straight into Herald's Redis backbone, through the
//! same atomic function the gateways use.

use crate::{RedisBroker, RedisConfig, RedisStartError};
use herald_broker::{Broker, BrokerError, PublishRequest};
use herald_protocol::{
    Audience, EntityError, EntityEvent, RawJson, RawJsonError, StreamPosition,
    channel_idempotency_key,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Publishes to Herald channels through Redis, without a gateway in between.
pub struct Publisher {
    broker: RedisBroker,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
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
pub struct PublishError(#[source] BrokerError);

/// An entity event was not (entirely) published.
#[derive(Debug, thiserror::Error)]
pub enum PublishEntityError {
    /// The event or the audiences break the entity convention; nothing was published.
    #[error("invalid entity event")]
    Invalid(#[source] EntityError),
    /// The event could not be encoded; nothing was published.
    #[error("cannot encode the entity event")]
    Encode(#[source] RawJsonError),
    /// Publishing to `channel` failed; the channels before it were published. Retrying
    /// with the same idempotency key publishes only what is missing.
    #[error("publish to {channel} failed")]
    Publish {
        /// The channel that failed.
        channel: String,
        /// Why.
        #[source]
        source: BrokerError,
    },
}

/// Where one channel's copy of an entity event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityPublished {
    /// The channel.
    pub channel: String,
    /// Its offset and epoch (zero and empty without history).
    pub position: StreamPosition,
}

impl Publisher {
    /// Connects to Redis (`redis://…`, `rediss://…`, `redis-cluster://…` or
    /// `rediss-cluster://…`, with `user:password@` for an ACL user) with Herald's default
    /// key prefix `herald`; the system's certificate authorities for TLS.
    pub async fn connect(url: &str) -> Result<Self, RedisStartError> {
        Self::connect_with_prefix(url, "herald").await
    }

    /// Connects with a key prefix matching the gateways' `[redis] prefix`.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, RedisStartError> {
        Self::connect_with_config(RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            ..RedisConfig::default()
        })
        .await
    }

    /// Connects with a whole `[redis]` section: a CA file, a client certificate, a
    /// password file.
    pub async fn connect_with_config(config: RedisConfig) -> Result<Self, RedisStartError> {
        let broker = RedisBroker::connect(config).await?;
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

    /// Publishes an entity event to the three scopes of each audience, as the HTTP API's
    /// `publish_entity` does (see [`herald_protocol::entity`]): the same channels in the
    /// same order, each keyed with the per-channel form of `options.idempotency_key`, so
    /// a retry through either path is recognised. `options` sets the history of every
    /// channel; match it to the gateways' `entities` namespace.
    pub async fn publish_entity(
        &self,
        event: &EntityEvent,
        audiences: &[Audience],
        options: PublishOptions,
    ) -> Result<Vec<EntityPublished>, PublishEntityError> {
        let channels = event
            .channels(audiences)
            .map_err(PublishEntityError::Invalid)?;
        let data = RawJson::from_value(event).map_err(PublishEntityError::Encode)?;
        let key = options.idempotency_key.as_deref().unwrap_or_default();
        let mut published = Vec::with_capacity(channels.len());
        for channel in channels {
            let mut request = PublishRequest::new(data.clone())
                .with_history(options.history_size, options.history_ttl);
            request.idempotency_key = channel_idempotency_key(key, &channel);
            request.tags.clone_from(&options.tags);
            match self.broker.publish(&channel, request).await {
                Ok(out) => published.push(EntityPublished {
                    channel,
                    position: out.position,
                }),
                Err(source) => return Err(PublishEntityError::Publish { channel, source }),
            }
        }
        Ok(published)
    }
}
