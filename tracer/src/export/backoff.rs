//! The waits between retries of a sink (the log-shipper socket, the OTLP exporter): exponential
//! from 100 ms to 5 s, with full jitter above the floor, so that a fleet of agents that lost
//! one Collector or shipper at the same moment does not retry it in lockstep. The first wait is
//! jittered too (100 to 200 ms): a fleet told `Retry-After: 0` at once spreads from the start.
use std::time::Duration;

/// The first wait, and the least any wait is.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait the doubling reaches.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The ceiling of the first wait: even the first retry is jittered above the floor.
pub const FIRST_CEILING: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Backoff {
    /// The ceiling of the next wait: doubles from `FIRST_CEILING` to `BACKOFF_MAX`.
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
            ceiling: FIRST_CEILING,
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
        self.ceiling = FIRST_CEILING;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_between_the_floor_and_a_doubling_ceiling() {
        let mut b = Backoff::with_rng(fastrand::Rng::with_seed(7));
        let ceilings = [200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ceiling in ceilings {
            let w = b.next_wait();
            assert!(
                w >= BACKOFF_MIN && w <= Duration::from_millis(ceiling),
                "{w:?} outside 100 ms..={ceiling} ms"
            );
        }
        b.reset();
        let w = b.next_wait();
        assert!(
            w >= BACKOFF_MIN && w <= FIRST_CEILING,
            "after a reset the first wait is the first step again: {w:?}"
        );
    }

    #[test]
    fn even_the_first_wait_is_jittered() {
        let firsts: std::collections::BTreeSet<Duration> = (0..16)
            .map(|seed| Backoff::with_rng(fastrand::Rng::with_seed(seed)).next_wait())
            .collect();
        assert!(firsts.len() >= 12, "16 agents' first waits: {firsts:?}");
        assert!(
            firsts
                .iter()
                .all(|w| *w >= BACKOFF_MIN && *w <= FIRST_CEILING),
            "{firsts:?}"
        );
    }

    #[test]
    fn two_agents_do_not_retry_in_lockstep() {
        let (mut a, mut b) = (
            Backoff::with_rng(fastrand::Rng::with_seed(1)),
            Backoff::with_rng(fastrand::Rng::with_seed(2)),
        );
        let differ = (0..8).filter(|_| a.next_wait() != b.next_wait()).count();
        assert!(differ >= 7, "only {differ} of 8 waits differed");
    }
}
