//! A publisher process: writes benchmark publications at a fixed offered rate, straight
//! into Herald's Redis backbone (the same atomic function the gateways use), or for the
//! Sockudo peer through its HTTP API.

use crate::proto::{Ev, Op, now_us, payload};
use anyhow::Context;
use herald_protocol::RawJson;
use herald_redis::{PublishOptions, Publisher};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// History kept per channel: enough for every scenario's recovery window.
pub(crate) const HISTORY_SIZE: usize = 10_000;
/// How long history is kept.
pub(crate) const HISTORY_TTL: Duration = Duration::from_secs(600);

/// Where publications go.
pub(crate) enum Target {
    /// Herald's Redis backbone at this URL.
    Redis(String),
    /// A Pusher-protocol server's HTTP API at this base URL, as this app.
    Pusher {
        api: String,
        app: crate::pusher::App,
    },
}

enum Sink {
    Redis(Box<Publisher>),
    Pusher(crate::pusher::Publisher),
}

impl Sink {
    /// The most publications one request carries: the Redis function takes one, the
    /// Pusher API a batch.
    fn batch_max(&self) -> usize {
        match self {
            Sink::Redis(_) => 1,
            Sink::Pusher(_) => crate::pusher::BATCH_MAX,
        }
    }

    /// Publishes `payloads` in order; returns how many failed. A failed Pusher batch
    /// counts whole, though the server may have sent some of its events.
    async fn send(&self, channel: &str, payloads: Vec<String>) -> u64 {
        match self {
            Sink::Redis(publisher) => {
                let mut failed = 0;
                for data in payloads {
                    let Ok(data) = RawJson::from_string(data) else {
                        failed += 1;
                        continue;
                    };
                    let options = PublishOptions {
                        history_size: HISTORY_SIZE,
                        history_ttl: HISTORY_TTL,
                        ..PublishOptions::default()
                    };
                    if let Err(e) = publisher.publish(channel, data, options).await {
                        tracing::warn!(error = %e, "publish failed");
                        failed += 1;
                    }
                }
                failed
            }
            Sink::Pusher(publisher) => match publisher.batch(channel, &payloads).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "publish failed");
                    payloads.len() as u64
                }
            },
        }
    }
}

/// Runs the publisher protocol on stdin/stdout.
pub(crate) async fn run(target: Target) -> anyhow::Result<()> {
    let sink = match target {
        Target::Redis(url) => Sink::Redis(Box::new(
            Publisher::connect(&url)
                .await
                .context("connecting to Redis")?,
        )),
        Target::Pusher { api, app } => {
            let publisher = crate::pusher::Publisher::new(&api, app)?;
            publisher
                .wait_ready(Duration::from_secs(15))
                .await
                .context("the Pusher API does not accept signed requests")?;
            Sink::Pusher(publisher)
        }
    };
    let mut out = tokio::io::stdout();
    send(&mut out, &Ev::Ready).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Op>(&line).with_context(|| format!("bad command {line}"))? {
            Op::Publish {
                channel,
                rate,
                count,
                first_seq,
                pad,
            } => {
                let ev = publish(&sink, &channel, rate, count, first_seq, pad).await;
                send(&mut out, &ev).await?;
            }
            Op::Exit | Op::Close => return Ok(()),
            _ => anyhow::bail!("not a publisher command: {line}"),
        }
    }
    Ok(())
}

async fn send(out: &mut tokio::io::Stdout, ev: &Ev) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(ev)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// Publishes in order, each message due at `start + i / rate`; a message that is late is
/// sent at once and its lateness recorded, so the offered rate never silently drifts.
/// Where the sink takes batches, the messages due by then go together.
async fn publish(
    sink: &Sink,
    channel: &str,
    rate: f64,
    count: u64,
    first_seq: u64,
    pad: usize,
) -> Ev {
    let start = Instant::now();
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut late_max = Duration::ZERO;
    let mut failed = 0;
    let mut i = 0;
    while i < count {
        let mut n = 1;
        if rate > 0.0 {
            let now = Instant::now();
            if due(i) > now {
                tokio::time::sleep_until(due(i).into()).await;
            } else {
                late_max = late_max.max(now - due(i));
            }
            let now = Instant::now();
            while n < sink.batch_max() as u64 && i + n < count && due(i + n) <= now {
                n += 1;
            }
        } else {
            n = (sink.batch_max() as u64).min(count - i);
        }
        let payloads = (i..i + n)
            .map(|k| payload(first_seq + k, now_us(), pad))
            .collect();
        failed += sink.send(channel, payloads).await;
        i += n;
    }
    Ev::Published {
        count: count - failed,
        ms: start.elapsed().as_secs_f64() * 1000.0,
        late_max_ms: late_max.as_secs_f64() * 1000.0,
        failed,
    }
}
