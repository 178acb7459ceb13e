//! The classifier: a pure function of the facts the kernel gathered about one connection.
//!
//! Input is a decoded `RawEvent`; output is an `Outcome` with a label from ARCHITECTURE.md §5 and
//! the evidence behind it. Time comes only from the events themselves (kernel monotonic ns), so
//! tests drive it with synthetic sequences and their own clock. No aya, no tokio, no I/O.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use super::outcome::{
    Connection, Direction, DroppedSegments, Evidence, GaveUp, Label, LocalDrops, Outcome, Phase,
    TranslatedBy, Translation, Via,
};
use crate::kernel::decode::ip;
use libc::{
    EACCES, EADDRNOTAVAIL, ECONNREFUSED, ECONNRESET, EHOSTUNREACH, EINVAL, ENETUNREACH, EPERM,
    ETIMEDOUT,
};
use tracer_common::{
    AF_INET, KIND_AT_RISK, KIND_CLOSED, KIND_CONNECT_FAILED, KIND_CONNECTED, KIND_ERROR_REPORT,
    KIND_INBOUND_RESET, NAT_DST, NAT_SRC, RawEvent, SYN_RETRANSMIT_SLOTS, VALID_BYTES,
    VALID_CLOSE_UNSEEN, VALID_ERR_QUEUE, VALID_ICMP_FROM, VALID_IDLE, VALID_KEEPALIVE,
    VALID_KEEPALIVE_CFG, VALID_LOOPBACK, VALID_NAT, VALID_NOT_SENT, VALID_PORT_RANGE,
    VALID_PROBES_OUT, VALID_REQUESTED, VALID_ROUTED, VALID_RST_SENT_REASON, VALID_SK_ERR,
    VALID_SK_ERR_SOFT, VALID_SRTT, VALID_TCP_FLAGS, VALID_UNACKED, tcp_state,
};

/// (family, src, dst) as the tracepoints report them: joins error reports to connections.
type TupleKey = (u8, [u8; 16], u16, [u8; 16], u16);

/// How long an error report waits for its connection's CLOSE.
const REPORT_TTL_NS: u64 = 30_000_000_000;
/// How many unjoined error reports are kept at most.
const REPORT_CAPACITY: usize = 4096;

/// Counts of what the classifier saw that produced no printed failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierCounts {
    pub cancelled: u64,
    /// Socket-less RSTs not reported as inbound refusals: over loopback (the outbound side is
    /// reported), or answering a segment that was not a connection attempt.
    pub inbound_ignored: u64,
    /// An established connection closed with an errno no label covers.
    pub unclassified: u64,
    pub error_reports_dropped: u64,
}

/// What the classifier needs to know about the kernel it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelParams {
    /// Jiffies per second (CONFIG_HZ), to convert jiffy-based socket fields.
    pub hz: u32,
}

impl Default for KernelParams {
    fn default() -> Self {
        Self { hz: 1000 }
    }
}

/// How long a close without a readable `sk_err` waits for its error report: the kernel reports
/// the error right after the CLOSE transition, in the same call (`tcp_done_with_error`).
pub const PARK_NS: u64 = 100_000_000;
/// How many such closes wait at most.
const PARK_CAPACITY: usize = 4096;

#[derive(Default)]
pub struct Classifier {
    kernel: KernelParams,
    reports: HashMap<TupleKey, (i32, u64), foldhash::fast::RandomState>,
    report_order: VecDeque<(TupleKey, u64)>,
    /// Closes whose `sk_err` could not be read (no BTF), waiting for their error report.
    parked: VecDeque<RawEvent>,
    /// Connects undone inside connect() (closed in SYN_SENT without sending a segment), waiting
    /// for their connect() call's record, which says why.
    undone: VecDeque<RawEvent>,
    /// Sockets whose connect() failure was reported without its CLOSE (sock_id, time): a late
    /// CLOSE of one of them is the same failure.
    calls_reported: VecDeque<(u64, u64)>,
    /// Connect-phase failures the socket path reported with an errno connect() itself also
    /// returns from a blocking call (an ICMP error): the call's record of the same socket, read
    /// at its exit alone (`Config::calls_at_exit`), is the same failure.
    socket_failures: VecDeque<SocketFailure>,
    pub counts: ClassifierCounts,
}

/// A connect-phase failure the socket path reported: which socket, to where, when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SocketFailure {
    sock_id: u64,
    daddr: [u8; 16],
    dport: u16,
    ts_ns: u64,
}

/// How long after a socket's CLOSE its blocking connect() call can return the same failure:
/// the thread wakes right after the CLOSE; a second is generous even on a loaded host.
const CALL_AFTER_CLOSE_NS: u64 = 1_000_000_000;

impl Classifier {
    pub fn new(kernel: KernelParams) -> Self {
        Self {
            kernel,
            ..Self::default()
        }
    }

    /// Feeds one decoded event; returns an outcome when the event ends (or establishes) a
    /// connection. A normal close of an established connection returns `None`.
    pub fn observe(&mut self, ev: &RawEvent) -> Option<Outcome> {
        match ev.kind {
            KIND_ERROR_REPORT => {
                let key = tuple_key(ev);
                let waiting = self
                    .parked
                    .iter()
                    .position(|c| tuple_key(c) == key && ev.ts_ns >= c.start_ns);
                if let Some(i) = waiting.filter(|_| ev.error > 0) {
                    let close = self.parked.remove(i).expect("index from position");
                    return self.finish_close(&close, Some(ev.error));
                }
                self.remember_report(ev);
                None
            }
            KIND_CONNECTED => Some(connected(ev)),
            KIND_AT_RISK => Some(at_risk(ev, &self.kernel)),
            KIND_INBOUND_RESET => {
                let outcome = inbound(ev);
                if outcome.is_none() {
                    self.counts.inbound_ignored += 1;
                }
                outcome
            }
            KIND_CONNECT_FAILED => {
                if self.already_reported_by_socket(ev) {
                    return None;
                }
                let close = self
                    .undone
                    .iter()
                    .position(|c| c.sock_id == ev.sock_id)
                    .and_then(|i| self.undone.remove(i));
                if close.is_none() {
                    self.remember_call(ev);
                }
                let outcome = connect_call(ev, close.as_ref());
                if outcome.is_none() {
                    self.counts.unclassified += 1;
                }
                outcome
            }
            KIND_CLOSED if undone_in_call(ev) => {
                if self.calls_reported.iter().any(|&(id, _)| id == ev.sock_id) {
                    // Its connect() call's record came first (this CLOSE was reported late).
                    return None;
                }
                let mut out = None;
                if self.undone.len() >= PARK_CAPACITY
                    && let Some(oldest) = self.undone.pop_front()
                {
                    out = Some(undone_outcome(&oldest));
                }
                self.undone.push_back(*ev);
                out
            }
            KIND_CLOSED => {
                // A report joined by 4-tuple (classic error-report program), else the one the
                // raw program noted in the connection's own state.
                let reported = self.take_report(ev).or((ev.error > 0).then_some(ev.error));
                if reported.is_none() && !ev.has(VALID_SK_ERR) {
                    // The error report, if any, comes right after the CLOSE: wait for it.
                    let mut out = None;
                    if self.parked.len() >= PARK_CAPACITY
                        && let Some(oldest) = self.parked.pop_front()
                    {
                        out = self.finish_close(&oldest, None);
                    }
                    self.parked.push_back(*ev);
                    return out;
                }
                self.finish_close(ev, reported)
            }
            _ => None,
        }
    }

    /// Classifies the parked closes whose error report did not come within `PARK_NS` of `now_ns`.
    pub fn flush(&mut self, now_ns: u64) -> Vec<Outcome> {
        let mut out = Vec::new();
        while self
            .parked
            .front()
            .is_some_and(|c| c.ts_ns.saturating_add(PARK_NS) <= now_ns)
        {
            let close = self.parked.pop_front().expect("front exists");
            out.extend(self.finish_close(&close, None));
        }
        // An undone connect whose call record did not come (lost, or its exit skipped by the
        // kernel): the kernel saw connect() undo it, so no local port is the likely cause.
        while self
            .undone
            .front()
            .is_some_and(|c| c.ts_ns.saturating_add(PARK_NS) <= now_ns)
        {
            let close = self.undone.pop_front().expect("front exists");
            out.push(undone_outcome(&close));
        }
        while self
            .calls_reported
            .front()
            .is_some_and(|&(_, ts)| ts.saturating_add(REPORT_TTL_NS) <= now_ns)
        {
            self.calls_reported.pop_front();
        }
        while self
            .socket_failures
            .front()
            .is_some_and(|f| f.ts_ns.saturating_add(CALL_AFTER_CLOSE_NS) <= now_ns)
        {
            self.socket_failures.pop_front();
        }
        out
    }

    /// Whether the failed connect() call `ev` is a failure its socket's CLOSE already reported
    /// (then forgotten: one call per failure).
    fn already_reported_by_socket(&mut self, ev: &RawEvent) -> bool {
        let found = self.socket_failures.iter().position(|f| {
            f.sock_id == ev.sock_id
                && f.daddr == ev.daddr_be
                && f.dport == ev.dport
                && f.ts_ns <= ev.ts_ns
                && ev.ts_ns - f.ts_ns <= CALL_AFTER_CLOSE_NS
        });
        found.and_then(|i| self.socket_failures.remove(i)).is_some()
    }

    fn remember_call(&mut self, ev: &RawEvent) {
        if self.calls_reported.len() >= REPORT_CAPACITY {
            self.calls_reported.pop_front();
        }
        self.calls_reported.push_back((ev.sock_id, ev.ts_ns));
    }

    fn finish_close(&mut self, ev: &RawEvent, reported: Option<i32>) -> Option<Outcome> {
        let errno = errno_of(ev, reported);
        let connect_phase = ev.old_state == tcp_state::SYN_SENT && ev.established_ns == 0;
        if connect_phase && errno.is_some_and(|e| e != ECONNREFUSED && e != ETIMEDOUT) {
            if self.socket_failures.len() >= REPORT_CAPACITY {
                self.socket_failures.pop_front();
            }
            self.socket_failures.push_back(SocketFailure {
                sock_id: ev.sock_id,
                daddr: ev.daddr_be,
                dport: ev.dport,
                ts_ns: ev.ts_ns,
            });
        }
        let outcome = closed(ev, reported, &self.kernel);
        match outcome.as_ref().map(|o| o.label) {
            Some(Label::Cancelled) => self.counts.cancelled += 1,
            None if errno.is_some() => self.counts.unclassified += 1,
            _ => {}
        }
        outcome
    }

    fn remember_report(&mut self, ev: &RawEvent) {
        self.expire(ev.ts_ns);
        if self.reports.len() >= REPORT_CAPACITY
            && let Some((old, ts)) = self.report_order.pop_front()
        {
            if self.reports.get(&old).is_some_and(|&(_, t)| t == ts) {
                self.reports.remove(&old);
            }
            self.counts.error_reports_dropped += 1;
        }
        let key = tuple_key(ev);
        self.reports.insert(key, (ev.error, ev.ts_ns));
        self.report_order.push_back((key, ev.ts_ns));
    }

    /// The error report for this connection's 4-tuple, if one arrived after its connect()
    /// (an older one belongs to an earlier connection that reused the tuple).
    fn take_report(&mut self, ev: &RawEvent) -> Option<i32> {
        self.expire(ev.ts_ns);
        let (errno, ts) = self.reports.remove(&tuple_key(ev))?;
        (ts >= ev.start_ns).then_some(errno)
    }

    fn expire(&mut self, now_ns: u64) {
        while let Some(&(key, ts)) = self.report_order.front() {
            if now_ns.saturating_sub(ts) <= REPORT_TTL_NS {
                break;
            }
            self.report_order.pop_front();
            if self.reports.get(&key).is_some_and(|&(_, t)| t == ts) {
                self.reports.remove(&key);
            }
        }
    }

    /// Error reports waiting for their connection (bounded by `REPORT_CAPACITY`).
    pub fn pending_reports(&self) -> usize {
        self.reports.len()
    }
}

fn tuple_key(ev: &RawEvent) -> TupleKey {
    (ev.family, ev.saddr_be, ev.sport, ev.daddr_be, ev.dport)
}

/// `ee_origin` values of a queued socket error that came from ICMP / ICMPv6.
const SO_EE_ORIGIN_ICMP: u8 = 2;
const SO_EE_ORIGIN_ICMP6: u8 = 3;

/// The socket's error: `sk_err`, else the error report joined by 4-tuple. A connect that never
/// got established also counts its soft error and the ICMP error queued on the socket: when
/// the ICMP lands while connect() holds the socket the kernel keeps it only there, and
/// `getsockopt(SO_ERROR)` hands `sk_err_soft` to the application and clears it.
fn errno_of(ev: &RawEvent, reported: Option<i32>) -> Option<i32> {
    let sk_err = (ev.has(VALID_SK_ERR) && ev.sk_err > 0).then_some(ev.sk_err);
    let hard = sk_err.or(reported.filter(|e| *e > 0));
    if ev.established_ns != 0 || ev.old_state != tcp_state::SYN_SENT {
        return hard;
    }
    let soft = (ev.has(VALID_SK_ERR_SOFT) && ev.sk_err_soft > 0).then_some(ev.sk_err_soft);
    hard.or(soft)
        .or_else(|| icmp_of(ev).map(|_| ev.err_queue_errno as i32))
}

/// Type and code of an ICMP error queued on the socket.
fn icmp_of(ev: &RawEvent) -> Option<(u8, u8)> {
    let icmp = ev.has(VALID_ERR_QUEUE)
        && ev.err_queue_errno != 0
        && matches!(ev.err_queue_origin, SO_EE_ORIGIN_ICMP | SO_EE_ORIGIN_ICMP6);
    icmp.then_some((ev.err_queue_type, ev.err_queue_code))
}

fn connected(ev: &RawEvent) -> Outcome {
    let mut evidence = base_evidence(ev);
    evidence.elapsed_ms = ms(ev.established_ns.saturating_sub(ev.start_ns));
    Outcome {
        label: Label::Connected,
        direction: Direction::Outbound,
        conn: connection(ev),
        at_ns: ev.ts_ns,
        errno: None,
        evidence,
    }
}

/// An established connection's retransmission timer fired `at_risk_timeouts` times in a row.
fn at_risk(ev: &RawEvent, kernel: &KernelParams) -> Outcome {
    let mut evidence = base_evidence(ev);
    established_evidence(ev, kernel, &mut evidence);
    evidence.data_retransmits = data_retransmits_at_close(ev);
    evidence.timeouts_in_a_row = Some(socket_retransmits(ev) as u8);
    evidence.connection_age_ms =
        (ev.established_ns != 0).then(|| ms(ev.ts_ns.saturating_sub(ev.established_ns)));
    evidence.elapsed_ms = ms(ev.ts_ns.saturating_sub(ev.start_ns));
    Outcome {
        label: Label::AtRisk,
        direction: Direction::Outbound,
        conn: connection(ev),
        at_ns: ev.ts_ns,
        errno: None,
        evidence,
    }
}

/// TCP header flag bits.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A socket-less RST this host sent: an inbound refusal when it answered a connection attempt
/// (a SYN without ACK) that did not come over loopback.
fn inbound(ev: &RawEvent) -> Option<Outcome> {
    if ev.has(VALID_LOOPBACK) && ev.loopback != 0 {
        return None;
    }
    let flags = ev.has(VALID_TCP_FLAGS).then_some(ev.tcp_flags);
    if flags.is_some_and(|f| f & (TCP_SYN | TCP_ACK) != TCP_SYN) {
        return None;
    }
    let evidence = Evidence {
        via: Some(Via::Rst),
        rst_sent: true,
        rst_sent_reason: ev.has(VALID_RST_SENT_REASON).then_some(ev.rst_sent_reason),
        tcp_flags: flags,
        ..Evidence::default()
    };
    Some(Outcome {
        label: Label::Refused,
        direction: Direction::Inbound,
        conn: connection(ev),
        at_ns: ev.ts_ns,
        errno: None,
        evidence,
    })
}

/// A CLOSE of a connect that connect() itself undid (the kernel saw it inside the call): in
/// SYN_SENT, no segment ever sent, no error on the socket (e.g. no local port was left:
/// EADDRNOTAVAIL).
fn undone_in_call(ev: &RawEvent) -> bool {
    ev.has(VALID_NOT_SENT)
        && ev.old_state == tcp_state::SYN_SENT
        && ev.established_ns == 0
        && !(ev.has(VALID_SK_ERR) && ev.sk_err != 0)
}

/// A connect() that failed inside the call, before any SYN (`KIND_CONNECT_FAILED`), joined to
/// its socket's CLOSE when connect() had got as far as SYN_SENT. `None`: an errno no label
/// covers (a bad argument, say).
fn connect_call(ev: &RawEvent, close: Option<&RawEvent>) -> Option<Outcome> {
    let routed = ev.has(VALID_ROUTED);
    let label = match ev.error {
        ENETUNREACH | EHOSTUNREACH => Label::Unreachable,
        // A `prohibit` (EACCES) or `blackhole` (EINVAL) route answered the lookup.
        EACCES | EINVAL if routed => Label::Unreachable,
        EADDRNOTAVAIL => Label::NoLocalPort,
        EPERM | EACCES => Label::BlockedLocally,
        _ => return None,
    };
    let mut conn = connection(ev);
    if let Some(c) = close.filter(|_| conn.src.ip().is_unspecified()) {
        conn.src = SocketAddr::new(ip(c.family, &c.saddr_be), c.sport);
    }
    let evidence = Evidence {
        phase: Some(Phase::ConnectCall),
        // From the call's entry, or (read at exit alone) from the SYN_SENT it undid.
        elapsed_ms: ms(ev
            .ts_ns
            .saturating_sub(close.map_or(ev.start_ns, |c| c.start_ns.min(ev.start_ns)))),
        local_port_range: (label == Label::NoLocalPort && ev.has(VALID_PORT_RANGE))
            .then_some((ev.port_range_low, ev.port_range_high)),
        ..Evidence::default()
    };
    Some(Outcome {
        label,
        direction: Direction::Outbound,
        conn,
        at_ns: ev.ts_ns,
        errno: Some(ev.error),
        evidence,
    })
}

/// An undone connect whose connect() call record did not come: connect() undid the SYN_SENT
/// before sending anything, which is what a connect that found no local port leaves (the
/// errno is unknown).
fn undone_outcome(close: &RawEvent) -> Outcome {
    let mut evidence = base_evidence(close);
    evidence.phase = Some(Phase::ConnectCall);
    evidence.elapsed_ms = ms(close.ts_ns.saturating_sub(close.start_ns));
    Outcome {
        label: Label::NoLocalPort,
        direction: Direction::Outbound,
        conn: connection(close),
        at_ns: close.ts_ns,
        errno: None,
        evidence,
    }
}

/// The decision table of ARCHITECTURE.md §5.
fn closed(ev: &RawEvent, reported: Option<i32>, kernel: &KernelParams) -> Option<Outcome> {
    let errno = errno_of(ev, reported);
    let mut evidence = base_evidence(ev);
    let was_established = ev.established_ns != 0 || ev.old_state != tcp_state::SYN_SENT;
    let label = if !was_established {
        match errno {
            Some(ECONNREFUSED) => {
                evidence.via = Some(if ev.rst_received_state != 0 {
                    Via::Rst
                } else {
                    Via::Icmp
                });
                Label::Refused
            }
            Some(ETIMEDOUT) => {
                evidence.gave_up = Some(GaveUp::Kernel);
                Label::SynTimeout
            }
            // EHOSTUNREACH, ENETUNREACH, or another ICMP-borne error (errno says which).
            Some(_) => Label::Unreachable,
            None if syn_retransmits_at_close(ev) > 0 => {
                // Unless the close went untraced: then the error may have gone to the
                // application already, and who gave up is unknown.
                evidence.gave_up = (!evidence.close_unseen).then_some(GaveUp::Application);
                evidence.syn_retransmits = syn_retransmits_at_close(ev);
                Label::SynTimeout
            }
            None => Label::Cancelled,
        }
    } else {
        evidence.connection_age_ms =
            (ev.established_ns != 0).then(|| ms(ev.ts_ns.saturating_sub(ev.established_ns)));
        established_evidence(ev, kernel, &mut evidence);
        evidence.data_retransmits = data_retransmits_at_close(ev);
        if ev.rst_received_state != 0 || errno == Some(ECONNRESET) {
            Label::Reset
        } else {
            match errno {
                Some(ETIMEDOUT) if died_idle_probing(ev) => Label::DroppedKeepalive,
                Some(ETIMEDOUT) => Label::RtoTimeout,
                Some(EHOSTUNREACH | ENETUNREACH) => Label::Unreachable,
                // The close was not traced and the application has taken the error: what the
                // socket still holds says how it died (no FIN exchange was seen either).
                None if evidence.close_unseen && died_idle_probing(ev) => Label::DroppedKeepalive,
                None if evidence.close_unseen && died_retransmitting(ev) => Label::RtoTimeout,
                // It had been warned about and closed without an error, everything written
                // acknowledged: it recovered. (An application that closes it still stalled
                // leaves the warning as the last word.)
                None if ev.warned_ns != 0 && ev.has(VALID_UNACKED) && ev.unacked == 0 => {
                    Label::Recovered
                }
                _ => return None,
            }
        }
    };
    if was_established && ev.has(VALID_PROBES_OUT) && ev.probes_out > 0 {
        evidence.probes_sent = Some(ev.probes_out);
    }
    evidence.elapsed_ms = ms(ev.ts_ns.saturating_sub(ev.start_ns));
    Some(Outcome {
        label,
        direction: Direction::Outbound,
        conn: connection(ev),
        at_ns: ev.ts_ns,
        errno,
        evidence,
    })
}

/// SYN retransmissions of a connect closed in SYN_SENT without an error: those traced, or the
/// socket's own count read at CLOSE if higher. The kernel skips a tracepoint program that would
/// nest in another BPF program on the same CPU (the retransmit timer's softirq can interrupt one),
/// and `icsk_retransmits` still says the timer fired: the SYN went unanswered for at least an RTO.
fn syn_retransmits_at_close(ev: &RawEvent) -> u16 {
    ev.syn_retransmits.max(socket_retransmits(ev))
}

/// The socket's own count of unanswered retransmissions (`icsk_retransmits`) read at CLOSE, 0
/// if unreadable.
fn socket_retransmits(ev: &RawEvent) -> u16 {
    if ev.has(tracer_common::VALID_ICSK_RETRANSMITS) {
        u16::from(ev.icsk_retransmits)
    } else {
        0
    }
}

/// Data retransmissions of an established connection: those traced, or the socket's count of
/// unanswered retransmissions read at CLOSE if higher (retransmissions fired while another BPF
/// program ran on that CPU were not traced).
fn data_retransmits_at_close(ev: &RawEvent) -> u16 {
    ev.data_retransmits.max(socket_retransmits(ev))
}

/// A keepalive death: probes went unanswered while the connection was idle — no data
/// retransmitted, nothing written left unacknowledged, and SO_KEEPALIVE not known to be off.
/// (Probes with data outstanding are zero-window or local-transmit probes: an RTO-class death.)
fn died_idle_probing(ev: &RawEvent) -> bool {
    let probed = ev.has(VALID_PROBES_OUT) && ev.probes_out > 0;
    let keepalive_off = ev.has(VALID_KEEPALIVE) && ev.keepalive == 0;
    let outstanding = ev.has(VALID_UNACKED) && ev.unacked > 0;
    probed && ev.data_retransmits == 0 && !keepalive_off && !outstanding
}

/// An established connection that died trying to deliver data: written data still
/// unacknowledged after retransmissions, or after probes (the persist timer probes when the data
/// cannot be sent: a zero window, or a local transmit failure such as a firewall drop on output),
/// and no RST either way. Used only for a close that was not traced, whose `sk_err` the
/// application may already have taken.
fn died_retransmitting(ev: &RawEvent) -> bool {
    let outstanding = ev.has(VALID_UNACKED) && ev.unacked > 0;
    let retransmitted = data_retransmits_at_close(ev) > 0;
    let probed = ev.has(VALID_PROBES_OUT) && ev.probes_out > 0;
    outstanding && (retransmitted || probed) && ev.rst_received_state == 0 && ev.rst_sent_state == 0
}

/// RTT, idle time, keepalive settings and byte counts of a connection that was established.
fn established_evidence(ev: &RawEvent, kernel: &KernelParams, e: &mut Evidence) {
    let jiffies_ms = |j: u32| f64::from(j) * 1000.0 / f64::from(kernel.hz.max(1));
    e.srtt_ms = (ev.has(VALID_SRTT) && ev.srtt_us > 0).then(|| f64::from(ev.srtt_us >> 3) / 1000.0);
    e.idle_ms = ev.has(VALID_IDLE).then(|| jiffies_ms(ev.idle_jiffies));
    if ev.has(VALID_KEEPALIVE_CFG) {
        e.keepalive_idle_ms = (ev.keepalive_time_j > 0).then(|| jiffies_ms(ev.keepalive_time_j));
        e.keepalive_interval_ms =
            (ev.keepalive_intvl_j > 0).then(|| jiffies_ms(ev.keepalive_intvl_j));
        e.keepalive_probes = (ev.keepalive_probes > 0).then_some(ev.keepalive_probes);
    }
    e.bytes = ev
        .has(VALID_BYTES)
        .then_some((ev.bytes_sent, ev.bytes_acked, ev.bytes_received));
    e.unacked_bytes = ev.has(VALID_UNACKED).then_some(ev.unacked);
}

fn base_evidence(ev: &RawEvent) -> Evidence {
    let kept = (ev.syn_retransmits as usize).min(SYN_RETRANSMIT_SLOTS);
    Evidence {
        syn_retransmits: ev.syn_retransmits,
        syn_retransmit_ms: ev.syn_retransmit_us[..kept]
            .iter()
            .map(|&us| us as f64 / 1000.0)
            .collect(),
        data_retransmits: ev.data_retransmits,
        keepalive_enabled: ev.has(VALID_KEEPALIVE).then_some(ev.keepalive != 0),
        rst_received: ev.rst_received_state != 0,
        rst_sent: ev.rst_sent_state != 0,
        soft_errno: (ev.has(VALID_SK_ERR_SOFT) && ev.sk_err_soft > 0).then_some(ev.sk_err_soft),
        icmp: icmp_of(ev),
        icmp_from: (icmp_of(ev).is_some() && ev.has(VALID_ICMP_FROM))
            .then(|| ip(icmp_family(ev.err_queue_origin), &ev.icmp_from_be)),
        local_drops: local_drops(ev),
        warned_ms_before: (ev.warned_ns != 0 && ev.kind != KIND_AT_RISK)
            .then(|| ms(ev.ts_ns.saturating_sub(ev.warned_ns))),
        rst_sent_reason: (ev.has(VALID_RST_SENT_REASON) && ev.rst_sent_state != 0)
            .then_some(ev.rst_sent_reason),
        close_unseen: ev.has(VALID_CLOSE_UNSEEN),
        translation: translation(ev),
        ..Evidence::default()
    }
}

/// What this host's translation made of the connection: conntrack's NAT (the socket holds the
/// address asked for; the reply tuple the backend and the source the peer sees), or a connect
/// program's rewrite (the socket holds the backend; the call's sockaddr the address asked for).
pub fn translation(ev: &RawEvent) -> Option<Translation> {
    let socket_dst = SocketAddr::new(ip(ev.family, &ev.daddr_be), ev.dport);
    let requested = ev
        .has(VALID_REQUESTED)
        .then(|| SocketAddr::new(ip(ev.family, &ev.requested_be), ev.requested_port))
        .filter(|r| *r != socket_dst);
    let nat = ev.has(VALID_NAT) && ev.nat_status & (NAT_DST | NAT_SRC) != 0;
    if requested.is_none() && !nat {
        return None;
    }
    let backend = if nat && ev.nat_status & NAT_DST != 0 {
        SocketAddr::new(ip(ev.family, &ev.nat_daddr_be), ev.nat_dport)
    } else {
        socket_dst
    };
    let source = SocketAddr::new(ip(ev.family, &ev.saddr_be), ev.sport);
    let source_seen = (nat && ev.nat_status & NAT_SRC != 0)
        .then(|| SocketAddr::new(ip(ev.family, &ev.nat_saddr_be), ev.nat_sport))
        .filter(|s| *s != source);
    Some(Translation {
        requested: requested.unwrap_or(socket_dst),
        backend,
        source_seen,
        by: if requested.is_some() {
            TranslatedBy::SocketLb
        } else {
            TranslatedBy::Conntrack
        },
        netns: (nat && ev.has(tracer_common::VALID_NETNS)).then_some(ev.netns),
        forwarded: false,
    })
}

/// The address family of a queued error's sender, from its origin.
fn icmp_family(origin: u8) -> u8 {
    if origin == SO_EE_ORIGIN_ICMP6 {
        tracer_common::AF_INET6
    } else {
        AF_INET
    }
}

/// The packets of the connection this host dropped, if any.
fn local_drops(ev: &RawEvent) -> Option<LocalDrops> {
    let side = |packets: u16, reason: u16, tcp_flags: u8| {
        (packets > 0).then_some(DroppedSegments {
            packets,
            reason,
            tcp_flags,
        })
    };
    let sent = side(ev.drops_out, ev.drop_reason_out, ev.drop_flags_out);
    let received = side(ev.drops_in, ev.drop_reason_in, ev.drop_flags_in);
    if sent.is_none() && received.is_none() {
        return None;
    }
    Some(LocalDrops {
        sent,
        received,
        first_ms: ms(ev.drop_first_ns.saturating_sub(ev.start_ns)),
        last_ms: ms(ev.drop_last_ns.saturating_sub(ev.start_ns)),
    })
}

/// Nanoseconds → milliseconds, kept to the microsecond.
fn ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

fn connection(ev: &RawEvent) -> Connection {
    Connection {
        src: SocketAddr::new(ip(ev.family, &ev.saddr_be), ev.sport),
        dst: SocketAddr::new(ip(ev.family, &ev.daddr_be), ev.dport),
        pid: ev.pid,
        tid: ev.tid,
        uid: ev.uid,
        comm: ev.comm,
        cgroup_id: ev.cgroup_id,
        netns: ev.has(tracer_common::VALID_NETNS).then_some(ev.netns),
        sock_id: ev.sock_id,
    }
}

#[cfg(test)]
mod tests;
