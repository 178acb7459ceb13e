//! Tells, on stderr, when records start being lost, at most every `REPEAT_NS` while it lasts,
//! and when it stops: pure (totals and clock are passed in), checked once a second by `run`.
//! The exact counts are always in the `stats` records; these lines are for a human watching.
//! What counts as a loss, and how it is named, is in the counter tables (`CounterSpec::loss`).
use tracer_common::{Counter, CounterSpec, Loss};

use crate::export::counters::{self, Totals};

/// While loss goes on, repeat the warning at most this often.
pub const REPEAT_NS: u64 = 10_000_000_000;

/// What was not delivered between two totals: the growth of each counter with a part in the
/// loss warnings (`CounterSpec::loss`), in table order.
struct Lost(Vec<(&'static CounterSpec, u64)>);

impl Lost {
    fn between(earlier: &Totals, later: &Totals) -> Self {
        Self(
            counters::entries()
                .filter(|e| e.spec.loss != Loss::None)
                .map(|e| (e.spec, e.value(later).saturating_sub(e.value(earlier))))
                .collect(),
        )
    }

    /// Whether anything was lost (parts are counted in their cause already).
    fn any(&self) -> bool {
        self.0
            .iter()
            .any(|(s, n)| matches!(s.loss, Loss::Cause { .. }) && *n > 0)
    }

    /// Records the ring buffer had no room for.
    fn ring_full(&self) -> u64 {
        self.0
            .iter()
            .find(|(s, _)| s.name == Counter::Lost.spec().name)
            .map_or(0, |(_, n)| *n)
    }

    /// "1200 records lost in the kernel (ring buffer full; 800 of them ended a connection), …"
    fn describe(&self) -> String {
        let mut phrases = Vec::new();
        for (spec, n) in &self.0 {
            let Loss::Cause { what, why } = spec.loss else {
                continue;
            };
            if *n == 0 {
                continue;
            }
            let details: Vec<String> = why
                .map(str::to_string)
                .into_iter()
                .chain(self.0.iter().filter_map(|(part, m)| match part.loss {
                    Loss::Part { of, what } if of == spec.name => {
                        Some(format!("{m} of them {what}"))
                    }
                    _ => None,
                }))
                .collect();
            phrases.push(if details.is_empty() {
                format!("{n} {what}")
            } else {
                format!("{n} {what} ({})", details.join("; "))
            });
        }
        phrases.join(", ")
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
    last: Totals,
    /// When the current episode began and the totals before it.
    episode: Option<(u64, Totals)>,
    last_warning_ns: u64,
    /// When a check last found new loss.
    last_loss_ns: Option<u64>,
    /// What to suggest when the ring buffer overflows.
    advice: String,
}

impl LossMonitor {
    /// `ring_buffer_kib`: the current size, named in the advice.
    pub fn new(ring_buffer_kib: u32) -> Self {
        Self {
            last: Totals::default(),
            episode: None,
            last_warning_ns: 0,
            last_loss_ns: None,
            advice: format!(
                "the reader fell behind: raise --ring-buffer-kib (now {ring_buffer_kib}) or narrow what is traced with --port/--dst/--pid/--comm"
            ),
        }
    }

    /// Compares `totals` with the previous check at `now_ns`; says something when loss starts,
    /// every `REPEAT_NS` while it goes on, and when a check finds none.
    pub fn check(&mut self, now_ns: u64, totals: Totals) -> Option<Notice> {
        let new = Lost::between(&self.last, &totals);
        let before = std::mem::replace(&mut self.last, totals);
        if new.any() {
            self.last_loss_ns = Some(now_ns);
        }
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
                    &Lost::between(&first, &totals),
                )))
            }
            Some((since, first)) => {
                self.episode = None;
                let secs = now_ns.saturating_sub(since) as f64 / 1e9;
                Some(Notice::Stopped(format!(
                    "data loss stopped after {secs:.0} s: {} in all (exact counts in the stats records)",
                    Lost::between(&first, &totals).describe()
                )))
            }
            None => None,
        }
    }

    /// When a check last found new loss, if ever.
    pub fn last_loss_ns(&self) -> Option<u64> {
        self.last_loss_ns
    }

    fn explain(&self, what: &str, lost: &Lost) -> String {
        let mut msg = format!("{what}: {}", lost.describe());
        if lost.ring_full() > 0 {
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

    fn ring(n: u64) -> Totals {
        let mut t = Totals::default();
        t.kernel[Counter::Lost] = n;
        t.kernel[Counter::LostConnections] = n / 2;
        t
    }

    #[test]
    fn silent_while_nothing_is_lost() {
        let mut m = LossMonitor::new(8192);
        for t in 0..100 {
            assert_eq!(m.check(t * S, Totals::default()), None);
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
    fn says_all_causes_in_one_line() {
        let mut m = LossMonitor::new(64);
        let mut all = ring(1200);
        all.kernel[Counter::LostConnections] = 800;
        all.kernel.skipped = 3;
        all.decode_errors = 2;
        all.output_dropped = 1;
        assert_eq!(
            m.check(S, all),
            Some(Notice::Losing(
                "losing data: 1200 records lost in the kernel (ring buffer full; 800 of them ended \
                 a connection), 3 tracepoint hits skipped by the kernel (another BPF program was \
                 running on that CPU), 2 undecodable records, 1 lines the outputs could not \
                 deliver; the reader fell behind: raise --ring-buffer-kib (now 64) or narrow what \
                 is traced with --port/--dst/--pid/--comm"
                    .into()
            ))
        );
    }

    #[test]
    fn names_each_cause() {
        let mut m = LossMonitor::new(8192);
        let mut all = Totals {
            decode_errors: 2,
            output_dropped: 1,
            ..Totals::default()
        };
        all.kernel.skipped = 3;
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
