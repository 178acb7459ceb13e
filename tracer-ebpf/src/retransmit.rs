//! `tcp:tcp_retransmit_skb`: SYN retransmissions (state SYN_SENT, with their times for the
//! backoff timeline) and data retransmissions (synchronized states) of tracked connects.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{SYN_RETRANSMIT_SLOTS, tcp_state};

use crate::{
    emit::now_ns,
    read::{field, offset},
    state::tracked,
};

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit(&ctx);
    0
}

#[inline(always)]
fn try_retransmit(ctx: &TracePointContext) -> Option<()> {
    let skaddr: u64 = field(ctx, offset!(retransmit.skaddr), 0);
    let state = tracked(skaddr)?;
    let tcp: i32 = field(ctx, offset!(retransmit.state), 0);
    if tcp as u8 == tcp_state::SYN_SENT {
        let n = state.syn_retransmits as usize;
        if n < SYN_RETRANSMIT_SLOTS {
            let us = (now_ns().saturating_sub(state.start_ns) / 1_000) as u32;
            state.syn_retransmit_us[n] = us;
        }
        state.syn_retransmits = state.syn_retransmits.saturating_add(1);
    } else {
        state.data_retransmits = state.data_retransmits.saturating_add(1);
    }
    Some(())
}
