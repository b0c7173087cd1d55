//! The processes a benchmark runs: a private Redis, the system under test, and the
//! workers and publisher that speak the line protocol; plus readings from `/proc`.

use crate::proto::{Ev, Op};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A free TCP port below the ephemeral range, so the load's own source ports never
/// collide with a server's.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    use rand::Rng;
    for _ in 0..200 {
        let port = rand::rng().random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000-32000")
}

/// Which side of a benchmark a process is on, for `--pin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The system under test and its Redis.
    Server,
    /// The load: workers and the publisher.
    Load,
}

/// The CPU lists the two sides are pinned to (`taskset -c`), when pinning.
static PINS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Pins every process started from now on: the server side to `server`, the load to
/// `load` (CPU lists as `taskset -c` takes them).
pub(crate) fn pin(server: &str, load: &str) {
    let _ = PINS.set((server.to_owned(), load.to_owned()));
}

/// A command for `program`, run through `taskset -c` when pinning.
pub(crate) fn command(program: &Path, side: Side) -> Command {
    match PINS.get() {
        Some((server, load)) => {
            let mut c = Command::new("taskset");
            c.arg("-c")
                .arg(if side == Side::Server { server } else { load })
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A process killed when dropped.
pub(crate) struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Reads the process's resident memory and CPU time.
    pub(crate) fn sample(&self) -> anyhow::Result<Sample> {
        Sample::of(self.pid())
    }

    /// Sends SIGTERM and waits up to `wait` before killing.
    pub(crate) async fn stop(mut self, wait: Duration) {
        self.signal("TERM");
        if tokio::time::timeout(wait, self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// Sends the signal `name` (`TERM`, `INT`, …) if the process is still there.
    pub(crate) fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Resident memory and CPU time of one process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub rss_kib: u64,
    /// utime + stime, in microseconds.
    pub cpu_us: u64,
    /// stime alone: the kernel's share of `cpu_us`.
    pub sys_us: u64,
}

impl Sample {
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("VmRSS")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').context("stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (user, sys) = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()))
            .context("utime/stime")?;
        Ok(Self {
            rss_kib,
            cpu_us: (user + sys) * 1_000_000 / clock_ticks(),
            sys_us: sys * 1_000_000 / clock_ticks(),
        })
    }
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Starts `herald serve` with the configuration file `config` (listening on `port`)
/// and returns once its `/readyz` answers 200.
pub(crate) async fn start_herald(
    herald: &Path,
    config: &Path,
    port: u16,
    name: &str,
) -> anyhow::Result<Proc> {
    start_herald_under(&[], herald, config, port, name, Duration::from_secs(20)).await
}

/// Starts `herald serve` as [`start_herald`] does, run by `wrapper` (a program and the
/// arguments that come before herald's path, such as valgrind's; empty for none), and
/// waits up to `ready_within` for it to be ready.
pub(crate) async fn start_herald_under(
    wrapper: &[&str],
    herald: &Path,
    config: &Path,
    port: u16,
    name: &str,
    ready_within: Duration,
) -> anyhow::Result<Proc> {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = command(Path::new(program), Side::Server);
            c.args(args).arg(herald);
            c
        }
        None => command(herald, Side::Server),
    };
    let child = cmd
        .arg("serve")
        .env("HERALD_CONFIG", config)
        .env("HERALD_LOG", "warn")
        // Herald warns of every HERALD_* variable it does not know, such as the bench's.
        .env_remove("HERALD_BENCH_LOG")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", herald.display()))?;
    let mut proc = Proc {
        child,
        name: name.into(),
    };
    // A node that exits at start (a configuration it refuses, a port taken) fails at
    // once rather than after the readiness timeout.
    let url = format!("http://127.0.0.1:{port}/readyz");
    tokio::select! {
        ready = wait_http_ok(&url, ready_within) => ready?,
        status = proc.child.wait() => bail!("{name} exited at start ({})", status?),
    }
    Ok(proc)
}

/// The machine's load average and available memory.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// MemAvailable in KiB, for the kernel's share of connection memory.
pub(crate) fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The machine's count of connections dropped because a listen queue was full
/// (`TcpExtListenOverflows`): each is a client whose SYN the kernel ignored, to be
/// retransmitted 1 s or more later. Machine-wide, so compare before and after a phase.
pub(crate) fn listen_overflows() -> u64 {
    let Ok(netstat) = std::fs::read_to_string("/proc/net/netstat") else {
        return 0;
    };
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A private `redis-server`.
pub(crate) struct Redis {
    pub port: u16,
    pub proc: Proc,
}

impl Redis {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = command(Path::new("redis-server"), Side::Server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--maxclients", "10000", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        let redis = Self {
            port,
            proc: Proc {
                child,
                name: "redis".into(),
            },
        };
        for _ in 0..100 {
            if redis.cli(&["PING"]).await.is_ok_and(|r| r.trim() == "PONG") {
                return Ok(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server on {port} did not start")
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a `redis-cli` command and returns its output.
    pub(crate) async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Calls per command since start, from `INFO commandstats`.
    pub(crate) async fn command_calls(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, u64>> {
        let info = self.cli(&["INFO", "commandstats"]).await?;
        Ok(info
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect())
    }
}

/// A child process driven over the line protocol.
pub(crate) struct LineChild {
    pub proc: Proc,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl LineChild {
    pub(crate) fn spawn(name: &str, program: &Path, args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[])
    }

    /// [`Self::spawn`] with `env` added to the child's environment.
    pub(crate) fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = command(program, Side::Load)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Self {
            proc: Proc {
                child,
                name: name.to_owned(),
            },
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    pub(crate) async fn send(&mut self, op: &Op) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(op)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next event, within `timeout`.
    pub(crate) async fn recv(&mut self, timeout: Duration) -> anyhow::Result<Ev> {
        loop {
            let line = tokio::time::timeout(timeout, self.lines.next_line())
                .await
                .with_context(|| format!("{}: no answer within {timeout:?}", self.proc.name))??
                .with_context(|| format!("{} exited", self.proc.name))?;
            let trimmed = line.trim();
            if trimmed.is_empty() || !trimmed.starts_with('{') {
                continue;
            }
            return serde_json::from_str(trimmed)
                .with_context(|| format!("{}: unexpected line {trimmed}", self.proc.name));
        }
    }

    pub(crate) async fn call(&mut self, op: &Op, timeout: Duration) -> anyhow::Result<Ev> {
        self.send(op).await?;
        self.recv(timeout).await
    }
}

/// Where the binaries and scripts are.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub herald: PathBuf,
    pub bench: PathBuf,
    pub peer_dir: PathBuf,
    pub node: PathBuf,
    /// The Sockudo peer's binary.
    pub sockudo: PathBuf,
    /// Herald's channels list their subscribers in presence (as `herald serve --dev`
    /// has it); off unless `--presence`.
    pub presence: bool,
}

/// Waits until `url` answers 200.
pub(crate) async fn wait_http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one counter from a Prometheus text page: `name` alone sums every label set,
/// `name{label="v"}` picks one.
pub(crate) async fn scrape_counter(url: &str, name: &str) -> anyhow::Result<f64> {
    let body = reqwest::get(url).await?.text().await?;
    Ok(body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| name.ends_with('}') || r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// HAProxy, the balancer `deploy/haproxy` puts in front of the gateways.
#[derive(Debug, Clone)]
pub(crate) struct Haproxy {
    bin: PathBuf,
    /// Its libraries, for the copy unpacked by `deploy/validate`.
    libs: Option<PathBuf>,
}

impl Haproxy {
    /// `HERALD_HAPROXY`, else `haproxy` on the PATH, else the copy that
    /// `deploy/validate --install-only` unpacks into its cache (`HERALD_TOOLS_CACHE`,
    /// default `~/.cache/herald-tools`).
    pub(crate) fn find() -> anyhow::Result<Self> {
        if let Some(bin) = std::env::var_os("HERALD_HAPROXY") {
            return Ok(Self {
                bin: bin.into(),
                libs: None,
            });
        }
        if let Some(bin) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("haproxy"))
                .find(|p| p.is_file())
        }) {
            return Ok(Self { bin, libs: None });
        }
        let cache = std::env::var_os("HERALD_TOOLS_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/herald-tools")))
            .context("no HOME")?;
        let root = cache.join("debs/root");
        let bin = root.join("usr/sbin/haproxy");
        if !bin.is_file() {
            bail!(
                "HAProxy not found: install it (apt-get install haproxy), set HERALD_HAPROXY, \
                 or run ./deploy/validate --install-only"
            );
        }
        let libs = std::fs::read_dir(root.join("usr/lib"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-linux-gnu"));
        Ok(Self { bin, libs })
    }

    /// Starts `count` HAProxy processes that share `port` (the kernel spreads new
    /// connections over them: HAProxy binds with `SO_REUSEPORT`), each balancing HTTP
    /// and WebSocket over `gateways` as `deploy/haproxy/haproxy.cfg` does (fewest
    /// connections first, `X-Forwarded-For`), and each taking at most `max_conns`
    /// clients: two descriptors per client must fit the open-files limit of one
    /// process. Returns once all of them listen.
    ///
    /// With `checks`, each gateway is health-checked as in `deploy/haproxy`: at
    /// `Some(path)` over HTTP (Herald's `/readyz`, which turns 503 while a node drains),
    /// or with a plain TCP check (`None`, the peer); and a connection refused or a 503 is
    /// tried again on another gateway.
    pub(crate) async fn start(
        &self,
        dir: &Path,
        count: usize,
        port: u16,
        gateways: &[u16],
        max_conns: usize,
        checks: Option<Option<&str>>,
    ) -> anyhow::Result<Vec<Proc>> {
        let checks = match checks {
            Some(Some(path)) => format!(
                "    option httpchk\n    http-check send meth GET uri {path} ver HTTP/1.1 hdr Host herald\n    \
                 http-check expect status 200\n    retry-on 503 conn-failure empty-response\n    \
                 option redispatch 1\n    retries 3\n    default-server check inter 2s fall 2 rise 2\n"
            ),
            Some(None) => "    retry-on conn-failure empty-response\n    option redispatch 1\n    \
                 retries 3\n    default-server check inter 2s fall 2 rise 2\n"
                .to_owned(),
            None => String::new(),
        };
        let servers: String = gateways
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    server gateway-{i} 127.0.0.1:{p}\n"))
            .collect();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn {max_conns}\n    ulimit-n {fds}\n\n\
                 defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    \
                 timeout server 60s\n    timeout http-request 10s\n    timeout tunnel 1h\n\n\
                 frontend herald\n    bind 127.0.0.1:{port}\n    maxconn {max_conns}\n    \
                 default_backend gateways\n\n\
                 backend gateways\n    balance leastconn\n    option forwardfor\n{checks}{servers}",
                fds = max_conns * 2 + 100,
            ),
        )?;
        let mut procs = Vec::with_capacity(count);
        for i in 0..count {
            let log = std::fs::File::create(dir.join(format!("haproxy-{i}.log")))?;
            let mut cmd = command(&self.bin, Side::Server);
            if let Some(libs) = &self.libs {
                cmd.env("LD_LIBRARY_PATH", libs);
            }
            let child = cmd
                .arg("-f")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?;
            procs.push(Proc {
                child,
                name: format!("haproxy-{i}"),
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while listeners(port) < count {
            for p in &mut procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    bail!(
                        "{} exited at start ({status}); see {}",
                        p.name,
                        dir.join(format!("{}.log", p.name)).display()
                    );
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{count} HAProxy processes did not all listen on {port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(procs)
    }
}

/// Listening IPv4 sockets on `port` (from `/proc/net/tcp`).
fn listeners(port: u16) -> usize {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            local.ends_with(&suffix) && state == "0A"
        })
        .count()
}
