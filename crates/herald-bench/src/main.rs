//! `herald-bench`: Herald's load generator and benchmark coordinator.
//!
//! `herald-bench run` starts, for every run of every case, a private Redis, the system
//! under test (a Herald gateway, the Socket.IO peer or the Sockudo peer), a publisher
//! process and several worker processes (each holding thousands of connections from its
//! own 127.0.0.x source address), drives a scenario through them, and prints the
//! measurements of Herald and the peers side by side. `worker` and `publisher` are the child processes' entry points.

mod cases;
mod coordinator;
mod filter;
mod instructions;
mod integration;
mod lean;
mod limiter;
mod procs;
mod proto;
mod publisher;
mod pusher;
mod scenarios;
mod stack;
mod stall;
mod transports;
mod worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "herald-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run benchmark cases and print (and optionally save) the results.
    Run(coordinator::RunArgs),
    /// A worker process (started by `run`; speaks JSON lines on stdin/stdout).
    Worker,
    /// A publisher process (started by `run`; speaks JSON lines on stdin/stdout).
    Publisher {
        /// Publish into Herald's Redis backbone at this URL.
        #[arg(long, required_unless_present = "pusher_api")]
        redis_url: Option<String>,
        /// Publish through a Pusher-protocol HTTP API at this base URL (the Sockudo
        /// peer), as `--app-id`/`--app-key` with the secret in HERALD_BENCH_PUSHER_SECRET.
        #[arg(long, conflicts_with = "redis_url", requires_all = ["app_id", "app_key"])]
        pusher_api: Option<String>,
        #[arg(long)]
        app_id: Option<String>,
        #[arg(long)]
        app_key: Option<String>,
        #[arg(long, env = "HERALD_BENCH_PUSHER_SECRET", hide_env_values = true)]
        app_secret: Option<String>,
    },
    /// List the cases and the targets they check.
    Cases,
    /// Time a rate-limit check: the per-connection bucket and the per-user Redis limiter.
    Limiter(limiter::LimiterArgs),
    /// Every transport side by side: memory, CPU per delivery, latency, emulated
    /// command round trips, bytes on the wire.
    Transports(transports::TransportsArgs),
    /// Time a tag filter's evaluation.
    Filter(filter::FilterArgs),
    /// The integration features on fresh nodes: fan-out with and without a tag filter,
    /// the proxy hooks' round trips, conflation.
    Integration(integration::IntegrationArgs),
    /// Instructions a node executes per delivery, counted by callgrind (low rate and
    /// batched): a figure that does not move with the machine's load.
    Instructions(instructions::InstructionsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_BENCH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let result = match cli.command {
        // Children run on one thread each: the load is spread over processes, and a
        // single-threaded runtime spends nothing on synchronisation.
        Cmd::Worker => current_thread(worker::run()),
        Cmd::Publisher {
            redis_url,
            pusher_api,
            app_id,
            app_key,
            app_secret,
        } => match (redis_url, pusher_api) {
            (Some(url), _) => current_thread(publisher::run(publisher::Target::Redis(url))),
            (None, Some(api)) => match (app_id, app_key, app_secret) {
                (Some(id), Some(key), Some(secret)) if !secret.is_empty() => {
                    current_thread(publisher::run(publisher::Target::Pusher {
                        api,
                        app: pusher::App { id, key, secret },
                    }))
                }
                _ => Err(anyhow::anyhow!(
                    "--pusher-api needs --app-id, --app-key and HERALD_BENCH_PUSHER_SECRET"
                )),
            },
            (None, None) => Err(anyhow::anyhow!("give --redis-url or --pusher-api")),
        },
        // The commands that start processes stop them when interrupted.
        Cmd::Run(args) => multi_thread(until_interrupted(coordinator::run(args))),
        Cmd::Limiter(args) => current_thread(limiter::run(args)),
        Cmd::Transports(args) => current_thread(until_interrupted(transports::run(args))),
        Cmd::Filter(args) => filter::run(&args),
        Cmd::Integration(args) => current_thread_checked(until_interrupted(integration::run(args))),
        Cmd::Instructions(args) => {
            current_thread_checked(until_interrupted(instructions::run(args)))
        }
        Cmd::Cases => {
            coordinator::print_cases();
            Ok(true)
        }
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs `fut` until it ends or the process gets SIGINT or SIGTERM. Then `fut` is
/// dropped, and with it every process it started (each child is killed when its handle
/// is dropped) and its scratch directories: an interrupted benchmark leaves nothing
/// running.
async fn until_interrupted<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return fut.await;
    };
    tokio::select! {
        result = fut => result,
        _ = term.recv() => Err(anyhow::anyhow!("stopped by SIGTERM, with every process it started")),
        _ = int.recv() => Err(anyhow::anyhow!("stopped by SIGINT, with every process it started")),
    }
}

fn current_thread(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<bool> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)?;
    Ok(true)
}

/// Like [`current_thread`], for a command whose result says whether it passed.
fn current_thread_checked(fut: impl Future<Output = anyhow::Result<bool>>) -> anyhow::Result<bool> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn multi_thread(fut: impl Future<Output = anyhow::Result<bool>>) -> anyhow::Result<bool> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(fut)
}

/// The repository root, found from the current directory upwards.
fn repo_root() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if dir.join("crates/herald-bench").is_dir() && dir.join("Cargo.toml").is_file() {
            return Some(dir);
        }
        if !dir.pop() {
            return None;
        }
    }
}
