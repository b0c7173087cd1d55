//! `herald-bench instructions`: the instructions a node executes per delivery, counted
//! by callgrind, so that the figure is the same whatever else the machine is doing.
//!
//! The node runs under `valgrind --tool=callgrind` on the Redis broker, with WebSocket
//! subscribers of one channel (raw connections in this process, see
//! [`crate::integration`]). Publications go straight into Redis through the publish
//! function, as a backend publishes, so the count covers the whole path from a
//! publication arriving on the node to its bytes in every socket. Two cases:
//!
//! - **low rate:** publications further apart than the write interval, so each one is a
//!   wake-up and a write per subscriber;
//! - **batched:** publications as fast as the publisher goes, so writes carry several.
//!
//! Each case runs twice, with `messages` and with a fifth of them; the difference of
//! the two totals over the difference of their deliveries is the cost per delivery,
//! without the start, the connections and the stop that both runs share. The low-rate
//! runs last longer, and a node does some work whatever it delivers (timers, its
//! cluster report, the broker's health checks): two idle runs as long as the low-rate
//! ones measure that, and the output gives the low-rate figure with and without it.

use crate::integration::{Tally, subscribe_all};
use crate::procs::{Redis, free_port, start_herald_under};
use anyhow::{Context as _, bail};
use herald_protocol::RawJson;
use herald_redis::{PublishOptions, Publisher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Arguments of `instructions`.
#[derive(Debug, clap::Args)]
pub(crate) struct InstructionsArgs {
    /// The `herald` binary (a release build for the published figures; the smoke run
    /// counts its debug build, against a threshold of its own).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// Subscribers of the one channel.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Publications in the longer run of each case (the shorter has a fifth).
    #[arg(long, default_value_t = 100)]
    messages: u64,
    /// The low-rate case's gap between publications, in milliseconds (longer than the
    /// node's write interval, 5 ms by default, even under valgrind's slowdown).
    #[arg(long, default_value_t = 40)]
    gap_ms: u64,
    /// Fail when the low-rate case costs more instructions per delivery than this.
    #[arg(long)]
    max_low: Option<f64>,
    /// Fail when the batched case costs more instructions per delivery than this.
    #[arg(long)]
    max_batched: Option<f64>,
    /// Keep callgrind's output files in this folder (for `callgrind_annotate`).
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    LowRate,
    Batched,
    /// As long as the low-rate case, without publications: what the node does anyway
    /// in that time (its timers, its reports, the broker's health checks).
    Idle,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::LowRate => "low rate",
            Case::Batched => "batched",
            Case::Idle => "idle",
        }
    }
}

/// Runs both cases and prints the instructions per delivery; `false` when a figure is
/// over its threshold.
#[allow(clippy::print_stdout)] // The figures are the command's output.
pub(crate) async fn run(args: InstructionsArgs) -> anyhow::Result<bool> {
    check_valgrind().await?;
    anyhow::ensure!(args.messages >= 10, "--messages must be at least 10");
    anyhow::ensure!(args.subscribers >= 1, "--subscribers must be at least 1");
    let dir = std::env::temp_dir().join(format!("herald-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let short = args.messages / 5;
    println!(
        "instructions per delivery (callgrind), {} subscribers, {} and {short} publications per case, {}",
        args.subscribers,
        args.messages,
        args.herald.display()
    );
    let mut ok = true;
    let deliveries = (args.messages - short) * args.subscribers as u64;
    let idle = count(&args, &dir, Case::Idle, args.messages).await?;
    let idle_few = count(&args, &dir, Case::Idle, short).await?;
    let idle_per = idle.saturating_sub(idle_few) as f64 / deliveries as f64;
    for (case, max) in [
        (Case::LowRate, args.max_low),
        (Case::Batched, args.max_batched),
    ] {
        let long = count(&args, &dir, case, args.messages).await?;
        let few = count(&args, &dir, case, short).await?;
        let per_delivery = long.saturating_sub(few) as f64 / deliveries as f64;
        let verdict = match max {
            Some(max) if per_delivery > max => {
                ok = false;
                format!("  OVER the threshold of {max:.0}")
            }
            Some(max) => format!("  (threshold {max:.0})"),
            None => String::new(),
        };
        println!(
            "  {:<9} {per_delivery:>9.0} instructions per delivery   (totals {long} and {few}){verdict}",
            case.label()
        );
        if case == Case::LowRate {
            println!(
                "  {:<9} {:>9.0} of them the node's own work in that time, without publications (totals {idle} and {idle_few}); {:.0} net",
                "",
                idle_per,
                per_delivery - idle_per
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

async fn check_valgrind() -> anyhow::Result<()> {
    let out = tokio::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("valgrind is not installed (apt-get install -y valgrind)"),
    }
}

/// One run: the node's total instructions for `messages` publications in `case`.
async fn count(
    args: &InstructionsArgs,
    dir: &Path,
    case: Case,
    messages: u64,
) -> anyhow::Result<u64> {
    let redis = Redis::start().await?;
    let port = free_port()?;
    let name = format!("{}-{messages}", case.label().replace(' ', "-"));
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
broker = "redis"

[redis]
url = "{}"

[api]
insecure = true

[client]
allow_anonymous = true
# Nothing periodic per connection within a run.
ping_interval = "600s"
pong_timeout = "60s"

[shutdown]
drain_window = "100ms"
timeout = "20s"

[namespaces.default]
history_size = 1000
history_ttl = "10m"
allow_subscribe_for_anonymous = true
"#,
            redis.url()
        ),
    )?;
    let out = dir.join(format!("{name}.callgrind"));
    let out_file = format!("--callgrind-out-file={}", out.display());
    // Valgrind's `-q`: only its errors on stderr, not its banner.
    let node = start_herald_under(
        &["valgrind", "-q", "--tool=callgrind", &out_file],
        &args.herald,
        &config,
        port,
        &format!("herald ({name}, callgrind)"),
        Duration::from_secs(120),
    )
    .await
    .context("starting herald under valgrind")?;
    let tally = Arc::new(Tally::default());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let subscribers = subscribe_all(addr, "bench", None, args.subscribers, &tally).await?;
    let publisher = Publisher::connect(&redis.url())
        .await
        .context("connecting the publisher to Redis")?;
    let options = || PublishOptions {
        history_size: 1000,
        history_ttl: Duration::from_secs(600),
        ..PublishOptions::default()
    };
    let publications = if case == Case::Idle { 0 } else { messages };
    for seq in 0..publications {
        let data = RawJson::from_string(crate::proto::payload(seq, crate::proto::now_us(), 64))
            .context("payload")?;
        publisher
            .publish("bench", data, options())
            .await
            .context("publishing")?;
        if case == Case::LowRate {
            tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        }
    }
    if case == Case::Idle {
        tokio::time::sleep(Duration::from_millis(args.gap_ms * messages)).await;
    }
    let expected = publications * args.subscribers as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tally.received.load(Ordering::Relaxed) < expected {
        if tally.closed.load(Ordering::Relaxed) > 0 {
            bail!(
                "a subscriber's socket ended: {}",
                tally.first_close.lock().clone().unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} of {expected} deliveries within 120 s",
                tally.received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(subscribers);
    node.stop(Duration::from_secs(60)).await;
    drop(redis);
    let text = std::fs::read_to_string(&out)
        .with_context(|| format!("callgrind wrote no {}", out.display()))?;
    match &args.keep {
        Some(keep) => {
            std::fs::create_dir_all(keep)?;
            std::fs::rename(&out, keep.join(format!("{name}.callgrind"))).or_else(|_| {
                std::fs::copy(&out, keep.join(format!("{name}.callgrind"))).map(drop)
            })?;
        }
        None => {
            let _ = std::fs::remove_file(&out);
        }
    }
    totals(&text).with_context(|| format!("no totals in {}", out.display()))
}

/// The `Ir` total of a callgrind output file (its `totals:` line, or `summary:`).
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_totals_line() {
        let text = "events: Ir\nfl=(1) a.c\nfn=(1) main\n3 10\nsummary: 12345\ntotals: 12345\n";
        assert_eq!(super::totals(text), Some(12345));
        assert_eq!(super::totals("events: Ir\n"), None);
    }
}
