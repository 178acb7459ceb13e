//! Kernel monotonic time → wall-clock time for records; the intervals flags take.
use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use nix::time::{ClockId, clock_gettime};
use serde::{Serialize, Serializer};

/// An instant that prints (and serializes) as RFC 3339 UTC with microseconds,
/// `2026-11-24T05:44:52.123456Z`, straight into the output without an intermediate string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Nanoseconds since the Unix epoch (0 before it).
    pub fn unix_nanos(&self) -> u64 {
        self.0
            .timestamp_nanos_opt()
            .map_or(0, |n| u64::try_from(n).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            // A leap second shows as 60 s in chrono's nanoseconds: keep six digits.
            (t.nanosecond() % 1_000_000_000) / 1_000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Maps `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to UTC, sampled once (call `resync` to follow
/// wall-clock steps).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// realtime − monotonic, ns.
    offset_ns: i128,
}

impl WallClock {
    pub fn sample() -> Self {
        let mono = ns(clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC"));
        let real = ns(clock_gettime(ClockId::CLOCK_REALTIME).expect("CLOCK_REALTIME"));
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock with a fixed offset, for tests.
    pub fn with_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn resync(&mut self) {
        *self = Self::sample();
    }

    pub fn wall(&self, mono_ns: u64) -> DateTime<Utc> {
        let t = mono_ns as i128 + self.offset_ns;
        DateTime::from_timestamp_nanos(t.clamp(0, i64::MAX as i128) as i64)
    }

    /// RFC 3339, UTC, microseconds: `2026-11-24T05:44:52.123456Z`.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        self.timestamp(mono_ns).to_string()
    }

    /// The wall-clock time of `mono_ns`, to serialize without building a string.
    pub fn timestamp(&self, mono_ns: u64) -> Timestamp {
        Timestamp(self.wall(mono_ns))
    }

    /// The current monotonic time, ns.
    pub fn now_mono_ns() -> u64 {
        ns(clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC")) as u64
    }
}

/// The kernel's tick rate (CONFIG_HZ): the resolution of the coarse clocks is one jiffy.
pub fn kernel_hz() -> u32 {
    match nix::time::clock_getres(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(res) if ns(res) > 0 => (1_000_000_000 / ns(res)) as u32,
        _ => 1000,
    }
}

/// The longest interval a flag takes, in seconds: a day.
pub const MAX_INTERVAL_S: u64 = 86_400;

/// An interval flag's value (`--stats-interval`, `--summary-interval`,
/// `--otlp-metrics-interval`): whole seconds from 0 (off) to `MAX_INTERVAL_S`. Any other text,
/// a negative, fractional or huge number included, is refused with the accepted range, so that
/// no interval reaches a timer that would overflow.
pub fn parse_interval(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= MAX_INTERVAL_S => Ok(n),
        _ => Err(format!(
            "`{}`: expected whole seconds from 0 (off) to {MAX_INTERVAL_S} (a day), e.g. 10",
            crate::analysis::escape::escape(s)
        )),
    }
}

fn ns(ts: nix::sys::time::TimeSpec) -> i128 {
    ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_whole_seconds_up_to_a_day() {
        for (s, want) in [("0", Some(0)), ("10", Some(10)), ("86400", Some(86_400))] {
            assert_eq!(parse_interval(s).ok(), want, "{s}");
        }
        for bad in [
            "86401",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "-1",
            "",
            " 5",
            "1.5",
            "1e3",
            "10s",
            "1\ntracer: error: forged",
        ] {
            let e = parse_interval(bad).unwrap_err();
            assert!(e.contains("from 0 (off) to 86400"), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{bad:?}: {e}");
        }
    }

    #[test]
    fn kernel_hz_is_a_known_tick_rate() {
        assert!(
            [100, 250, 300, 1000].contains(&kernel_hz()),
            "{}",
            kernel_hz()
        );
    }

    #[test]
    fn formats_rfc3339_utc_micros() {
        let c = WallClock::with_offset_ns(1_700_000_000_000_000_000);
        assert_eq!(c.rfc3339(123_456_789), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn timestamps_match_chronos_rfc3339_across_years_and_in_json() {
        let c = WallClock::with_offset_ns(0);
        // From 1970 to 2100 in uneven steps (leap years, month ends, sub-microsecond parts).
        let mut t: u64 = 0;
        while t < 4_102_444_800_000_000_000 {
            let want = c
                .wall(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(c.timestamp(t).to_string(), want, "at {t} ns");
            t += 86_399_999_999_937 + t / 1000;
        }
        let json = serde_json::to_string(&c.timestamp(1_000_000_001_000)).unwrap();
        assert_eq!(json, "\"1970-01-01T00:16:40.000001Z\"");
    }
}
