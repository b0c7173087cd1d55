//! Full-jitter exponential backoff between reconnect (and resubscribe) attempts.

use rand::Rng;
use std::time::Duration;

/// Attempt counter and delay range. Full jitter spreads a crowd of clients that lost the
/// same server over the whole window instead of having them retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniform in `0..=min(max, base * 2^attempt)`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::rng())
    }

    pub(crate) fn next_delay_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let cap = self.cap();
        // Past 2^31 the window is pinned at `max` anyway; capping the counter keeps the
        // shift from overflowing on a client that retries for days.
        self.attempt = self.attempt.saturating_add(1).min(32);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=cap_ms))
    }

    /// The upper bound of the window for the current attempt.
    pub(crate) fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Starts over after a healthy connection.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn window_doubles_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(20));
        let mut rng = StdRng::seed_from_u64(7);
        let caps: Vec<u64> = (0..10)
            .map(|_| {
                let cap = b.cap();
                let d = b.next_delay_with(&mut rng);
                assert!(d <= cap, "{d:?} > {cap:?}");
                u64::try_from(cap.as_millis()).expect("small")
            })
            .collect();
        assert_eq!(
            caps,
            [
                500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000
            ]
        );
    }

    #[test]
    fn delays_stay_in_bounds_for_many_attempts() {
        let max = Duration::from_secs(20);
        let mut b = Backoff::new(Duration::from_millis(500), max);
        let mut rng = StdRng::seed_from_u64(1);
        let mut saw_small = false;
        let mut saw_large = false;
        for _ in 0..10_000 {
            let d = b.next_delay_with(&mut rng);
            assert!(d <= max);
            saw_small |= d < Duration::from_secs(1);
            saw_large |= d > Duration::from_secs(15);
        }
        // Full jitter: the whole window is used, not just its top.
        assert!(saw_small && saw_large);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(b.cap(), Duration::from_millis(5000));
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(100));
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn max_below_base_is_clamped() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!(b.next_delay() <= Duration::from_secs(2));
    }
}
