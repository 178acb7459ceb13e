//! Per-destination windows: what happened to the connections to each (ip, port) in the last
//! window, and a verdict. Pure: outcomes and the clock (kernel monotonic ns) come in, summaries
//! come out; no I/O, no aya, no tokio.
//!
//! A destination's window counts connect attempts (successes plus failures of the connect
//! phase), each failure label (including failures of connections established earlier), SYN
//! retransmissions, connect latency (HDR histogram, allocated only while the window has
//! successes), the processes making the attempts, and the run of consecutive failures.
//! Destinations are capped; the least recently active is evicted, and counted.
use std::{net::SocketAddr, num::NonZeroUsize, sync::Arc};

use foldhash::fast::RandomState;

use hdrhistogram::Histogram;
use lru::LruCache;

use crate::{
    analysis::outcome::Answer,
    analysis::outcome::{Direction, Label, Outcome},
};

/// Failure labels counted per destination, in output order.
pub const FAILURE_LABELS: [Label; 8] = [
    Label::Refused,
    Label::SynTimeout,
    Label::DroppedKeepalive,
    Label::Unreachable,
    Label::Reset,
    Label::RtoTimeout,
    Label::NoLocalPort,
    Label::BlockedLocally,
];

/// How many processes a summary names.
pub const TOP_PROCESSES: usize = 5;
/// How many distinct processes a window remembers per destination (the rest count as other).
const PROCESS_SLOTS: usize = 64;
/// Latency histogram range: 1 µs to 10 min, 2 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Refusing,
    Blackholed,
    Flaky,
    Unreachable,
    IdleDrops,
    Resetting,
    /// This host ran out of local ports for the destination (a cause on this host).
    PortExhausted,
    /// A local policy on this host refuses the destination.
    BlockedLocally,
    /// Nothing failed, but established connections to it were warned about (`at_risk`), as
    /// many or more than in the previous window: the path is getting worse.
    Degrading,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Refusing => "refusing",
            Verdict::Blackholed => "blackholed",
            Verdict::Flaky => "flaky",
            Verdict::Unreachable => "unreachable",
            Verdict::IdleDrops => "idle_drops",
            Verdict::Resetting => "resetting",
            Verdict::PortExhausted => "port_exhausted",
            Verdict::BlockedLocally => "blocked_locally",
            Verdict::Degrading => "degrading",
        }
    }
}

/// A process seen connecting to a destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    /// Its cgroup: the workload it belongs to (`workload::Workloads`).
    pub cgroup_id: u64,
    /// The task name as the kernel gave it (see `record::comm`).
    pub comm: [u8; 16],
}

/// Connect latency quantiles of a window, ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One destination's window, closed.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub dst: SocketAddr,
    /// Start and end of the window (kernel monotonic ns).
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    pub attempts: u64,
    pub connected: u64,
    pub cancelled: u64,
    /// Count per label of `FAILURE_LABELS`, same order.
    pub failures: [u64; FAILURE_LABELS.len()],
    pub syn_retransmits: u64,
    pub connect_ms: Option<Latency>,
    /// Most attempts first, at most `TOP_PROCESSES`.
    pub top_processes: Vec<(ProcessKey, u64)>,
    pub first_failure_ns: Option<u64>,
    pub last_failure_ns: Option<u64>,
    /// Consecutive failures at the end of the window (carries over windows until a success).
    pub failure_streak: u64,
    /// The longest run of consecutive failures within the window.
    pub longest_streak: u64,
    /// `at_risk` warnings about connections to it in the window.
    pub at_risk: u64,
    pub verdict: Verdict,
    /// The latest DNS answer that gave this address, among the window's outcomes.
    pub dns: Option<Arc<Answer>>,
}

impl Summary {
    pub fn failure_count(&self, label: Label) -> u64 {
        FAILURE_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.failures[i])
    }
}

#[derive(Default)]
struct Window {
    attempts: u64,
    connected: u64,
    cancelled: u64,
    failures: [u64; FAILURE_LABELS.len()],
    syn_retransmits: u64,
    /// Boxed: most destinations never connect in a window, and an inline histogram would add
    /// its size to every one of them.
    latency_us: Option<Box<Histogram<u32>>>,
    /// (process, attempts), searched linearly: a destination rarely has more than a few, and a
    /// vector of one costs a tenth of the smallest hash table (this is per destination).
    processes: Vec<(ProcessKey, u64)>,
    first_failure_ns: Option<u64>,
    last_failure_ns: Option<u64>,
    longest_streak: u64,
    at_risk: u64,
    dns: Option<Arc<Answer>>,
}

impl Window {
    fn active(&self) -> bool {
        self.attempts > 0
            || self.cancelled > 0
            || self.at_risk > 0
            || self.failures.iter().any(|&n| n > 0)
    }
}

struct Destination {
    window: Window,
    /// Consecutive failures, across windows, until a success.
    streak: u64,
    /// `at_risk` warnings of the previous window.
    at_risk_before: u64,
}

/// The aggregator. `record` outcomes as they come; `close_window` at each window's end.
pub struct Aggregator {
    destinations: LruCache<SocketAddr, Destination, RandomState>,
    window_start_ns: u64,
    /// Destinations evicted because the cap was reached.
    pub evicted: u64,
}

impl Aggregator {
    /// `max_destinations` ≥ 1; `now_ns` starts the first window.
    pub fn new(max_destinations: NonZeroUsize, now_ns: u64) -> Self {
        Self {
            destinations: LruCache::with_hasher(max_destinations, RandomState::default()),
            window_start_ns: now_ns,
            evicted: 0,
        }
    }

    /// Destinations currently held.
    pub fn len(&self) -> usize {
        self.destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// Counts one outcome. Inbound refusals are about this host's ports, not a destination it
    /// connects to, and are not aggregated.
    pub fn record(&mut self, o: &Outcome) {
        if o.direction == Direction::Inbound {
            return;
        }
        let dst = o.conn.dst;
        if !self.destinations.contains(&dst)
            && self.destinations.len() == self.destinations.cap().get()
        {
            self.evicted += 1;
        }
        let d = self.destinations.get_or_insert_mut(dst, || Destination {
            window: Window::default(),
            streak: 0,
            at_risk_before: 0,
        });
        let w = &mut d.window;
        if let Some(a) = &o.evidence.dns {
            w.dns = Some(a.clone());
        }
        let connect_phase = o.evidence.connection_age_ms.is_none();
        match o.label {
            Label::Connected => {
                w.attempts += 1;
                w.connected += 1;
                w.syn_retransmits += u64::from(o.evidence.syn_retransmits);
                let us = ((o.evidence.elapsed_ms * 1000.0) as u64).clamp(1, LATENCY_MAX_US);
                let h = w.latency_us.get_or_insert_with(|| {
                    Box::new(
                        Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
                            .expect("valid histogram bounds"),
                    )
                });
                h.saturating_record(us);
                d.streak = 0;
                count_process(w, o);
            }
            Label::Cancelled => {
                w.cancelled += 1;
                count_process(w, o);
            }
            Label::AtRisk => w.at_risk += 1,
            Label::Recovered => {}
            label => {
                if let Some(i) = FAILURE_LABELS.iter().position(|l| *l == label) {
                    w.failures[i] += 1;
                }
                if connect_phase {
                    w.attempts += 1;
                    w.syn_retransmits += u64::from(o.evidence.syn_retransmits);
                    count_process(w, o);
                }
                w.first_failure_ns.get_or_insert(o.at_ns);
                w.last_failure_ns = Some(o.at_ns);
                d.streak += 1;
                w.longest_streak = w.longest_streak.max(d.streak);
            }
        }
    }

    /// Ends the window at `now_ns`: a summary per destination active in it (most failures
    /// first), and a fresh window for all.
    pub fn close_window(&mut self, now_ns: u64) -> Vec<Summary> {
        let mut out = Vec::new();
        self.close_window_each(now_ns, |s| out.push(s));
        out
    }

    /// `close_window`, handing each summary to `each` as it is made: only the order (40 bytes a
    /// destination) is held at once, not every summary, however many destinations there are.
    pub fn close_window_each(&mut self, now_ns: u64, mut each: impl FnMut(Summary)) {
        let start = std::mem::replace(&mut self.window_start_ns, now_ns);
        let mut order: Vec<(u64, SocketAddr)> = self
            .destinations
            .iter()
            .filter(|(_, d)| d.window.active())
            .map(|(dst, d)| (d.window.failures.iter().sum(), *dst))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, dst) in order {
            if let Some(d) = self.destinations.peek_mut(&dst) {
                // An inactive window is already empty; this one starts afresh.
                let w = std::mem::take(&mut d.window);
                let before = std::mem::replace(&mut d.at_risk_before, w.at_risk);
                each(summarize(dst, w, d.streak, before, start, now_ns));
            }
        }
    }
}

fn count_process(w: &mut Window, o: &Outcome) {
    let key = ProcessKey {
        pid: o.conn.pid,
        cgroup_id: o.conn.cgroup_id,
        comm: o.conn.comm,
    };
    if let Some((_, n)) = w.processes.iter_mut().find(|(k, _)| *k == key) {
        *n += 1;
    } else if w.processes.len() < PROCESS_SLOTS {
        w.processes.push((key, 1));
    }
}

fn summarize(
    dst: SocketAddr,
    w: Window,
    streak: u64,
    at_risk_before: u64,
    start: u64,
    end: u64,
) -> Summary {
    let connect_ms = w.latency_us.as_ref().map(|h| Latency {
        p50: h.value_at_quantile(0.50) as f64 / 1000.0,
        p90: h.value_at_quantile(0.90) as f64 / 1000.0,
        p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        max: h.max() as f64 / 1000.0,
    });
    let mut top = w.processes;
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_PROCESSES);
    let verdict = match verdict(&w.failures, w.connected) {
        Verdict::Healthy if w.at_risk > 0 && w.at_risk >= at_risk_before => Verdict::Degrading,
        v => v,
    };
    Summary {
        dst,
        window_start_ns: start,
        window_end_ns: end,
        attempts: w.attempts,
        connected: w.connected,
        cancelled: w.cancelled,
        failures: w.failures,
        syn_retransmits: w.syn_retransmits,
        connect_ms,
        top_processes: top,
        first_failure_ns: w.first_failure_ns,
        last_failure_ns: w.last_failure_ns,
        failure_streak: streak,
        longest_streak: w.longest_streak,
        at_risk: w.at_risk,
        verdict,
        dns: w.dns,
    }
}

/// The verdict rules. Causes on this host decide first, even when some connects succeed (port
/// exhaustion is intermittent by nature): `port_exhausted`, `blocked_locally`, by the more
/// frequent. Then connect-phase failures: all attempts failing is `refusing`, `blackholed` or
/// `unreachable` by the most frequent label; some failing is `flaky`. Otherwise failures of
/// established connections: `idle_drops`, `resetting`, or `flaky` for RTO deaths.
pub fn verdict(failures: &[u64; FAILURE_LABELS.len()], connected: u64) -> Verdict {
    let n = |label: Label| {
        FAILURE_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| failures[i])
    };
    let (no_port, blocked) = (n(Label::NoLocalPort), n(Label::BlockedLocally));
    if no_port + blocked > 0 {
        return if no_port >= blocked {
            Verdict::PortExhausted
        } else {
            Verdict::BlockedLocally
        };
    }
    let (refused, syn, unreach) = (
        n(Label::Refused),
        n(Label::SynTimeout),
        n(Label::Unreachable),
    );
    let connect_failures = refused + syn + unreach;
    if connect_failures > 0 {
        if connected > 0 {
            return Verdict::Flaky;
        }
        return if refused >= syn && refused >= unreach {
            Verdict::Refusing
        } else if syn >= unreach {
            Verdict::Blackholed
        } else {
            Verdict::Unreachable
        };
    }
    let (idle, reset, rto) = (
        n(Label::DroppedKeepalive),
        n(Label::Reset),
        n(Label::RtoTimeout),
    );
    if idle + reset + rto == 0 {
        Verdict::Healthy
    } else if idle >= reset && idle >= rto {
        Verdict::IdleDrops
    } else if reset >= rto {
        Verdict::Resetting
    } else {
        Verdict::Flaky
    }
}

#[cfg(test)]
mod tests;
