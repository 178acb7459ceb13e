//! The commands' periodic beats: a timer that may be off, and awaiting its next tick.
use std::time::Duration;

use tokio::time::{Instant, Interval, interval_at};

/// A periodic timer, or none when `seconds` is 0. The flags hold intervals to a day
/// (`analysis::clock::parse_interval`); a period whose first tick would lie past what an
/// `Instant` holds is none too, rather than a panic.
pub fn every(seconds: u64) -> Option<Interval> {
    let period = Duration::from_secs(seconds);
    let start = Instant::now().checked_add(period)?;
    // The timer adds the period to each deadline: room for a few of them.
    start.checked_add(period.checked_mul(4)?)?;
    (seconds > 0).then(|| interval_at(start, period))
}

/// The next tick of `timer`; never when there is none.
pub async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_period_no_instant_holds_is_no_timer_not_a_panic() {
        assert!(every(0).is_none());
        assert!(every(u64::MAX).is_none());
        assert!(every(u64::MAX / 2).is_none());
        assert!(every(86_400).is_some());
    }
}
