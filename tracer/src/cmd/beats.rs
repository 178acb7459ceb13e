//! The commands' periodic beats: a timer that may be off, and awaiting its next tick.
use std::time::Duration;

use tokio::time::{Instant, Interval, interval_at};

/// A periodic timer, or none when `seconds` is 0.
pub fn every(seconds: u64) -> Option<Interval> {
    (seconds > 0).then(|| {
        let period = Duration::from_secs(seconds);
        interval_at(Instant::now() + period, period)
    })
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
