//! Herald's Redis backbone: a [`Broker`](herald_broker::Broker) over Redis.
//!
//! Publications go through one server-side function (`herald.lua`, loaded at start)
//! that assigns the next offset, appends to the channel's stream and publishes a
//! MessagePack envelope in one atomic step. Each node subscribes to the channels its
//! clients want on a dedicated pub/sub connection (sharded pub/sub on Redis Cluster),
//! and makes delivery gap-free with safety nets that each live in one component:
//!
//! - `keys`: the names of a channel's keys and pub/sub channel (mirrors `herald.lua`).
//! - `library`: loading the function library, its version, calls that reload it.
//! - `store`: the commands (publish, history and meta reads, presence, join/leave).
//! - `pubsub`: the dedicated pub/sub connection ((un)subscribe by slot, resubscribe).
//! - `delivery`: per-channel sequencing ([`sequencer`]) with node-level gap repair and
//!   catch-up, the per-channel worker pool, and the pub/sub reader that feeds it.
//! - `subscriptions`: merged (un)subscriptions with a baseline read, and
//!   resubscribe-then-catch-up after a reconnect.
//! - `health`: the liveness probe and the periodic top-offset checks for idle channels.
//! - `history`: recoveries answered from the replay window, single-flight reads.
//! - `access`: the URL's scheme and credentials, the password file, TLS (`rediss://`).
//! - `connect` and `broker`: reaching Redis at start, and [`RedisBroker`], which composes
//!   the components and runs their loops on the node's tracker until its shutdown.
//!
//! It uses the `fred` client: it keeps track of subscriptions and resubscribes them
//! (including sharded ones, per cluster node), routes commands by hash slot, and
//! reconnects with a policy, which is most of what a pub/sub backbone needs.

mod access;
mod broker;
mod config;
mod connect;
mod delivery;
pub mod envelope;
mod error;
mod health;
mod history;
mod keys;
mod library;
mod metrics;
mod pubsub;
pub mod sequencer;
mod stop;
mod store;
mod subscriptions;

pub use access::redact_url;
pub use broker::RedisBroker;
pub use config::{
    MAX_REPLAY_WINDOW, MAX_WORKERS, RedisConfig, RedisConfigError, RedisConfigProblem,
};
pub use error::RedisStartError;

mod publisher;
pub use publisher::{EntityPublished, PublishEntityError, PublishError, PublishOptions, Publisher};

/// The function library every gateway loads; publishers in other languages call it.
pub const FUNCTION_LIBRARY: &str = include_str!("herald.lua");

/// The library version gateways expect (`FCALL herald_version 0`).
pub const FUNCTION_VERSION: &str = "5";
