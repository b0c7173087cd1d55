//! The node's channel subscriptions: a queue that merges concurrent (un)subscriptions
//! into few commands, the baseline read after each subscribe, and the resubscribe then
//! catch-up after the pub/sub connection comes back.

use crate::delivery::Delivery;
use crate::error::unavailable;
use crate::health::Probe;
use crate::keys::Keys;
use crate::metrics::RedisMetrics;
use crate::pubsub::PubSub;
use crate::stop::Stop;
use crate::store::Streams;
use herald_broker::Chain;
use herald_broker::{BrokerError, Ended};
use herald_protocol::HistoryLimit;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Most channels merged into one SUBSCRIBE.
const SUBSCRIBE_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<(), Arc<BrokerError>>>;

/// A node (un)subscription waiting to be merged with others into one command.
struct Request {
    subscribe: bool,
    channels: Vec<String>,
    reply: Reply,
}

/// Requests merged into one command.
struct Batch {
    subscribe: bool,
    channels: Vec<String>,
    replies: Vec<Reply>,
}

/// Takes the next batch: the first waiting request and the consecutive ones of the same
/// kind after it, up to [`SUBSCRIBE_BATCH`] channels. A request of the other kind is
/// kept in `pending` for the next batch, so order is kept between kinds. `None` when
/// the queue closed.
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<Request>,
    pending: &mut Option<Request>,
) -> Option<Batch> {
    let first = match pending.take() {
        Some(r) => r,
        None => rx.recv().await?,
    };
    let mut batch = Batch {
        subscribe: first.subscribe,
        channels: first.channels,
        replies: vec![first.reply],
    };
    while batch.channels.len() < SUBSCRIBE_BATCH {
        match rx.try_recv() {
            Ok(r) if r.subscribe == batch.subscribe => {
                batch.channels.extend(r.channels);
                batch.replies.push(r.reply);
            }
            Ok(r) => {
                *pending = Some(r);
                break;
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The node's subscriptions.
pub(crate) struct Subscriptions {
    queue: mpsc::UnboundedSender<Request>,
    requests: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    pubsub: PubSub,
    keys: Keys,
    delivery: Arc<Delivery>,
    streams: Arc<dyn Streams>,
}

impl Subscriptions {
    /// Subscriptions on `pubsub` for the channels `delivery` follows.
    pub(crate) fn new(
        pubsub: PubSub,
        keys: Keys,
        delivery: Arc<Delivery>,
        streams: Arc<dyn Streams>,
    ) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        Self {
            queue,
            requests: Mutex::new(Some(requests)),
            pubsub,
            keys,
            delivery,
            streams,
        }
    }

    /// Queues a node (un)subscription; concurrent ones are merged into one command,
    /// which keeps a reconnect storm from costing one round trip per channel. Fails
    /// before [`Subscriptions::serve`] runs (the broker was not started).
    pub(crate) async fn request(
        &self,
        subscribe: bool,
        channels: &[String],
    ) -> Result<(), BrokerError> {
        if self.requests.lock().is_some() {
            return Err(BrokerError::Lifecycle);
        }
        let (reply, done) = oneshot::channel();
        let request = Request {
            subscribe,
            channels: channels.to_vec(),
            reply,
        };
        self.queue
            .send(request)
            .map_err(|_| BrokerError::Lifecycle)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::Unavailable(Box::new(e))),
            Err(_) => Err(BrokerError::Lifecycle),
        }
    }

    /// Serves queued requests until `stop`. The queue is taken at once, so requests are
    /// accepted as soon as this returns; a second call's loop ends at once.
    pub(crate) fn serve(self: Arc<Self>, stop: Stop) -> impl Future<Output = Ended> + Send {
        let requests = self.requests.lock().take();
        async move {
            let Some(mut rx) = requests else {
                return Ended::InputClosed;
            };
            let mut pending = None;
            loop {
                let batch = tokio::select! {
                    ended = stop.stopped() => return ended,
                    batch = next_batch(&mut rx, &mut pending) => batch,
                };
                let Some(batch) = batch else {
                    return Ended::InputClosed;
                };
                let result = tokio::select! {
                    ended = stop.stopped() => return ended,
                    result = self.apply(batch.subscribe, &batch.channels) => result,
                };
                let result = result.map_err(Arc::new);
                for reply in batch.replies {
                    let _ = reply.send(result.clone());
                }
            }
        }
    }

    async fn apply(&self, subscribe: bool, channels: &[String]) -> Result<(), BrokerError> {
        if subscribe {
            self.subscribe(channels).await
        } else {
            self.unsubscribe(channels).await
        }
    }

    async fn subscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.delivery.track(channels);
        let names: Vec<String> = channels.iter().map(|c| self.keys.pubsub(c)).collect();
        if let Err(e) = self.pubsub.listen(true, names).await {
            self.delivery.untrack(channels);
            return Err(unavailable(e));
        }
        // The position when the node started listening: a publication lost right after
        // this is then a gap the node can see.
        let reads = channels.iter().map(|c| {
            self.streams
                .read(c, None, HistoryLimit::PositionOnly, false)
        });
        let pages = futures_util::future::join_all(reads).await;
        for (c, page) in channels.iter().zip(pages) {
            // Best effort: without a baseline the first live publication sets one.
            match page {
                Ok(page) => {
                    self.delivery
                        .baseline(c, page.position.offset, &page.position.epoch);
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), channel = %c, "baseline read failed");
                }
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[String]) -> Result<(), BrokerError> {
        self.delivery.untrack(channels);
        let names: Vec<String> = channels.iter().map(|c| self.keys.pubsub(c)).collect();
        self.pubsub.listen(false, names).await.map_err(unavailable)
    }
}

/// After the pub/sub connection comes back: resubscribe everything first, then read
/// what was published meanwhile, so nothing falls between the two.
pub(crate) async fn on_reconnects(
    pubsub: PubSub,
    delivery: Arc<Delivery>,
    probe: Arc<Probe>,
    metrics: RedisMetrics,
    mut rx: broadcast::Receiver<fred::types::config::Server>,
    stop: Stop,
) -> Ended {
    loop {
        let event = tokio::select! {
            ended = stop.stopped() => return ended,
            event = rx.recv() => event,
        };
        if event.is_err() {
            return Ended::InputClosed;
        }
        metrics.pubsub_reconnects.inc();
        tracing::warn!("pub/sub connection re-established; resubscribing and catching up");
        let resubscribed = tokio::select! {
            ended = stop.stopped() => return ended,
            done = pubsub.resubscribe() => done,
        };
        if let Err(e) = resubscribed {
            tracing::warn!(error = %Chain(&e), "resubscribe failed; the probe will reconnect again");
            continue;
        }
        probe.echo();
        delivery.catch_up_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        tx: &mpsc::UnboundedSender<Request>,
        subscribe: bool,
        channels: &[&str],
    ) -> oneshot::Receiver<Result<(), Arc<BrokerError>>> {
        let (reply, done) = oneshot::channel();
        let channels = channels.iter().map(|&c| c.to_owned()).collect();
        tx.send(Request {
            subscribe,
            channels,
            reply,
        })
        .expect("queue open");
        done
    }

    async fn batches(
        rx: &mut mpsc::UnboundedReceiver<Request>,
        pending: &mut Option<Request>,
        n: usize,
    ) -> Vec<(bool, Vec<String>, usize)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let b = next_batch(rx, pending).await.expect("a batch");
            out.push((b.subscribe, b.channels, b.replies.len()));
        }
        out
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|&c| c.to_owned()).collect()
    }

    #[tokio::test]
    async fn merges_consecutive_requests_of_a_kind_and_keeps_order_between_kinds() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _replies = [
            request(&tx, true, &["a"]),
            request(&tx, true, &["b", "c"]),
            request(&tx, false, &["a"]),
            request(&tx, false, &["d"]),
            request(&tx, true, &["a"]),
        ];
        let mut pending = None;
        assert_eq!(
            batches(&mut rx, &mut pending, 3).await,
            vec![
                (true, names(&["a", "b", "c"]), 2),
                (false, names(&["a", "d"]), 2),
                (true, names(&["a"]), 1),
            ]
        );
        assert!(pending.is_none());
        drop(tx);
        assert!(next_batch(&mut rx, &mut pending).await.is_none());
    }

    #[tokio::test]
    async fn a_batch_stops_growing_at_the_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let many: Vec<String> = (0..SUBSCRIBE_BATCH - 1).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let _replies = [
            request(&tx, true, &many),
            request(&tx, true, &["x", "y"]),
            request(&tx, true, &["z"]),
        ];
        let mut pending = None;
        let got = batches(&mut rx, &mut pending, 2).await;
        // The request that crosses the limit still joins whole; the next one waits.
        assert_eq!((got[0].1.len(), got[0].2), (SUBSCRIBE_BATCH + 1, 2));
        assert_eq!((got[1].1.clone(), got[1].2), (names(&["z"]), 1));
    }
}
