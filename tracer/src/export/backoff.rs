//! The waits between retries of a sink (the log-shipper socket, the OTLP exporter): exponential
//! from 100 ms to 5 s, with full jitter above the floor, so that a fleet of agents that lost
//! one Collector or shipper at the same moment does not retry it in lockstep.
use std::time::Duration;

/// The first wait, and the least any wait is.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait the doubling reaches.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Backoff {
    /// The ceiling of the next wait: doubles from `BACKOFF_MIN` to `BACKOFF_MAX`.
    ceiling: Duration,
    rng: fastrand::Rng,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_rng(fastrand::Rng::new())
    }
}

impl Backoff {
    /// A backoff drawing its jitter from `rng` (tests seed it).
    pub fn with_rng(rng: fastrand::Rng) -> Self {
        Self {
            ceiling: BACKOFF_MIN,
            rng,
        }
    }

    /// The next wait: uniform between `BACKOFF_MIN` and the current ceiling, which then doubles
    /// (at most `BACKOFF_MAX`). Never less than the floor: a sink that fails at once cannot spin.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(BACKOFF_MAX);
        let span = u64::try_from((ceiling - BACKOFF_MIN).as_micros()).unwrap_or(u64::MAX);
        BACKOFF_MIN + Duration::from_micros(self.rng.u64(0..=span))
    }

    /// After a success: the next failure starts from the floor again.
    pub fn reset(&mut self) {
        self.ceiling = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_between_the_floor_and_a_doubling_ceiling() {
        let mut b = Backoff::with_rng(fastrand::Rng::with_seed(7));
        let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ceiling in ceilings {
            let w = b.next_wait();
            assert!(
                w >= BACKOFF_MIN && w <= Duration::from_millis(ceiling),
                "{w:?} outside 100 ms..={ceiling} ms"
            );
        }
        b.reset();
        assert_eq!(
            b.next_wait(),
            BACKOFF_MIN,
            "the first wait after a reset is the floor"
        );
    }

    #[test]
    fn two_agents_do_not_retry_in_lockstep() {
        let (mut a, mut b) = (
            Backoff::with_rng(fastrand::Rng::with_seed(1)),
            Backoff::with_rng(fastrand::Rng::with_seed(2)),
        );
        let _ = (a.next_wait(), b.next_wait());
        let differ = (0..8).filter(|_| a.next_wait() != b.next_wait()).count();
        assert!(differ >= 7, "only {differ} of 8 waits differed");
    }
}
