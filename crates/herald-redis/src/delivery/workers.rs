//! The delivery worker pool: work for one channel always goes to the same worker, which
//! keeps the channel's order while channels proceed in parallel.

use crate::stop::Stop;
use herald_broker::{BrokerContext, Ended};
use std::future::Future;
use std::hash::{Hash, Hasher};
use tokio::sync::mpsc;

/// Workers that each run one piece of work at a time, routed by a key.
#[derive(Debug)]
pub(crate) struct Pool<W> {
    senders: Vec<mpsc::UnboundedSender<W>>,
}

/// The worker a key goes to, out of `workers`.
fn worker_of(key: &str, workers: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    // The remainder is below `workers`, so it fits.
    usize::try_from(h.finish() % workers.max(1) as u64).unwrap_or(0)
}

impl<W: Send + 'static> Pool<W> {
    /// Starts `count` workers (at least one) on the context's tracker; each runs `run`
    /// on its work, one at a time, until `stop`.
    pub(crate) fn spawn<F, Fut>(count: usize, context: &BrokerContext, stop: &Stop, run: F) -> Self
    where
        F: Fn(W) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let senders = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                context.spawn("redis-delivery-worker", work(rx, stop.clone(), run.clone()));
                tx
            })
            .collect();
        Self { senders }
    }

    /// Queues work for the worker of `key`. Work for a stopped pool is dropped.
    pub(crate) fn route(&self, key: &str, work: W) {
        let i = worker_of(key, self.senders.len());
        if let Some(tx) = self.senders.get(i) {
            let _ = tx.send(work);
        }
    }
}

async fn work<W, F, Fut>(mut rx: mpsc::UnboundedReceiver<W>, stop: Stop, run: F) -> Ended
where
    F: Fn(W) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let next = tokio::select! {
            ended = stop.stopped() => return ended,
            next = rx.recv() => next,
        };
        let Some(w) = next else {
            return Ended::InputClosed;
        };
        // A stop in the middle of a piece of work ends it there: what it was doing
        // (a repair read) is moot once the node stops.
        tokio::select! {
            ended = stop.stopped() => return ended,
            () = run(w) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_broker::{BrokerHandler, JoinLeave, StoredPublication};
    use parking_lot::Mutex;
    use std::sync::Arc;

    struct Nobody;
    impl BrokerHandler for Nobody {
        fn on_publication(&self, _: &str, _: Arc<StoredPublication>) {}
        fn on_join_leave(&self, _: &str, _: JoinLeave) {}
        fn on_insufficient_state(&self, _: &str) {}
    }

    #[test]
    fn a_key_always_goes_to_the_same_worker() {
        for key in ["a", "news", "chat:1"] {
            let first = worker_of(key, 4);
            assert!(first < 4);
            assert_eq!(worker_of(key, 4), first);
        }
        assert_eq!(worker_of("a", 0), 0, "no workers is treated as one");
    }

    #[tokio::test]
    async fn keeps_order_per_key_and_ends_on_stop() {
        let context = BrokerContext::standalone(Arc::new(Nobody));
        let (stop, guard) = Stop::new(&context.shutdown);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let pool = Pool::spawn(3, &context, &stop, move |(key, n): (String, u32)| {
            let record = record.clone();
            async move {
                // Later work of a key must wait for this, even when it yields.
                tokio::task::yield_now().await;
                record.lock().push((key, n));
            }
        });
        for n in 0..20 {
            for key in ["a", "b", "c", "d"] {
                pool.route(key, (key.to_owned(), n));
            }
        }
        while seen.lock().len() < 80 {
            tokio::task::yield_now().await;
        }
        for key in ["a", "b", "c", "d"] {
            let order: Vec<u32> = seen
                .lock()
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(order, (0..20).collect::<Vec<_>>(), "{key}");
        }
        context.tasks.close();
        drop(guard);
        context.tasks.wait().await;
    }
}
