//! Kernel monotonic time → wall-clock time for records.
use chrono::{DateTime, SecondsFormat, Utc};
use nix::time::{ClockId, clock_gettime};

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
        self.wall(mono_ns)
            .to_rfc3339_opts(SecondsFormat::Micros, true)
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

fn ns(ts: nix::sys::time::TimeSpec) -> i128 {
    ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
