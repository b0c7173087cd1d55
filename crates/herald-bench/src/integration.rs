//! `herald-bench integration`: what the integration features cost, each on fresh
//! `herald serve` processes with the memory broker:
//!
//! 1. fan-out to many WebSocket subscribers of one channel with and without a tag filter
//!    that half the publications pass: deliveries per second and the node's CPU per
//!    publication·subscriber (each a filter decision) and per delivery;
//! 2. the proxy hooks' round trip: `connect` with a JWT against `connect` through the
//!    connect hook, and `subscribe` by namespace permission against `subscribe`
//!    through the subscribe hook, the backend being a minimal HTTP/1.1 server in this
//!    process;
//! 3. conflation: a fast channel of many keys with and without
//!    `conflation = { key = "tile", interval = "2s" }`.
//!
//! The subscribers are raw WebSocket connections speaking the JSON protocol (see
//! [`ws`]), all in this process's one thread, from several 127.0.0.x source addresses;
//! the publisher runs on a thread of its own so that a busy reader cannot slow it.

mod backend;
mod ws;

use crate::procs::{Proc, Sample, free_port};
use anyhow::{Context as _, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use ws::Ws;

/// Arguments of `integration`.
#[derive(Debug, clap::Args)]
pub(crate) struct IntegrationArgs {
    /// The `herald` binary (a release build for meaningful numbers).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// Parts to run (all by default): fanout, proxy, conflation.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// Fan-out: subscribers of the one channel.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Fan-out: publications per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of publishing per run (fan-out and conflation).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Proxy hooks: round trips measured per command kind.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Proxy hooks: round trips in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Conflation: subscribers of the channel.
    #[arg(long, default_value_t = 1000)]
    conflate_subscribers: usize,
    /// Conflation: publications per second (sent through the batch API).
    #[arg(long, default_value_t = 2000.0)]
    conflate_rate: f64,
    /// Conflation: distinct values of the `tile` tag, published round-robin.
    #[arg(long, default_value_t = 20)]
    keys: usize,
    /// Conflation: the namespace's interval, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
}

/// A part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Fanout,
    Proxy,
    Conflation,
}

/// Subscriber connections set up at once.
const CONNECTING: usize = 256;
/// Subscribers per source address.
const PER_SOURCE: usize = 5000;
/// Open files this process and the node need beyond one per subscriber.
const SPARE_FILES: u64 = 512;

/// Runs the chosen parts and prints a table for each. `Ok(false)` (exit status 1)
/// when a measurement went wrong: lost or extra deliveries, subscribers cut off, a
/// publishing rate far from the one asked for; the tables say what and where.
// The measurements are this command's output.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: IntegrationArgs) -> anyhow::Result<bool> {
    if !args.herald.exists() {
        bail!(
            "no herald binary at {} (cargo build --release -p herald)",
            args.herald.display()
        );
    }
    let parts = if args.only.is_empty() {
        vec![Part::Fanout, Part::Proxy, Part::Conflation]
    } else {
        args.only.clone()
    };
    anyhow::ensure!(
        args.subscribers > 0 && args.conflate_subscribers > 0,
        "--subscribers and --conflate-subscribers must be at least 1"
    );
    anyhow::ensure!(
        args.rate > 0.0 && args.conflate_rate > 0.0 && args.secs > 0,
        "--rate, --conflate-rate and --secs must be more than 0"
    );
    anyhow::ensure!(
        args.calls > 0 && args.concurrency > 0 && args.keys > 0 && args.interval_ms >= 10,
        "--calls, --concurrency and --keys must be at least 1, --interval-ms at least 10"
    );
    let most = if parts.contains(&Part::Fanout) {
        args.subscribers
    } else {
        0
    }
    .max(if parts.contains(&Part::Conflation) {
        args.conflate_subscribers
    } else {
        0
    });
    check_open_files(most as u64 + SPARE_FILES)?;
    let dir = std::env::temp_dir().join(format!("herald-bench-integration-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let build = build_label(&args.herald);
    let mut problems = Vec::new();
    for part in parts {
        match part {
            Part::Fanout => fanout(&args, &dir, &build, &mut problems).await?,
            Part::Proxy => proxy(&args, &dir, &build, &mut problems).await?,
            Part::Conflation => conflation(&args, &dir, &build, &mut problems).await?,
        }
        println!();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if problems.is_empty() {
        return Ok(true);
    }
    println!("FAILED: {} problem(s):", problems.len());
    for p in &problems {
        println!("  - {p}");
    }
    Ok(false)
}

/// Which builds are measured, for the tables' headers.
fn build_label(herald: &Path) -> String {
    let profile = |p: &Path| {
        if p.components().any(|c| c.as_os_str() == "release") {
            "release"
        } else if p.components().any(|c| c.as_os_str() == "debug") {
            "debug"
        } else {
            "unknown"
        }
    };
    let bench = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "herald {} build ({}), herald-bench {bench} build",
        profile(herald),
        herald.display()
    )
}

/// Fails unless this process (and so the node it starts) may open `needed` files.
fn check_open_files(needed: u64) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("/proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .context("no 'Max open files' in /proc/self/limits")?;
    if soft == "unlimited" {
        return Ok(());
    }
    let soft: u64 = soft.parse().context("Max open files")?;
    if soft < needed {
        bail!(
            "the open-file limit is {soft}, and this run needs about {needed} (one per subscriber and some): raise it with `ulimit -n {needed}` or ask for fewer subscribers"
        );
    }
    Ok(())
}

/// A running node.
struct Node {
    proc: Proc,
    addr: SocketAddr,
}

impl Node {
    /// Starts `herald serve` on a free port with `sections` after the common settings
    /// (clients without a token are let in when `anonymous`).
    async fn start(
        herald: &Path,
        dir: &Path,
        name: &str,
        anonymous: bool,
        sections: &str,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{port}"
broker = "memory"

[api]
insecure = true

[client]
allow_anonymous = {anonymous}
# No pings within a measurement (the subscribers answer them anyway).
ping_interval = "600s"
{sections}"#
            ),
        )?;
        let proc = crate::procs::start_herald(herald, &config, port, name)
            .await
            .with_context(|| format!("starting herald with {}", config.display()))?;
        Ok(Self {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    async fn stop(self) {
        self.proc.stop(Duration::from_secs(3)).await;
    }
}

/// What every subscriber of one run adds to.
#[derive(Default)]
pub(crate) struct Tally {
    /// Publications received.
    pub(crate) received: AtomicU64,
    /// Text frames received (each a write of the node's).
    pub(crate) frames: AtomicU64,
    /// Subscribers whose socket ended (closed by the server, or an error).
    pub(crate) closed: AtomicU64,
    /// Of those, closed with 3008 (a slow consumer cut off).
    pub(crate) slow: AtomicU64,
    /// The first close code (or error) seen, for the report.
    pub(crate) first_close: parking_lot::Mutex<Option<String>>,
}

impl Tally {
    fn ended(&self, why: String, slow: bool) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        self.first_close.lock().get_or_insert(why);
    }
}

/// The reader tasks of one run's subscribers, aborted when dropped.
pub(crate) struct Subscribers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Subscribers {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The source address of the `i`th connection: 127.0.0.2 and up, `PER_SOURCE` each.
fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8))
}

/// Opens `n` subscribers of `channel` on `node` (with the tag filter `tf`, a JSON
/// object, if given) and starts their readers. Fails unless every one subscribed.
pub(crate) async fn subscribe_all(
    node: SocketAddr,
    channel: &str,
    tf: Option<&str>,
    n: usize,
    tally: &Arc<Tally>,
) -> anyhow::Result<Subscribers> {
    anyhow::ensure!(
        n / PER_SOURCE < 250,
        "at most {} subscribers",
        250 * PER_SOURCE
    );
    let subscribe = match tf {
        Some(tf) => format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}","tf":{tf}}}}}"#),
        None => format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#),
    };
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut opening = Vec::with_capacity(n);
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await?;
        let subscribe = subscribe.clone();
        opening.push(tokio::spawn(async move {
            let ws = tokio::time::timeout(Duration::from_secs(30), async {
                let mut ws = Ws::open(node, source(i)).await?;
                ws.call(1, r#"{"id":1,"connect":{"name":"herald-bench"}}"#)
                    .await?;
                ws.call(2, &subscribe).await?;
                anyhow::Ok(ws)
            })
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("not subscribed within 30 s")));
            drop(permit);
            ws
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    for task in opening {
        match task.await? {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    if failed > 0 {
        bail!(
            "only {} of {n} subscribers of {channel} connected and subscribed ({failed} failed; the first: {})",
            n - failed,
            first_error.unwrap_or_default()
        );
    }
    tracing::info!(n, ms = started.elapsed().as_millis() as u64, "subscribed");
    let readers = sockets
        .into_iter()
        .map(|ws| tokio::spawn(read(ws, tally.clone())))
        .collect();
    Ok(Subscribers(readers))
}

/// Counts the publications one subscriber receives until its socket ends.
async fn read(mut ws: Ws, tally: Arc<Tally>) {
    loop {
        let (received, ping) = match ws.next_frame().await {
            Ok(frame) if frame.opcode == ws::TEXT => {
                (ws::publications(frame.payload), ws::has_ping(frame.payload))
            }
            Ok(frame) if frame.opcode == ws::CLOSE => {
                let code = frame.close_code();
                tally.ended(format!("closed with code {code}"), code == 3008);
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                tally.ended(format!("{e:#}"), false);
                return;
            }
        };
        tally.received.fetch_add(received, Ordering::Relaxed);
        tally.frames.fetch_add(1, Ordering::Relaxed);
        if ping && ws.pong().await.is_err() {
            tally.ended("the pong could not be sent".into(), false);
            return;
        }
    }
}

/// What a publisher did.
struct Published {
    count: u64,
    /// From the first request to the last reply.
    elapsed: Duration,
}

/// A publication's tag (key, value), by its sequence number.
type TagOf = Arc<dyn Fn(u64) -> (&'static str, String) + Send + Sync>;

/// Publishes `rate` × `secs` publications to `channel` on `node` at an even pace, on a
/// thread (and runtime) of its own: one `publish` call each up to 100 per second, above
/// that batches (`/api/batch`) 100 times a second, up to 8 requests in flight.
async fn publish(
    node: SocketAddr,
    channel: String,
    rate: f64,
    secs: u64,
    tag: TagOf,
) -> anyhow::Result<Published> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(publish_here(node, channel, rate, secs, tag)));
            let _ = tx.send(result);
        })?;
    rx.await.context("the publisher thread ended")?
}

async fn publish_here(
    node: SocketAddr,
    channel: String,
    rate: f64,
    secs: u64,
    tag: TagOf,
) -> anyhow::Result<Published> {
    let http = reqwest::Client::new();
    let total = (rate * secs as f64).round().max(1.0) as u64;
    let per_request = (rate / 100.0).ceil().max(1.0) as u64;
    let tick = Duration::from_secs_f64(per_request as f64 / rate);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(8));
    let mut requests = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut k = 0u64;
    let mut i = 0u32;
    while k < total {
        tokio::time::sleep_until((started + tick * i).into()).await;
        i += 1;
        let batch: Vec<serde_json::Value> = (k..total.min(k + per_request))
            .map(|k| {
                let (key, value) = tag(k);
                serde_json::json!({
                    "channel": channel,
                    "data": { "k": k },
                    "tags": { key: value },
                })
            })
            .collect();
        k += batch.len() as u64;
        let (url, body) = if per_request == 1 {
            (format!("http://{node}/api/publish"), batch[0].clone())
        } else {
            let commands: Vec<serde_json::Value> = batch
                .into_iter()
                .map(|p| serde_json::json!({ "publish": p }))
                .collect();
            (
                format!("http://{node}/api/batch"),
                serde_json::json!({ "commands": commands }),
            )
        };
        let permit = in_flight.clone().acquire_owned().await?;
        let http = http.clone();
        requests.spawn(async move {
            let response = http.post(&url).json(&body).send().await?;
            let status = response.status();
            let text = response.text().await?;
            drop(permit);
            anyhow::ensure!(
                status.is_success() && !text.contains("\"error\""),
                "{url}: {status} {text}"
            );
            anyhow::Ok(())
        });
        // Fail early rather than after the whole schedule.
        while let Some(done) = requests.try_join_next() {
            done??;
        }
    }
    while let Some(done) = requests.join_next().await {
        done??;
    }
    Ok(Published {
        count: total,
        elapsed: started.elapsed(),
    })
}

/// CPU time of the node and of this process.
struct Cpu {
    node: Sample,
    bench: Sample,
}

impl Cpu {
    fn now(node: &Node) -> anyhow::Result<Self> {
        Ok(Self {
            node: node.proc.sample()?,
            bench: Sample::of(std::process::id())?,
        })
    }

    /// µs of CPU the node and this process spent since `self`.
    fn since(&self, node: &Node) -> anyhow::Result<(f64, f64)> {
        let now = Self::now(node)?;
        Ok((
            now.node.cpu_us.saturating_sub(self.node.cpu_us) as f64,
            now.bench.cpu_us.saturating_sub(self.bench.cpu_us) as f64,
        ))
    }
}

/// Waits until `tally` has `expected` more publications than `from`, at most
/// `timeout`, or until every subscriber is gone.
async fn drain(tally: &Tally, from: u64, expected: u64, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while tally.received.load(Ordering::Relaxed) - from < expected
        && Instant::now() < deadline
        && (tally.closed.load(Ordering::Relaxed) as usize) < n
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Part 1: fan-out with and without a tag filter.
#[allow(clippy::print_stdout)]
async fn fanout(
    args: &IntegrationArgs,
    dir: &Path,
    build: &str,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let n = args.subscribers;
    println!(
        "fan-out with and without a tag filter: {n} WebSocket subscribers (JSON) of one channel, {} pub/s for {} s tagged board=7 / board=8 alternately; memory broker; {build}",
        args.rate, args.secs
    );
    println!(
        "frames = WebSocket frames the subscribers received (the node's writes; one carries every publication queued for its connection)"
    );
    println!(
        "{:<18} {:>6} {:>17} {:>8} {:>12} {:>9} {:>10} {:>8} {:>10} {:>11} {:>7}",
        "run",
        "pub/s",
        "delivered/expect",
        "window s",
        "deliveries/s",
        "frames/s",
        "pubs/frame",
        "herald %",
        "us/pub*sub",
        "us/delivery",
        "bench %"
    );
    let sections = r#"
[namespaces.f]
allow_subscribe_for_anonymous = true
allow_tags_filter = true
"#;
    let filter = r#"{"key":"board","cmp":"eq","val":"7"}"#;
    let mut per_decision = Vec::new();
    for (label, tf) in [("A: no filter", None), ("B: tf board eq 7", Some(filter))] {
        let node = Node::start(&args.herald, dir, "fanout", true, sections).await?;
        let tally = Arc::new(Tally::default());
        let subscribers = subscribe_all(node.addr, "f:board", tf, n, &tally).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let from = tally.received.load(Ordering::Relaxed);
        let frames_from = tally.frames.load(Ordering::Relaxed);
        let cpu = Cpu::now(&node)?;
        let started = Instant::now();
        let board: TagOf = Arc::new(|k| ("board", if k % 2 == 0 { "7" } else { "8" }.into()));
        let published =
            publish(node.addr, "f:board".to_owned(), args.rate, args.secs, board).await?;
        let passing = if tf.is_some() {
            published.count.div_ceil(2)
        } else {
            published.count
        };
        let expected = passing * n as u64;
        drain(&tally, from, expected, n, Duration::from_secs(30)).await;
        let window = started.elapsed().as_secs_f64();
        let (node_us, bench_us) = cpu.since(&node)?;
        let delivered = tally.received.load(Ordering::Relaxed) - from;
        let frames = tally.frames.load(Ordering::Relaxed) - frames_from;
        let decisions = (published.count * n as u64) as f64;
        let rate = published.count as f64 / published.elapsed.as_secs_f64();
        per_decision.push(node_us / decisions);
        println!(
            "{:<18} {:>6.1} {:>17} {:>8.2} {:>12.0} {:>9.0} {:>10.2} {:>8.1} {:>10.2} {:>11.2} {:>7.1}",
            label,
            rate,
            format!("{delivered}/{expected}"),
            window,
            delivered as f64 / window,
            frames as f64 / window,
            delivered as f64 / frames.max(1) as f64,
            node_us / window / 1e4,
            node_us / decisions,
            node_us / delivered.max(1) as f64,
            bench_us / window / 1e4,
        );
        check_run(
            &format!("fan-out {label}"),
            &tally,
            delivered,
            expected,
            rate,
            args.rate,
            problems,
        );
        drop(subscribers);
        node.stop().await;
    }
    if let [a, b] = per_decision[..] {
        println!(
            "filter: {:+.2} us of node CPU per publication*subscriber with the filter ({:+.0} %); window = first publication to last delivery",
            b - a,
            (b / a - 1.0) * 100.0
        );
    }
    Ok(())
}

/// Records what went wrong in a run whose every delivery is expected.
fn check_run(
    run: &str,
    tally: &Tally,
    delivered: u64,
    expected: u64,
    rate: f64,
    asked: f64,
    problems: &mut Vec<String>,
) {
    if delivered != expected {
        problems.push(format!(
            "{run}: {delivered} deliveries, {expected} expected"
        ));
    }
    let closed = tally.closed.load(Ordering::Relaxed);
    if closed > 0 {
        problems.push(format!(
            "{run}: {closed} subscriber(s) lost their connection ({} cut off as slow, 3008); the first: {}",
            tally.slow.load(Ordering::Relaxed),
            tally.first_close.lock().clone().unwrap_or_default()
        ));
    }
    if rate < asked * 0.95 {
        problems.push(format!("{run}: published at {rate:.1}/s, {asked}/s asked"));
    }
}

/// Quantile of sorted µs values, in ms.
fn ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Round trips of two kinds (0 and 1), `calls` each, interleaved, on `concurrency`
/// workers: `one(kind, i, worker)` runs and times the `i`th.
async fn interleaved<F, Fut>(
    calls: usize,
    concurrency: usize,
    one: F,
) -> anyhow::Result<[Vec<u64>; 2]>
where
    F: Fn(usize, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let next = next.clone();
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let mut times: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 2 * calls {
                    return anyhow::Ok(times);
                }
                let kind = i % 2;
                times[kind].push(one(kind, i, worker).await?);
            }
        }));
    }
    let mut all: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for t in tasks {
        let [a, b] = t.await??;
        all[0].extend(a);
        all[1].extend(b);
    }
    all[0].sort_unstable();
    all[1].sort_unstable();
    Ok(all)
}

/// Part 2: the proxy hooks' round trips.
#[allow(clippy::print_stdout)]
async fn proxy(
    args: &IntegrationArgs,
    dir: &Path,
    build: &str,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    const WARM_UP: usize = 50;
    let secret = "herald-bench-integration-hmac-secret-0123456789";
    let backend_port = free_port()?;
    let calls = Arc::new(backend::Calls::default());
    let backend = backend::start(backend_port, calls.clone()).await?;
    let sections = format!(
        r#"
[token]
hmac_secret = "{secret}"

[proxy.connect]
url = "http://127.0.0.1:{backend_port}/connect"

[proxy.subscribe]
url = "http://127.0.0.1:{backend_port}/subscribe"

[namespaces.p]
subscribe_proxy = true

[namespaces.t]
allow_subscribe_for_client = true
"#
    );
    let token = gentoken(&args.herald, secret).await?;
    let node = Node::start(&args.herald, dir, "proxy", false, &sections).await?;
    let addr = node.addr;
    println!(
        "proxy hooks: round trip of a command on the WebSocket (JSON), {} of each kind interleaved, {} at once, after {WARM_UP} of each to warm up; backend: hand-written HTTP/1.1 keep-alive server in the bench process; memory broker; {build}",
        args.calls, args.concurrency
    );
    let connects = [
        format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#),
        r#"{"id":1,"connect":{}}"#.to_owned(),
    ];
    let connects = Arc::new(connects);
    // The connect round trip: from sending connect on a fresh upgraded socket to its
    // reply (the upgrade itself is not timed).
    let connect_once = {
        let connects = connects.clone();
        move |kind: usize, i: usize, _: usize| {
            let connects = connects.clone();
            async move {
                // Four source addresses share the sockets' TIME_WAIT ports.
                let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8));
                let mut ws = Ws::open(addr, from).await?;
                let t0 = Instant::now();
                ws.call(1, &connects[kind]).await?;
                Ok(t0.elapsed().as_micros() as u64)
            }
        }
    };
    interleaved(WARM_UP, args.concurrency, connect_once.clone())
        .await
        .context("connect round trips (warm-up)")?;
    let connect_times = interleaved(args.calls, args.concurrency, connect_once)
        .await
        .context("connect round trips")?;
    // The subscribe round trip on an open connection: subscribe to t:x or p:x, timed,
    // then unsubscribe (not timed).
    let sockets: Vec<Arc<tokio::sync::Mutex<Ws>>> = {
        let mut v = Vec::new();
        for i in 0..args.concurrency {
            let mut ws = Ws::open(addr, source(i)).await?;
            ws.call(1, &connects[0]).await?;
            v.push(Arc::new(tokio::sync::Mutex::new(ws)));
        }
        v
    };
    let ids = Arc::new(AtomicU64::new(2));
    let subscribe_once = {
        let sockets = sockets.clone();
        move |kind: usize, _: usize, worker: usize| {
            let ids = ids.clone();
            let socket = sockets[worker].clone();
            async move {
                let mut ws = socket.lock().await;
                let channel = ["t:x", "p:x"][kind];
                let id = ids.fetch_add(2, Ordering::Relaxed);
                let subscribe = format!(r#"{{"id":{id},"subscribe":{{"channel":"{channel}"}}}}"#);
                let t0 = Instant::now();
                ws.call(id, &subscribe).await?;
                let took = t0.elapsed().as_micros() as u64;
                let unsubscribe = format!(
                    r#"{{"id":{},"unsubscribe":{{"channel":"{channel}"}}}}"#,
                    id + 1
                );
                ws.call(id + 1, &unsubscribe).await?;
                Ok(took)
            }
        }
    };
    interleaved(WARM_UP, args.concurrency, subscribe_once.clone())
        .await
        .context("subscribe round trips (warm-up)")?;
    let subscribe_times = interleaved(args.calls, args.concurrency, subscribe_once)
        .await
        .context("subscribe round trips")?;
    drop(sockets);
    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        "command", "p50 ms", "p99 ms", "max ms"
    );
    let rows = [
        ("connect with a JWT (HS256)", &connect_times[0]),
        ("connect through the connect hook", &connect_times[1]),
        ("subscribe t:x (namespace permission)", &subscribe_times[0]),
        ("subscribe p:x (subscribe hook)", &subscribe_times[1]),
    ];
    for (i, (label, times)) in rows.iter().enumerate() {
        println!(
            "{:<44} {:>8.3} {:>8.3} {:>8.3}",
            label,
            ms(times, 0.5),
            ms(times, 0.99),
            ms(times, 1.0)
        );
        if i % 2 == 1 {
            let base = rows[i - 1].1;
            println!(
                "{:<44} {:>+8.3} {:>+8.3} {:>+8.3}",
                "  the hook's extra",
                ms(times, 0.5) - ms(base, 0.5),
                ms(times, 0.99) - ms(base, 0.99),
                ms(times, 1.0) - ms(base, 1.0)
            );
        }
    }
    let hook_calls = (args.calls + WARM_UP) as u64;
    let (c, s, o) = (
        calls.connect.load(Ordering::Relaxed),
        calls.subscribe.load(Ordering::Relaxed),
        calls.other.load(Ordering::Relaxed),
    );
    println!(
        "backend calls: connect {c}, subscribe {s}, other {o} (expected {hook_calls}, {hook_calls}, 0)"
    );
    if (c, s, o) != (hook_calls, hook_calls, 0) {
        problems.push(format!(
            "proxy: the backend answered connect {c}, subscribe {s}, other {o} times; {hook_calls}, {hook_calls} and 0 expected"
        ));
    }
    node.stop().await;
    backend.abort();
    Ok(())
}

/// A connection token for user `u1` from `herald gentoken`.
async fn gentoken(herald: &Path, secret: &str) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(herald)
        .args(["gentoken", "--user", "u1", "--ttl", "1h"])
        .args(["--token-hmac-secret", secret])
        .output()
        .await
        .context("herald gentoken")?;
    anyhow::ensure!(
        out.status.success(),
        "herald gentoken: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    anyhow::ensure!(
        token.split('.').count() == 3,
        "herald gentoken printed no JWT"
    );
    Ok(token)
}

/// Part 3: conflation.
#[allow(clippy::print_stdout)]
async fn conflation(
    args: &IntegrationArgs,
    dir: &Path,
    build: &str,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let n = args.conflate_subscribers;
    let interval = Duration::from_millis(args.interval_ms);
    let expected_b = n as f64 * args.keys as f64 / interval.as_secs_f64();
    println!(
        "conflation: {n} WebSocket subscribers (JSON) of one channel, {} pub/s asked for {} s (batch API) tagged tile=k0..k{} round-robin; namespaces with history 100 / 60s, c with conflation = {{ key = \"tile\", interval = \"{}ms\" }}; memory broker; {build}",
        args.conflate_rate,
        args.secs,
        args.keys - 1,
        args.interval_ms
    );
    let sections = format!(
        r#"
[namespaces.n]
allow_subscribe_for_anonymous = true
history_size = 100
history_ttl = "60s"

[namespaces.c]
allow_subscribe_for_anonymous = true
history_size = 100
history_ttl = "60s"
conflation = {{ key = "tile", interval = "{}ms" }}
"#,
        args.interval_ms
    );
    let keys = args.keys as u64;
    // The measured window: (its start after the first publication, its length).
    let secs = Duration::from_secs(args.secs);
    let whole = (args.secs * 1000 / args.interval_ms).saturating_sub(1) as u32;
    let steady = if whole > 0 {
        (interval / 2, interval * whole)
    } else {
        (Duration::ZERO, secs)
    };
    println!(
        "deliveries/s and CPU % over {:.1} s from {:.1} s after the first publication ({}); offered/s = publications/s x subscribers; expected/s = subscribers x keys / interval",
        steady.1.as_secs_f64(),
        steady.0.as_secs_f64(),
        if whole > 0 {
            "whole intervals"
        } else {
            "the publishing window: --secs is under two intervals"
        }
    );
    println!(
        "{:<26} {:>6} {:>10} {:>10} {:>12} {:>9} {:>8} {:>7} {:>7} {:>6}",
        "run",
        "pub/s",
        "offered/s",
        "expected/s",
        "deliveries/s",
        "frames/s",
        "herald %",
        "bench %",
        "cut off",
        "closed"
    );
    for (label, channel) in [
        ("A: n:tiles, no conflation", "n:tiles"),
        ("B: c:tiles, conflated", "c:tiles"),
    ] {
        let node = Node::start(&args.herald, dir, "conflation", true, &sections).await?;
        let tally = Arc::new(Tally::default());
        let subscribers = subscribe_all(node.addr, channel, None, n, &tally).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tile: TagOf = Arc::new(move |k| ("tile", format!("k{}", k % keys)));
        let started = Instant::now();
        let publisher = tokio::spawn(publish(
            node.addr,
            channel.to_owned(),
            args.conflate_rate,
            args.secs,
            tile,
        ));
        // Measured over whole intervals, from the middle of the first: a conflated
        // subscriber sends what it holds at the end of each interval after its first
        // publication, so a window of whole intervals holds the same number of those
        // wherever it starts.
        tokio::time::sleep_until((started + steady.0).into()).await;
        let from = tally.received.load(Ordering::Relaxed);
        let frames_from = tally.frames.load(Ordering::Relaxed);
        let cpu = Cpu::now(&node)?;
        tokio::time::sleep_until((started + steady.0 + steady.1).into()).await;
        let window = steady.1.as_secs_f64();
        let (node_us, bench_us) = cpu.since(&node)?;
        let delivered = tally.received.load(Ordering::Relaxed) - from;
        let frames = tally.frames.load(Ordering::Relaxed) - frames_from;
        let published = publisher.await??;
        let rate = published.count as f64 / published.elapsed.as_secs_f64();
        let conflated = channel.starts_with("c:");
        let closed = tally.closed.load(Ordering::Relaxed);
        println!(
            "{:<26} {:>6.0} {:>10.0} {:>10} {:>12.0} {:>9.0} {:>8.1} {:>7.1} {:>7} {:>6}",
            label,
            rate,
            rate * n as f64,
            if conflated {
                format!("{expected_b:.0}")
            } else {
                "-".into()
            },
            delivered as f64 / window,
            frames as f64 / window,
            node_us / window / 1e4,
            bench_us / window / 1e4,
            tally.slow.load(Ordering::Relaxed),
            closed,
        );
        if rate < args.conflate_rate * 0.95 {
            println!(
                "  {label}: the publisher reached {rate:.0} pub/s of the {} asked",
                args.conflate_rate
            );
        }
        if closed > 0 {
            let first = tally.first_close.lock().clone().unwrap_or_default();
            println!("  {label}: {closed} subscriber(s) lost their connection; the first: {first}");
            // Without conflation the node is offered more than it can write; cutting
            // slow subscribers off is then its documented answer, and the row shows it.
            if conflated {
                problems.push(format!(
                    "conflation {label}: {closed} subscriber(s) lost their connection; the first: {first}"
                ));
            }
        }
        // Over whole intervals each subscriber sends what it held at the end of each:
        // one publication per key, every key having been published in every interval.
        let exact = (n * args.keys) as u64 * u64::from(whole);
        if conflated && whole > 0 {
            println!(
                "  {label}: {delivered} deliveries in the window, {exact} expected ({n} subscribers x {} keys x {whole} intervals)",
                args.keys
            );
            if delivered.abs_diff(exact) * 50 > exact {
                problems.push(format!(
                    "conflation {label}: {delivered} deliveries in {whole} whole intervals, {exact} expected"
                ));
            }
        }
        drop(subscribers);
        node.stop().await;
    }
    Ok(())
}
