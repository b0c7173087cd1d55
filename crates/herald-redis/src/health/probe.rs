//! The pub/sub liveness probe: the node publishes to its own probe channel; a
//! connection that stops echoing is reported unhealthy (`/readyz`) and reconnected once.

use crate::metrics::RedisMetrics;
use crate::pubsub::PubSub;
use crate::stop::Stop;
use crate::store::Store;
use herald_broker::Chain;
use herald_broker::{BrokerContext, Ended};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// What the probe knows; pure, so its rules can be tested on a paused clock.
#[derive(Debug)]
struct ProbeState {
    last_echo: Instant,
    sent_at: Option<Instant>,
    reconnect_requested: bool,
}

impl ProbeState {
    fn new(now: Instant) -> Self {
        Self {
            last_echo: now,
            sent_at: None,
            reconnect_requested: false,
        }
    }

    /// A probe is about to go out. True when the connection went stale and no
    /// reconnect was asked for since the last echo: ask for one now.
    fn tick(&mut self, now: Instant, timeout: Duration) -> bool {
        let stale = now.duration_since(self.last_echo) >= timeout && !self.reconnect_requested;
        if stale {
            self.reconnect_requested = true;
        }
        // The round trip is timed from the oldest probe not yet echoed.
        if self.sent_at.is_none() {
            self.sent_at = Some(now);
        }
        stale
    }

    /// An echo came back; the round trip, when a probe was out.
    fn echo(&mut self, now: Instant) -> Option<Duration> {
        self.last_echo = now;
        self.reconnect_requested = false;
        self.sent_at.take().map(|sent| now.duration_since(sent))
    }

    fn fresh(&self, now: Instant, timeout: Duration) -> bool {
        now.duration_since(self.last_echo) < timeout
    }
}

/// The probe's state, shared by the probe loop and whoever sees echoes.
pub(crate) struct Probe {
    state: Mutex<ProbeState>,
    timeout: Duration,
    metrics: RedisMetrics,
}

impl Probe {
    /// A probe that calls the connection stale after `timeout` without an echo.
    pub(crate) fn new(timeout: Duration, metrics: RedisMetrics) -> Self {
        Self {
            state: Mutex::new(ProbeState::new(Instant::now())),
            timeout,
            metrics,
        }
    }

    /// The connection is known good (an echo, or a completed resubscribe).
    pub(crate) fn echo(&self) {
        if let Some(roundtrip) = self.state.lock().echo(Instant::now()) {
            self.metrics
                .probe_roundtrip
                .observe(roundtrip.as_secs_f64());
        }
    }

    /// Whether an echo came back within the timeout.
    pub(crate) fn fresh(&self) -> bool {
        self.state.lock().fresh(Instant::now(), self.timeout)
    }

    fn tick(&self) -> bool {
        self.state.lock().tick(Instant::now(), self.timeout)
    }
}

/// Sends a probe every `every` until `stop`; reconnects pub/sub when echoes stop.
pub(crate) async fn probes(
    probe: Arc<Probe>,
    store: Store,
    pubsub: PubSub,
    channel: String,
    every: Duration,
    context: BrokerContext,
    stop: Stop,
) -> Ended {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ended = stop.stopped() => return ended,
            _ = tick.tick() => {}
        }
        if probe.tick() {
            probe.metrics.probe_failures.inc();
            tracing::warn!("pub/sub probe got no echo; reconnecting the pub/sub connection");
            // Apart from the loop, which keeps probing while the connection comes back.
            let (pubsub, stop) = (pubsub.clone(), stop.clone());
            context.tasks.spawn(async move {
                tokio::select! {
                    _ = stop.stopped() => {}
                    done = pubsub.force_reconnect() => if let Err(e) = done {
                        tracing::warn!(error = %Chain(&e), "pub/sub reconnect failed");
                    }
                }
            });
        }
        let sent = tokio::select! {
            ended = stop.stopped() => return ended,
            sent = store.send_probe(&channel) => sent,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %Chain(&e), "probe publish failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(4);

    #[tokio::test(start_paused = true)]
    async fn stale_after_the_timeout_asks_for_exactly_one_reconnect() {
        let mut p = ProbeState::new(Instant::now());
        let mut asked = 0;
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = Instant::now();
            if p.tick(now, TIMEOUT) {
                asked += 1;
                assert_eq!(now.duration_since(p.last_echo), TIMEOUT, "not before");
            }
            assert_eq!(
                p.fresh(now, TIMEOUT),
                now.duration_since(p.last_echo) < TIMEOUT
            );
        }
        assert_eq!(asked, 1);
        // An echo makes it fresh, and a later silence asks again.
        assert!(p.echo(Instant::now()).is_some());
        assert!(p.fresh(Instant::now(), TIMEOUT));
        tokio::time::advance(TIMEOUT).await;
        assert!(p.tick(Instant::now(), TIMEOUT));
    }

    #[tokio::test(start_paused = true)]
    async fn the_round_trip_is_timed_from_the_oldest_probe_out() {
        let mut p = ProbeState::new(Instant::now());
        assert!(!p.tick(Instant::now(), TIMEOUT));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(!p.tick(Instant::now(), TIMEOUT));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(p.echo(Instant::now()), Some(Duration::from_millis(500)));
        assert_eq!(p.echo(Instant::now()), None, "no probe out");
    }

    #[tokio::test(start_paused = true)]
    async fn the_shared_probe_goes_stale_on_the_clock() {
        let probe = Probe::new(TIMEOUT, RedisMetrics::new().expect("metrics"));
        assert!(probe.fresh());
        tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
        assert!(probe.fresh());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!probe.fresh());
        assert!(probe.tick());
        assert!(!probe.tick());
        probe.echo();
        assert!(probe.fresh());
    }
}
