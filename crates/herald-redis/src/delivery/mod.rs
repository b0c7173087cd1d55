//! Delivery to this node's handler, gap-free and in order per channel: the channels the
//! node follows with their sequencers, the worker pool that handles each channel in
//! order, and the repairs and catch-ups that fill what pub/sub lost.

mod dispatch;
#[cfg(test)]
mod tests;
mod workers;

pub(crate) use dispatch::{Probes, dispatch};

use crate::envelope::{self, Decoded};
use crate::metrics::RedisMetrics;
use crate::sequencer::{Sequencer, Verdict};
use crate::stop::Stop;
use crate::store::Streams;
use bytes::Bytes;
use herald_broker::Chain;
use herald_broker::{BrokerContext, BrokerError, BrokerHandler, HistoryPage, StoredPublication};
use herald_protocol::HistoryLimit;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use workers::Pool;

/// What a channel's worker does next.
#[derive(Debug)]
pub(crate) enum Work {
    /// A pub/sub message arrived for the channel.
    Publication {
        /// The Herald channel.
        channel: String,
        /// The raw message.
        payload: Bytes,
    },
    /// Read the channel's stream up to its top.
    CatchUp(String),
}

/// The channels this node follows and everything that delivers them.
pub(crate) struct Delivery {
    channels: Mutex<HashMap<String, Sequencer>>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    pool: OnceLock<Pool<Work>>,
    streams: Arc<dyn Streams>,
    metrics: RedisMetrics,
    replay_window: usize,
}

impl Delivery {
    /// Delivery that repairs from `streams` and keeps `replay_window` publications per
    /// channel.
    pub(crate) fn new(
        streams: Arc<dyn Streams>,
        metrics: RedisMetrics,
        replay_window: usize,
    ) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            handler: OnceLock::new(),
            pool: OnceLock::new(),
            streams,
            metrics,
            replay_window,
        }
    }

    /// Starts delivering to the context's handler with `workers` workers. Fails when
    /// already started.
    pub(crate) fn start(
        self: &Arc<Self>,
        workers: usize,
        context: &BrokerContext,
        stop: &Stop,
    ) -> Result<(), BrokerError> {
        self.handler
            .set(context.handler.clone())
            .map_err(|_| BrokerError::Lifecycle)?;
        let this = self.clone();
        let pool = Pool::spawn(workers, context, stop, move |work| {
            let this = this.clone();
            async move { this.run(work).await }
        });
        self.pool.set(pool).map_err(|_| BrokerError::Lifecycle)
    }

    /// Follows these channels (a channel already followed keeps its position).
    pub(crate) fn track(&self, channels: &[String]) {
        let mut known = self.channels.lock();
        for c in channels {
            known
                .entry(c.clone())
                .or_insert_with(|| Sequencer::with_window(self.replay_window));
        }
    }

    /// Stops following these channels; their positions are forgotten.
    pub(crate) fn untrack(&self, channels: &[String]) {
        let mut known = self.channels.lock();
        for c in channels {
            known.remove(c);
        }
    }

    /// Sets a followed channel's position when the node started listening, unless a
    /// publication already set one.
    pub(crate) fn baseline(&self, channel: &str, top: u64, epoch: &str) {
        if let Some(seq) = self.channels.lock().get_mut(channel) {
            seq.baseline(top, epoch);
        }
    }

    /// Every followed channel whose position is known, with that position.
    pub(crate) fn positions(&self) -> Vec<(String, u64, String)> {
        self.channels
            .lock()
            .iter()
            .filter_map(|(c, s)| s.position().map(|(o, e)| (c.clone(), o, e.to_owned())))
            .collect()
    }

    /// The recovery page the channel's replay window can answer (see
    /// [`crate::sequencer::ReplayWindow::page`]).
    pub(crate) fn window_page(
        &self,
        channel: &str,
        since: Option<u64>,
        limit: HistoryLimit,
    ) -> Option<HistoryPage> {
        self.channels
            .lock()
            .get(channel)
            .and_then(|seq| seq.window().page(since, limit))
    }

    /// Queues work on the channel's worker (dropped before start).
    pub(crate) fn route(&self, channel: &str, work: Work) {
        if let Some(pool) = self.pool.get() {
            pool.route(channel, work);
        }
    }

    /// Has the channel's worker bring it up to its stream's top.
    pub(crate) fn catch_up(&self, channel: &str) {
        self.route(channel, Work::CatchUp(channel.to_owned()));
    }

    /// Catches every followed channel up (after a reconnect or lost messages).
    pub(crate) fn catch_up_all(&self) {
        let names: Vec<String> = self.channels.lock().keys().cloned().collect();
        for name in names {
            self.catch_up(&name);
        }
    }

    async fn run(&self, work: Work) {
        match work {
            Work::Publication { channel, payload } => self.on_message(&channel, &payload).await,
            Work::CatchUp(channel) => self.read_up(&channel).await,
        }
    }

    async fn on_message(&self, channel: &str, payload: &[u8]) {
        match envelope::decode_incoming(payload) {
            Ok(envelope::Incoming::Publication(d)) => self.offer(channel, d).await,
            Ok(envelope::Incoming::JoinLeave(event)) => {
                if self.channels.lock().contains_key(channel)
                    && let Some(h) = self.handler.get()
                {
                    h.on_join_leave(channel, event);
                }
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), channel, "unreadable pub/sub message ignored")
            }
        }
    }

    /// Delivers a publication that is next in sequence.
    fn deliver(&self, channel: &str, d: Decoded) {
        let stored = Arc::new(StoredPublication {
            publication: d.publication,
            epoch: d.epoch,
        });
        {
            let mut channels = self.channels.lock();
            let Some(seq) = channels.get_mut(channel) else {
                return;
            };
            seq.delivered(&stored);
        }
        if let Some(h) = self.handler.get() {
            h.on_publication(channel, stored);
        }
    }

    /// The stream cannot be followed without a hole: subscribers must resubscribe with
    /// recovery, and the node continues from `offset` in `epoch`.
    fn lost(&self, channel: &str, offset: u64, epoch: &str) {
        self.metrics.resets.inc();
        {
            let mut channels = self.channels.lock();
            let Some(seq) = channels.get_mut(channel) else {
                return;
            };
            seq.reset(offset, epoch);
        }
        tracing::warn!(channel, offset, epoch, "stream continuity lost");
        if let Some(h) = self.handler.get() {
            h.on_insufficient_state(channel);
        }
    }

    /// Offers a publication in sequence: delivers it, drops a duplicate, or repairs the
    /// gap before it from the stream (one read for the whole node).
    async fn offer(&self, channel: &str, d: Decoded) {
        loop {
            let verdict = match self.channels.lock().get(channel) {
                Some(seq) => seq.judge(d.publication.offset, &d.epoch),
                None => return,
            };
            match verdict {
                Verdict::Deliver => return self.deliver(channel, d),
                Verdict::Duplicate => return,
                Verdict::Reset => return self.lost(channel, d.publication.offset, &d.epoch),
                Verdict::Gap { from, to } => {
                    self.metrics.gap_repairs.inc();
                    if !self.repair(channel, from, to, &d.epoch).await {
                        self.lost(channel, to, &d.epoch);
                    }
                }
            }
        }
    }

    /// Reads and delivers offsets `from..=to`; false when the stream no longer holds
    /// all of them (or cannot be read).
    async fn repair(&self, channel: &str, from: u64, to: u64, epoch: &str) -> bool {
        let count = HistoryLimit::at_most(usize::try_from(to - from + 1).unwrap_or(usize::MAX));
        let page = match self
            .streams
            .read(channel, Some(from - 1), count, false)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), channel, "gap repair read failed");
                return false;
            }
        };
        if page.position.epoch != epoch {
            return false;
        }
        let mut expected = from;
        for p in page.publications {
            if p.offset != expected {
                return false;
            }
            self.metrics.gap_repair_messages.inc();
            self.deliver(
                channel,
                Decoded {
                    publication: p,
                    epoch: epoch.to_owned(),
                },
            );
            expected += 1;
            if expected > to {
                break;
            }
        }
        expected > to
    }

    /// Brings a channel up to its stream's top (after a reconnect, a lagging reader, or
    /// a top-offset check that found the node behind).
    async fn read_up(&self, channel: &str) {
        let known = self
            .channels
            .lock()
            .get(channel)
            .and_then(|s| s.position().map(|(o, e)| (o, e.to_owned())));
        let Some((last, epoch)) = known else {
            return;
        };
        let page = match self
            .streams
            .read(channel, Some(last), HistoryLimit::All, false)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), channel, "catch-up read failed; the next check retries");
                return;
            }
        };
        let top = page.position.offset;
        if page.position.epoch != epoch {
            return self.lost(channel, top, &page.position.epoch);
        }
        for p in page.publications {
            self.offer(
                channel,
                Decoded {
                    publication: p,
                    epoch: epoch.clone(),
                },
            )
            .await;
        }
        let behind = self
            .channels
            .lock()
            .get(channel)
            .and_then(|s| s.position().map(|(o, _)| o < top))
            .unwrap_or(false);
        if behind {
            // The stream no longer holds what was missed (expired or trimmed).
            self.lost(channel, top, &epoch);
        }
    }
}
