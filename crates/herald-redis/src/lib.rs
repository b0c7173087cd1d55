//! Herald's Redis backbone: a [`Broker`](herald_broker::Broker) over Redis.
//!
//! Publications go through one server-side function (`herald.lua`, loaded at start)
//! that assigns the next offset, appends to the channel's stream and publishes a
//! MessagePack envelope in one atomic step. Each node subscribes to the channels its
//! clients want on a dedicated pub/sub connection (sharded pub/sub on Redis Cluster),
//! and makes delivery gap-free with the safety nets in [`broker`]: per-channel
//! sequencing with node-level gap repair, resubscribe-then-catch-up after a reconnect,
//! periodic top-offset checks for idle channels, a liveness probe, and single-flight
//! history reads.
//!
//! It uses the `fred` client: it keeps track of subscriptions and resubscribes them
//! (including sharded ones, per cluster node), routes commands by hash slot, and
//! reconnects with a policy, which is most of what a pub/sub backbone needs.

mod broker;
mod config;
pub mod envelope;
mod metrics;
pub mod sequencer;

pub use broker::{RedisBroker, RedisStartError};
pub use config::{
    MAX_REPLAY_WINDOW, MAX_WORKERS, RedisConfig, RedisConfigError, RedisConfigProblem,
};

mod publisher;
pub use publisher::{EntityPublished, PublishEntityError, PublishError, PublishOptions, Publisher};

/// The function library every gateway loads; publishers in other languages call it.
pub const FUNCTION_LIBRARY: &str = include_str!("herald.lua");

/// The library version gateways expect (`FCALL herald_version 0`).
pub const FUNCTION_VERSION: &str = "3";
