//! Values that cross the broker boundary.

use herald_protocol::{ClientInfo, HistoryLimit, Publication, RawJson, StreamPosition};
use std::collections::BTreeMap;
use std::time::Duration;

/// A publication as stored and delivered: the wire publication plus its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPublication {
    /// The publication (with its offset, 0 when the channel keeps no history).
    pub publication: Publication,
    /// The epoch of the stream the offset belongs to ("" without history).
    pub epoch: String,
}

/// A client joined or left a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinLeave {
    /// Joined.
    Join(ClientInfo),
    /// Left.
    Leave(ClientInfo),
}

/// What to publish and how long to keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The payload (valid JSON).
    pub data: RawJson,
    /// The publishing client, when a client published.
    pub info: Option<ClientInfo>,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
    /// Publications kept in the channel's history; 0 keeps none (no offsets either).
    pub history_size: usize,
    /// How long a publication stays in history.
    pub history_ttl: Duration,
    /// Publishing again with the same key within its TTL publishes nothing.
    pub idempotency_key: Option<String>,
    /// The state's version (0 = none): a publication whose version is not newer than
    /// the channel's newest one in the same [`version_epoch`](Self::version_epoch) is
    /// dropped (nothing stored or delivered), so that out-of-order publishers of a
    /// state never make a subscriber go back to an older one.
    pub version: u64,
    /// The series `version` counts in: a new series (a restarted counter) starts over.
    pub version_epoch: String,
    /// The publisher's origin id (empty = none): subscribers with the same origin
    /// never receive the publication, live or recovered.
    pub origin: String,
}

impl PublishRequest {
    /// A request for `data` with no history.
    pub fn new(data: RawJson) -> Self {
        Self {
            data,
            info: None,
            tags: BTreeMap::new(),
            history_size: 0,
            history_ttl: Duration::ZERO,
            idempotency_key: None,
            version: 0,
            version_epoch: String::new(),
            origin: String::new(),
        }
    }

    /// Keeps `size` publications for `ttl`.
    pub fn with_history(mut self, size: usize, ttl: Duration) -> Self {
        self.history_size = size;
        self.history_ttl = ttl;
        self
    }

    /// Whether this publication goes into a stream with offsets.
    pub fn keeps_history(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// The result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The offset and epoch assigned (zero and empty without history).
    pub position: StreamPosition,
    /// The idempotency key had been seen: this is the first publish's result.
    pub duplicate: bool,
    /// The version was not newer than the channel's: nothing was published, and the
    /// position is the channel's current one.
    pub suppressed: bool,
}

/// Which part of a channel's history to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only publications after this offset (the epoch is not checked by the broker; the
    /// caller compares it with the page's position).
    pub since_offset: Option<u64>,
    /// How many publications to read (all by default).
    pub limit: HistoryLimit,
    /// Newest first.
    pub reverse: bool,
    /// The read must start at or after this instant. A caller that registered for live
    /// publications at some instant needs a page read after it, or publications made in
    /// between would be in neither; a broker that shares reads in flight must not hand
    /// it one that started earlier.
    pub not_before: Option<tokio::time::Instant>,
}

/// A page of history and the stream's position when it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// Publications in the order asked for.
    pub publications: Vec<herald_protocol::Publication>,
    /// The top offset and the epoch.
    pub position: StreamPosition,
}

/// Whether a broker can serve traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerHealth {
    /// Ready to publish and deliver.
    pub ready: bool,
    /// Why not, when not.
    pub detail: String,
}

impl BrokerHealth {
    /// Healthy.
    pub fn ok() -> Self {
        Self {
            ready: true,
            detail: String::new(),
        }
    }
}

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backend cannot be reached or refused the operation; temporary.
    #[error("broker unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend did not answer in time; temporary.
    #[error("broker timed out")]
    Timeout,
    /// The backend answered something Herald cannot use.
    #[error("broker protocol error")]
    Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `start` was not called, or was called twice.
    #[error("broker not started or started twice")]
    Lifecycle,
    /// The broker's metrics could not be registered at start.
    #[error("broker metrics could not be registered")]
    Metrics(#[source] prometheus::Error),
}

/// Generates a fresh epoch: a short random string that differs whenever history is lost.
pub fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Shows an error with every cause after it ("broker unavailable: Redis timed out: ..."),
/// for logs: a broker error's own message names only what failed, its causes say why.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
