//! `herald-bench run`: repeats each case on each system, prints progress, a side-by-side
//! table per case with every target marked, and writes the raw results as JSON.

use crate::cases::{CASES, Case};
use crate::procs::{Paths, loadavg};
use crate::scenarios::{self, Outcome, Params, median};
use crate::stack::{CONNS_PER_WORKER, Stack, System, Topology};
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::PathBuf;

/// Options of `herald-bench run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Cases to run (default: all); see `herald-bench cases`.
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// Systems to measure, interleaved run by run.
    #[arg(long = "system", value_enum, default_values_t = [System::Herald, System::Peer])]
    systems: Vec<System>,
    /// Runs per case and system; tables show the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tiny sizes and short phases, to check that the harness works; fails on any
    /// loss, duplicate or failed connection.
    #[arg(long)]
    smoke: bool,
    /// Override the number of connections.
    #[arg(long)]
    n: Option<usize>,
    /// Override the publish rate.
    #[arg(long)]
    rate: Option<f64>,
    /// Override the measured phase's length in seconds.
    #[arg(long)]
    secs: Option<u64>,
    /// Worker processes (default: enough for ≤ 9,000 connections each, at least 2).
    #[arg(long)]
    workers: Option<usize>,
    /// The herald binary (default: target/release/herald in the repository).
    #[arg(long)]
    herald_bin: Option<PathBuf>,
    /// Node.js, for the Socket.IO peer.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The Sockudo binary, for `--system sockudo` (default: where
    /// `scripts/build-sockudo.sh` installs it).
    #[arg(long, env = "HERALD_BENCH_SOCKUDO")]
    sockudo_bin: Option<PathBuf>,
    /// Write every run's measurements here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Pin the server and its Redis to these CPUs and the load (workers, publisher) to
    /// the others, as `SERVER/LOAD` CPU lists for `taskset -c` (e.g. `1/0`).
    #[arg(long, value_name = "SERVER/LOAD")]
    pin: Option<String>,
    /// Turn presence on in Herald's namespace, as `herald serve --dev` has it (history
    /// is on either way). The peer has no presence.
    #[arg(long)]
    presence: bool,
}

#[derive(Debug, Serialize)]
struct RunRecord {
    case: &'static str,
    system: System,
    run: usize,
    params: Params,
    topology: Topology,
    loadavg_before: String,
    loadavg_after: String,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    smoke: bool,
    /// `SERVER/LOAD` CPU lists when the run was pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<String>,
    /// Herald ran with presence on (`--presence`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    presence: bool,
    runs: Vec<RunRecord>,
    failures: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    loadavg_start: String,
    date_unix: u64,
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model,
        kernel,
        loadavg_start: loadavg(),
        date_unix: crate::proto::now_us() / 1_000_000,
    }
}

pub(crate) fn print_cases() {
    for c in CASES {
        let targets: Vec<String> = c.targets.iter().map(|t| t.describe()).collect();
        eprintln!(
            "{:<12} {:?} n={} rate={} secs={}  {}",
            c.name,
            c.scenario,
            c.full.n,
            c.full.rate,
            c.full.secs,
            targets.join(", ")
        );
    }
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let cases: Vec<&Case> = if args.cases.is_empty() {
        // Saturation cases share the fan-out code; a smoke run (debug build, tiny sizes)
        // leaves them out, since saturating a debug build only measures its slowness.
        CASES
            .iter()
            .filter(|c| !args.smoke || c.scenario != crate::scenarios::Scenario::Peak)
            .collect()
    } else {
        args.cases
            .iter()
            .map(|n| crate::cases::find(n).with_context(|| format!("unknown case {n}")))
            .collect::<anyhow::Result<_>>()?
    };
    let root = crate::repo_root();
    let herald = match (&args.herald_bin, &root) {
        (Some(p), _) => p.clone(),
        (None, Some(r)) => r.join("target/release/herald"),
        (None, None) => bail!("run from the repository, or give --herald-bin"),
    };
    if !herald.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p herald) or give --herald-bin",
            herald.display()
        );
    }
    let peer_dir = root
        .as_ref()
        .map(|r| r.join("bench/peer"))
        .unwrap_or_default();
    if args.systems.contains(&System::Peer) && !peer_dir.join("node_modules").is_dir() {
        bail!(
            "the peer's packages are missing: run `npm ci` in {}",
            peer_dir.display()
        );
    }
    let sockudo = args
        .sockudo_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::stack::SOCKUDO_DEFAULT_BIN));
    if args.systems.contains(&System::Sockudo) && !sockudo.is_file() {
        bail!(
            "{} not found: build it once with scripts/build-sockudo.sh, or give --sockudo-bin",
            sockudo.display()
        );
    }
    if let Some(pin) = &args.pin {
        let Some((server, load)) = pin.split_once('/') else {
            bail!("--pin takes SERVER/LOAD CPU lists, e.g. 1/0");
        };
        let ok = std::process::Command::new("taskset")
            .args(["-c", server, "true"])
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(
            ok,
            "taskset -c {server} does not work here (is util-linux installed, and is CPU {server} there?)"
        );
        crate::procs::pin(server, load);
    }
    let paths = Paths {
        herald,
        bench: std::env::current_exe()?,
        peer_dir,
        node: args.node.clone(),
        sockudo,
        presence: args.presence,
    };
    let mut report = Report {
        machine: machine(),
        smoke: args.smoke,
        pin: args.pin.clone(),
        presence: args.presence,
        runs: Vec::new(),
        failures: Vec::new(),
    };
    eprintln!(
        "herald-bench: {} case(s) × {:?} × {} run(s); {} CPUs, load {}",
        cases.len(),
        args.systems,
        args.runs,
        report.machine.cpus,
        report.machine.loadavg_start
    );
    for case in cases {
        let mut params = if args.smoke { case.smoke } else { case.full };
        params.n = args.n.unwrap_or(params.n);
        params.rate = args.rate.unwrap_or(params.rate);
        params.secs = args.secs.unwrap_or(params.secs);
        let workers = args.workers.unwrap_or_else(|| {
            let floor = if args.smoke { 1 } else { 2 };
            params.n.div_ceil(CONNS_PER_WORKER).max(floor)
        });
        let systems: Vec<System> = args
            .systems
            .iter()
            .copied()
            .filter(|s| case.runs_on(*s))
            .collect();
        let topology = if case.gateways > 1 {
            Topology {
                health_checks: case.scenario == crate::scenarios::Scenario::Rolling,
                ..Topology::balanced(case.gateways, params.n)
            }
        } else {
            Topology::SINGLE
        };
        // A smoke run on a machine without HAProxy says so rather than failing; a
        // measured run fails below, naming what is missing.
        if topology.balancers > 0
            && args.smoke
            && let Err(e) = crate::procs::Haproxy::find()
        {
            eprintln!("[{}] SKIPPED: {e}", case.name);
            continue;
        }
        for run in 1..=args.runs {
            for &system in &systems {
                let loadavg_before = loadavg();
                eprintln!(
                    "[{}] {} run {run}/{}: n={} rate={} secs={} workers={workers} gateways={} balancers={} (load {loadavg_before})",
                    case.name,
                    system.label(),
                    args.runs,
                    params.n,
                    params.rate,
                    params.secs,
                    topology.gateways,
                    topology.balancers,
                );
                let outcome = match run_once(case, system, &paths, params, workers, topology).await
                {
                    Ok(o) => o,
                    Err(e) => {
                        let mut o = Outcome::new();
                        o.problems.push(format!("run failed: {e:#}"));
                        o
                    }
                };
                for p in &outcome.problems {
                    eprintln!("    ! {p}");
                    if system == System::Herald {
                        report.failures.push(format!(
                            "{} {} run {run}: {p}",
                            case.name,
                            system.label()
                        ));
                    }
                }
                eprintln!("    {}", summary_line(&outcome));
                report.runs.push(RunRecord {
                    case: case.name,
                    system,
                    run,
                    params,
                    topology,
                    loadavg_before,
                    loadavg_after: loadavg(),
                    outcome,
                });
            }
        }
        print_table(case, &systems, &report.runs);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    if report.failures.is_empty() {
        Ok(true)
    } else {
        eprintln!(
            "herald-bench: {} problem(s) with Herald:",
            report.failures.len()
        );
        for f in &report.failures {
            eprintln!("  - {f}");
        }
        Ok(false)
    }
}

async fn run_once(
    case: &Case,
    system: System,
    paths: &Paths,
    params: Params,
    workers: usize,
    topology: Topology,
) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(system, paths, workers, topology).await?;
    let outcome = scenarios::run(case.scenario, &mut stack, params).await;
    stack.stop().await;
    outcome
}

fn summary_line(o: &Outcome) -> String {
    o.rows
        .iter()
        .map(|r| format!("{}={}{}", r.key, fmt(r.value), r.unit))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100_000.0 {
        format!("{:.3}M", v / 1e6)
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Prints one case's medians, Herald beside each peer, with Herald's ratio to each and
/// the targets.
fn print_table(case: &Case, systems: &[System], runs: &[RunRecord]) {
    let medians = |system: System, key: &str| -> Option<f64> {
        let values: Vec<f64> = runs
            .iter()
            .filter(|r| r.case == case.name && r.system == system)
            .filter_map(|r| r.outcome.rows.iter().find(|row| row.key == key))
            .map(|row| row.value)
            .collect();
        (!values.is_empty()).then(|| median(&values))
    };
    let Some(first) = runs
        .iter()
        .find(|r| r.case == case.name && r.system == System::Herald)
        .or_else(|| runs.iter().find(|r| r.case == case.name))
    else {
        return;
    };
    let peers: Vec<System> = systems
        .iter()
        .copied()
        .filter(|s| *s != System::Herald)
        .collect();
    // Herald's column, its ratios and its targets, where Herald ran.
    let herald = systems.contains(&System::Herald);
    let mut out = String::new();
    out.push_str(&format!(
        "\n== {} ({:?}, n={}, rate={}, secs={}) — medians\n",
        case.name, case.scenario, first.params.n, first.params.rate, first.params.secs
    ));
    out.push_str(&format!("{:<30}", "metric"));
    if herald {
        out.push_str(&format!(" {:>14}", "herald"));
    }
    for peer in &peers {
        out.push_str(&format!(" {:>14}", peer.label()));
    }
    for peer in peers.iter().filter(|_| herald) {
        out.push_str(&format!(" {:>12}", format!("÷{}", peer.label())));
    }
    out.push_str("  target\n");
    for row in &first.outcome.rows {
        let h = medians(System::Herald, row.key);
        let values: Vec<Option<f64>> = peers.iter().map(|p| medians(*p, row.key)).collect();
        out.push_str(&format!("{:<30}", format!("{} ({})", row.key, row.unit)));
        if herald {
            out.push_str(&format!(" {:>14}", h.map(fmt).unwrap_or_default()));
        }
        for v in &values {
            out.push_str(&format!(" {:>14}", v.map(fmt).unwrap_or_default()));
        }
        for v in values.iter().filter(|_| herald) {
            let ratio = match (h, *v) {
                (Some(h), Some(p)) if p != 0.0 && !h.is_nan() && !p.is_nan() => fmt(h / p),
                _ => String::new(),
            };
            out.push_str(&format!(" {ratio:>12}"));
        }
        // The targets are Herald's: judged only where Herald ran.
        let targets: Vec<String> = case
            .targets
            .iter()
            .filter(|t| herald && t.key == row.key)
            .map(|t| {
                let met = h.is_some_and(|v| {
                    t.met(&[scenarios::Row {
                        key: t.key,
                        value: v,
                        unit: "",
                    }])
                    .unwrap_or(false)
                });
                format!("{} {}", t.describe(), if met { "met" } else { "NOT met" })
            })
            .collect();
        out.push_str(&format!("  {}\n", targets.join("; ")));
    }
    // Printed as the results, on stdout.
    #[allow(clippy::print_stdout)]
    {
        print!("{out}");
    }
}
