//! One system under test with its Redis, publisher and workers, started fresh for each
//! run so that runs never share state.

use crate::procs::{LineChild, Paths, Proc, Redis, Sample, free_port};
use crate::proto::{Ev, Op, WorkerStats};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use std::process::Stdio;
use std::time::Duration;

/// Which server is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum System {
    /// A Herald gateway with the Redis broker.
    Herald,
    /// Socket.IO 4.8 with the Redis streams adapter and connection state recovery.
    Peer,
    /// Sockudo (Rust, the Pusher protocol) with its Redis adapter: built once by
    /// `scripts/build-sockudo.sh`.
    Sockudo,
}

impl System {
    pub(crate) fn label(self) -> &'static str {
        match self {
            System::Herald => "herald",
            System::Peer => "socket.io",
            System::Sockudo => "sockudo",
        }
    }
}

/// Counters of all workers together.
#[derive(Debug)]
pub(crate) struct Merged {
    pub conns: usize,
    pub connected: usize,
    pub received: u64,
    pub dups: u64,
    pub gaps: u64,
    pub tail_missing: u64,
    pub last_rx_us: u64,
    pub reconnects: u64,
    pub not_recovered: u64,
    pub cut_off: u64,
    pub lat: Histogram<u64>,
    pub replay: Histogram<u64>,
}

impl Merged {
    fn new() -> Self {
        Self {
            conns: 0,
            connected: 0,
            received: 0,
            dups: 0,
            gaps: 0,
            tail_missing: 0,
            last_rx_us: 0,
            reconnects: 0,
            not_recovered: 0,
            cut_off: 0,
            lat: histogram(),
            replay: histogram(),
        }
    }

    fn add(&mut self, s: &WorkerStats) {
        self.conns += s.conns;
        self.connected += s.connected;
        self.received += s.received;
        self.dups += s.dups;
        self.gaps += s.gaps;
        self.tail_missing += s.tail_missing;
        self.last_rx_us = self.last_rx_us.max(s.last_rx_us);
        self.reconnects += s.reconnects;
        self.not_recovered += s.not_recovered;
        self.cut_off += s.cut_off;
        for (v, n) in &s.lat {
            let _ = self.lat.record_n((*v).max(1), *n);
        }
        for (v, n) in &s.replay {
            let _ = self.replay.record_n((*v).max(1), *n);
        }
    }

    /// A latency quantile in milliseconds.
    pub(crate) fn lat_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.lat, q)
    }

    pub(crate) fn replay_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.replay, q)
    }
}

fn histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // 3 significant digits is always a valid precision.
    Histogram::new(3).unwrap()
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    let v = if q >= 1.0 {
        h.max()
    } else {
        h.value_at_quantile(q)
    };
    v as f64 / 1000.0
}

/// How many gateways serve the clients, and through how many balancer processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Topology {
    pub gateways: usize,
    /// HAProxy processes sharing the clients' port; 0: clients connect straight to the
    /// one gateway.
    pub balancers: usize,
    /// The most clients one balancer admits.
    pub balancer_max_conns: usize,
    /// The balancers check the gateways' health (as `deploy/haproxy` does) and try a
    /// refused connection on another gateway: for cases that stop gateways.
    pub health_checks: bool,
}

impl Topology {
    /// One server, no balancer.
    pub(crate) const SINGLE: Self = Self {
        gateways: 1,
        balancers: 0,
        balancer_max_conns: 0,
        health_checks: false,
    };

    /// `gateways` behind enough balancer processes for `n` clients, each admitting a
    /// quarter more than its share (the kernel's spread is uneven), and no more: its
    /// open-files limit is set from this, and HAProxy will not start if it cannot have
    /// it.
    pub(crate) fn balanced(gateways: usize, n: usize) -> Self {
        let balancers = n.div_ceil(CONNS_PER_BALANCER).max(1);
        let share = n.div_ceil(balancers);
        Self {
            gateways,
            balancers,
            balancer_max_conns: (share + share / 4 + 64).min(BALANCER_MAX_CONNS),
            health_checks: false,
        }
    }
}

/// Clients per balancer process: each holds two descriptors per client, under the
/// box's 20,000 per process, with room for the kernel's uneven spread between them.
pub(crate) const CONNS_PER_BALANCER: usize = 8_000;

/// The most a balancer process may admit: two descriptors per client and a few of its
/// own under the box's 20,000 per process.
const BALANCER_MAX_CONNS: usize = 9_800;

/// The system under test and everything driving it.
pub(crate) struct Stack {
    pub system: System,
    pub redis: Redis,
    /// The server, or the first gateway.
    pub server: Proc,
    /// The other gateways (Herald behind balancers).
    pub more_servers: Vec<Proc>,
    pub balancers: Vec<Proc>,
    /// Where clients connect: the server, or the balancers.
    pub port: u16,
    /// The gateways' own ports (their metrics).
    gateway_ports: Vec<u16>,
    /// What the gateways add to their `[client]` settings.
    client: &'static str,
    /// The Sockudo peer's application, made up for this run.
    app: Option<crate::pusher::App>,
    pub publisher: LineChild,
    pub workers: Vec<LineChild>,
    paths: Paths,
    _dir: TempDir,
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Open files a worker may use; the box's hard limit is 20,000 per process.
pub(crate) const CONNS_PER_WORKER: usize = 9_000;

impl Stack {
    /// Starts Redis, the server (or `topology`'s gateways and balancers), the publisher
    /// and `workers` worker processes.
    pub(crate) async fn start(
        system: System,
        paths: &Paths,
        workers: usize,
        topology: Topology,
    ) -> anyhow::Result<Self> {
        let redis = Redis::start().await?;
        let dir = std::env::temp_dir().join(format!(
            "herald-bench-{}-{}",
            std::process::id(),
            redis.port
        ));
        std::fs::create_dir_all(&dir)?;
        let dir = TempDir(dir);
        // Behind balancers, up to 100,000 clients open on the same two cores as the
        // gateways: their pongs can come later than the default 8 s while that lasts,
        // and a client the gateway closed would not be reconnected by the lean reader.
        // The most the gateway allows (just under the 25 s ping interval) only changes
        // when it gives up on a silent client.
        let client = if topology.balancers > 0 {
            "pong_timeout = \"24s\""
        } else {
            ""
        };
        let app = (system == System::Sockudo).then(bench_app);
        let gateway = Gateway {
            system,
            paths,
            redis_url: redis.url(),
            client,
            app: app.as_ref(),
        };
        let gateway_port = free_port()?;
        let server = gateway.start(&dir.0, gateway_port).await?;
        let mut more_servers = Vec::new();
        let mut gateway_ports = vec![gateway_port];
        for i in 1..topology.gateways.max(1) {
            let gateway_dir = gateway_dir(&dir.0, i);
            std::fs::create_dir_all(&gateway_dir)?;
            let port = free_port()?;
            more_servers.push(gateway.start(&gateway_dir, port).await?);
            gateway_ports.push(port);
        }
        let (port, balancers) = if topology.balancers == 0 {
            (gateway_port, Vec::new())
        } else {
            let port = free_port()?;
            let balancers = crate::procs::Haproxy::find()?
                .start(
                    &dir.0,
                    topology.balancers,
                    port,
                    &gateway_ports,
                    topology.balancer_max_conns,
                    topology.health_checks.then_some(match system {
                        System::Herald => Some("/readyz"),
                        System::Peer => None,
                        System::Sockudo => Some("/up"),
                    }),
                )
                .await?;
            (port, balancers)
        };
        let mut publisher = match system {
            System::Herald => LineChild::spawn(
                "publisher",
                &paths.bench,
                &["publisher".into(), "--redis-url".into(), redis.url()],
            )?,
            System::Peer => LineChild::spawn(
                "peer-publisher",
                &paths.node,
                &[
                    paths.peer_dir.join("publisher.mjs").display().to_string(),
                    "--redis".into(),
                    redis.url(),
                ],
            )?,
            // Through the HTTP API of the first node, as a Pusher application publishes.
            System::Sockudo => {
                let app = app.as_ref().context("the Sockudo app")?;
                LineChild::spawn_with_env(
                    "sockudo-publisher",
                    &paths.bench,
                    &[
                        "publisher".into(),
                        "--pusher-api".into(),
                        format!("http://127.0.0.1:{gateway_port}"),
                        "--app-id".into(),
                        app.id.clone(),
                        "--app-key".into(),
                        app.key.clone(),
                    ],
                    &[("HERALD_BENCH_PUSHER_SECRET", &app.secret)],
                )?
            }
        };
        match publisher.recv(Duration::from_secs(20)).await? {
            Ev::Ready => {}
            other => bail!("publisher: expected ready, got {other:?}"),
        }
        let mut stack = Self {
            system,
            redis,
            server,
            more_servers,
            balancers,
            port,
            gateway_ports,
            client,
            app,
            publisher,
            workers: Vec::new(),
            paths: paths.clone(),
            _dir: dir,
        };
        for i in 0..workers.max(1) {
            stack.workers.push(stack.spawn_worker(i)?);
        }
        Ok(stack)
    }

    fn spawn_worker(&self, i: usize) -> anyhow::Result<LineChild> {
        let name = format!("worker-{i}");
        match self.system {
            System::Herald | System::Sockudo => {
                LineChild::spawn(&name, &self.paths.bench, &["worker".into()])
            }
            System::Peer => LineChild::spawn(
                &name,
                &self.paths.node,
                &[self.paths.peer_dir.join("worker.mjs").display().to_string()],
            ),
        }
    }

    /// The address clients connect to.
    pub(crate) fn url(&self) -> String {
        match self.system {
            System::Herald => format!("ws://127.0.0.1:{}/connection/websocket", self.port),
            System::Peer => format!("http://127.0.0.1:{}", self.port),
            System::Sockudo => format!(
                "ws://127.0.0.1:{}/app/{}?protocol=7&client=herald-bench&version=1",
                self.port,
                self.app.as_ref().map_or("", |a| a.key.as_str())
            ),
        }
    }

    /// The source address of worker `i`: spreading workers over 127.0.0.x keeps each
    /// (source, destination) pair well inside the ephemeral port range.
    fn source_ip(i: usize) -> String {
        format!("127.0.0.{}", 2 + i % 250)
    }

    /// Opens `n` subscribed connections, split evenly over the workers; returns how many
    /// subscribed.
    pub(crate) async fn open(
        &mut self,
        n: usize,
        channel: &str,
        ramp: u32,
        lean: bool,
    ) -> anyhow::Result<usize> {
        let count = self.workers.len();
        let url = self.url();
        for (i, w) in self.workers.iter_mut().enumerate() {
            let conns = n / count + usize::from(i < n % count);
            if conns > CONNS_PER_WORKER {
                bail!("{conns} connections in one worker: use more workers");
            }
            w.send(&Op::Open {
                url: url.clone(),
                conns,
                source_ip: Self::source_ip(i),
                channel: channel.to_owned(),
                ramp: ramp / count as u32,
                // Sockudo's clients are always lean Pusher readers.
                lean: lean || self.system == System::Sockudo,
                pusher: self.system == System::Sockudo,
            })
            .await?;
        }
        let mut ok = 0;
        for w in &mut self.workers {
            match w.recv(Duration::from_secs(300)).await? {
                Ev::Opened { ok: o, failed, .. } => {
                    ok += o;
                    if failed > 0 {
                        tracing::warn!(worker = %w.proc.name, failed, "connections failed");
                    }
                }
                other => bail!("{}: expected opened, got {other:?}", w.proc.name),
            }
        }
        Ok(ok)
    }

    /// Publishes `count` messages at `rate`/s (0 = as fast as possible).
    pub(crate) async fn publish(
        &mut self,
        channel: &str,
        rate: f64,
        count: u64,
        first_seq: u64,
    ) -> anyhow::Result<Published> {
        let timeout = if rate > 0.0 {
            Duration::from_secs_f64(count as f64 / rate + 60.0)
        } else {
            Duration::from_secs(600)
        };
        let op = Op::Publish {
            channel: channel.to_owned(),
            rate,
            count,
            first_seq,
            pad: 64,
        };
        match self.publisher.call(&op, timeout).await? {
            Ev::Published {
                ms,
                late_max_ms,
                failed,
                ..
            } => Ok(Published {
                ms,
                late_max_ms,
                failed,
            }),
            other => bail!("publisher: expected published, got {other:?}"),
        }
    }

    /// Starts a publish and returns at once; collect it with [`Self::published`].
    pub(crate) async fn publish_start(
        &mut self,
        channel: &str,
        rate: f64,
        count: u64,
        first_seq: u64,
    ) -> anyhow::Result<()> {
        self.publisher
            .send(&Op::Publish {
                channel: channel.to_owned(),
                rate,
                count,
                first_seq,
                pad: 64,
            })
            .await
    }

    pub(crate) async fn published(&mut self, timeout: Duration) -> anyhow::Result<Published> {
        match self.publisher.recv(timeout).await? {
            Ev::Published {
                ms,
                late_max_ms,
                failed,
                ..
            } => Ok(Published {
                ms,
                late_max_ms,
                failed,
            }),
            other => bail!("publisher: expected published, got {other:?}"),
        }
    }

    /// Every worker's counters together.
    pub(crate) async fn stats(&mut self, expect_last: Option<u64>) -> anyhow::Result<Merged> {
        let mut merged = Merged::new();
        for w in &mut self.workers {
            w.send(&Op::Stats { expect_last }).await?;
        }
        for w in &mut self.workers {
            match w.recv(Duration::from_secs(60)).await? {
                Ev::Stats(s) => merged.add(&s),
                other => bail!("{}: expected stats, got {other:?}", w.proc.name),
            }
        }
        Ok(merged)
    }

    /// Waits until every connection has every publication up to `last`, or `timeout`.
    pub(crate) async fn wait_caught_up(
        &mut self,
        last: u64,
        timeout: Duration,
    ) -> anyhow::Result<Merged> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats(Some(last)).await?;
            if (s.tail_missing == 0 && s.connected == s.conns)
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clears the latency histograms of every worker.
    pub(crate) async fn reset(&mut self) -> anyhow::Result<()> {
        for w in &mut self.workers {
            w.call(&Op::Reset, Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// Drops every connection; each reconnects after `offline_ms` plus up to `jitter_ms`.
    pub(crate) async fn drop_all(&mut self, offline_ms: u64, jitter_ms: u64) -> anyhow::Result<()> {
        for w in &mut self.workers {
            w.send(&Op::Drop {
                offline_ms,
                jitter_ms,
            })
            .await?;
        }
        for w in &mut self.workers {
            match w.recv(Duration::from_secs(60)).await? {
                Ev::Dropped => {}
                other => bail!("{}: expected dropped, got {other:?}", w.proc.name),
            }
        }
        Ok(())
    }

    /// Starts the periodic disruption on every worker.
    pub(crate) async fn disrupt(
        &mut self,
        every_ms: u64,
        offline_ms: u64,
        duration_ms: u64,
    ) -> anyhow::Result<()> {
        for w in &mut self.workers {
            match w
                .call(
                    &Op::Disrupt {
                        every_ms,
                        offline_ms,
                        duration_ms,
                    },
                    Duration::from_secs(30),
                )
                .await?
            {
                Ev::Disrupting => {}
                other => bail!("{}: expected disrupting, got {other:?}", w.proc.name),
            }
        }
        Ok(())
    }

    /// Waits for every worker's `disrupt_done`.
    pub(crate) async fn disrupt_done(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for w in &mut self.workers {
            match w.recv(timeout).await? {
                Ev::DisruptDone => {}
                other => bail!("{}: expected disrupt_done, got {other:?}", w.proc.name),
            }
        }
        Ok(())
    }

    /// Starts a Herald worker process that holds one stalled connection.
    pub(crate) async fn stall(&mut self, channel: &str) -> anyhow::Result<LineChild> {
        let mut w = LineChild::spawn("stalled", &self.paths.bench, &["worker".into()])?;
        let url = match self.system {
            System::Herald => self.url(),
            System::Peer => format!(
                "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
                self.port
            ),
            System::Sockudo => {
                bail!("the stalled connection speaks Herald's or Socket.IO's protocol")
            }
        };
        match w
            .call(
                &Op::Stall {
                    url,
                    source_ip: "127.0.0.250".into(),
                    channel: channel.to_owned(),
                },
                Duration::from_secs(30),
            )
            .await?
        {
            Ev::Stalled { ok: true, .. } => Ok(w),
            other => bail!("stalled connection: {other:?}"),
        }
    }

    /// The server's memory and CPU time (summed over the gateways).
    pub(crate) fn sample(&self) -> anyhow::Result<Sample> {
        let mut total = self.server.sample()?;
        for s in &self.more_servers {
            let one = s.sample()?;
            total.rss_kib += one.rss_kib;
            total.cpu_us += one.cpu_us;
            total.sys_us += one.sys_us;
        }
        Ok(total)
    }

    /// Gateway `i`'s process.
    fn gateway_proc(&mut self, i: usize) -> &mut Proc {
        match i {
            0 => &mut self.server,
            i => &mut self.more_servers[i - 1],
        }
    }

    /// Sends SIGTERM to gateway `i`, as a rolling update does: Herald drains its clients
    /// over its drain window, the peer closes them all at once.
    pub(crate) fn signal_gateway(&mut self, i: usize) {
        self.gateway_proc(i).signal("TERM");
    }

    /// Whether gateway `i` has exited; killed when `kill`.
    pub(crate) async fn gateway_exited(&mut self, i: usize, kill: bool) -> bool {
        let proc = self.gateway_proc(i);
        if kill {
            let _ = proc.child.start_kill();
            let _ = proc.child.wait().await;
            return true;
        }
        matches!(proc.child.try_wait(), Ok(Some(_)))
    }

    /// Starts gateway `i` again, on its port and with its configuration; returns once
    /// it is ready.
    pub(crate) async fn start_gateway(&mut self, i: usize) -> anyhow::Result<()> {
        let port = *self
            .gateway_ports
            .get(i)
            .with_context(|| format!("no gateway {i}"))?;
        let dir = gateway_dir(&self._dir.0, i);
        let gateway = Gateway {
            system: self.system,
            paths: &self.paths,
            redis_url: self.redis.url(),
            client: self.client,
            app: self.app.as_ref(),
        };
        let proc = gateway.start(&dir, port).await?;
        *self.gateway_proc(i) = proc;
        Ok(())
    }

    /// How many gateways serve the clients.
    pub(crate) fn gateways(&self) -> usize {
        self.gateway_ports.len()
    }

    /// A metric of the first gateway (Herald only).
    pub(crate) async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        scrape(self.gateway_ports[0], name).await
    }

    /// A metric of each gateway (Herald only).
    pub(crate) async fn gateway_metrics(&self, name: &str) -> anyhow::Result<Vec<f64>> {
        let mut values = Vec::with_capacity(self.gateway_ports.len());
        for &port in &self.gateway_ports {
            values.push(scrape(port, name).await?);
        }
        Ok(values)
    }

    /// Stops everything.
    pub(crate) async fn stop(self) {
        for mut w in self.workers {
            let _ = w.send(&Op::Close).await;
            let _ = w.recv(Duration::from_secs(5)).await;
        }
        let mut publisher = self.publisher;
        let _ = publisher.send(&Op::Exit).await;
        for b in self.balancers {
            b.stop(Duration::from_secs(2)).await;
        }
        for s in self.more_servers {
            s.stop(Duration::from_secs(5)).await;
        }
        self.server.stop(Duration::from_secs(5)).await;
        self.redis.proc.stop(Duration::from_secs(2)).await;
    }
}

/// What the publisher reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    pub ms: f64,
    pub late_max_ms: f64,
    pub failed: u64,
}

/// One metric of the gateway listening on `port`.
async fn scrape(port: u16, name: &str) -> anyhow::Result<f64> {
    crate::procs::scrape_counter(&format!("http://127.0.0.1:{port}/metrics"), name).await
}

/// Gateway `i`'s directory in the run's directory `run`: the first gateway has `run`
/// itself.
fn gateway_dir(run: &std::path::Path, i: usize) -> std::path::PathBuf {
    match i {
        0 => run.to_path_buf(),
        i => run.join(format!("gateway-{i}")),
    }
}

/// Where `scripts/build-sockudo.sh` installs the Sockudo peer.
pub(crate) const SOCKUDO_DEFAULT_BIN: &str = "/var/cache/herald-bench/sockudo/bin/sockudo";

/// A Pusher application with credentials made up for one run.
fn bench_app() -> crate::pusher::App {
    let key: [u8; 10] = rand::random();
    let secret: [u8; 20] = rand::random();
    crate::pusher::App {
        id: "herald-bench".into(),
        key: crate::pusher::hex(&key),
        secret: crate::pusher::hex(&secret),
    }
}

/// How every gateway of one stack is started.
struct Gateway<'a> {
    system: System,
    paths: &'a Paths,
    redis_url: String,
    /// What Herald adds to its `[client]` settings.
    client: &'a str,
    app: Option<&'a crate::pusher::App>,
}

impl Gateway<'_> {
    /// Starts one server on `port` (with its configuration and working directory in
    /// `dir`); returns once it is ready.
    async fn start(&self, dir: &std::path::Path, port: u16) -> anyhow::Result<Proc> {
        match self.system {
            System::Herald => {
                start_herald(self.paths, dir, port, &self.redis_url, self.client).await
            }
            System::Peer => start_peer(self.paths, port, &self.redis_url).await,
            System::Sockudo => {
                let app = self.app.context("the Sockudo app")?;
                start_sockudo(self.paths, dir, port, &self.redis_url, app).await
            }
        }
    }
}

/// Starts a Sockudo node with its Redis adapter and one application, configured through
/// its environment (a configuration file it cannot read is ignored silently). Its limits
/// that would refuse the benchmark's load are lifted: the per-address rate limiter (20
/// connects a minute), the default application's 100 connections; nothing else is
/// changed. Logging is at `warn`, as Herald's.
async fn start_sockudo(
    paths: &Paths,
    dir: &std::path::Path,
    port: u16,
    redis_url: &str,
    app: &crate::pusher::App,
) -> anyhow::Result<Proc> {
    let (log, err) = (dir.join("sockudo.log"), dir.join("sockudo.err"));
    let child = crate::procs::command(&paths.sockudo, crate::procs::Side::Server)
        // It reads ./config/ when there: the run's own directory has none.
        .current_dir(dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("ADAPTER_DRIVER", "redis")
        .env("REDIS_URL", redis_url)
        .env("ADAPTER_FALLBACK_TO_LOCAL", "false")
        .env("QUEUE_DRIVER", "none")
        .env("CACHE_DRIVER", "redis")
        .env("RATE_LIMITER_ENABLED", "false")
        .env("METRICS_ENABLED", "false")
        .env("SOCKUDO_DEFAULT_APP_ID", &app.id)
        .env("SOCKUDO_DEFAULT_APP_KEY", &app.key)
        .env("SOCKUDO_DEFAULT_APP_SECRET", &app.secret)
        .env("SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS", "0")
        .env("RUST_LOG", "warn")
        .env("LOG_COLORS_ENABLED", "false")
        // It logs to stdout: kept in the run's directory, and quoted if it fails to start.
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .stderr(Stdio::from(std::fs::File::create(&err)?))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", paths.sockudo.display()))?;
    let mut proc = Proc {
        child,
        name: "sockudo".into(),
    };
    // `/up` answers 200 once the node listens with its adapter, cache and app in place.
    let url = format!("http://127.0.0.1:{port}/up");
    tokio::select! {
        ready = crate::procs::wait_http_ok(&url, Duration::from_secs(30)) => ready?,
        status = proc.child.wait() => {
            let status = status?;
            let said = [log, err]
                .iter()
                .filter_map(|f| std::fs::read_to_string(f).ok())
                .collect::<String>();
            let lines: Vec<&str> = said.lines().collect();
            let tail = &lines[lines.len().saturating_sub(5)..];
            bail!("sockudo exited at start ({status}): {}", tail.join(" | "));
        }
    }
    Ok(proc)
}

/// Starts a Herald node; `client` is added to its `[client]` settings.
async fn start_herald(
    paths: &Paths,
    dir: &std::path::Path,
    port: u16,
    redis_url: &str,
    client: &str,
) -> anyhow::Result<Proc> {
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
broker = "redis"

[redis]
url = "{redis_url}"

[client]
allow_anonymous = true
{client}

[namespaces.default]
history_size = {history}
history_ttl = "{ttl}s"
allow_subscribe_for_anonymous = true
presence = {presence}
allow_presence_for_subscriber = {presence}
"#,
            history = crate::publisher::HISTORY_SIZE,
            ttl = crate::publisher::HISTORY_TTL.as_secs(),
            presence = paths.presence,
        ),
    )?;
    crate::procs::start_herald(&paths.herald, &config, port, "herald").await
}

async fn start_peer(paths: &Paths, port: u16, redis_url: &str) -> anyhow::Result<Proc> {
    use tokio::io::AsyncBufReadExt;
    let mut child = crate::procs::command(&paths.node, crate::procs::Side::Server)
        .arg(paths.peer_dir.join("server.mjs"))
        .args(["--port", &port.to_string(), "--redis", redis_url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the Socket.IO peer (node)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let proc = Proc {
        child,
        name: "socket.io".into(),
    };
    // Ready means listening with the adapter's stream reader running: it prints one
    // `listening` line then.
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("\"listening\"") {
                return Ok(());
            }
        }
        bail!("the Socket.IO peer exited before listening")
    };
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .context("the Socket.IO peer did not get ready in 30 s")??;
    // Keep reading so the peer never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(proc)
}
