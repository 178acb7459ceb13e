//! Synthetic outcomes through the aggregator, with an injected clock.
use super::*;
use crate::analysis::outcome::{Connection, Evidence};

const S: u64 = 1_000_000_000;

fn raw_comm(comm: &str) -> [u8; 16] {
    let mut raw = [0; 16];
    raw[..comm.len()].copy_from_slice(comm.as_bytes());
    raw
}

fn conn(dst: &str, pid: u32, comm: &str) -> Connection {
    let mut c = Outcome::example(dst, Label::Connected).conn;
    c.pid = pid;
    c.comm = raw_comm(comm);
    c
}

fn outcome(dst: &str, label: Label, at_s: u64) -> Outcome {
    let established = matches!(
        label,
        Label::Reset | Label::RtoTimeout | Label::DroppedKeepalive
    );
    Outcome {
        label,
        direction: Direction::Outbound,
        conn: conn(dst, 7, "app"),
        at_ns: at_s * S,
        errno: None,
        evidence: Evidence {
            connection_age_ms: established.then_some(1000.0),
            ..Evidence::default()
        },
    }
}

fn success(dst: &str, latency_ms: f64, syn_retransmits: u16) -> Outcome {
    let mut o = outcome(dst, Label::Connected, 1);
    o.evidence.elapsed_ms = latency_ms;
    o.evidence.syn_retransmits = syn_retransmits;
    o
}

fn agg() -> Aggregator {
    Aggregator::new(NonZeroUsize::new(100).unwrap(), 0)
}

#[test]
fn a_window_counts_attempts_successes_and_each_label() {
    let mut a = agg();
    for _ in 0..3 {
        a.record(&success("10.1.1.1:80", 1.0, 0));
    }
    a.record(&success("10.1.1.1:80", 1200.0, 1));
    a.record(&outcome("10.1.1.1:80", Label::Refused, 2));
    a.record(&outcome("10.1.1.1:80", Label::Reset, 3));
    let out = a.close_window(10 * S);
    assert_eq!(out.len(), 1);
    let s = &out[0];
    assert_eq!((s.window_start_ns, s.window_end_ns), (0, 10 * S));
    assert_eq!(
        s.attempts, 5,
        "4 connects + 1 refused; the reset was counted at its connect"
    );
    assert_eq!(s.connected, 4);
    assert_eq!(s.failure_count(Label::Refused), 1);
    assert_eq!(s.failure_count(Label::Reset), 1);
    assert_eq!(s.syn_retransmits, 1);
    assert_eq!(s.first_failure_ns, Some(2 * S));
    assert_eq!(s.last_failure_ns, Some(3 * S));
    assert_eq!(s.verdict, Verdict::Flaky);
    assert_eq!(
        s.top_processes,
        vec![(
            ProcessKey {
                pid: 7,
                cgroup_id: 1,
                comm: raw_comm("app")
            },
            5
        )]
    );
}

#[test]
fn windows_are_independent_and_idle_destinations_are_silent() {
    let mut a = agg();
    a.record(&outcome("10.1.1.1:80", Label::Refused, 1));
    assert_eq!(a.close_window(10 * S).len(), 1);
    let second = a.close_window(20 * S);
    assert!(second.is_empty(), "nothing happened in the second window");
    a.record(&success("10.1.1.1:80", 2.0, 0));
    let third = a.close_window(30 * S);
    assert_eq!(third[0].attempts, 1);
    assert_eq!(third[0].failure_count(Label::Refused), 0);
    assert_eq!(third[0].window_start_ns, 20 * S);
}

#[test]
fn latency_quantiles_match_known_inputs() {
    let mut a = agg();
    // 1..=100 ms: p50 = 50, p90 = 90, p99 = 99, max = 100 (to the histogram's 2 digits).
    for ms in 1..=100 {
        a.record(&success("10.1.1.1:443", ms as f64, 0));
    }
    let l = a.close_window(S)[0].connect_ms.expect("latency");
    let close = |got: f64, want: f64| (got - want).abs() <= want * 0.01 + 0.001;
    assert!(close(l.p50, 50.0), "{l:?}");
    assert!(close(l.p90, 90.0), "{l:?}");
    assert!(close(l.p99, 99.0), "{l:?}");
    assert!(close(l.max, 100.0), "{l:?}");
}

#[test]
fn no_successes_means_no_latency() {
    let mut a = agg();
    a.record(&outcome("10.1.1.1:443", Label::SynTimeout, 1));
    assert_eq!(a.close_window(S)[0].connect_ms, None);
}

#[test]
fn verdict_rules() {
    let mut f = [0u64; FAILURE_LABELS.len()];
    assert_eq!(verdict(&f, 10), Verdict::Healthy);
    f[0] = 3; // refused
    assert_eq!(verdict(&f, 0), Verdict::Refusing);
    assert_eq!(verdict(&f, 5), Verdict::Flaky);
    let mut f = [0u64; FAILURE_LABELS.len()];
    f[1] = 2; // syn_timeout
    assert_eq!(verdict(&f, 0), Verdict::Blackholed);
    f[3] = 5; // unreachable dominates
    assert_eq!(verdict(&f, 0), Verdict::Unreachable);
    let mut f = [0u64; FAILURE_LABELS.len()];
    f[2] = 4; // dropped_keepalive
    assert_eq!(verdict(&f, 9), Verdict::IdleDrops);
    f[4] = 5; // reset dominates
    assert_eq!(verdict(&f, 9), Verdict::Resetting);
    f[5] = 9; // rto dominates
    assert_eq!(verdict(&f, 9), Verdict::Flaky);
}

#[test]
fn failure_streaks_carry_over_until_a_success() {
    let mut a = agg();
    for t in 1..=3 {
        a.record(&outcome("10.1.1.1:80", Label::Refused, t));
    }
    let s = a.close_window(10 * S).remove(0);
    assert_eq!((s.failure_streak, s.longest_streak), (3, 3));
    a.record(&outcome("10.1.1.1:80", Label::Refused, 11));
    let s = a.close_window(20 * S).remove(0);
    assert_eq!((s.failure_streak, s.longest_streak), (4, 4));
    a.record(&success("10.1.1.1:80", 1.0, 0));
    a.record(&outcome("10.1.1.1:80", Label::Refused, 22));
    let s = a.close_window(30 * S).remove(0);
    assert_eq!((s.failure_streak, s.longest_streak), (1, 1));
}

#[test]
fn the_cap_evicts_the_least_recently_active_and_counts_it() {
    let mut a = Aggregator::new(NonZeroUsize::new(2).unwrap(), 0);
    a.record(&outcome("10.0.0.1:1", Label::Refused, 1));
    a.record(&outcome("10.0.0.2:1", Label::Refused, 2));
    a.record(&outcome("10.0.0.1:1", Label::Refused, 3)); // 10.0.0.1 is now the most recent
    a.record(&outcome("10.0.0.3:1", Label::Refused, 4)); // evicts 10.0.0.2
    assert_eq!(a.evicted, 1);
    assert_eq!(a.len(), 2);
    let dsts: Vec<String> = a
        .close_window(S)
        .iter()
        .map(|s| s.dst.to_string())
        .collect();
    assert_eq!(dsts, vec!["10.0.0.1:1", "10.0.0.3:1"]);
}

#[test]
fn memory_stays_bounded_by_the_cap() {
    let mut a = Aggregator::new(NonZeroUsize::new(1000).unwrap(), 0);
    for i in 0..100_000u32 {
        let dst = format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255);
        a.record(&success(&dst, 1.0, 0));
    }
    assert_eq!(a.len(), 1000);
    assert_eq!(a.evicted, 99_000);
    assert_eq!(a.close_window(S).len(), 1000);
}

#[test]
fn summaries_list_most_failures_first_and_name_the_top_processes() {
    let mut a = agg();
    a.record(&outcome("10.0.0.1:1", Label::Refused, 1));
    for t in 0..3 {
        a.record(&outcome("10.0.0.2:1", Label::SynTimeout, t));
    }
    for pid in 0..10u32 {
        let mut o = success("10.0.0.3:1", 1.0, 0);
        o.conn = conn("10.0.0.3:1", pid, "worker");
        for _ in 0..=pid {
            a.record(&o);
        }
    }
    let out = a.close_window(S);
    let order: Vec<String> = out.iter().map(|s| s.dst.to_string()).collect();
    assert_eq!(order, vec!["10.0.0.2:1", "10.0.0.1:1", "10.0.0.3:1"]);
    let top = &out[2].top_processes;
    assert_eq!(top.len(), TOP_PROCESSES);
    assert_eq!(
        top[0],
        (
            ProcessKey {
                pid: 9,
                cgroup_id: 1,
                comm: raw_comm("worker")
            },
            10
        )
    );
}

#[test]
fn inbound_refusals_are_not_destinations() {
    let mut a = agg();
    let mut o = outcome("10.0.0.1:22", Label::Refused, 1);
    o.direction = Direction::Inbound;
    a.record(&o);
    assert!(a.is_empty());
}

/// Warnings with nothing failing make a destination `degrading` while they do not fall; they
/// are neither attempts nor failures.
#[test]
fn at_risk_warnings_make_a_healthy_destination_degrading() {
    let mut a = agg();
    let dst = "10.0.0.9:443";
    a.record(&success(dst, 1.0, 0));
    a.record(&outcome(dst, Label::AtRisk, 1));
    let s = a.close_window(10 * S).remove(0);
    assert_eq!(
        (s.attempts, s.at_risk, s.verdict),
        (1, 1, Verdict::Degrading)
    );
    assert_eq!(s.failures.iter().sum::<u64>(), 0);

    a.record(&outcome(dst, Label::AtRisk, 11));
    a.record(&outcome(dst, Label::AtRisk, 12));
    let s = a.close_window(20 * S).remove(0);
    assert_eq!((s.at_risk, s.verdict), (2, Verdict::Degrading), "rising");

    a.record(&outcome(dst, Label::AtRisk, 21));
    let s = a.close_window(30 * S).remove(0);
    assert_eq!((s.at_risk, s.verdict), (1, Verdict::Healthy), "falling");

    a.record(&outcome(dst, Label::AtRisk, 31));
    a.record(&outcome(dst, Label::RtoTimeout, 32));
    let s = a.close_window(40 * S).remove(0);
    assert_eq!(s.verdict, Verdict::Flaky, "a failure decides");
}
