//! Tells, on stderr, when records start being lost, at most every `REPEAT_NS` while it lasts,
//! and when it stops: pure (totals and clock are passed in), checked once a second by `run`.
//! The exact counts are always in the `stats` records; these lines are for a human watching.

/// While loss goes on, repeat the warning at most this often.
pub const REPEAT_NS: u64 = 10_000_000_000;

/// Running totals of everything that was not delivered, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossTotals {
    /// Records the kernel could not put in the ring buffer (it was full).
    pub ring_full: u64,
    /// Of those, records that ended a connection.
    pub connections: u64,
    /// Tracepoint hits the kernel skipped (another BPF program was running on that CPU).
    pub skipped: u64,
    /// Records userspace could not decode.
    pub undecodable: u64,
    /// Lines output sinks could not deliver.
    pub output: u64,
}

impl LossTotals {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            ring_full: self.ring_full.saturating_sub(earlier.ring_full),
            connections: self.connections.saturating_sub(earlier.connections),
            skipped: self.skipped.saturating_sub(earlier.skipped),
            undecodable: self.undecodable.saturating_sub(earlier.undecodable),
            output: self.output.saturating_sub(earlier.output),
        }
    }

    fn any(&self) -> bool {
        self.ring_full + self.skipped + self.undecodable + self.output > 0
    }

    /// "1200 records lost in the kernel (ring buffer full; 800 ended a connection), …"
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.ring_full > 0 {
            parts.push(format!(
                "{} records lost in the kernel (ring buffer full; {} of them ended a connection)",
                self.ring_full, self.connections
            ));
        }
        if self.skipped > 0 {
            parts.push(format!(
                "{} tracepoint hits skipped by the kernel (another BPF program was running on that CPU)",
                self.skipped
            ));
        }
        if self.undecodable > 0 {
            parts.push(format!("{} undecodable records", self.undecodable));
        }
        if self.output > 0 {
            parts.push(format!(
                "{} lines the outputs could not deliver",
                self.output
            ));
        }
        parts.join(", ")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Loss began, or goes on (a warning).
    Losing(String),
    /// Loss ended (information).
    Stopped(String),
}

pub struct LossMonitor {
    last: LossTotals,
    /// When the current episode began and the totals before it.
    episode: Option<(u64, LossTotals)>,
    last_warning_ns: u64,
    /// What to suggest when the ring buffer overflows.
    advice: String,
}

impl LossMonitor {
    /// `ring_buffer_kib`: the current size, named in the advice.
    pub fn new(ring_buffer_kib: u32) -> Self {
        Self {
            last: LossTotals::default(),
            episode: None,
            last_warning_ns: 0,
            advice: format!(
                "the reader fell behind: raise --ring-buffer-kib (now {ring_buffer_kib}) or narrow what is traced with --port/--dst/--pid/--comm"
            ),
        }
    }

    /// Compares `totals` with the previous check at `now_ns`; says something when loss starts,
    /// every `REPEAT_NS` while it goes on, and when a check finds none.
    pub fn check(&mut self, now_ns: u64, totals: LossTotals) -> Option<Notice> {
        let new = totals.since(&self.last);
        let before = std::mem::replace(&mut self.last, totals);
        match self.episode {
            None if new.any() => {
                self.episode = Some((now_ns, before));
                self.last_warning_ns = now_ns;
                Some(Notice::Losing(self.explain("losing data", &new)))
            }
            Some((since, first)) if new.any() => {
                if now_ns.saturating_sub(self.last_warning_ns) < REPEAT_NS {
                    return None;
                }
                self.last_warning_ns = now_ns;
                let secs = now_ns.saturating_sub(since) / 1_000_000_000;
                Some(Notice::Losing(self.explain(
                    &format!("still losing data ({secs} s so far)"),
                    &totals.since(&first),
                )))
            }
            Some((since, first)) => {
                self.episode = None;
                let secs = now_ns.saturating_sub(since) as f64 / 1e9;
                Some(Notice::Stopped(format!(
                    "data loss stopped after {secs:.0} s: {} in all (exact counts in the stats records)",
                    totals.since(&first).describe()
                )))
            }
            None => None,
        }
    }

    fn explain(&self, what: &str, lost: &LossTotals) -> String {
        let mut msg = format!("{what}: {}", lost.describe());
        if lost.ring_full > 0 {
            msg.push_str("; ");
            msg.push_str(&self.advice);
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ring(n: u64) -> LossTotals {
        LossTotals {
            ring_full: n,
            connections: n / 2,
            ..LossTotals::default()
        }
    }

    #[test]
    fn silent_while_nothing_is_lost() {
        let mut m = LossMonitor::new(8192);
        for t in 0..100 {
            assert_eq!(m.check(t * S, LossTotals::default()), None);
        }
    }

    #[test]
    fn warns_when_loss_starts_repeats_at_most_every_ten_seconds_and_says_when_it_stops() {
        let mut m = LossMonitor::new(64);
        assert_eq!(m.check(S, ring(0)), None);
        let Some(Notice::Losing(first)) = m.check(2 * S, ring(100)) else {
            panic!("no warning at the start");
        };
        assert!(first.contains("100 records lost"), "{first}");
        assert!(first.contains("50 of them ended a connection"), "{first}");
        assert!(first.contains("--ring-buffer-kib (now 64)"), "{first}");
        // Loss goes on every second: quiet until 10 s after the first warning.
        for t in 3..12 {
            assert_eq!(m.check(t * S, ring(100 * t)), None, "at {t} s");
        }
        let Some(Notice::Losing(again)) = m.check(12 * S, ring(1200)) else {
            panic!("no repeat after 10 s");
        };
        assert!(again.contains("still losing data (10 s so far)"), "{again}");
        assert!(again.contains("1200 records lost"), "{again}");
        let Some(Notice::Stopped(done)) = m.check(13 * S, ring(1200)) else {
            panic!("no notice when it stopped");
        };
        assert!(done.contains("stopped after 11 s"), "{done}");
        assert!(done.contains("1200 records lost"), "{done}");
        assert_eq!(m.check(14 * S, ring(1200)), None);
        // A new episode warns at once.
        assert!(matches!(
            m.check(15 * S, ring(1201)),
            Some(Notice::Losing(_))
        ));
    }

    #[test]
    fn names_each_cause() {
        let mut m = LossMonitor::new(8192);
        let all = LossTotals {
            ring_full: 0,
            connections: 0,
            skipped: 3,
            undecodable: 2,
            output: 1,
        };
        let Some(Notice::Losing(msg)) = m.check(S, all) else {
            panic!("no warning");
        };
        assert!(msg.contains("3 tracepoint hits skipped"), "{msg}");
        assert!(msg.contains("2 undecodable records"), "{msg}");
        assert!(
            msg.contains("1 lines the outputs could not deliver"),
            "{msg}"
        );
        assert!(!msg.contains("--ring-buffer-kib"), "{msg}");
    }
}
