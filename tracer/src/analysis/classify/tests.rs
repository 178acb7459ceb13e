//! Synthetic event sequences through the classifier, with their own clock.
use std::net::{IpAddr, Ipv6Addr};

use super::*;
use bytemuck::Zeroable;
use libc::{EACCES, EADDRNOTAVAIL, EINVAL, EPERM};
use tracer_common::{AF_INET6, STATE_UNKNOWN};

const MS: u64 = 1_000_000;
const T0: u64 = 1_000 * MS;

/// A connect from 10.0.0.1:40000 to 10.0.0.2:5432 by pid 42 "psql" at T0.
fn connect() -> RawEvent {
    let mut ev = RawEvent::zeroed();
    ev.family = AF_INET;
    ev.saddr_be[..4].copy_from_slice(&[10, 0, 0, 1]);
    ev.daddr_be[..4].copy_from_slice(&[10, 0, 0, 2]);
    ev.sport = 40_000;
    ev.dport = 5432;
    ev.pid = 42;
    ev.tid = 43;
    ev.uid = 1000;
    ev.comm[..4].copy_from_slice(b"psql");
    ev.netns = 4026531840;
    ev.valid = tracer_common::VALID_NETNS
        | VALID_SK_ERR
        | VALID_SK_ERR_SOFT
        | VALID_PROBES_OUT
        | VALID_KEEPALIVE;
    ev.start_ns = T0;
    ev.ts_ns = T0;
    ev.old_state = tcp_state::CLOSE;
    ev.new_state = tcp_state::SYN_SENT;
    ev
}

fn syn_retransmit(ev: &mut RawEvent, at_ms: u64) {
    ev.syn_retransmit_us[ev.syn_retransmits as usize] = (at_ms * 1000) as u32;
    ev.syn_retransmits += 1;
}

fn established(ev: &mut RawEvent, at_ms: u64) -> RawEvent {
    ev.established_ns = T0 + at_ms * MS;
    let mut c = *ev;
    c.kind = KIND_CONNECTED;
    c.old_state = tcp_state::SYN_SENT;
    c.new_state = tcp_state::ESTABLISHED;
    c.ts_ns = ev.established_ns;
    c
}

fn close(ev: &RawEvent, from: u8, at_ms: u64, sk_err: i32) -> RawEvent {
    let mut c = *ev;
    c.kind = KIND_CLOSED;
    c.old_state = from;
    c.new_state = tcp_state::CLOSE;
    c.ts_ns = T0 + at_ms * MS;
    c.sk_err = sk_err;
    c
}

fn report(ev: &RawEvent, at_ms: u64, errno: i32) -> RawEvent {
    let mut r = RawEvent::zeroed();
    r.kind = KIND_ERROR_REPORT;
    r.family = ev.family;
    r.saddr_be = ev.saddr_be;
    r.daddr_be = ev.daddr_be;
    r.sport = ev.sport;
    r.dport = ev.dport;
    r.error = errno;
    r.ts_ns = T0 + at_ms * MS;
    r
}

fn run(events: &[RawEvent]) -> (Vec<Outcome>, ClassifierCounts) {
    let mut c = Classifier::new(KernelParams { hz: 250 });
    let mut out: Vec<Outcome> = events.iter().filter_map(|e| c.observe(e)).collect();
    out.extend(c.flush(u64::MAX)); // settle closes still waiting for an error report
    (out, c.counts)
}

fn one(events: &[RawEvent]) -> Outcome {
    let (out, _) = run(events);
    assert_eq!(out.len(), 1, "{out:#?}");
    out.into_iter().next().unwrap()
}

#[test]
fn refused_by_rst() {
    let mut ev = connect();
    ev.rst_received_state = tcp_state::SYN_SENT;
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1, ECONNREFUSED)]);
    assert_eq!(o.label, Label::Refused);
    assert_eq!(o.evidence.via, Some(Via::Rst));
    assert_eq!(o.errno, Some(ECONNREFUSED));
    assert_eq!(o.evidence.elapsed_ms, 1.0);
    assert_eq!(o.conn.dst, "10.0.0.2:5432".parse().unwrap());
    assert_eq!(o.conn.src, "10.0.0.1:40000".parse().unwrap());
    assert_eq!((o.conn.pid, o.conn.tid, o.conn.uid), (42, 43, 1000));
    assert_eq!(&o.conn.comm[..5], b"psql\0");
    assert_eq!(o.conn.netns, Some(4026531840));
}

#[test]
fn refused_by_icmp_has_no_rst_and_a_retransmit() {
    let mut ev = connect();
    syn_retransmit(&mut ev, 1000);
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1003, ECONNREFUSED)]);
    assert_eq!(o.label, Label::Refused);
    assert_eq!(o.evidence.via, Some(Via::Icmp));
    assert_eq!(o.evidence.syn_retransmits, 1);
}

#[test]
fn syn_timeout_kernel_gave_up_with_timeline() {
    let mut ev = connect();
    for at in [1000, 3000] {
        syn_retransmit(&mut ev, at);
    }
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 7000, ETIMEDOUT)]);
    assert_eq!(o.label, Label::SynTimeout);
    assert_eq!(o.evidence.gave_up, Some(GaveUp::Kernel));
    assert_eq!(o.evidence.syn_retransmits, 2);
    assert_eq!(o.evidence.syn_retransmit_ms, vec![1000.0, 3000.0]);
    assert_eq!(o.evidence.elapsed_ms, 7000.0);
}

#[test]
fn syn_timeout_application_gave_up_after_a_retransmit() {
    let mut ev = connect();
    syn_retransmit(&mut ev, 1000);
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1500, 0)]);
    assert_eq!(o.label, Label::SynTimeout);
    assert_eq!(o.evidence.gave_up, Some(GaveUp::Application));
    assert_eq!(o.errno, None);
}

#[test]
fn an_untraced_syn_retransmission_still_makes_an_application_give_up_a_syn_timeout() {
    // The retransmit tracepoint was skipped (nested in another BPF program), but the socket's
    // own counter, read at CLOSE, says the retransmit timer fired once.
    let mut ev = connect();
    ev.valid |= tracer_common::VALID_ICSK_RETRANSMITS;
    ev.icsk_retransmits = 1;
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1500, 0)]);
    assert_eq!(o.label, Label::SynTimeout);
    assert_eq!(o.evidence.gave_up, Some(GaveUp::Application));
    assert_eq!(o.evidence.syn_retransmits, 1);
    assert!(o.evidence.syn_retransmit_ms.is_empty());
    // Without that counter it stays a cancel.
    ev.icsk_retransmits = 0;
    assert_eq!(
        one(&[close(&ev, tcp_state::SYN_SENT, 1500, 0)]).label,
        Label::Cancelled
    );
}

#[test]
fn closed_in_syn_sent_before_any_retransmit_is_cancelled_and_counted() {
    let ev = connect();
    let (out, counts) = run(&[close(&ev, tcp_state::SYN_SENT, 50, 0)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].label, Label::Cancelled);
    assert!(!out[0].label.is_failure());
    assert_eq!(counts.cancelled, 1);
}

#[test]
fn dropped_keepalive_probes_without_data_retransmits() {
    let mut ev = connect();
    let c = established(&mut ev, 1);
    ev.probes_out = 2;
    ev.keepalive = 1;
    ev.rst_sent_state = tcp_state::ESTABLISHED;
    let (out, _) = run(&[c, close(&ev, tcp_state::ESTABLISHED, 3001, ETIMEDOUT)]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].label, Label::Connected);
    assert_eq!(out[0].evidence.elapsed_ms, 1.0);
    let o = &out[1];
    assert_eq!(o.label, Label::DroppedKeepalive);
    assert_eq!(o.evidence.probes_sent, Some(2));
    assert_eq!(o.evidence.keepalive_enabled, Some(true));
    assert_eq!(o.evidence.connection_age_ms, Some(3000.0));
    assert!(o.evidence.rst_sent);
}

#[test]
fn etimedout_with_data_retransmits_is_rto_not_keepalive() {
    let mut ev = connect();
    established(&mut ev, 1);
    ev.data_retransmits = 4;
    ev.probes_out = 1;
    let o = one(&[close(&ev, tcp_state::ESTABLISHED, 2500, ETIMEDOUT)]);
    assert_eq!(o.label, Label::RtoTimeout);
    assert_eq!(o.evidence.probes_sent, Some(1));
}

#[test]
fn probes_with_unacknowledged_data_are_not_a_keepalive_death() {
    // A local firewall refused the data (the transmit failed, so no retransmissions were
    // counted) and the persist timer probed: data outstanding, so not an idle death.
    let mut ev = connect();
    established(&mut ev, 1);
    ev.probes_out = 3;
    ev.keepalive = 1;
    ev.valid |= tracer_common::VALID_UNACKED;
    ev.unacked = 8192;
    let o = one(&[close(&ev, tcp_state::ESTABLISHED, 2500, ETIMEDOUT)]);
    assert_eq!(o.label, Label::RtoTimeout);
}

#[test]
fn probes_on_a_socket_without_so_keepalive_are_not_keepalive() {
    let mut ev = connect();
    established(&mut ev, 1);
    ev.probes_out = 2;
    ev.keepalive = 0;
    let o = one(&[close(&ev, tcp_state::ESTABLISHED, 2500, ETIMEDOUT)]);
    assert_eq!(o.label, Label::RtoTimeout);
}

#[test]
fn reset_on_established() {
    let mut ev = connect();
    established(&mut ev, 1);
    ev.rst_received_state = tcp_state::ESTABLISHED;
    let o = one(&[close(&ev, tcp_state::ESTABLISHED, 100, ECONNRESET)]);
    assert_eq!(o.label, Label::Reset);
    assert_eq!(o.evidence.connection_age_ms, Some(99.0));
}

#[test]
fn unreachable_during_connect_and_established() {
    let ev = connect();
    assert_eq!(
        one(&[close(&ev, tcp_state::SYN_SENT, 3000, EHOSTUNREACH)]).label,
        Label::Unreachable
    );
    let mut ev = connect();
    established(&mut ev, 1);
    assert_eq!(
        one(&[close(&ev, tcp_state::ESTABLISHED, 9, ENETUNREACH)]).label,
        Label::Unreachable
    );
}

#[test]
fn normal_close_of_an_established_connection_is_silent() {
    let mut ev = connect();
    let c = established(&mut ev, 1);
    let (out, counts) = run(&[c, close(&ev, tcp_state::FIN_WAIT2, 50, 0)]);
    assert_eq!(
        out.iter().map(|o| o.label).collect::<Vec<_>>(),
        vec![Label::Connected]
    );
    assert_eq!(counts, ClassifierCounts::default());
}

#[test]
fn error_report_with_error_zero_changes_nothing() {
    let ev = connect();
    let o = one(&[report(&ev, 10, 0), close(&ev, tcp_state::SYN_SENT, 50, 0)]);
    assert_eq!(o.label, Label::Cancelled);
}

#[test]
fn a_close_without_sk_err_waits_for_the_report_that_follows_it() {
    // No BTF: sk_err unreadable. The kernel reports the error right after the CLOSE.
    let mut ev = connect();
    ev.valid &= !VALID_SK_ERR;
    ev.rst_received_state = STATE_UNKNOWN;
    let mut c = Classifier::new(KernelParams::default());
    assert_eq!(
        c.observe(&close(&ev, tcp_state::SYN_SENT, 1, 0)),
        None,
        "parked"
    );
    let o = c
        .observe(&report(&ev, 1, ECONNREFUSED))
        .expect("the report completes it");
    assert_eq!(o.label, Label::Refused);
    assert_eq!(o.errno, Some(ECONNREFUSED));
    assert!(c.flush(T0 + 10 * 1000 * MS).is_empty());
}

#[test]
fn a_parked_close_without_a_report_is_classified_after_the_wait() {
    let mut ev = connect();
    ev.valid &= !VALID_SK_ERR;
    let mut c = Classifier::new(KernelParams::default());
    assert_eq!(c.observe(&close(&ev, tcp_state::SYN_SENT, 1, 0)), None);
    assert!(c.flush(T0 + MS + PARK_NS - 1).is_empty(), "still waiting");
    let out = c.flush(T0 + MS + PARK_NS);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].label, Label::Cancelled);
    assert_eq!(c.counts.cancelled, 1);
}

#[test]
fn error_report_supplies_the_errno_when_sk_err_is_unreadable() {
    let mut ev = connect();
    ev.valid &= !VALID_SK_ERR;
    let o = one(&[
        report(&ev, 5, ECONNREFUSED),
        close(&ev, tcp_state::SYN_SENT, 5, 999),
    ]);
    assert_eq!(o.label, Label::Refused);
    assert_eq!(o.errno, Some(ECONNREFUSED));
}

#[test]
fn a_stale_or_foreign_error_report_is_not_joined() {
    let ev = connect();
    let mut other = connect();
    other.sport = 40_001;
    // Another connection's report, then this one's from long ago.
    let mut old = report(&ev, 0, ETIMEDOUT);
    old.ts_ns = T0;
    let events = [
        report(&other, 1, ECONNREFUSED),
        old,
        close(&ev, tcp_state::SYN_SENT, 40_000, 0),
    ];
    let o = one(&events);
    assert_eq!(
        o.label,
        Label::Cancelled,
        "the 40 s old report must have expired"
    );
}

#[test]
fn close_without_a_connect_record_does_not_panic() {
    // A CLOSED whose connect was never seen: no start time, no process.
    let mut ev = RawEvent::zeroed();
    ev.kind = KIND_CLOSED;
    ev.family = AF_INET6;
    ev.old_state = tcp_state::SYN_SENT;
    ev.ts_ns = 5;
    ev.sk_err = ECONNREFUSED;
    ev.valid = VALID_SK_ERR;
    ev.rst_received_state = STATE_UNKNOWN;
    let o = one(&[ev]);
    assert_eq!(o.label, Label::Refused);
    assert_eq!(o.conn.netns, None);
    assert_eq!(o.conn.dst, "[::]:0".parse().unwrap());
}

#[test]
fn error_reports_are_bounded() {
    let mut c = Classifier::new(KernelParams { hz: 250 });
    let ev = connect();
    for i in 0..(REPORT_CAPACITY as u16 + 10) {
        let mut r = report(&ev, 1, ECONNREFUSED);
        r.sport = i;
        c.observe(&r);
    }
    assert_eq!(c.pending_reports(), REPORT_CAPACITY);
    assert_eq!(c.counts.error_reports_dropped, 10);
}

#[test]
fn ipv4_mapped_ipv6_is_shown_as_ipv4() {
    let mut b = [0u8; 16];
    b[10] = 0xff;
    b[11] = 0xff;
    b[12..].copy_from_slice(&[127, 0, 0, 1]);
    assert_eq!(ip(AF_INET6, &b), "127.0.0.1".parse::<IpAddr>().unwrap());
}

#[test]
fn icmp_refusal_the_application_already_read_is_still_refused() {
    // Non-blocking connect: the ICMP port-unreachable lands while connect() holds the socket,
    // so the kernel sets only sk_err_soft and queues the ICMP; getsockopt(SO_ERROR) then clears
    // sk_err_soft and the application closes in SYN_SENT with sk_err 0.
    let mut ev = connect();
    ev.valid |= VALID_ERR_QUEUE;
    ev.err_queue_errno = ECONNREFUSED as u32;
    ev.err_queue_origin = SO_EE_ORIGIN_ICMP;
    ev.err_queue_type = 3;
    ev.err_queue_code = 3;
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1, 0)]);
    assert_eq!(o.label, Label::Refused);
    assert_eq!(o.evidence.via, Some(Via::Icmp));
    assert_eq!(o.errno, Some(ECONNREFUSED));
    assert_eq!(o.evidence.icmp, Some((3, 3)));
}

#[test]
fn soft_error_left_on_a_connect_the_application_abandoned_is_the_cause() {
    let mut ev = connect();
    ev.sk_err_soft = EHOSTUNREACH;
    syn_retransmit(&mut ev, 1000);
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1500, 0)]);
    assert_eq!(o.label, Label::Unreachable);
    assert_eq!(o.evidence.soft_errno, Some(EHOSTUNREACH));
}

#[test]
fn a_queued_error_that_is_not_icmp_is_ignored() {
    let mut ev = connect();
    ev.valid |= VALID_ERR_QUEUE;
    ev.err_queue_errno = libc::ENOMSG as u32; // e.g. a timestamping record (origin 4)
    ev.err_queue_origin = 4;
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 1, 0)]);
    assert_eq!(o.label, Label::Cancelled);
    assert_eq!(o.evidence.icmp, None);
}

#[test]
fn an_error_report_from_before_the_connect_is_not_joined() {
    // A report for the same 4-tuple from an earlier connection (port reuse), seen 1 ms before
    // this connect started.
    let mut earlier = connect();
    earlier.start_ns = T0 - 5 * MS;
    let mut stale = report(&earlier, 0, ECONNREFUSED);
    stale.ts_ns = T0 - MS;
    let mut ev = connect();
    ev.valid &= !VALID_SK_ERR;
    let o = one(&[stale, close(&ev, tcp_state::SYN_SENT, 50, 0)]);
    assert_eq!(o.label, Label::Cancelled);
    assert_eq!(o.errno, None);
}

/// A close made when the socket was freed: its CLOSE transition was not traced.
fn close_at_free(ev: &RawEvent, last_state: u8, at_ms: u64, sk_err: i32) -> RawEvent {
    let mut c = close(ev, last_state, at_ms, sk_err);
    c.valid |= tracer_common::VALID_CLOSE_UNSEEN;
    c
}

/// An established connection that retransmitted 8 KiB nobody acknowledged.
fn stalled_sender() -> RawEvent {
    let mut ev = connect();
    established(&mut ev, 1);
    ev.valid |= tracer_common::VALID_UNACKED | tracer_common::VALID_ICSK_RETRANSMITS;
    ev.unacked = 8192;
    ev.icsk_retransmits = 4;
    ev
}

#[test]
fn an_untraced_close_whose_error_the_application_took_is_still_an_rto_death() {
    let ev = stalled_sender();
    let o = one(&[close_at_free(&ev, tcp_state::ESTABLISHED, 3100, 0)]);
    assert_eq!(o.label, Label::RtoTimeout);
    assert_eq!(o.errno, None, "the kernel's errno is gone: not invented");
    assert!(o.evidence.close_unseen);
    assert_eq!(o.evidence.unacked_bytes, Some(8192));
    assert_eq!(
        o.evidence.data_retransmits, 4,
        "untraced retransmissions are still counted by the socket"
    );
}

#[test]
fn an_untraced_close_of_data_that_could_not_be_sent_is_an_rto_death() {
    // A firewall drop on output: the transmit fails locally, nothing is retransmitted, and the
    // persist timer probes until the kernel gives up.
    let mut ev = stalled_sender();
    ev.icsk_retransmits = 0;
    ev.probes_out = 6;
    let o = one(&[close_at_free(&ev, tcp_state::ESTABLISHED, 1200, 0)]);
    assert_eq!((o.label, o.errno), (Label::RtoTimeout, None));
    assert_eq!(o.evidence.probes_sent, Some(6));
}

#[test]
fn an_untraced_close_joins_the_error_report_that_was_traced() {
    let ev = stalled_sender();
    let o = one(&[
        report(&ev, 3000, ETIMEDOUT),
        close_at_free(&ev, tcp_state::ESTABLISHED, 3100, 0),
    ]);
    assert_eq!((o.label, o.errno), (Label::RtoTimeout, Some(ETIMEDOUT)));
}

#[test]
fn an_untraced_close_of_an_idle_probed_connection_is_a_keepalive_death() {
    let mut ev = connect();
    established(&mut ev, 1);
    ev.probes_out = 2;
    ev.keepalive = 1;
    let o = one(&[close_at_free(&ev, tcp_state::ESTABLISHED, 4000, 0)]);
    assert_eq!(o.label, Label::DroppedKeepalive);
    assert!(o.evidence.close_unseen);
}

#[test]
fn an_untraced_close_with_its_error_still_set_classifies_as_a_traced_one() {
    let mut ev = connect();
    established(&mut ev, 1);
    ev.rst_received_state = tcp_state::ESTABLISHED;
    let o = one(&[close_at_free(&ev, tcp_state::ESTABLISHED, 100, ECONNRESET)]);
    assert_eq!((o.label, o.errno), (Label::Reset, Some(ECONNRESET)));
}

#[test]
fn an_untraced_close_without_signs_of_death_is_silent() {
    // Nothing unacknowledged after a FIN exchange: a normal close, even with a retransmission.
    let mut ev = stalled_sender();
    ev.unacked = 0;
    let (out, counts) = run(&[close_at_free(&ev, tcp_state::LAST_ACK, 50, 0)]);
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(counts, ClassifierCounts::default());
    // Unacknowledged data closed with a RST by the application (SO_LINGER 0): not a death.
    let mut ev = stalled_sender();
    ev.rst_sent_state = tcp_state::ESTABLISHED;
    let (out, _) = run(&[close_at_free(&ev, tcp_state::ESTABLISHED, 50, 0)]);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn a_traced_close_without_an_error_is_never_inferred_a_death() {
    let ev = stalled_sender();
    let (out, _) = run(&[close(&ev, tcp_state::ESTABLISHED, 3100, 0)]);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn an_untraced_close_in_syn_sent_does_not_say_who_gave_up() {
    let mut ev = connect();
    ev.valid |= tracer_common::VALID_ICSK_RETRANSMITS;
    ev.icsk_retransmits = 2;
    let o = one(&[close_at_free(&ev, tcp_state::SYN_SENT, 3000, 0)]);
    assert_eq!(o.label, Label::SynTimeout);
    assert_eq!(o.evidence.gave_up, None);
    assert_eq!(o.evidence.syn_retransmits, 2);
}

/// A connect() by pid 42 "psql" to 10.0.0.2:5432 that failed inside the call with `errno`.
fn call_failed(errno: i32, valid: u32, at_ms: u64) -> RawEvent {
    let mut ev = connect();
    ev.kind = KIND_CONNECT_FAILED;
    ev.old_state = tcp_state::CLOSE;
    ev.new_state = tcp_state::CLOSE;
    ev.saddr_be = [0; 16];
    ev.sport = 0;
    ev.error = errno;
    ev.valid = tracer_common::VALID_NETNS | valid;
    ev.sock_id = 0xffff_8880_0000_1000;
    ev.ts_ns = T0 + at_ms * MS;
    ev
}

/// The CLOSE of a connect that connect() undid in SYN_SENT: no segment sent, no error.
fn undone_close(at_ms: u64) -> RawEvent {
    let mut ev = connect();
    ev.sock_id = 0xffff_8880_0000_1000;
    ev.sport = 0;
    let mut c = close(&ev, tcp_state::SYN_SENT, at_ms, 0);
    c.valid |= VALID_NOT_SENT;
    c
}

#[test]
fn connect_call_failures_are_labelled_by_errno_and_route() {
    let cases = [
        (ENETUNREACH, VALID_ROUTED, Some(Label::Unreachable)),
        (EHOSTUNREACH, VALID_ROUTED, Some(Label::Unreachable)),
        // `prohibit` and `blackhole` routes: the route lookup ran.
        (EACCES, VALID_ROUTED, Some(Label::Unreachable)),
        (EINVAL, VALID_ROUTED, Some(Label::Unreachable)),
        // Refused before the route lookup: a cgroup program, an LSM.
        (EACCES, 0, Some(Label::BlockedLocally)),
        (EPERM, 0, Some(Label::BlockedLocally)),
        (EADDRNOTAVAIL, VALID_ROUTED, Some(Label::NoLocalPort)),
        // A bad argument: no label, counted.
        (EINVAL, 0, None),
    ];
    for (errno, valid, want) in cases {
        let (out, counts) = run(&[call_failed(errno, valid, 0)]);
        assert_eq!(out.first().map(|o| o.label), want, "errno {errno}");
        assert_eq!(
            counts.unclassified,
            u64::from(want.is_none()),
            "errno {errno}"
        );
        if let Some(o) = out.first() {
            assert_eq!(o.errno, Some(errno));
            assert_eq!(o.evidence.phase, Some(Phase::ConnectCall));
            assert_eq!(o.evidence.syn_retransmits, 0);
            assert_eq!(o.conn.dst, "10.0.0.2:5432".parse().unwrap());
            assert_eq!((o.conn.pid, o.conn.tid), (42, 43));
            assert_eq!(o.direction, Direction::Outbound);
        }
    }
}

#[test]
fn an_undone_connect_and_its_call_are_one_no_local_port_failure_not_a_cancel() {
    let mut call = call_failed(EADDRNOTAVAIL, VALID_ROUTED | VALID_PORT_RANGE, 0);
    call.port_range_low = 40000;
    call.port_range_high = 40001;
    call.saddr_be[..4].copy_from_slice(&[10, 0, 0, 1]);
    let (out, counts) = run(&[undone_close(0), call]);
    assert_eq!(out.len(), 1, "{out:#?}");
    let o = &out[0];
    assert_eq!(o.label, Label::NoLocalPort);
    assert_eq!(o.errno, Some(EADDRNOTAVAIL));
    assert_eq!(o.evidence.local_port_range, Some((40000, 40001)));
    assert_eq!(o.conn.src, "10.0.0.1:0".parse().unwrap());
    assert_eq!(counts.cancelled, 0);
}

#[test]
fn the_source_of_an_undone_connect_comes_from_its_close_when_the_call_has_none() {
    let mut close = undone_close(0);
    close.sport = 45000; // the socket was bound to a port
    let (out, _) = run(&[close, call_failed(EADDRNOTAVAIL, 0, 0)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].conn.src, "10.0.0.1:45000".parse().unwrap());
}

#[test]
fn an_undone_connect_whose_call_was_not_traced_is_still_no_local_port() {
    let mut c = Classifier::new(KernelParams { hz: 250 });
    assert!(c.observe(&undone_close(0)).is_none(), "waits for its call");
    assert!(c.flush(T0 + PARK_NS / 2).is_empty(), "still waiting");
    let out = c.flush(T0 + PARK_NS);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].label, Label::NoLocalPort);
    assert_eq!(out[0].errno, None, "the errno is not known");
    assert_eq!(out[0].evidence.phase, Some(Phase::ConnectCall));
    assert_eq!(c.counts.cancelled, 0);
}

#[test]
fn a_late_close_of_a_reported_call_is_not_a_second_failure() {
    let mut late = undone_close(5);
    late.valid |= VALID_CLOSE_UNSEEN;
    let (out, counts) = run(&[call_failed(EADDRNOTAVAIL, 0, 0), late]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(counts.cancelled, 0);
}

/// Read at its exit alone, a blocking connect() that an ICMP error ended returns that error
/// from the call too: the socket's CLOSE reported it already, so the call's record is dropped
/// (and not counted as unclassified). The same errno from another socket, or later than a
/// blocking call wakes, is a failure of its own.
#[test]
fn a_call_failure_its_socket_already_reported_is_one_failure() {
    let mut ev = connect();
    ev.sock_id = 0xffff_8880_0000_1000;
    let icmp = close(&ev, tcp_state::SYN_SENT, 1000, EHOSTUNREACH);
    let mut call = call_failed(EHOSTUNREACH, VALID_ROUTED, 1000);
    call.ts_ns += 50_000;
    let (out, counts) = run(&[icmp, call]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].label, Label::Unreachable);
    assert_eq!(out[0].evidence.phase, None, "the socket path's record");
    assert_eq!(counts.unclassified, 0);

    let mut other = call_failed(EHOSTUNREACH, VALID_ROUTED, 1000);
    other.sock_id += 0x800;
    let mut late = call_failed(EHOSTUNREACH, VALID_ROUTED, 1000);
    late.ts_ns += 2 * CALL_AFTER_CLOSE_NS;
    for second in [other, late] {
        let (out, _) = run(&[icmp, second]);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[1].evidence.phase, Some(Phase::ConnectCall));
    }
}

/// Read at its exit alone, a call has no entry time: an undone connect's elapsed time runs from
/// the SYN_SENT it undid (the kernel's `start_ns` of the call is its exit).
#[test]
fn an_undone_call_read_at_exit_times_from_its_syn_sent() {
    let close = undone_close(3);
    let mut call = call_failed(EADDRNOTAVAIL, VALID_ROUTED, 3);
    call.start_ns = call.ts_ns;
    let (out, _) = run(&[close, call]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].label, Label::NoLocalPort);
    assert_eq!(out[0].evidence.elapsed_ms, 3.0);
}

#[test]
fn a_close_in_syn_sent_that_sent_its_syn_is_still_a_cancel() {
    let ev = connect();
    let (out, counts) = run(&[close(&ev, tcp_state::SYN_SENT, 1, 0)]);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].label, Label::Cancelled);
    assert_eq!(counts.cancelled, 1);
}

/// SYN-ACKs this host's own firewall dropped are the evidence of the SYN timeout; the numbers
/// are the kernel's (count, first reason, flags OR-ed), the times are after connect().
#[test]
fn a_syn_timeout_carries_the_drops_of_its_syn_acks() {
    let mut ev = connect();
    syn_retransmit(&mut ev, 1000);
    ev.drops_in = 3;
    ev.drop_reason_in = 12;
    ev.drop_flags_in = 0x12;
    ev.drop_first_ns = T0 + MS / 10;
    ev.drop_last_ns = T0 + 2000 * MS;
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 3000, libc::ETIMEDOUT)]);
    assert_eq!(o.label, Label::SynTimeout);
    let drops = o.evidence.local_drops.expect("local drops");
    assert_eq!(drops.sent, None);
    assert_eq!(
        drops.received,
        Some(DroppedSegments {
            packets: 3,
            reason: 12,
            tcp_flags: 0x12
        })
    );
    assert_eq!((drops.first_ms, drops.last_ms), (0.1, 2000.0));
}

/// No drop joined: no local-drop claim at all.
#[test]
fn a_syn_timeout_without_local_drops_claims_none() {
    let mut ev = connect();
    syn_retransmit(&mut ev, 1000);
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 3000, libc::ETIMEDOUT)]);
    assert_eq!(o.label, Label::SynTimeout);
    assert_eq!(o.evidence.local_drops, None);
}

/// The queued ICMP error's sender is `icmp_from` (IPv4 from the first 4 bytes, IPv6 whole),
/// only when an ICMP error was queued.
#[test]
fn the_icmp_sender_is_named_beside_the_queued_error() {
    let mut ev = connect();
    ev.valid |= VALID_ERR_QUEUE | VALID_ICMP_FROM;
    ev.err_queue_errno = libc::EHOSTUNREACH as u32;
    ev.err_queue_origin = 2;
    ev.err_queue_type = 3;
    ev.err_queue_code = 1;
    ev.icmp_from_be[..4].copy_from_slice(&[10, 0, 1, 1]);
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 5, libc::EHOSTUNREACH)]);
    assert_eq!(o.label, Label::Unreachable);
    assert_eq!(o.evidence.icmp, Some((3, 1)));
    assert_eq!(o.evidence.icmp_from, Some("10.0.1.1".parse().unwrap()));

    ev.family = AF_INET6;
    ev.err_queue_origin = 3;
    ev.err_queue_type = 1;
    ev.err_queue_code = 3;
    ev.icmp_from_be = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 5, libc::EHOSTUNREACH)]);
    assert_eq!(o.evidence.icmp_from, Some("fd00::1".parse().unwrap()));

    ev.valid &= !VALID_ERR_QUEUE;
    let o = one(&[close(&ev, tcp_state::SYN_SENT, 5, libc::EHOSTUNREACH)]);
    assert_eq!(o.evidence.icmp_from, None, "no queued error, no sender");
}

/// The warning record, then the death: the death says how long before it was warned.
#[test]
fn an_at_risk_warning_then_the_rto_death_that_followed_it() {
    let mut ev = connect();
    let up = established(&mut ev, 1);
    ev.valid |= tracer_common::VALID_ICSK_RETRANSMITS | VALID_UNACKED;
    ev.icsk_retransmits = 3;
    ev.data_retransmits = 3;
    ev.unacked = 1000;
    ev.warned_ns = T0 + 2000 * MS;
    let mut warning = ev;
    warning.kind = KIND_AT_RISK;
    warning.ts_ns = ev.warned_ns;
    let mut dead = close(&ev, tcp_state::ESTABLISHED, 902_000, libc::ETIMEDOUT);
    dead.icsk_retransmits = 15;
    dead.data_retransmits = 15;
    let (out, _) = run(&[up, warning, dead]);
    let labels: Vec<_> = out.iter().map(|o| o.label).collect();
    assert_eq!(labels, [Label::Connected, Label::AtRisk, Label::RtoTimeout]);
    assert!(!Label::AtRisk.is_failure() && Label::AtRisk.is_warning());
    assert_eq!(out[1].evidence.timeouts_in_a_row, Some(3));
    assert_eq!(out[1].evidence.unacked_bytes, Some(1000));
    assert_eq!(out[1].evidence.warned_ms_before, None);
    assert_eq!(out[2].evidence.warned_ms_before, Some(900_000.0));
}

/// A warned connection that closes with everything acknowledged recovered; one the
/// application closes while still stalled gets no second record.
#[test]
fn a_warned_connection_that_closes_clean_has_recovered() {
    let mut ev = connect();
    let _ = established(&mut ev, 1);
    ev.valid |= VALID_UNACKED;
    ev.warned_ns = T0 + 2000 * MS;
    let o = one(&[close(&ev, tcp_state::FIN_WAIT1, 9000, 0)]);
    assert_eq!(o.label, Label::Recovered);
    assert_eq!(o.evidence.warned_ms_before, Some(7000.0));

    ev.unacked = 1000;
    let (out, _) = run(&[close(&ev, tcp_state::FIN_WAIT1, 9000, 0)]);
    assert!(out.is_empty(), "{out:?}");
}

/// An error reported on an established connection and taken by the application (its `sk_err` is
/// 0 at the close): joined by 4-tuple from the classic program's report, or carried by the close
/// itself from the raw program's note — the same outcome either way.
#[test]
fn an_error_taken_before_a_clean_close_is_the_outcome_either_way() {
    let mut ev = connect();
    let up = established(&mut ev, 1);
    let joined = run(&[
        up,
        report(&ev, 500, libc::EHOSTUNREACH),
        close(&ev, tcp_state::ESTABLISHED, 900, 0),
    ])
    .0;
    let mut noted = close(&ev, tcp_state::ESTABLISHED, 900, 0);
    noted.error = libc::EHOSTUNREACH;
    let carried = run(&[up, noted]).0;
    for out in [joined, carried] {
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[1].label, Label::Unreachable);
        assert_eq!(out[1].errno, Some(libc::EHOSTUNREACH));
    }
}
