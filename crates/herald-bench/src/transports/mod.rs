//! `herald-bench transports`: each transport side by side in one run, on two Herald
//! nodes sharing a private Redis: memory per idle subscribed connection, server CPU per
//! delivery and publish → receive latency at `n` subscribers × `rate` publications/s,
//! the round trip of an emulated command when its POST lands on the session's node and
//! on the other one, and the bytes on the wire for a 2 KB JSON state object that changes
//! 5 % per publication, with and without gzip and fossil delta.

mod client;

use crate::procs::{Proc, Redis, Sample, free_port};
use anyhow::bail;
use client::{Kind, Tally, now_us, open, post_emulation};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Arguments of `transports`.
#[derive(Debug, clap::Args)]
pub(crate) struct TransportsArgs {
    /// The `herald` binary (a release build for meaningful numbers).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// Subscribers per transport.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Publications per second in the delivery measurement.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of publishing per transport.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Emulated command round trips per route.
    #[arg(long, default_value_t = 300)]
    round_trips: usize,
    /// Publications of the 2 KB state object.
    #[arg(long, default_value_t = 200)]
    states: usize,
}

struct Node {
    proc: Proc,
    addr: SocketAddr,
}

async fn start_node(
    herald: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    redis_url: &str,
    gzip: bool,
) -> anyhow::Result<Node> {
    let port = free_port()?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
broker = "redis"

[redis]
url = "{redis_url}"

[api]
insecure = true

[client]
allow_anonymous = true
# No pings within a measurement: the clients here do not answer them over emulation.
ping_interval = "600s"
stream_gzip = {gzip}
websocket_compression = {gzip}

[namespaces.default]
history_size = 1000
history_ttl = "300s"
allow_subscribe_for_anonymous = true
presence = false
allowed_delta_types = ["fossil"]
"#
        ),
    )?;
    let proc = crate::procs::start_herald(herald, &config, port, name).await?;
    Ok(Node {
        proc,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64
}

/// The opening message of a subscribed client of `kind` on `channel`.
fn opening(kind: Kind, channel: &str, delta: bool) -> String {
    let options = if delta { r#"{"delta":"fossil"}"# } else { "{}" };
    match kind {
        Kind::WebSocket | Kind::HttpStream | Kind::Sse => r#"{"id":1,"connect":{}}"#.to_owned(),
        Kind::UniSse | Kind::UniHttpStream => format!(r#"{{"subs":{{"{channel}":{options}}}}}"#),
    }
}

/// Opens `n` clients of `kind` subscribed to `channel` on `node`.
async fn subscribed(
    kind: Kind,
    node: SocketAddr,
    channel: &str,
    n: usize,
    (gzip, delta): (bool, bool),
    http: &reqwest::Client,
    tally: &Arc<Tally>,
) -> anyhow::Result<Vec<client::Client>> {
    let delta_option = if delta { r#","delta":"fossil""# } else { "" };
    let subscribe = format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"{delta_option}}}}}"#);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let opening = opening(kind, channel, delta);
        let (c, _) = open(kind, node, &opening, gzip, tally.clone()).await?;
        match kind {
            Kind::WebSocket => {
                let done = c.expect(2);
                c.send_ws(subscribe.clone())?;
                tokio::time::timeout(Duration::from_secs(10), done).await??;
            }
            Kind::HttpStream | Kind::Sse => {
                let done = c.expect(2);
                let status = post_emulation(http, node, &c, &subscribe).await?;
                anyhow::ensure!(status == 204, "subscribe through /emulation: {status}");
                tokio::time::timeout(Duration::from_secs(10), done).await??;
            }
            Kind::UniSse | Kind::UniHttpStream => {}
        }
        clients.push(c);
    }
    Ok(clients)
}

async fn publish(
    http: &reqwest::Client,
    node: SocketAddr,
    channel: &str,
    data: &serde_json::Value,
) -> anyhow::Result<()> {
    let response = http
        .post(format!("http://{node}/api/publish"))
        .json(&serde_json::json!({ "channel": channel, "data": data }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "publish: {}",
        response.status()
    );
    Ok(())
}

/// Runs the measurements and prints them.
// The measurements are this command's output.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: TransportsArgs) -> anyhow::Result<()> {
    if !args.herald.exists() {
        bail!(
            "no herald binary at {} (cargo build --release -p herald)",
            args.herald.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("herald-bench-transports-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let redis = Redis::start().await?;
    let http = reqwest::Client::new();
    println!(
        "transports: {} subscribers x {} pub/s for {} s per transport, each on a fresh node on one Redis",
        args.n, args.rate, args.secs
    );
    println!(
        "{:<24} {:>14} {:>14} {:>10} {:>10} {:>10}",
        "transport", "KiB/idle conn", "us CPU/deliv", "p50 ms", "p99 ms", "delivered"
    );
    // Each row: the transport, whether the node compresses (gzip on HTTP streams,
    // permessage-deflate on WebSocket, which also puts it on Herald's own frame layer),
    // whether the client asks for it, and whether each publication carries the 2 KB
    // state object (compression's real work) rather than a few bytes.
    let rows = [
        ("websocket", Kind::WebSocket, false, false, false),
        ("http_stream", Kind::HttpStream, false, false, false),
        ("sse", Kind::Sse, false, false, false),
        ("uni_http_stream", Kind::UniHttpStream, false, false, false),
        ("uni_sse", Kind::UniSse, false, false, false),
        ("http_stream + gzip", Kind::HttpStream, true, true, false),
        ("websocket, own layer", Kind::WebSocket, true, false, false),
        ("websocket + deflate", Kind::WebSocket, true, true, false),
        ("websocket, 2 KB", Kind::WebSocket, false, false, true),
        ("websocket+deflate, 2 KB", Kind::WebSocket, true, true, true),
    ];
    for (label, kind, node_compresses, gzip, big) in rows {
        // A fresh node for each: memory freed by the previous transport's clients would
        // otherwise be reused, and the next one would look cheaper than it is.
        let a = start_node(
            &args.herald,
            &dir,
            kind.name(),
            &redis.url(),
            node_compresses,
        )
        .await?;
        let channel = format!("bench-{}-{}", kind.name(), now_us());
        let tally = Arc::new(Tally::default());
        let before = a.proc.sample()?;
        let clients =
            subscribed(kind, a.addr, &channel, args.n, (gzip, false), &http, &tally).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = a.proc.sample()?;
        let kib_per_conn = (idle.rss_kib as f64 - before.rss_kib as f64) / args.n as f64;
        let total = (args.rate * args.secs as f64) as usize;
        let interval = Duration::from_secs_f64(1.0 / args.rate);
        let mut state = state_object();
        let start_cpu = a.proc.sample()?;
        let started = Instant::now();
        for k in 0..total {
            let due = started + interval * k as u32;
            tokio::time::sleep_until(due.into()).await;
            let data = if big {
                change_five_percent(&mut state, k);
                serde_json::json!({ "t": now_us(), "k": k, "state": state })
            } else {
                serde_json::json!({ "t": now_us(), "k": k })
            };
            publish(&http, a.addr, &channel, &data).await?;
        }
        let expected = (total * args.n) as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tally.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let end_cpu: Sample = a.proc.sample()?;
        let delivered = tally.received.load(Ordering::Relaxed);
        let cpu_per = (end_cpu.cpu_us - start_cpu.cpu_us) as f64 / delivered.max(1) as f64;
        let mut lat = std::mem::take(&mut *tally.latencies_us.lock());
        lat.sort_unstable();
        println!(
            "{:<24} {:>14.1} {:>14.2} {:>10.2} {:>10.2} {:>10}",
            label,
            kib_per_conn,
            cpu_per,
            quantile(&lat, 0.5) / 1000.0,
            quantile(&lat, 0.99) / 1000.0,
            format!("{delivered}/{expected}")
        );
        drop(clients);
        a.proc.stop(Duration::from_secs(2)).await;
    }

    let a = start_node(&args.herald, &dir, "a", &redis.url(), false).await?;
    let b = start_node(&args.herald, &dir, "b", &redis.url(), true).await?;
    // Emulated command round trips: an rpc ping posted to the session's node, and to
    // the other one (forwarded through Redis).
    let tally = Arc::new(Tally::default());
    let (session, _) = open(
        Kind::HttpStream,
        a.addr,
        &opening(Kind::HttpStream, "", false),
        false,
        tally,
    )
    .await?;
    for (label, via) in [("same node", a.addr), ("other node", b.addr)] {
        let mut times = Vec::with_capacity(args.round_trips);
        for k in 0..args.round_trips {
            let id = 10 + k as u32;
            let done = session.expect(id);
            let command = format!(
                r#"{{"id":{id},"rpc":{{"method":"{}"}}}}"#,
                herald_protocol::RPC_PING
            );
            let t0 = Instant::now();
            let status = post_emulation(&http, via, &session, &command).await?;
            anyhow::ensure!(status == 204, "rpc through /emulation ({label}): {status}");
            tokio::time::timeout(Duration::from_secs(5), done).await??;
            times.push(t0.elapsed().as_micros() as u64);
        }
        times.sort_unstable();
        println!(
            "emulated command round trip, POST to the {label}: p50 {:.2} ms, p99 {:.2} ms ({} commands)",
            quantile(&times, 0.5) / 1000.0,
            quantile(&times, 0.99) / 1000.0,
            args.round_trips
        );
    }
    drop(session);

    // Bytes on the wire for a 2 KB state object changing 5 % per publication.
    let state_channel = format!("bench-state-{}", now_us());
    let mut rows = Vec::new();
    for (label, kind, node, gzip, delta) in [
        ("websocket", Kind::WebSocket, a.addr, false, false),
        ("websocket + delta", Kind::WebSocket, a.addr, false, true),
        ("websocket + deflate", Kind::WebSocket, b.addr, true, false),
        (
            "websocket + deflate + delta",
            Kind::WebSocket,
            b.addr,
            true,
            true,
        ),
        ("uni_http_stream", Kind::UniHttpStream, a.addr, false, false),
        (
            "uni_http_stream + gzip",
            Kind::UniHttpStream,
            b.addr,
            true,
            false,
        ),
        (
            "uni_http_stream + delta",
            Kind::UniHttpStream,
            a.addr,
            false,
            true,
        ),
        (
            "http_stream + gzip + delta",
            Kind::HttpStream,
            b.addr,
            true,
            true,
        ),
        ("sse + gzip", Kind::Sse, b.addr, true, false),
    ] {
        let tally = Arc::new(Tally::default());
        let options = (gzip, delta);
        let clients = subscribed(kind, node, &state_channel, 1, options, &http, &tally).await?;
        tally.bytes.store(0, Ordering::Relaxed);
        rows.push((label, tally, clients));
    }
    let mut state = state_object();
    let mut payload_bytes = 0usize;
    for k in 0..args.states {
        change_five_percent(&mut state, k);
        payload_bytes += serde_json::to_vec(&state)?.len();
        publish(&http, a.addr, &state_channel, &state).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows
        .iter()
        .any(|(_, t, _)| t.received.load(Ordering::Relaxed) < args.states as u64)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "2 KB state object changing 5 % per publication, {} publications ({} bytes of JSON payload):",
        args.states, payload_bytes
    );
    for (label, tally, _) in &rows {
        let bytes = tally.bytes.load(Ordering::Relaxed);
        println!(
            "  {label:<24} {:>9} bytes on the wire, {:>6.0} per publication ({}/{} received)",
            bytes,
            bytes as f64 / args.states as f64,
            tally.received.load(Ordering::Relaxed),
            args.states
        );
    }
    drop(rows);
    a.proc.stop(Duration::from_secs(2)).await;
    b.proc.stop(Duration::from_secs(2)).await;
    redis.proc.stop(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A KPI tile's state: about 2 KB of JSON, 40 metrics.
fn state_object() -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            serde_json::json!({
                "id": format!("m{i:02}"),
                "label": format!("Service {i}"),
                "value": 1000 + i,
                "unit": "req/s",
            })
        })
        .collect();
    serde_json::json!({ "tile": "kpi-overview", "metrics": metrics })
}

/// Changes two of the forty metrics' values (5 %).
fn change_five_percent(state: &mut serde_json::Value, k: usize) {
    if let Some(metrics) = state["metrics"].as_array_mut() {
        for j in [k % 40, (k * 7 + 3) % 40] {
            metrics[j]["value"] = serde_json::json!(1000 + (k * 13 + j) % 997);
        }
    }
}
