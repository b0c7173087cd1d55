//! Prometheus metrics. Names live here as constants; label values are bounded (method
//! names, codes, outcomes), never channel names or user ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Open client connections (authenticated or not).
pub(crate) const CONNECTIONS: &str = "herald_connections";
/// Active client subscriptions on this node.
pub(crate) const SUBSCRIPTIONS: &str = "herald_subscriptions";
/// Channels with at least one subscriber on this node.
pub(crate) const CHANNELS: &str = "herald_channels";
/// Messages written to clients (replies, pushes, pings), after batching into frames.
pub(crate) const MESSAGES_SENT: &str = "herald_messages_sent_total";
/// WebSocket frames written to clients.
pub(crate) const FRAMES_SENT: &str = "herald_frames_sent_total";
/// Commands received from clients, by method.
pub(crate) const MESSAGES_RECEIVED: &str = "herald_messages_received_total";
/// Reply errors sent, by code.
pub(crate) const REPLY_ERRORS: &str = "herald_reply_errors_total";
/// Publish duration through the broker, by source (api, client).
pub(crate) const PUBLISH_DURATION: &str = "herald_publish_duration_seconds";
/// Broadcast duration (all channels) through the broker.
pub(crate) const BROADCAST_DURATION: &str = "herald_broadcast_duration_seconds";
/// Subscribe-with-recovery outcomes (recovered, not_recovered, rejected).
pub(crate) const RECOVERIES: &str = "herald_recoveries_total";
/// Connections closed by the server, by close code.
pub(crate) const DISCONNECTS: &str = "herald_disconnects_total";
/// Connections cut off because their queue overflowed.
pub(crate) const SLOW_DISCONNECTS: &str = "herald_slow_consumer_disconnects_total";
/// Publications delivered to this node by the broker.
pub(crate) const BROKER_PUBLICATIONS: &str = "herald_broker_publications_total";
/// Broker operation errors, by operation.
pub(crate) const BROKER_ERRORS: &str = "herald_broker_errors_total";
/// Server API calls, by method.
pub(crate) const API_CALLS: &str = "herald_api_calls_total";
/// JWKS fetches, by outcome (ok, timeout, unreachable, http_error, too_large, invalid).
pub(crate) const JWKS_FETCHES: &str = "herald_jwks_fetches_total";
/// Requests refused (or, in dry run, that would have been) by a rate limit, by limit
/// (commands, publishes, subscribes, user_publishes, user_connections) and mode
/// (enforced, dry_run).
pub(crate) const RATE_LIMITED: &str = "herald_rate_limited_total";
/// Limits that could not be checked because the broker failed (the request is let
/// through: fail-open), by limit.
pub(crate) const RATE_LIMIT_ERRORS: &str = "herald_rate_limit_errors_total";
/// 1 while the node accepts traffic, 0 while draining or unhealthy.
pub(crate) const READY: &str = "herald_ready";
/// Connections refused (or, in dry run, that would have been) by an admission rule, by
/// limit (`origin`, `connections`, `connections_per_ip`, `connections_per_user`,
/// `connect_rate`, `connect_rate_per_ip`) and mode (`enforced`, `dry_run`).
pub(crate) const ADMISSION_REFUSALS: &str = "herald_admission_refusals_total";
/// Client addresses the per-address connect rate keeps a bucket for.
pub(crate) const ADMISSION_TRACKED_ADDRESSES: &str = "herald_admission_tracked_addresses";
/// Connections opened, by transport (`websocket`, `http_stream`, `sse`,
/// `uni_websocket`, `uni_http_stream`, `uni_sse`).
pub(crate) const TRANSPORT_CONNECTIONS: &str = "herald_transport_connections_total";
/// Commands posted to `/emulation`, by outcome (`delivered`, `no_session`, `busy`,
/// `node_gone`, `timeout`, `broker_error`) and route (`local`, `forwarded`).
pub(crate) const EMULATION_REQUESTS: &str = "herald_emulation_requests_total";
/// WebSocket connections that negotiated permessage-deflate.
pub(crate) const WEBSOCKET_COMPRESSED: &str = "herald_websocket_compressed_connections_total";
/// Build information (always 1), labelled with the version.
pub(crate) const BUILD_INFO: &str = "herald_build_info";

/// Every metric the gateway exports, registered in one registry.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// See [`CONNECTIONS`].
    pub connections: IntGauge,
    /// See [`SUBSCRIPTIONS`].
    pub subscriptions: IntGauge,
    /// See [`CHANNELS`].
    pub channels: IntGauge,
    /// See [`MESSAGES_SENT`].
    pub messages_sent: IntCounter,
    /// See [`FRAMES_SENT`].
    pub frames_sent: IntCounter,
    /// See [`MESSAGES_RECEIVED`].
    pub messages_received: IntCounterVec,
    /// See [`REPLY_ERRORS`].
    pub reply_errors: IntCounterVec,
    /// See [`PUBLISH_DURATION`].
    pub publish_duration: HistogramVec,
    /// See [`BROADCAST_DURATION`].
    pub broadcast_duration: Histogram,
    /// See [`RECOVERIES`].
    pub recoveries: IntCounterVec,
    /// See [`DISCONNECTS`].
    pub disconnects: IntCounterVec,
    /// See [`SLOW_DISCONNECTS`].
    pub slow_disconnects: IntCounter,
    /// See [`BROKER_PUBLICATIONS`].
    pub broker_publications: IntCounter,
    /// See [`BROKER_ERRORS`].
    pub broker_errors: IntCounterVec,
    /// See [`API_CALLS`].
    pub api_calls: IntCounterVec,
    /// See [`READY`].
    pub ready: IntGauge,
    /// See [`ADMISSION_REFUSALS`] and [`ADMISSION_TRACKED_ADDRESSES`].
    pub admission: crate::admission::AdmissionMetrics,
    /// See [`RATE_LIMITED`].
    pub rate_limited: IntCounterVec,
    /// See [`RATE_LIMIT_ERRORS`].
    pub rate_limit_errors: IntCounterVec,
    /// See [`TRANSPORT_CONNECTIONS`].
    pub transport_connections: IntCounterVec,
    /// See [`EMULATION_REQUESTS`].
    pub emulation_requests: IntCounterVec,
    /// See [`WEBSOCKET_COMPRESSED`].
    pub websocket_compressed: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Metrics {
    /// Creates and registers every metric.
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let publish_duration = HistogramVec::new(
            HistogramOpts::new(PUBLISH_DURATION, "Publish duration through the broker")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["source"],
        )?;
        registry.register(Box::new(publish_duration.clone()))?;
        let broadcast_duration = Histogram::with_opts(
            HistogramOpts::new(BROADCAST_DURATION, "Broadcast duration through the broker")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(broadcast_duration.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Herald build information"),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Self {
            connections: gauge(CONNECTIONS, "Open client connections")?,
            subscriptions: gauge(SUBSCRIPTIONS, "Active client subscriptions")?,
            channels: gauge(CHANNELS, "Channels with subscribers on this node")?,
            messages_sent: counter(MESSAGES_SENT, "Messages written to clients")?,
            frames_sent: counter(FRAMES_SENT, "WebSocket frames written to clients")?,
            messages_received: counter_vec(
                MESSAGES_RECEIVED,
                "Commands received from clients",
                &["method"],
            )?,
            reply_errors: counter_vec(REPLY_ERRORS, "Reply errors sent", &["code"])?,
            publish_duration,
            broadcast_duration,
            recoveries: counter_vec(RECOVERIES, "Subscribe-with-recovery outcomes", &["outcome"])?,
            disconnects: counter_vec(DISCONNECTS, "Connections closed by the server", &["code"])?,
            slow_disconnects: counter(SLOW_DISCONNECTS, "Connections cut off as slow consumers")?,
            broker_publications: counter(
                BROKER_PUBLICATIONS,
                "Publications delivered to this node by the broker",
            )?,
            broker_errors: counter_vec(BROKER_ERRORS, "Broker operation errors", &["op"])?,
            api_calls: counter_vec(API_CALLS, "Server API calls", &["method"])?,
            ready: gauge(READY, "1 while the node accepts traffic")?,
            admission: crate::admission::AdmissionMetrics {
                refusals: counter_vec(
                    ADMISSION_REFUSALS,
                    "Connections refused by an admission rule",
                    &["limit", "mode"],
                )?,
                tracked_addresses: gauge(
                    ADMISSION_TRACKED_ADDRESSES,
                    "Client addresses with a connect-rate bucket",
                )?,
            },
            rate_limited: counter_vec(
                RATE_LIMITED,
                "Requests over a rate limit",
                &["limit", "mode"],
            )?,
            rate_limit_errors: counter_vec(
                RATE_LIMIT_ERRORS,
                "Limits not checked because the broker failed (let through)",
                &["limit"],
            )?,
            transport_connections: counter_vec(
                TRANSPORT_CONNECTIONS,
                "Connections opened, by transport",
                &["transport"],
            )?,
            emulation_requests: counter_vec(
                EMULATION_REQUESTS,
                "Commands posted to /emulation, by outcome and route",
                &["outcome", "route"],
            )?,
            websocket_compressed: counter(
                WEBSOCKET_COMPRESSED,
                "WebSocket connections that negotiated permessage-deflate",
            )?,
            registry,
        })
    }

    /// The registry, for components (such as a broker) that export metrics of their own.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
