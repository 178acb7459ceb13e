//! `tcp:tcp_destroy_sock`: the socket is freed; its state entry must not outlive it (a later
//! socket may reuse the address).
//!
//! An entry still here means its CLOSE transition was never traced: the kernel skips a
//! tracepoint program that would nest in another BPF program on the same CPU (a timer softirq
//! that kills a connection can interrupt one of ours). The close is reported now instead, marked
//! `VALID_CLOSE_UNSEEN`, with the socket's facts as they are at the free.
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{VALID_CLOSE_UNSEEN, tcp_state};

use crate::{
    SOCKS,
    emit::{Counter, count, now_ns},
    globals::offset,
    read::Record,
    set_state::submit_closed,
    state::tracked,
};

#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    destroyed(Record::<16>::read(&ctx).field(offset!(destroy_skaddr), 0));
    0
}

/// The raw tracepoint (`tcp_destroy_sock(struct sock *sk)`, checked against BTF at start-up).
#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock_raw(ctx: RawTracePointContext) -> u32 {
    destroyed(ctx.arg(0));
    0
}

#[inline(always)]
fn destroyed(skaddr: u64) {
    if skaddr == 0 {
        return;
    }
    if let Some(state) = tracked(skaddr) {
        // The last traced state is the one the connection died in.
        state.old_state = state.new_state;
        state.new_state = tcp_state::CLOSE;
        state.ts_ns = now_ns();
        state.valid |= VALID_CLOSE_UNSEEN;
        submit_closed(skaddr, state);
        count(Counter::LateCloses);
        if SOCKS.remove(skaddr).is_ok() {
            count(Counter::Untracked);
        }
    }
}
