//! A worker process: many connections from one source address (Herald SDK clients, or
//! lean readers speaking Herald's or the Pusher protocol), checking every publication's
//! sequence number and recording its latency.

use crate::lean::{Dialect, FrameTally, LeanTrack};
use crate::proto::{Ev, Op, Payload, WorkerStats, now_us, round3};
use anyhow::Context;
use herald_client::{Client, SubscribeOptions, SubscriptionEvent};
use parking_lot::Mutex;
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

/// Connections opened at once, at most, so a burst never overflows the listen queue.
const MAX_CONNECTING: usize = 256;

/// One connection's sequence tracking and drop timeline.
#[derive(Default)]
struct Track {
    last: u64,
    /// When the connection was last dropped, and when it started reconnecting (µs).
    dropped_at: u64,
    resumed_at: u64,
}

#[derive(Default)]
struct Counters {
    received: u64,
    dups: u64,
    gaps: u64,
    last_rx_us: u64,
    reconnects: u64,
    not_recovered: u64,
    lat: HashMap<u64, u64>,
    replay: HashMap<u64, u64>,
}

struct Conn {
    client: Client,
    track: Mutex<Track>,
    connected: AtomicBool,
}

#[derive(Default)]
struct Shared {
    counters: Mutex<Counters>,
    conns: Mutex<Vec<Arc<Conn>>>,
    lean: Mutex<Vec<Arc<LeanTrack>>>,
    subscribed: AtomicU64,
}

impl Shared {
    fn on_publication(&self, conn: &Conn, data: &str) {
        let now = now_us();
        let Ok(p) = serde_json::from_str::<Payload>(data) else {
            return;
        };
        let (dup, gap, replay) = {
            let mut t = conn.track.lock();
            if p.seq <= t.last {
                (true, 0, false)
            } else {
                let gap = p.seq - t.last - 1;
                t.last = p.seq;
                (false, gap, p.ts >= t.dropped_at && p.ts < t.resumed_at)
            }
        };
        let mut c = self.counters.lock();
        if dup {
            c.dups += 1;
            return;
        }
        c.received += 1;
        c.gaps += gap;
        c.last_rx_us = c.last_rx_us.max(now);
        let lat = round3(now.saturating_sub(p.ts));
        *c.lat.entry(lat).or_default() += 1;
        if replay {
            *c.replay.entry(lat).or_default() += 1;
        }
    }

    fn on_frame(&self, tally: FrameTally) {
        let mut c = self.counters.lock();
        c.received += tally.received;
        c.dups += tally.dups;
        c.gaps += tally.gaps;
        c.last_rx_us = c.last_rx_us.max(now_us());
        for lat in tally.lat {
            *c.lat.entry(lat).or_default() += 1;
        }
    }

    fn stats(&self, expect_last: Option<u64>) -> WorkerStats {
        let conns = self.conns.lock().clone();
        let lean = self.lean.lock().clone();
        let mut tail_missing = 0;
        let mut connected = 0;
        for conn in &conns {
            if conn.connected.load(Ordering::Relaxed) {
                connected += 1;
            }
            if let Some(expect) = expect_last {
                tail_missing += expect.saturating_sub(conn.track.lock().last);
            }
        }
        let mut cut_off = 0;
        for track in &lean {
            if track.connected.load(Ordering::Relaxed) {
                connected += 1;
            }
            if track.cut_off.load(Ordering::Relaxed) {
                cut_off += 1;
            }
            if let Some(expect) = expect_last {
                tail_missing += expect.saturating_sub(track.last.load(Ordering::Relaxed));
            }
        }
        let c = self.counters.lock();
        WorkerStats {
            conns: conns.len() + lean.len(),
            connected,
            received: c.received,
            dups: c.dups,
            gaps: c.gaps,
            tail_missing,
            lat: c.lat.iter().map(|(k, v)| (*k, *v)).collect(),
            replay: c.replay.iter().map(|(k, v)| (*k, *v)).collect(),
            last_rx_us: c.last_rx_us,
            reconnects: c.reconnects,
            not_recovered: c.not_recovered,
            cut_off,
        }
    }
}

/// Runs the worker protocol on stdin/stdout until `close` or end of input.
pub(crate) async fn run() -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let out = Arc::new(tokio::sync::Mutex::new(tokio::io::stdout()));
    let mut stalled = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let op: Op = serde_json::from_str(&line).with_context(|| format!("bad command {line}"))?;
        let ev = match op {
            Op::Open {
                url,
                conns,
                source_ip,
                channel,
                ramp,
                lean,
                pusher,
            } => {
                let lean = match (lean, pusher) {
                    (_, true) => Some(Dialect::Pusher),
                    (true, false) => Some(Dialect::Herald),
                    (false, false) => None,
                };
                open(&shared, &url, conns, &source_ip, &channel, ramp, lean).await?
            }
            Op::Stall {
                url,
                source_ip,
                channel,
            } => match crate::stall::open(&url, &source_ip, &channel).await {
                Ok(socket) => {
                    stalled.push(socket);
                    Ev::Stalled {
                        ok: true,
                        error: None,
                    }
                }
                Err(e) => Ev::Stalled {
                    ok: false,
                    error: Some(format!("{e:#}")),
                },
            },
            Op::Reset => {
                let mut c = shared.counters.lock();
                c.lat.clear();
                c.replay.clear();
                Ev::Reset
            }
            Op::Stats { expect_last } => Ev::Stats(shared.stats(expect_last)),
            Op::Drop {
                offline_ms,
                jitter_ms,
            } => {
                let conns = shared.conns.lock().clone();
                for conn in conns {
                    let offline = offline_ms + rand::rng().random_range(0..=jitter_ms);
                    drop_for(&conn, Duration::from_millis(offline)).await;
                }
                Ev::Dropped
            }
            Op::Disrupt {
                every_ms,
                offline_ms,
                duration_ms,
            } => {
                disrupt(&shared, every_ms, offline_ms, duration_ms, out.clone());
                Ev::Disrupting
            }
            Op::Close => {
                shared.lean.lock().clear();
                let conns = std::mem::take(&mut *shared.conns.lock());
                for conn in conns {
                    conn.client.disconnect().await;
                }
                send(&out, &Ev::Closed).await?;
                return Ok(());
            }
            Op::Publish { .. } | Op::Exit => anyhow::bail!("not a worker command: {line}"),
        };
        send(&out, &ev).await?;
    }
    Ok(())
}

/// Stdout, shared by the command loop and the tasks that report on their own
/// (`disrupt_done`), so that lines never interleave.
type Out = Arc<tokio::sync::Mutex<tokio::io::Stdout>>;

async fn send(out: &Out, ev: &Ev) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(ev)?;
    line.push(b'\n');
    let mut out = out.lock().await;
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

async fn drop_for(conn: &Conn, offline: Duration) {
    let now = now_us();
    {
        let mut t = conn.track.lock();
        t.dropped_at = now;
        t.resumed_at = now + offline.as_micros() as u64;
    }
    conn.connected.store(false, Ordering::Relaxed);
    conn.client.drop_connection(offline).await;
}

async fn open(
    shared: &Arc<Shared>,
    url: &str,
    conns: usize,
    source_ip: &str,
    channel: &str,
    ramp: u32,
    lean: Option<Dialect>,
) -> anyhow::Result<Ev> {
    let ip: IpAddr = source_ip.parse().context("source_ip")?;
    let started = std::time::Instant::now();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTING));
    let mut tasks = Vec::with_capacity(conns);
    for i in 0..conns {
        if ramp > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / f64::from(ramp));
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = limit.clone().acquire_owned().await?;
        if let Some(dialect) = lean {
            let shared = shared.clone();
            let (url, channel) = (url.to_owned(), channel.to_owned());
            tasks.push(tokio::spawn(async move {
                let ws = match dialect {
                    Dialect::Herald => crate::lean::connect(&url, ip, &channel).await,
                    Dialect::Pusher => crate::pusher::connect(&url, ip, &channel).await,
                };
                drop(permit);
                match ws {
                    Ok(ws) => {
                        let track = Arc::new(LeanTrack::default());
                        track.connected.store(true, Ordering::Relaxed);
                        shared.lean.lock().push(track.clone());
                        let reader = shared.clone();
                        tokio::spawn(crate::lean::read(ws, dialect, track, move |t| {
                            reader.on_frame(t);
                        }));
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "lean connect failed");
                        false
                    }
                }
            }));
            continue;
        }
        let client = Client::builder(url)
            .local_address(ip)
            .name("herald-bench")
            .min_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .build()?;
        let shared = shared.clone();
        let channel = channel.to_owned();
        tasks.push(tokio::spawn(async move {
            let ok = connect_one(&shared, client, channel).await;
            drop(permit);
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(true)) {
            ok += 1;
        }
    }
    Ok(Ev::Opened {
        ok,
        failed: conns - ok,
        ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Connects, subscribes and spawns the consumer; true once the first subscribe succeeded.
async fn connect_one(shared: &Arc<Shared>, client: Client, channel: String) -> bool {
    if let Err(e) = client.connect().await {
        tracing::warn!(error = %e, "connect failed");
        return false;
    }
    let mut sub = match client
        .subscribe(&channel, SubscribeOptions::default())
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(error = %e, "subscribe failed");
            return false;
        }
    };
    let conn = Arc::new(Conn {
        client,
        track: Mutex::new(Track::default()),
        connected: AtomicBool::new(false),
    });
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let mut first_tx = Some(first_tx);
    shared.conns.lock().push(conn.clone());
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some(ev) = sub.next().await {
            match ev {
                SubscriptionEvent::Publication(p) => shared.on_publication(&conn, p.data.get()),
                SubscriptionEvent::Subscribed {
                    recovered,
                    was_recovering,
                    ..
                } => {
                    conn.connected.store(true, Ordering::Relaxed);
                    if was_recovering {
                        let mut c = shared.counters.lock();
                        c.reconnects += 1;
                        if !recovered {
                            c.not_recovered += 1;
                        }
                    }
                    if let Some(tx) = first_tx.take() {
                        shared.subscribed.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(());
                    }
                }
                SubscriptionEvent::Error { code, message } => {
                    tracing::debug!(code, message, "subscription error");
                }
                _ => {}
            }
        }
    });
    first_rx.await.is_ok()
}

fn disrupt(shared: &Arc<Shared>, every_ms: u64, offline_ms: u64, duration_ms: u64, out: Out) {
    let conns = shared.conns.lock().clone();
    let end = tokio::time::Instant::now() + Duration::from_millis(duration_ms);
    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        tasks.push(tokio::spawn(async move {
            let phase = rand::rng().random_range(0..every_ms.max(1));
            let mut next = tokio::time::Instant::now() + Duration::from_millis(phase);
            loop {
                tokio::time::sleep_until(next).await;
                if tokio::time::Instant::now() >= end {
                    break;
                }
                let jitter = offline_ms / 5;
                let offline = offline_ms - jitter + rand::rng().random_range(0..=2 * jitter);
                drop_for(&conn, Duration::from_millis(offline)).await;
                next += Duration::from_millis(every_ms);
            }
        }));
    }
    tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
        let _ = send(&out, &Ev::DisruptDone).await;
    });
}
