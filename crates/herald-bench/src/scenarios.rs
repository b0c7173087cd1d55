//! The benchmark scenarios. Each one starts from a fresh [`Stack`], drives it, and
//! returns named measurements; the coordinator repeats runs and compares systems.

use crate::procs::{Sample, listen_overflows, mem_available_kib};
use crate::proto::now_us;
use crate::stack::{Stack, System};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scenario {
    /// N idle subscribed connections: memory per connection, then after a burst.
    Idle,
    /// One channel, N subscribers, a fixed offered publish rate: throughput, loss,
    /// latency, CPU per delivery.
    Fanout,
    /// The same as fast as the publisher goes: peak deliveries per second.
    Peak,
    /// Single publications to N subscribers: time to the last delivery.
    Broadcast,
    /// N clients drop together and reconnect over a jittered window while publications
    /// are made: time to catch up, gaps, duplicates, Redis reads.
    Storm,
    /// One stalled reader among N: the others' latency and when it is cut off.
    Slow,
    /// Every socket force-closed every ~15 s for ~2 s under 2 broadcasts/s.
    Disruption,
    /// N subscribers over several gateways behind balancers: connect time, memory per
    /// connection, Redis's own cost, then single publications to all of them.
    Scale,
    /// N subscribers over several gateways behind balancers under a steady publish
    /// rate, while every gateway is restarted in turn (SIGTERM, then started again), as
    /// a rolling update does: loss, duplicates, reconnects per second, latency.
    Rolling,
}

/// The size of a scenario run.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Params {
    /// Connections.
    pub n: usize,
    /// Publications per second (0 = as fast as the publisher goes).
    pub rate: f64,
    /// Length of the measured phase.
    pub secs: u64,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub key: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

/// What one run of one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    pub rows: Vec<Row>,
    /// Measurements over time (one value a second), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<(&'static str, Vec<f64>)>,
    /// Correctness problems (loss, duplicates, failed connections): a smoke run fails on
    /// any.
    pub problems: Vec<String>,
}

impl Outcome {
    pub(crate) fn new() -> Self {
        Self {
            rows: Vec::new(),
            series: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn row(&mut self, key: &'static str, value: f64, unit: &'static str) {
        self.rows.push(Row { key, value, unit });
    }

    fn expect_zero(&mut self, what: &str, value: u64) {
        if value != 0 {
            self.problems.push(format!("{what}: {value}"));
        }
    }
}

/// Runs one scenario on a started stack.
pub(crate) async fn run(
    scenario: Scenario,
    stack: &mut Stack,
    p: Params,
) -> anyhow::Result<Outcome> {
    match scenario {
        Scenario::Idle => idle(stack, p).await,
        Scenario::Fanout => fanout(stack, p).await,
        Scenario::Peak => fanout(stack, Params { rate: 0.0, ..p }).await,
        Scenario::Broadcast => broadcast(stack, p).await,
        Scenario::Storm => storm(stack, p).await,
        Scenario::Slow => slow(stack, p).await,
        Scenario::Disruption => disruption(stack, p).await,
        Scenario::Scale => scale(stack, p).await,
        Scenario::Rolling => rolling(stack, p).await,
    }
}

const RAMP: u32 = 4_000;
const SETTLE: Duration = Duration::from_secs(3);

/// Opens `n` subscribed connections. Scenarios that measure throughput or memory use
/// the lean reader; those that measure recovery use the SDK, which recovers by itself.
async fn open_all(
    stack: &mut Stack,
    n: usize,
    channel: &str,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let lean = !matches!(channel, "storm" | "disruption" | "rolling");
    let ok = stack.open(n, channel, RAMP, lean).await?;
    out.row("connections", ok as f64, "");
    out.row("connect_secs", started.elapsed().as_secs_f64(), "s");
    out.expect_zero("connections failed", (n - ok) as u64);
    Ok(())
}

fn kib_per_conn(after: Sample, before: Sample, n: usize) -> f64 {
    (after.rss_kib as f64 - before.rss_kib as f64) / n.max(1) as f64
}

async fn idle(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = stack.sample()?;
    let mem_before = mem_available_kib();
    open_all(stack, p.n, "idle", &mut out).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = stack.sample()?;
    let mem_idle = mem_available_kib();
    out.row("rss_base_mib", before.rss_kib as f64 / 1024.0, "MiB");
    out.row("rss_per_conn_kib", kib_per_conn(idle, before, p.n), "KiB");
    out.row(
        "machine_per_conn_kib",
        (mem_before as f64 - mem_idle as f64) / p.n.max(1) as f64,
        "KiB",
    );
    // A burst of 256 publications reaches every connection's queue at once.
    stack.publish("idle", 0.0, 256, 1).await?;
    let s = stack.wait_caught_up(256, Duration::from_secs(120)).await?;
    out.expect_zero("missing after the burst", s.tail_missing + s.gaps);
    out.expect_zero("duplicates", s.dups);
    tokio::time::sleep(SETTLE).await;
    let after = stack.sample()?;
    out.row(
        "rss_after_burst_per_conn_kib",
        kib_per_conn(after, before, p.n),
        "KiB",
    );
    Ok(out)
}

/// Polls the largest pub/sub output buffer in Redis while a phase runs.
fn watch_omem(port: u16) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicU64::new(0));
    let seen = max.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(out) = tokio::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "CLIENT", "LIST", "TYPE", "pubsub"])
                .output()
                .await
            {
                let text = String::from_utf8_lossy(&out.stdout);
                for v in text.lines().filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|kv| kv.strip_prefix("omem="))
                        .and_then(|v| v.parse::<u64>().ok())
                }) {
                    seen.fetch_max(v, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (max, task)
}

async fn fanout(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    open_all(stack, p.n, "fanout", &mut out).await?;
    // Warm up: one second's worth, then measure from a clean histogram.
    let warm = if p.rate > 0.0 { p.rate as u64 } else { 200 };
    stack.publish("fanout", p.rate, warm, 1).await?;
    stack.wait_caught_up(warm, Duration::from_secs(30)).await?;
    stack.reset().await?;
    let count = if p.rate > 0.0 {
        (p.rate * p.secs as f64) as u64
    } else {
        // As fast as possible: enough publications to last a few seconds.
        (2_000_000 / p.n.max(1) as u64).clamp(200, 20_000) * p.secs.max(1) / 5
    };
    let last = warm + count;
    let (omem, watcher) = watch_omem(stack.redis.port);
    let s0 = stack.sample()?;
    let before = stack.stats(None).await?;
    let start_us = now_us();
    let published = stack.publish("fanout", p.rate, count, warm + 1).await?;
    let s = stack.wait_caught_up(last, Duration::from_secs(30)).await?;
    let s1 = stack.sample()?;
    watcher.abort();
    let deliveries = s.received - before.received;
    let window = (s.last_rx_us.saturating_sub(start_us) as f64 / 1e6).max(1e-3);
    out.row(
        "offered_pub_rate",
        count as f64 / (published.ms.max(1.0) / 1000.0),
        "/s",
    );
    out.row("publisher_late_max_ms", published.late_max_ms, "ms");
    out.row("deliveries_per_sec", deliveries as f64 / window, "/s");
    out.row("loss", (s.tail_missing + s.gaps) as f64, "");
    out.row("dups", s.dups as f64, "");
    out.row("lat_p50_ms", s.lat_ms(0.5), "ms");
    out.row("lat_p90_ms", s.lat_ms(0.9), "ms");
    out.row("lat_p99_ms", s.lat_ms(0.99), "ms");
    out.row("lat_max_ms", s.lat_ms(1.0), "ms");
    out.row(
        "cpu_us_per_delivery",
        (s1.cpu_us - s0.cpu_us) as f64 / deliveries.max(1) as f64,
        "µs",
    );
    // The kernel's share: on loopback it includes the receiving side's TCP work.
    out.row(
        "cpu_sys_us_per_delivery",
        (s1.sys_us - s0.sys_us) as f64 / deliveries.max(1) as f64,
        "µs",
    );
    out.row(
        "server_cpu_cores",
        (s1.cpu_us - s0.cpu_us) as f64 / 1e6 / window,
        "",
    );
    out.row(
        "redis_pubsub_omem_max_kib",
        omem.load(Ordering::Relaxed) as f64 / 1024.0,
        "KiB",
    );
    out.row("cut_off_as_slow", s.cut_off as f64, "");
    // A reader cut off as slow misses the rest by design (it would recover on
    // reconnect); that is the load generator falling behind, reported as such.
    out.expect_zero(
        "readers cut off as slow (the load generator fell behind)",
        s.cut_off,
    );
    if s.cut_off == 0 {
        out.expect_zero("lost", s.tail_missing + s.gaps);
    }
    out.expect_zero("duplicates", s.dups);
    out.expect_zero("publish failures", published.failed);
    Ok(out)
}

async fn broadcast(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    open_all(stack, p.n, "broadcast", &mut out).await?;
    let (p50s, lasts) =
        broadcast_rounds(stack, "broadcast", 10, Duration::from_secs(30), &mut out).await?;
    out.row("p50_ms", median(&p50s), "ms");
    out.row("last_delivery_p50_ms", median(&lasts), "ms");
    out.row("last_delivery_p99_ms", quantile(&lasts, 0.99), "ms");
    Ok(out)
}

/// Publishes `rounds` single publications to every subscriber of `channel`, one after
/// the other caught up; returns each round's median and last delivery latency (ms).
async fn broadcast_rounds(
    stack: &mut Stack,
    channel: &str,
    rounds: u64,
    within: Duration,
    out: &mut Outcome,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut p50s = Vec::new();
    let mut lasts = Vec::new();
    for k in 1..=rounds {
        stack.reset().await?;
        stack.publish(channel, 0.0, 1, k).await?;
        let s = stack.wait_caught_up(k, within).await?;
        out.expect_zero("missing", s.tail_missing + s.gaps);
        out.expect_zero("duplicates", s.dups);
        p50s.push(s.lat_ms(0.5));
        lasts.push(s.lat_ms(1.0));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok((p50s, lasts))
}

async fn scale(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = stack.sample()?;
    let redis_before = stack.redis.proc.sample()?;
    open_all(stack, p.n, "scale", &mut out).await?;
    let redis_connected = stack.redis.proc.sample()?;
    tokio::time::sleep(SETTLE).await;
    let idle = stack.sample()?;
    out.row("gateways", stack.gateways() as f64, "");
    out.row("balancers", stack.balancers.len() as f64, "");
    let per_gateway = stack.gateway_metrics("herald_connections").await?;
    let fewest = per_gateway.iter().copied().fold(f64::INFINITY, f64::min);
    let most = per_gateway.iter().copied().fold(0.0, f64::max);
    out.row("conns_per_gateway_min", fewest, "");
    out.row("conns_per_gateway_max", most, "");
    out.row("rss_per_conn_kib", kib_per_conn(idle, before, p.n), "KiB");
    out.row("gateways_rss_mib", idle.rss_kib as f64 / 1024.0, "MiB");
    out.row(
        "redis_rss_delta_mib",
        (redis_connected.rss_kib as f64 - redis_before.rss_kib as f64) / 1024.0,
        "MiB",
    );
    out.row(
        "redis_cpu_ms_connect",
        redis_connected.cpu_us.saturating_sub(redis_before.cpu_us) as f64 / 1000.0,
        "ms",
    );
    let rounds = 5;
    let (p50s, lasts) =
        broadcast_rounds(stack, "scale", rounds, Duration::from_secs(120), &mut out).await?;
    let after = stack.sample()?;
    // Nothing here asks a gateway to close a connection; a close (a pong too late from
    // a starved load generator, say) would make the rounds' deliveries fewer than N.
    let closed: f64 = stack
        .gateway_metrics("herald_disconnects_total")
        .await?
        .iter()
        .fold(0.0, |sum, v| sum + v);
    out.row("closed_by_gateways", closed, "");
    out.expect_zero("connections closed by the gateways", closed as u64);
    out.row("p50_ms", median(&p50s), "ms");
    out.row("last_delivery_p50_ms", median(&lasts), "ms");
    out.row(
        "last_delivery_max_ms",
        lasts.iter().copied().fold(0.0, f64::max),
        "ms",
    );
    // Includes the gateways' pings and timers over the rounds.
    out.row(
        "cpu_us_per_delivery",
        after.cpu_us.saturating_sub(idle.cpu_us) as f64 / (rounds as f64 * p.n.max(1) as f64),
        "µs",
    );
    Ok(out)
}

async fn storm(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    open_all(stack, p.n, "storm", &mut out).await?;
    let warm = 10;
    let behind = 100;
    let offline_ms = 500;
    let window_ms = 1_000;
    stack.publish("storm", 0.0, warm, 1).await?;
    stack.wait_caught_up(warm, Duration::from_secs(30)).await?;
    let calls_before = stack.redis.command_calls().await?;
    let history_before = history_reads(stack).await;
    let before = stack.stats(None).await?;
    let s0 = stack.sample()?;
    let overflows_before = listen_overflows();
    let dropped_at = now_us();
    stack.drop_all(offline_ms, window_ms).await?;
    let published = stack.publish("storm", 0.0, behind, warm + 1).await?;
    let publish_done_ms = (now_us() - dropped_at) as f64 / 1000.0;
    let s = stack
        .wait_caught_up(warm + behind, Duration::from_secs(60))
        .await?;
    let s1 = stack.sample()?;
    let calls_after = stack.redis.command_calls().await?;
    let window_start = dropped_at + offline_ms * 1000;
    out.row("publish_done_ms", publish_done_ms, "ms");
    out.row(
        "caught_up_ms",
        s.last_rx_us.saturating_sub(window_start) as f64 / 1000.0,
        "ms",
    );
    out.row("gaps", (s.gaps + s.tail_missing) as f64, "");
    out.row("dups", s.dups as f64, "");
    out.row("not_recovered", s.not_recovered as f64, "");
    out.row("reconnects", (s.reconnects - before.reconnects) as f64, "");
    let delta = |name: &str| {
        calls_after.get(name).copied().unwrap_or(0) - calls_before.get(name).copied().unwrap_or(0)
    };
    out.row(
        "redis_xrange_calls",
        (delta("xrange") + delta("xrevrange")) as f64,
        "",
    );
    if let (Some(a), Some(b)) = (history_before, history_reads(stack).await) {
        out.row("history_reads_issued", b.0 - a.0, "");
        out.row("history_reads_coalesced", b.1 - a.1, "");
    }
    out.row("server_cpu_secs", (s1.cpu_us - s0.cpu_us) as f64 / 1e6, "s");
    out.row(
        "listen_overflows",
        (listen_overflows() - overflows_before) as f64,
        "",
    );
    out.expect_zero("lost", s.gaps + s.tail_missing);
    out.expect_zero("duplicates", s.dups);
    out.expect_zero("not recovered", s.not_recovered);
    out.expect_zero("publish failures", published.failed);
    Ok(out)
}

/// Herald's history reads: issued to Redis, and coalesced with one in flight.
async fn history_reads(stack: &Stack) -> Option<(f64, f64)> {
    if stack.system != System::Herald {
        return None;
    }
    let issued = stack
        .metric(r#"herald_history_reads_total{kind="issued"}"#)
        .await
        .ok()?;
    let coalesced = stack
        .metric(r#"herald_history_reads_total{kind="coalesced"}"#)
        .await
        .ok()?;
    Some((issued, coalesced))
}

async fn slow(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    open_all(stack, p.n.saturating_sub(1).max(1), "slow", &mut out).await?;
    let phase = (p.rate * p.secs as f64) as u64;
    stack.publish("slow", p.rate, p.rate as u64, 1).await?;
    let mut seq = p.rate as u64;
    stack.wait_caught_up(seq, Duration::from_secs(30)).await?;
    // Phase A: everyone reads.
    stack.reset().await?;
    stack.publish("slow", p.rate, phase, seq + 1).await?;
    seq += phase;
    let a = stack.wait_caught_up(seq, Duration::from_secs(30)).await?;
    // Phase B: one connection stops reading.
    let stalled = stack.stall("slow").await?;
    let stalled_at = std::time::Instant::now();
    stack.reset().await?;
    let (omem, watcher) = watch_omem(stack.redis.port);
    stack.publish_start("slow", p.rate, phase, seq + 1).await?;
    seq += phase;
    let mut cut_ms = None;
    let deadline = stalled_at + Duration::from_secs(p.secs + 5);
    if stack.system == System::Herald {
        while std::time::Instant::now() < deadline {
            if stack
                .metric("herald_slow_consumer_disconnects_total")
                .await
                .unwrap_or(0.0)
                > 0.0
            {
                cut_ms = Some(stalled_at.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let published = stack.published(Duration::from_secs(p.secs + 60)).await?;
    let b = stack.wait_caught_up(seq, Duration::from_secs(30)).await?;
    watcher.abort();
    drop(stalled);
    let (pa, pb) = (a.lat_ms(0.99), b.lat_ms(0.99));
    out.row("others_p99_ms_before", pa, "ms");
    out.row("others_p99_ms_stalled", pb, "ms");
    out.row("others_p99_change_pct", (pb - pa) / pa * 100.0, "%");
    match cut_ms {
        Some(ms) => {
            out.row("cut_off_after_ms", ms, "ms");
            out.row("published_before_cut_off", ms / 1000.0 * p.rate, "");
        }
        None => out.row("cut_off_after_ms", f64::NAN, "ms"),
    }
    out.row(
        "redis_pubsub_omem_max_kib",
        omem.load(Ordering::Relaxed) as f64 / 1024.0,
        "KiB",
    );
    out.expect_zero("others lost", b.tail_missing + b.gaps);
    out.expect_zero("duplicates", b.dups);
    out.expect_zero("publish failures", published.failed);
    Ok(out)
}

async fn disruption(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    open_all(stack, p.n, "disruption", &mut out).await?;
    let (every_ms, offline_ms) = if p.secs >= 30 {
        (15_000, 2_000)
    } else {
        // The smoke run: the same shape, compressed.
        (2_000, 500)
    };
    let count = (p.rate * p.secs as f64) as u64;
    stack.reset().await?;
    let overflows_before = listen_overflows();
    stack.disrupt(every_ms, offline_ms, p.secs * 1000).await?;
    let published = stack.publish("disruption", p.rate, count, 1).await?;
    stack.disrupt_done(Duration::from_secs(p.secs + 60)).await?;
    // Under overload reconnects queue up; give them time to finish before counting.
    let s = stack.wait_caught_up(count, Duration::from_secs(90)).await?;
    let expected = count * p.n as u64;
    out.row(
        "delivered_pct",
        s.received as f64 / expected.max(1) as f64 * 100.0,
        "%",
    );
    out.row("dups", s.dups as f64, "");
    out.row("gaps", s.gaps as f64, "");
    out.row("missing_at_end", s.tail_missing as f64, "");
    out.row("connected_at_end", s.connected as f64, "");
    out.row("not_recovered", s.not_recovered as f64, "");
    out.row("reconnects", s.reconnects as f64, "");
    out.row("replay_p50_ms", s.replay_ms(0.5), "ms");
    out.row("replay_p95_ms", s.replay_ms(0.95), "ms");
    out.row("replay_p99_ms", s.replay_ms(0.99), "ms");
    out.row("lat_p99_ms", s.lat_ms(0.99), "ms");
    out.row(
        "listen_overflows",
        (listen_overflows() - overflows_before) as f64,
        "",
    );
    out.expect_zero("lost", s.gaps + s.tail_missing);
    out.expect_zero("duplicates", s.dups);
    out.expect_zero("publish failures", published.failed);
    Ok(out)
}

/// Longest a gateway may take to exit after SIGTERM: Herald's shutdown timeout (20 s by
/// default) and a margin.
const EXIT_GRACE: Duration = Duration::from_secs(30);

/// How long the publications go on before the first gateway is stopped: the latency
/// without a deploy.
const ROLLING_BASELINE: Duration = Duration::from_secs(8);

/// How long a restarted gateway runs before the next one is stopped: the balancer's
/// health check (`rise 2` every 2 s) takes it back in that time, as a rollout's
/// `minReadySeconds` would wait.
const ROLLING_PAUSE: Duration = Duration::from_secs(5);

async fn rolling(stack: &mut Stack, p: Params) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new();
    open_all(stack, p.n, "rolling", &mut out).await?;
    let warm = 10;
    stack.publish("rolling", 0.0, warm, 1).await?;
    stack.wait_caught_up(warm, Duration::from_secs(30)).await?;
    stack.reset().await?;
    let count = (p.rate * p.secs as f64) as u64;
    let before = stack.stats(None).await?;
    let overflows_before = listen_overflows();
    let mut curve = Curve::new(before.reconnects);
    stack
        .publish_start("rolling", p.rate, count, warm + 1)
        .await?;
    // The latency without a deploy first, then only during and after it.
    curve.wait(stack, ROLLING_BASELINE).await?;
    let steady = stack.stats(None).await?;
    stack.reset().await?;
    let deploy = std::time::Instant::now();
    let mut exit_secs: Vec<f64> = Vec::new();
    for i in 0..stack.gateways() {
        let signalled = std::time::Instant::now();
        stack.signal_gateway(i);
        if !curve.wait_exit(stack, i, EXIT_GRACE).await? {
            out.problems.push(format!(
                "gateway {i} did not exit within {EXIT_GRACE:?} of SIGTERM"
            ));
        }
        exit_secs.push(signalled.elapsed().as_secs_f64());
        stack.start_gateway(i).await?;
        curve.wait(stack, ROLLING_PAUSE).await?;
    }
    let deploy_secs = deploy.elapsed().as_secs_f64();
    // Sampling goes on until the publisher should be done (a gap would lump seconds).
    let until = Duration::from_secs(p.secs).saturating_sub(curve.started.elapsed());
    curve.wait(stack, until).await?;
    let published = stack.published(Duration::from_secs(p.secs + 120)).await?;
    let publish_secs = published.ms / 1000.0;
    curve.wait(stack, Duration::from_secs(1)).await?;
    let s = stack
        .wait_caught_up(warm + count, Duration::from_secs(60))
        .await?;
    let expected = count * s.conns as u64;
    out.row("deploy_secs", deploy_secs, "s");
    out.row("publish_secs", publish_secs, "s");
    out.row(
        "exit_secs_max",
        exit_secs.iter().copied().fold(0.0, f64::max),
        "s",
    );
    out.row(
        "delivered_pct",
        (s.received - before.received) as f64 / expected.max(1) as f64 * 100.0,
        "%",
    );
    out.row("gaps", (s.gaps + s.tail_missing) as f64, "");
    out.row("dups", s.dups as f64, "");
    out.row("not_recovered", s.not_recovered as f64, "");
    out.row("reconnects", (s.reconnects - before.reconnects) as f64, "");
    out.row(
        "reconnects_max_per_s",
        curve.per_sec.iter().copied().fold(0.0, f64::max),
        "/s",
    );
    out.row("steady_lat_p50_ms", steady.lat_ms(0.5), "ms");
    out.row("steady_lat_p99_ms", steady.lat_ms(0.99), "ms");
    out.row("deploy_lat_p50_ms", s.lat_ms(0.5), "ms");
    out.row("deploy_lat_p99_ms", s.lat_ms(0.99), "ms");
    out.row("deploy_lat_max_ms", s.lat_ms(1.0), "ms");
    out.row("publish_late_max_ms", published.late_max_ms, "ms");
    out.row(
        "listen_overflows",
        (listen_overflows() - overflows_before) as f64,
        "",
    );
    out.series.push(("reconnects_per_s", curve.per_sec));
    let needed = ROLLING_BASELINE.as_secs_f64() + deploy_secs;
    if publish_secs < needed {
        out.problems.push(format!(
            "publishing ended {publish_secs:.1} s in, before the deploy did ({needed:.1} s): give it more seconds"
        ));
    }
    out.expect_zero("lost", s.gaps + s.tail_missing);
    out.expect_zero("duplicates", s.dups);
    out.expect_zero("not recovered", s.not_recovered);
    out.expect_zero("publish failures", published.failed);
    Ok(out)
}

/// The clients' reconnects, counted once a second while the scenario waits.
struct Curve {
    started: std::time::Instant,
    last: u64,
    per_sec: Vec<f64>,
}

impl Curve {
    fn new(reconnects: u64) -> Self {
        Self {
            started: std::time::Instant::now(),
            last: reconnects,
            per_sec: Vec::new(),
        }
    }

    /// Takes the samples that are due.
    async fn sample(&mut self, stack: &mut Stack) -> anyhow::Result<()> {
        let due = Duration::from_secs(self.per_sec.len() as u64 + 1);
        if self.started.elapsed() >= due {
            let s = stack.stats(None).await?;
            self.per_sec
                .push(s.reconnects.saturating_sub(self.last) as f64);
            self.last = s.reconnects;
        }
        Ok(())
    }

    /// Waits `d`, sampling.
    async fn wait(&mut self, stack: &mut Stack, d: Duration) -> anyhow::Result<()> {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            self.sample(stack).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits for gateway `i` to exit, sampling; kills it after `grace` (false then).
    async fn wait_exit(
        &mut self,
        stack: &mut Stack,
        i: usize,
        grace: Duration,
    ) -> anyhow::Result<bool> {
        let until = std::time::Instant::now() + grace;
        while !stack.gateway_exited(i, false).await {
            if std::time::Instant::now() >= until {
                stack.gateway_exited(i, true).await;
                return Ok(false);
            }
            self.sample(stack).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(true)
    }
}

/// The median of some values (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// A nearest-rank quantile of some values (NaN when empty).
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
