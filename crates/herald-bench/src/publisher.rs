//! A publisher process: writes benchmark publications straight into Herald's Redis
//! backbone (the same atomic function the gateways use), at a fixed offered rate.

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

/// Runs the publisher protocol on stdin/stdout.
pub(crate) async fn run(redis_url: &str) -> anyhow::Result<()> {
    let publisher = Publisher::connect(redis_url)
        .await
        .context("connecting to Redis")?;
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
                let ev = publish(&publisher, &channel, rate, count, first_seq, pad).await;
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
async fn publish(
    publisher: &Publisher,
    channel: &str,
    rate: f64,
    count: u64,
    first_seq: u64,
    pad: usize,
) -> Ev {
    let start = Instant::now();
    let mut late_max = Duration::ZERO;
    let mut failed = 0;
    for i in 0..count {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            } else {
                late_max = late_max.max(now - due);
            }
        }
        let data = payload(first_seq + i, now_us(), pad);
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
    Ev::Published {
        count: count - failed,
        ms: start.elapsed().as_secs_f64() * 1000.0,
        late_max_ms: late_max.as_secs_f64() * 1000.0,
        failed,
    }
}
