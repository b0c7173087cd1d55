//! `herald top`: an overview in a terminal from any node, refreshed every second: the
//! cluster's nodes and busiest channels as the API reports them, and the rates and
//! recent close codes from that node's metrics.

use crate::cli::TopArgs;
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The counters `top` turns into rates.
#[derive(Debug, Default, Clone)]
struct Counters {
    publications: f64,
    messages_sent: f64,
    disconnects: BTreeMap<String, f64>,
}

/// Reads the counters from a Prometheus text page.
fn counters(metrics: &str) -> Counters {
    let mut c = Counters::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name == "herald_broker_publications_total" {
            c.publications = value;
        } else if name == "herald_messages_sent_total" {
            c.messages_sent = value;
        } else if let Some(labels) = name.strip_prefix("herald_disconnects_total{code=\"") {
            let code = labels.trim_end_matches("\"}").to_owned();
            c.disconnects.insert(code, value);
        }
    }
    c
}

struct Source {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Source {
    /// A server API method's result, through the same call as `herald publish`.
    async fn api(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let raw = crate::tools::call_api(&self.base, self.key.as_deref(), method, &params).await?;
        serde_json::from_str(raw.get()).context("the reply's result")
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("{}/metrics", self.base);
        self.http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?
            .text()
            .await
            .context("reading /metrics")
    }
}

/// One screen.
fn render(
    base: &str,
    info: &Value,
    channels: &Value,
    now: &Counters,
    before: Option<(&Counters, Duration)>,
    rows: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "herald top: {base}   (every second; Ctrl-C to stop)\n");
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>8} {:>7} {:>9} {:>9} {:>10}",
        "NODE", "VERSION", "CLIENTS", "USERS", "CHANNELS", "SUBS", "UPTIME"
    );
    for node in info["nodes"].as_array().map_or(&[][..], Vec::as_slice) {
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9}s",
            node["name"].as_str().unwrap_or("?"),
            node["version"].as_str().unwrap_or("?"),
            node["num_clients"],
            node["num_users"],
            node["num_channels"],
            node["num_subs"],
            node["uptime"],
        );
    }
    let rate = |f: fn(&Counters) -> f64| match before {
        Some((b, dt)) if dt.as_secs_f64() > 0.0 => {
            format!("{:.1}/s", (f(now) - f(b)).max(0.0) / dt.as_secs_f64())
        }
        _ => "-".to_owned(),
    };
    let _ = writeln!(
        out,
        "\npublications in: {}   messages out: {}",
        rate(|c| c.publications),
        rate(|c| c.messages_sent)
    );
    let mut closes: Vec<String> = now
        .disconnects
        .iter()
        .filter_map(|(code, n)| {
            let recent = before.map_or(*n, |(b, _)| {
                n - b.disconnects.get(code).copied().unwrap_or(0.0)
            });
            (recent > 0.0).then(|| format!("{code}×{recent}"))
        })
        .collect();
    if closes.is_empty() {
        closes.push("none".into());
    }
    let _ = writeln!(
        out,
        "closes by the server {}: {}",
        if before.is_some() {
            "this second"
        } else {
            "so far"
        },
        closes.join("  ")
    );
    let mut busiest: Vec<(&String, u64)> = channels["channels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, c)| (name, c["num_clients"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(out, "\n{:<48} {:>12}", "CHANNEL", "SUBSCRIBERS");
    for (name, n) in busiest.iter().take(rows) {
        let _ = writeln!(out, "{name:<48} {n:>12}");
    }
    if busiest.len() > rows {
        let _ = writeln!(out, "... and {} more", busiest.len() - rows);
    }
    out
}

/// Runs `herald top`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    let source = Source {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("HTTP client")?,
        base: args.url.trim_end_matches('/').to_owned(),
        key: args.api_key.clone(),
    };
    let tty = std::io::stdout().is_terminal();
    let mut before: Option<(Counters, Instant)> = None;
    loop {
        let info = source.api("info", json!({})).await?;
        let channels = source.api("channels", json!({})).await?;
        let now = counters(&source.metrics().await?);
        let at = Instant::now();
        let screen = render(
            &source.base,
            &info,
            &channels,
            &now,
            before.as_ref().map(|(c, t)| (c, at - *t)),
            args.rows,
        );
        let mut stdout = std::io::stdout().lock();
        if tty && !args.once {
            // Clear the screen and go home.
            let _ = write!(stdout, "\u{1b}[2J\u{1b}[H");
        }
        write!(stdout, "{screen}").context("stdout closed")?;
        stdout.flush().context("stdout closed")?;
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        before = Some((now, at));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_channels_are_shown() {
        let metrics_before = "herald_broker_publications_total 10\nherald_messages_sent_total 100\nherald_disconnects_total{code=\"3001\"} 1\n";
        let metrics_now = "# HELP x\nherald_broker_publications_total 30\nherald_messages_sent_total 500\nherald_disconnects_total{code=\"3001\"} 3\n";
        let info = json!({"nodes": [{"name": "n1", "version": "0.1.0", "num_clients": 2, "num_users": 1, "num_channels": 1, "num_subs": 2, "uptime": 9}]});
        let channels = json!({"channels": {"news": {"num_clients": 2}, "a": {"num_clients": 5}}});
        let screen = render(
            "http://x",
            &info,
            &channels,
            &counters(metrics_now),
            Some((&counters(metrics_before), Duration::from_secs(2))),
            1,
        );
        assert!(screen.contains("n1"), "{screen}");
        assert!(screen.contains("publications in: 10.0/s"), "{screen}");
        assert!(screen.contains("messages out: 200.0/s"), "{screen}");
        assert!(screen.contains("3001×2"), "{screen}");
        // The busiest first, and the rest counted.
        assert!(
            screen.contains("a ") && screen.contains("... and 1 more"),
            "{screen}"
        );
    }
}
