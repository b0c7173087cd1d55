//! History reads: a recovery of the recent past answered from the channel's replay
//! window, and at most one Redis read per (channel, position) in flight on the node.

use crate::delivery::Delivery;
use crate::metrics::RedisMetrics;
use crate::store::Streams;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use herald_broker::{BrokerError, HistoryPage, HistoryQuery};
use herald_protocol::HistoryLimit;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

type SharedRead<T> = Shared<BoxFuture<'static, T>>;

/// A read in flight that later callers may share.
struct Flight<T: Clone> {
    id: u64,
    started: Instant,
    read: SharedRead<T>,
}

/// Reads in flight by key. A caller may join a read only if it started at or after the
/// caller's `not_before` and has not finished (a finished read's answer is already old).
struct SingleFlight<K, T: Clone> {
    table: Mutex<HashMap<K, Flight<T>>>,
    next: AtomicU64,
}

impl<K, T> SingleFlight<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn new() -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// The read to wait for, and whether this call issued it (`read` is only called
    /// then).
    fn join_or_start(
        self: &Arc<Self>,
        key: K,
        not_before: Instant,
        read: impl FnOnce() -> BoxFuture<'static, T>,
    ) -> (SharedRead<T>, bool) {
        let mut table = self.table.lock();
        if let Some(f) = table
            .get(&key)
            .filter(|f| f.started >= not_before && f.read.peek().is_none())
        {
            return (f.read.clone(), false);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let inner = read();
        let this = self.clone();
        let k = key.clone();
        let shared = async move {
            let out = inner.await;
            // The read leaves the table itself, even if its first caller gave up waiting
            // (a cancelled request must not pin its answer).
            let mut table = this.table.lock();
            if table.get(&k).is_some_and(|f| f.id == id) {
                table.remove(&k);
            }
            out
        }
        .boxed()
        .shared();
        table.insert(
            key,
            Flight {
                id,
                started: Instant::now(),
                read: shared.clone(),
            },
        );
        (shared, true)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    channel: String,
    since: Option<u64>,
    limit: HistoryLimit,
    reverse: bool,
}

type ReadResult = Result<Arc<HistoryPage>, Arc<BrokerError>>;

/// Answers history queries.
pub(crate) struct History {
    delivery: Arc<Delivery>,
    streams: Arc<dyn Streams>,
    inflight: Arc<SingleFlight<ReadKey, ReadResult>>,
    metrics: RedisMetrics,
}

impl History {
    /// Answers from `delivery`'s replay windows, else from `streams`.
    pub(crate) fn new(
        delivery: Arc<Delivery>,
        streams: Arc<dyn Streams>,
        metrics: RedisMetrics,
    ) -> Self {
        Self {
            delivery,
            streams,
            inflight: Arc::new(SingleFlight::new()),
            metrics,
        }
    }

    /// Reads a channel's history (see [`herald_broker::Broker::history`]).
    pub(crate) async fn read(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        let key = ReadKey {
            channel: channel.to_owned(),
            since: query.since_offset,
            limit: query.limit,
            reverse: query.reverse,
        };
        // A subscriber registered for live publications recovering the recent past is
        // answered from the channel's replay window: what the node delivered last, with
        // everything after it still to come live.
        if query.not_before.is_some()
            && !query.reverse
            && let Some(page) = self.delivery.window_page(channel, key.since, key.limit)
        {
            self.count("window");
            return Ok(page);
        }
        // A reconnect storm of clients recovering from the same offset costs one Redis
        // read. A caller that registered for live publications at `not_before` cannot
        // use a read that started before then; any other caller needs one that started
        // after its call (so it sees its own earlier publishes).
        let not_before = query.not_before.unwrap_or_else(Instant::now);
        let streams = self.streams.clone();
        let k = key.clone();
        let (read, issued) = self.inflight.join_or_start(key, not_before, move || {
            async move {
                streams
                    .read(&k.channel, k.since, k.limit, k.reverse)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new)
            }
            .boxed()
        });
        self.count(if issued { "issued" } else { "coalesced" });
        match read.await {
            Ok(page) => Ok(HistoryPage::clone(&page)),
            Err(e) => Err(BrokerError::Unavailable(Box::new(e))),
        }
    }

    fn count(&self, kind: &str) {
        self.metrics.history_reads.with_label_values(&[kind]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    type Flights = Arc<SingleFlight<&'static str, u32>>;

    /// Starts (or joins) a read of `key` that answers when the returned sender sends.
    fn call(
        flights: &Flights,
        key: &'static str,
        not_before: Instant,
    ) -> (SharedRead<u32>, bool, Option<oneshot::Sender<u32>>) {
        let (tx, rx) = oneshot::channel();
        let (read, issued) = flights.join_or_start(key, not_before, move || {
            async move { rx.await.unwrap_or(0) }.boxed()
        });
        (read, issued, issued.then_some(tx))
    }

    #[tokio::test(start_paused = true)]
    async fn shares_an_unfinished_read_that_started_in_time() {
        let flights: Flights = Arc::new(SingleFlight::new());
        let registered = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let (first, issued, answer) = call(&flights, "k", registered);
        assert!(issued);
        tokio::time::advance(Duration::from_millis(5)).await;
        // Registered before the read started: shares it.
        let (second, issued, _) = call(&flights, "k", registered);
        assert!(!issued);
        // Another key never shares.
        assert!(call(&flights, "other", registered).1);
        let _ = answer.expect("issued").send(7);
        assert_eq!((first.await, second.await), (7, 7));
        assert!(!flights.table.lock().contains_key("k"), "left the table");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_started_before_not_before_is_not_shared() {
        let flights: Flights = Arc::new(SingleFlight::new());
        let (_old, issued, _answer) = call(&flights, "k", Instant::now());
        assert!(issued);
        tokio::time::advance(Duration::from_millis(1)).await;
        let (_new, issued, _answer2) = call(&flights, "k", Instant::now());
        assert!(issued, "started before the caller registered");
        // The newer read replaced it; a caller registered at its start shares it.
        let (_joined, issued, _) = call(&flights, "k", Instant::now());
        assert!(!issued);
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_read_is_never_shared() {
        let flights: Flights = Arc::new(SingleFlight::new());
        let start = Instant::now();
        let (first, _, answer) = call(&flights, "k", start);
        let (joined, issued, _) = call(&flights, "k", start);
        assert!(!issued);
        let _ = answer.expect("issued").send(1);
        // Finished (seen by one caller) while still in the table for the other.
        assert_eq!(first.await, 1);
        let (_fresh, issued, _) = call(&flights, "k", start);
        assert!(issued, "its answer is already old");
        assert_eq!(joined.await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_superseded_read_does_not_remove_its_successor() {
        let flights: Flights = Arc::new(SingleFlight::new());
        let (old, _, old_answer) = call(&flights, "k", Instant::now());
        tokio::time::advance(Duration::from_millis(1)).await;
        let (_new, issued, _new_answer) = call(&flights, "k", Instant::now());
        assert!(issued);
        let _ = old_answer.expect("issued").send(1);
        assert_eq!(old.await, 1);
        let (_joined, issued, _) = call(&flights, "k", Instant::now());
        assert!(!issued, "the newer read is still shared");
    }
}
