//! `tcp:tcp_receive_reset` (a RST arrived: refused in SYN_SENT, reset when synchronized) and
//! `tcp:tcp_send_reset` (this host sent a RST on the socket, e.g. after keepalive failure; or,
//! with no socket, answered a segment for a port where nothing listens: see `inbound`).
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{SEND_RESET_BYTES, STATE_UNKNOWN, VALID_RST_SENT_REASON};

use crate::{
    globals::offset,
    read::{Record, member},
    state::tracked,
};

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let _ = reset_received(Record::<16>::read(&ctx).field(offset!(receive_reset_skaddr), 0));
    0
}

/// The raw tracepoint (`tcp_receive_reset(struct sock *sk)`, checked against BTF at start-up).
#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset_raw(ctx: RawTracePointContext) -> u32 {
    let _ = reset_received(ctx.arg(0));
    0
}

#[inline(always)]
fn reset_received(skaddr: u64) -> Option<()> {
    let state = tracked(skaddr)?;
    // The tracepoint has no state field: read it from the socket.
    let mut tcp = STATE_UNKNOWN;
    member(skaddr as *const u8, offset!(members.skc_state), &mut tcp);
    state.rst_received_state = if tcp == 0 { STATE_UNKNOWN } else { tcp };
    Some(())
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let _ = try_send_reset(&ctx);
    0
}

#[inline(always)]
fn try_send_reset(ctx: &TracePointContext) -> Option<()> {
    let rec = Record::<SEND_RESET_BYTES>::read(ctx);
    let skaddr: u64 = rec.field(offset!(send_reset.skaddr), 0);
    let reason: u32 = rec.field(offset!(send_reset.reason), u32::MAX);
    if skaddr == 0 {
        // A RST for a segment that matched no socket: someone knocked on a closed port.
        let skb: u64 = rec.field(offset!(send_reset.skbaddr), 0);
        return crate::inbound::no_socket_reset(reason, skb, &rec);
    }
    reset_sent(skaddr, reason, || {
        let tcp: i32 = rec.field(offset!(send_reset.state), 0);
        tcp as u8
    })
}

/// The raw tracepoint (`tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum
/// sk_rst_reason reason)`, 6.10+, checked against BTF at start-up): no record is built; the
/// socket's state is read from the socket, a socket-less RST's addresses from the segment.
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset_raw(ctx: RawTracePointContext) -> u32 {
    let skaddr: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    let reason: u64 = ctx.arg(2);
    let _ = if skaddr == 0 {
        crate::inbound::no_socket_reset(reason as u32, skb, &crate::inbound::FromSegment(skb))
    } else {
        reset_sent(skaddr, reason as u32, || {
            let mut tcp = 0u8;
            member(skaddr as *const u8, offset!(members.skc_state), &mut tcp);
            tcp
        })
    };
    0
}

/// This host sent a RST on socket `skaddr`, for `reason` (`u32::MAX`: unknown); `tcp_state`
/// gives the socket's TCP state then (0: unknown), asked only for a tracked socket.
#[inline(always)]
fn reset_sent(skaddr: u64, reason: u32, tcp_state: impl FnOnce() -> u8) -> Option<()> {
    let state = tracked(skaddr)?;
    let tcp = tcp_state();
    state.rst_sent_state = if tcp == 0 { STATE_UNKNOWN } else { tcp };
    if reason != u32::MAX {
        state.rst_sent_reason = reason as u16;
        state.valid |= VALID_RST_SENT_REASON;
    }
    Some(())
}
