//! `sock:inet_sock_set_state`: the life of an outbound connect.
//!
//! CLOSE→SYN_SENT fires inside tcp_v4_connect/tcp_v6_connect in the calling task, so it is where
//! the process identity (pid, comm, uid, cgroup) and the netns are recorded. SYN_SENT→ESTABLISHED
//! gives the latency. →CLOSE is the end: `sk_err`, `sk_err_soft` and the TCP counters are read
//! there, because `inet_sk_error_report` is skipped for orphaned sockets. Each transition
//! reads only what its outcome can use.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    IPPROTO_TCP, KIND_CLOSED, KIND_CONNECTED, RawEvent, VALID_BYTES, VALID_ERR_QUEUE,
    VALID_ICMP_FROM, VALID_ICSK_RETRANSMITS, VALID_IDLE, VALID_KEEPALIVE, VALID_KEEPALIVE_CFG,
    VALID_NETNS, VALID_NOT_SENT, VALID_PROBES_OUT, VALID_REQUESTED, VALID_SK_ERR,
    VALID_SK_ERR_SOFT, VALID_SRTT, VALID_UNACKED, tcp_state,
};

use crate::{
    CONNECTS, SOCKS,
    emit::{Counter, count, now_ns, submit},
    globals::{config, offset},
    read::{Record, member, sock_netns, sock_sport, sock_tuple},
    state::{SCRATCH_CONNECT, TupleKey, scratch, tracked},
};

/// The bytes of the tracepoint's record the program copies (it ends at 72 on 6.x kernels).
const SET_STATE_BYTES: usize = 72;

/// The classic tracepoint: the record holds protocol, states, socket and 4-tuple.
#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let rec = Record::<SET_STATE_BYTES>::read(&ctx);
    let protocol: u16 = rec.field(offset!(set_state.protocol), 0);
    if protocol == IPPROTO_TCP {
        let newstate: i32 = rec.field(offset!(set_state.newstate), 0);
        let oldstate: i32 = rec.field(offset!(set_state.oldstate), 0);
        let skaddr: u64 = rec.field(offset!(set_state.skaddr), 0);
        let _ = transition(&ctx, &rec, skaddr, oldstate as u8, newstate as u8);
    }
    0
}

/// The raw tracepoint (`inet_sock_set_state(const struct sock *sk, const int oldstate, const
/// int newstate)`, checked against BTF at start-up): the arguments themselves, no record. A
/// transition of a socket not tracked costs one map lookup; the protocol and the 4-tuple are
/// read from the socket only where they are used.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    let skaddr: u64 = ctx.arg(0);
    let oldstate: i32 = ctx.arg(1);
    let newstate: i32 = ctx.arg(2);
    let _ = transition(&ctx, &FromSocket, skaddr, oldstate as u8, newstate as u8);
    0
}

/// Where a transition's protocol and 4-tuple come from: the classic tracepoint's record, or the
/// socket itself.
trait Facts {
    /// Whether the socket is TCP (the tracepoint also fires for MPTCP, SCTP, DCCP sockets).
    fn is_tcp(&self, sk: *const u8) -> bool;
    /// The 4-tuple at connect(): the source port is not known yet (unless bound), the rest is.
    fn tuple(&self, sk: *const u8, ev: &mut RawEvent);
    /// The source port, once the socket has been hashed.
    fn sport(&self, sk: *const u8, ev: &mut RawEvent);
}

impl Facts for Record<SET_STATE_BYTES> {
    #[inline(always)]
    fn is_tcp(&self, _sk: *const u8) -> bool {
        // Checked before the transition.
        true
    }

    #[inline(always)]
    fn tuple(&self, _sk: *const u8, ev: &mut RawEvent) {
        let fields = offset!(set_state.tuple);
        crate::read::tuple(self, &fields, ev);
    }

    #[inline(always)]
    fn sport(&self, sk: *const u8, ev: &mut RawEvent) {
        // The record has it all, for free.
        self.tuple(sk, ev);
    }
}

/// The raw tracepoint's: read from the socket.
struct FromSocket;

impl Facts for FromSocket {
    #[inline(always)]
    fn is_tcp(&self, sk: *const u8) -> bool {
        let mut protocol = 0u16;
        member(sk, offset!(members.sk_protocol), &mut protocol) && protocol == IPPROTO_TCP
    }

    #[inline(always)]
    fn tuple(&self, sk: *const u8, ev: &mut RawEvent) {
        sock_tuple(sk, ev);
    }

    #[inline(always)]
    fn sport(&self, sk: *const u8, ev: &mut RawEvent) {
        ev.sport = sock_sport(sk);
    }
}

#[inline(always)]
fn transition<C: EbpfContext>(
    ctx: &C,
    facts: &impl Facts,
    skaddr: u64,
    old: u8,
    new: u8,
) -> Option<()> {
    if skaddr == 0 {
        return None;
    }
    let sk = skaddr as *const u8;
    if old == tcp_state::CLOSE && new == tcp_state::SYN_SENT {
        if !facts.is_tcp(sk) {
            return None;
        }
        return on_connect(ctx, facts, skaddr);
    }
    if old == tcp_state::LISTEN || (old == tcp_state::SYN_RECV && new == tcp_state::ESTABLISHED) {
        // An accepted connection's way in (cloned from its listener in LISTEN, then SYN_RECV →
        // ESTABLISHED) or a listener's close: never a tracked connect, whose simultaneous open
        // (SYN_SENT → SYN_RECV) counts as established (below). No lookup: on a server these
        // are two of every inbound connection's transitions.
        return None;
    }
    // Only TCP sockets are tracked.
    // Untracked: filtered out, begun before the tracer attached, the tracer's own, or not
    // inserted because the map was full (counted then, in `insert_errors`). Nothing is evicted.
    let state = tracked(skaddr)?;
    state.old_state = old;
    state.new_state = new;
    if state.sport == 0 {
        // Address and destination are known at connect(); the source port only once the
        // socket is hashed, after that first transition.
        facts.sport(sk, state);
    }

    // The clock only where a record is made (a clock read is not free in a VM). A simultaneous
    // open (the peer's SYN crossed ours; also a socket connecting to its own address and port)
    // is established from here on: its SYN_RECV → ESTABLISHED is not looked up (above).
    if old == tcp_state::SYN_SENT && (new == tcp_state::ESTABLISHED || new == tcp_state::SYN_RECV) {
        state.ts_ns = now_ns();
        state.established_ns = state.ts_ns;
        state.kind = KIND_CONNECTED;
        submit(state);
    } else if new == tcp_state::CLOSE {
        if old != tcp_state::SYN_SENT && ended_cleanly(sk, state) {
            count(Counter::CleanCloses);
        } else {
            state.ts_ns = now_ns();
            submit_closed(skaddr, state);
        }
        if SOCKS.remove(skaddr).is_ok() {
            count(Counter::Untracked);
        }
    }
    Some(())
}

/// Whether an established connect's close has nothing to report, which userspace would
/// classify as no outcome at all: no socket error, no RST received, never warned about (else
/// it may have recovered), and no error report for its 4-tuple since it started (the
/// application may have taken an error reported earlier, which the report names). One socket
/// read and one map lookup instead of the close's reads and record. (A close whose `sk_err`
/// cannot be read is submitted: userspace waits for its error report.)
#[inline(always)]
fn ended_cleanly(sk: *const u8, state: &RawEvent) -> bool {
    if state.rst_received_state != 0 || state.warned_ns != 0 || state.error != 0 || state.sport == 0
    {
        return false;
    }
    let mut sk_err = 0i32;
    if !member(sk, offset!(members.sk_err), &mut sk_err) || sk_err != 0 {
        return false;
    }
    let in_state: u8 = config!(reports_in_state);
    if in_state != 0 {
        // The raw error-report program notes reports in the state itself (`state.error`).
        return true;
    }
    // SAFETY: a map value pointer, read at once while this program runs.
    let reported = crate::REPORTED
        .get_ptr(TupleKey::of(state))
        .is_some_and(|at| unsafe { *at } >= state.start_ns);
    !reported
}

/// Reads what the close of this socket can use (a connect that never got established needs
/// only its connect-phase facts) and submits the connection's record.
#[inline(always)]
pub(crate) fn submit_closed(skaddr: u64, state: &mut RawEvent) {
    let sk = skaddr as *const u8;
    read_connect_phase_facts(sk, state);
    if state.old_state != tcp_state::SYN_SENT {
        read_established_facts(sk, state);
    } else {
        // No segment ever left, and this thread is still inside the connect() call that took
        // the socket to SYN_SENT: connect() itself undid it (no local port left), and its
        // syscall exit reports why (`connect_call.rs`). (Outside the call a SYN_SENT socket with
        // nothing sent is e.g. a TCP_FASTOPEN_CONNECT socket closed before its first write.)
        let mut segs_out = 0u32;
        let at_exit: u8 = config!(calls_at_exit);
        if member(sk, offset!(members.segs_out), &mut segs_out) && segs_out == 0 {
            if at_exit != 0 {
                // The call's exit reads its own arguments; this CLOSE only says it was undone.
                if crate::read::in_connect_call() {
                    state.valid |= VALID_NOT_SENT;
                }
            } else if let Some(call) = CONNECTS.get_ptr_mut(bpf_get_current_pid_tgid()) {
                // SAFETY: a map value pointer, valid while this program runs; the entry is this
                // thread's, and the thread is inside connect() right now.
                let call = unsafe { &mut *call };
                if call.sk == skaddr {
                    call.undone = 1;
                    state.valid |= VALID_NOT_SENT;
                }
            }
        }
    }
    state.kind = KIND_CLOSED;
    submit(state);
}

/// CLOSE→SYN_SENT, in the task that called connect(): record who and where.
#[inline(always)]
fn on_connect<C: EbpfContext>(_ctx: &C, facts: &impl Facts, skaddr: u64) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Where the call's exit finds the socket itself (`calls_at_exit`), no entry is kept.
    let at_exit: u8 = config!(calls_at_exit);
    // What connect() was passed, if this runs inside the call: (family, address, port).
    let mut requested: Option<(u8, [u8; 16], u16)> = None;
    if at_exit == 0
        && let Some(call) = CONNECTS.get_ptr_mut(pid_tgid)
    {
        // SAFETY: a map value pointer, valid while this program runs; the entry is this
        // thread's, and the thread is inside connect() right now. From here the socket path
        // reports this connect.
        let call = unsafe { &mut *call };
        call.sk = skaddr;
        requested = Some((call.family, call.daddr, call.dport));
    }
    let sk = skaddr as *const u8;
    let netns = sock_netns(sk);
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    let ev = scratch(SCRATCH_CONNECT)?;
    record_caller(ev, pid_tgid, netns);
    ev.sock_id = skaddr;
    ev.start_ns = now_ns();
    ev.ts_ns = ev.start_ns;
    ev.old_state = tcp_state::CLOSE;
    ev.new_state = tcp_state::SYN_SENT;
    facts.tuple(sk, ev);
    if !crate::filter::connect_wanted(ev) || !crate::cgroup::note(ev.cgroup_id) {
        return None;
    }
    if at_exit != 0 {
        requested = requested_at_exit();
    }
    if let Some((_family, daddr, dport)) = requested
        && (daddr != ev.daddr_be || dport != ev.dport)
    {
        // A `cgroup/connect4`/`connect6` program rewrote the destination inside the call.
        ev.requested_be = daddr;
        ev.requested_port = dport;
        ev.valid |= VALID_REQUESTED;
    }
    // By reference: a copy of the record would not fit the BPF stack.
    let record: &RawEvent = ev;
    match SOCKS.insert(skaddr, record, 0) {
        Ok(()) => count(Counter::Tracked),
        // Counted, not logged: a full map would log once per connect. The loss monitor says it
        // on stderr while it grows (`insert_errors`).
        Err(_) => count(Counter::InsertErrors),
    }
    Some(())
}

/// The destination connect() was passed, read from the caller's `sockaddr` (pointer and length
/// from the registers the task saved on entering the kernel), if the task is inside connect()
/// (`Config::calls_at_exit` only).
#[inline(always)]
fn requested_at_exit() -> Option<(u8, [u8; 16], u16)> {
    if !crate::read::in_connect_call() {
        return None;
    }
    let regs = crate::read::current_regs();
    let (mut uservaddr, mut addrlen) = (0u64, 0u64);
    if !(member(regs, offset!(members.regs_uservaddr), &mut uservaddr)
        && member(regs, offset!(members.regs_addrlen), &mut addrlen))
    {
        return None;
    }
    crate::read::destination(uservaddr, addrlen)
}

/// Who is connecting (the task running now, inside connect()) and in which namespace.
#[inline(always)]
pub(crate) fn record_caller(ev: &mut RawEvent, pid_tgid: u64, netns: u32) {
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.uid = bpf_get_current_uid_gid() as u32;
    // Straight into the record (the helper's wrapper zeroes a stack copy first, a byte loop in
    // BPF). On failure the helper zeroes the buffer.
    // SAFETY: `ev.comm` is 16 writable bytes, the size passed.
    unsafe {
        aya_ebpf::helpers::generated::bpf_get_current_comm(
            ev.comm.as_mut_ptr().cast::<core::ffi::c_void>(),
            ev.comm.len() as u32,
        )
    };
    // SAFETY: a helper without pointer arguments, allowed in tracepoint programs.
    ev.cgroup_id = unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() };
    if netns != 0 {
        ev.netns = netns;
        ev.valid |= VALID_NETNS;
    }
}

/// `sk_err` at CLOSE; false if it cannot be read (no BTF).
#[inline(always)]
fn read_sk_err(sk: *const u8, ev: &mut RawEvent) -> bool {
    let ok = member(sk, offset!(members.sk_err), &mut ev.sk_err);
    if ok {
        ev.valid |= VALID_SK_ERR;
    }
    ok
}

/// Facts only the socket itself holds, read at the moment it closes: what any close needs.
#[inline(always)]
fn read_connect_phase_facts(sk: *const u8, ev: &mut RawEvent) {
    read_sk_err(sk, ev);
    if member(sk, offset!(members.sk_err_soft), &mut ev.sk_err_soft) {
        ev.valid |= VALID_SK_ERR_SOFT;
    }
    if member(
        sk,
        offset!(members.icsk_retransmits),
        &mut ev.icsk_retransmits,
    ) {
        ev.valid |= VALID_ICSK_RETRANSMITS;
    }
    read_error_queue(sk, ev);
    let bit: u32 = offset!(members.sock_keepopen_bit);
    let mut flags = 0u64;
    if bit < 64 && member(sk, offset!(members.sk_flags), &mut flags) {
        ev.keepalive = ((flags >> bit) & 1) as u8;
        ev.valid |= VALID_KEEPALIVE;
    }
}

/// What only an established connection's end needs: keepalive probes, RTT, idle time,
/// keepalive settings, byte counters.
#[inline(always)]
fn read_established_facts(sk: *const u8, ev: &mut RawEvent) {
    if member(sk, offset!(members.icsk_probes_out), &mut ev.probes_out) {
        ev.valid |= VALID_PROBES_OUT;
    }
    read_tcp_counters(sk, ev);
}

/// The first error queued on the socket (`sk_error_queue`), e.g. the ICMP port-unreachable that
/// arrived while connect() held the socket lock: the kernel then only sets `sk_err_soft`, which
/// `getsockopt(SO_ERROR)` clears, but the queued copy (with ICMP type and code) stays until the
/// socket is destroyed.
#[inline(always)]
fn read_error_queue(sk: *const u8, ev: &mut RawEvent) {
    let next_off: u32 = offset!(members.sk_error_queue_next);
    let ee_off: u32 = offset!(members.skb_exterr_ee);
    if ee_off == tracer_common::MEMBER_MISSING {
        return;
    }
    let mut skb: u64 = 0;
    if !member(sk, next_off, &mut skb) {
        return;
    }
    // An empty queue points back at its own head.
    if skb == 0 || skb == (sk as u64).wrapping_add(next_off as u64) {
        ev.valid |= VALID_ERR_QUEUE;
        return;
    }
    let mut ee = [0u8; 8];
    if member(skb as *const u8, ee_off, &mut ee) {
        ev.err_queue_errno = u32::from_le_bytes([ee[0], ee[1], ee[2], ee[3]]);
        ev.err_queue_origin = ee[4];
        ev.err_queue_type = ee[5];
        ev.err_queue_code = ee[6];
        ev.valid |= VALID_ERR_QUEUE;
        read_icmp_sender(skb as *const u8, ev);
    }
}

/// Who sent the queued ICMP error: the queued packet is the ICMP message itself, its network
/// header the IP header it came in (what `ip_recv_error` returns as `SO_EE_OFFENDER`) — a
/// router on the path, or the destination.
#[inline(always)]
fn read_icmp_sender(skb: *const u8, ev: &mut RawEvent) {
    let mut head = 0u64;
    let mut network = 0xffffu16;
    if !member(skb, offset!(members.skb_head), &mut head)
        || !member(skb, offset!(members.skb_network_header), &mut network)
        || network == 0xffff
    {
        return;
    }
    let ip = (head + u64::from(network)) as *const u8;
    let read = match ev.err_queue_origin {
        SO_EE_ORIGIN_ICMP => {
            let mut v4 = [0u8; 4];
            let ok = member(ip, IPV4_SADDR, &mut v4);
            ev.icmp_from_be[..4].copy_from_slice(&v4);
            ok
        }
        SO_EE_ORIGIN_ICMP6 => member(ip, IPV6_SADDR, &mut ev.icmp_from_be),
        _ => false,
    };
    if read {
        ev.valid |= VALID_ICMP_FROM;
    }
}

/// `sock_extended_err.ee_origin` of an ICMP / ICMPv6 error.
const SO_EE_ORIGIN_ICMP: u8 = 2;
const SO_EE_ORIGIN_ICMP6: u8 = 3;
/// Offset of the source address in an IPv4 / IPv6 header.
const IPV4_SADDR: u32 = 12;
const IPV6_SADDR: u32 = 8;

/// RTT, idle time, keepalive settings and byte counters of the TCP socket.
#[inline(always)]
pub(crate) fn read_tcp_counters(sk: *const u8, ev: &mut RawEvent) {
    if member(sk, offset!(members.srtt_us), &mut ev.srtt_us) {
        ev.valid |= VALID_SRTT;
    }
    let mut rcv_tstamp = 0u32;
    if member(sk, offset!(members.rcv_tstamp), &mut rcv_tstamp) {
        // SAFETY: a helper without arguments (bpf_base_func_proto, needs CAP_BPF).
        let now = unsafe { aya_ebpf::helpers::generated::bpf_jiffies64() } as u32;
        ev.idle_jiffies = now.wrapping_sub(rcv_tstamp);
        ev.valid |= VALID_IDLE;
    }
    if member(
        sk,
        offset!(members.keepalive_time),
        &mut ev.keepalive_time_j,
    ) && member(
        sk,
        offset!(members.keepalive_intvl),
        &mut ev.keepalive_intvl_j,
    ) && member(
        sk,
        offset!(members.keepalive_probes),
        &mut ev.keepalive_probes,
    ) {
        ev.valid |= VALID_KEEPALIVE_CFG;
    }
    let (mut write_seq, mut snd_una) = (0u32, 0u32);
    if member(sk, offset!(members.write_seq), &mut write_seq)
        && member(sk, offset!(members.snd_una), &mut snd_una)
    {
        ev.unacked = write_seq.wrapping_sub(snd_una);
        ev.valid |= VALID_UNACKED;
    }
    if member(sk, offset!(members.bytes_sent), &mut ev.bytes_sent)
        && member(sk, offset!(members.bytes_acked), &mut ev.bytes_acked)
        && member(sk, offset!(members.bytes_received), &mut ev.bytes_received)
    {
        ev.valid |= VALID_BYTES;
    }
}
