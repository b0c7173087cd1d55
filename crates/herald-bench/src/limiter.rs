//! `herald-bench limiter`: what a rate-limit check costs. The per-connection bucket (the
//! allowed and the refused path, clock read included, as the connection task pays it)
//! and the per-user limiter's round trip to Redis (`FCALL herald_rate`), one at a time
//! and with several in flight.

use anyhow::Context as _;
use herald_broker::{Broker, Bucket, Quota};
use herald_redis::{RedisBroker, RedisConfig};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Arguments of `limiter`.
#[derive(Debug, clap::Args)]
pub(crate) struct LimiterArgs {
    /// Checks of the in-process bucket per path.
    #[arg(long, default_value_t = 10_000_000)]
    checks: u32,
    /// Round trips to Redis (0 = skip Redis).
    #[arg(long, default_value_t = 20_000)]
    round_trips: u32,
    /// The Redis to measure against (a scratch one: it writes a few keys).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Round trips in flight at once, for the concurrent measurement.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
}

fn per_check(elapsed: Duration, n: u32) -> f64 {
    elapsed.as_secs_f64() * 1e9 / f64::from(n.max(1))
}

/// Times the bucket's allowed and refused paths.
// The measurements are this command's output.
#[allow(clippy::print_stdout)]
fn bucket(checks: u32) -> anyhow::Result<()> {
    let open = Quota::new(u32::MAX, Duration::from_secs(1), u32::MAX).context("a quota")?;
    let mut bucket = Bucket::default();
    let start = Instant::now();
    let mut allowed = 0u32;
    for _ in 0..checks {
        allowed += u32::from(black_box(&mut bucket).take(&open, tokio::time::Instant::now()));
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(allowed == checks, "the open bucket refused");
    println!(
        "bucket, allowed:  {:>8.1} ns/check ({checks} checks)",
        per_check(elapsed, checks)
    );

    let shut = Quota::new(1, Duration::from_secs(3600), 1).context("a quota")?;
    let mut bucket = Bucket::default();
    bucket.take(&shut, tokio::time::Instant::now());
    let start = Instant::now();
    let mut refused = 0u32;
    for _ in 0..checks {
        refused += u32::from(!black_box(&mut bucket).take(&shut, tokio::time::Instant::now()));
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(refused == checks, "the spent bucket allowed");
    println!(
        "bucket, refused:  {:>8.1} ns/check ({checks} checks)",
        per_check(elapsed, checks)
    );
    Ok(())
}

/// Times the per-user limiter's round trip.
#[allow(clippy::print_stdout)]
async fn redis(args: &LimiterArgs) -> anyhow::Result<()> {
    let config = RedisConfig {
        url: args.redis_url.clone(),
        prefix: format!("herald-bench-{}", std::process::id()),
        ..RedisConfig::default()
    };
    let broker = RedisBroker::connect(config)
        .await
        .with_context(|| format!("connecting to {}", args.redis_url))?;
    let quota = Quota::new(u32::MAX, Duration::from_secs(1), u32::MAX).context("a quota")?;
    // Warm up the connection and the function cache.
    for _ in 0..100 {
        broker.take_user_publish("bench-warmup", quota).await?;
    }
    let n = args.round_trips;
    let start = Instant::now();
    for i in 0..n {
        let user = format!("bench-{}", i % 1000);
        anyhow::ensure!(broker.take_user_publish(&user, quota).await?, "refused");
    }
    let elapsed = start.elapsed();
    println!(
        "redis, one at a time: {:>8.1} µs/check ({n} round trips)",
        per_check(elapsed, n) / 1000.0
    );

    let in_flight = args.concurrency.max(1);
    let start = Instant::now();
    let mut done = 0u32;
    while done < n {
        let batch: Vec<_> = (0..in_flight)
            .map(|k| {
                let user = format!("bench-{}", (done + k) % 1000);
                let broker = &broker;
                async move { broker.take_user_publish(&user, quota).await }
            })
            .collect();
        for r in futures_util::future::join_all(batch).await {
            anyhow::ensure!(r?, "refused");
        }
        done += in_flight;
    }
    let elapsed = start.elapsed();
    println!(
        "redis, {in_flight} in flight:     {:>8.1} µs/check, {:.0} checks/s ({done} round trips)",
        per_check(elapsed, done) / 1000.0,
        f64::from(done) / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Runs the measurements and prints them.
pub(crate) async fn run(args: LimiterArgs) -> anyhow::Result<()> {
    bucket(args.checks)?;
    if args.round_trips > 0 {
        redis(&args).await?;
    }
    Ok(())
}
