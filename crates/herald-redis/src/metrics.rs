//! Metrics of the Redis backbone (registered into the gateway's registry).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Counters and histograms of one broker.
#[derive(Clone)]
pub(crate) struct RedisMetrics {
    /// Round trip of `herald_publish`.
    pub(crate) publish_duration: Histogram,
    /// From a probe sent to its echo.
    pub(crate) probe_roundtrip: Histogram,
    /// Pub/sub reconnects seen.
    pub(crate) pubsub_reconnects: IntCounter,
    /// Live gaps repaired from a stream.
    pub(crate) gap_repairs: IntCounter,
    /// Publications recovered by those repairs.
    pub(crate) gap_repair_messages: IntCounter,
    /// Probes that got no echo in time.
    pub(crate) probe_failures: IntCounter,
    /// History reads by kind: window, issued, coalesced.
    pub(crate) history_reads: IntCounterVec,
    /// Pub/sub messages dropped by a lagging reader.
    pub(crate) lagged_messages: IntCounter,
    /// Channels whose stream was reset or lost beyond repair.
    pub(crate) resets: IntCounter,
}

const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl RedisMetrics {
    /// Creates the metrics, unregistered.
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let hist = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
        };
        Ok(Self {
            publish_duration: hist(
                "herald_redis_publish_duration_seconds",
                "Publish function round trip",
            )?,
            probe_roundtrip: hist(
                "herald_redis_probe_roundtrip_seconds",
                "Pub/sub liveness probe round trip",
            )?,
            pubsub_reconnects: IntCounter::new(
                "herald_redis_pubsub_reconnects_total",
                "Pub/sub connection reconnects",
            )?,
            gap_repairs: IntCounter::new(
                "herald_gap_repairs_total",
                "Live gaps repaired from the stream",
            )?,
            gap_repair_messages: IntCounter::new(
                "herald_gap_repair_messages_total",
                "Publications recovered by gap repair",
            )?,
            probe_failures: IntCounter::new(
                "herald_redis_probe_failures_total",
                "Pub/sub probes that got no echo in time",
            )?,
            history_reads: IntCounterVec::new(
                Opts::new(
                    "herald_history_reads_total",
                    "History reads, issued to Redis or coalesced with one in flight",
                ),
                &["kind"],
            )?,
            lagged_messages: IntCounter::new(
                "herald_redis_lagged_messages_total",
                "Pub/sub messages dropped by a lagging reader (then repaired)",
            )?,
            resets: IntCounter::new(
                "herald_stream_resets_total",
                "Channels whose stream was reset or lost beyond repair",
            )?,
        })
    }

    /// Registers every metric.
    pub(crate) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.publish_duration.clone()))?;
        registry.register(Box::new(self.probe_roundtrip.clone()))?;
        registry.register(Box::new(self.pubsub_reconnects.clone()))?;
        registry.register(Box::new(self.gap_repairs.clone()))?;
        registry.register(Box::new(self.gap_repair_messages.clone()))?;
        registry.register(Box::new(self.probe_failures.clone()))?;
        registry.register(Box::new(self.history_reads.clone()))?;
        registry.register(Box::new(self.lagged_messages.clone()))?;
        registry.register(Box::new(self.resets.clone()))?;
        Ok(())
    }
}
