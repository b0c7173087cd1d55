//! The one rate rule every Herald limiter applies: GCRA, a token bucket kept as a single
//! instant (the bucket's "theoretical arrival time"), so a bucket costs one word and a
//! check is two comparisons. The Redis library's `herald_rate` mirrors it.

use std::time::Duration;
use tokio::time::Instant;

/// A rate limit: up to `burst` events at once, refilled at one per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    interval: Duration,
    burst: u32,
}

impl Quota {
    /// `count` events per `period`, with room for `burst` at once (at least 1). `None`
    /// when `count` or `period` is zero: no limit.
    pub fn new(count: u32, period: Duration, burst: u32) -> Option<Self> {
        if count == 0 || period.is_zero() {
            return None;
        }
        Some(Self {
            interval: (period / count).max(Duration::from_nanos(1)),
            burst: burst.max(1),
        })
    }

    /// `n` events per second with a burst of `n`.
    pub fn per_second(n: u32) -> Option<Self> {
        Self::new(n, Duration::from_secs(1), n)
    }

    /// The time one event's token takes to come back.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many events may come at once after a quiet spell.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How far ahead of now a bucket's arrival time may run: the whole burst.
    fn tolerance(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }
}

/// One bucket's state, for one owner (a connection, or a user in the memory broker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When the bucket is full again; `None` (or a past instant) means full now.
    tat: Option<Instant>,
}

impl Bucket {
    /// Takes one token at `now`; `false` (and nothing taken) when the bucket is empty.
    pub fn take(&mut self, quota: &Quota, now: Instant) -> bool {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let next = tat + quota.interval;
        if next.duration_since(now) > quota.tolerance() {
            return false;
        }
        self.tat = Some(next);
        true
    }

    /// Whether the bucket is full at `now` (its state can be forgotten).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_limit() {
        assert_eq!(Quota::per_second(0), None);
        assert_eq!(Quota::new(5, Duration::ZERO, 5), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_interval() {
        let quota = Quota::new(10, Duration::from_secs(1), 3).expect("a limit");
        let mut bucket = Bucket::default();
        let now = Instant::now();
        assert!((0..3).all(|_| bucket.take(&quota, now)));
        assert!(!bucket.take(&quota, now), "the burst is spent");
        assert!(!bucket.take(&quota, now + Duration::from_millis(99)));
        assert!(bucket.take(&quota, now + Duration::from_millis(100)));
        assert!(!bucket.take(&quota, now + Duration::from_millis(100)));
        let later = now + Duration::from_secs(5);
        assert!(bucket.is_full(later));
        assert!(
            (0..3).all(|_| bucket.take(&quota, later)),
            "refilled to the burst, no more"
        );
        assert!(!bucket.take(&quota, later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_rate_at_the_limit_is_never_refused() {
        let quota = Quota::per_second(100).expect("a limit");
        let mut bucket = Bucket::default();
        let start = Instant::now();
        for i in 0..1000u32 {
            assert!(
                bucket.take(&quota, start + Duration::from_millis(10) * i),
                "event {i}"
            );
        }
    }
}
