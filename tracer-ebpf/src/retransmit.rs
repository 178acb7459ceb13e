//! `tcp:tcp_retransmit_skb`: SYN retransmissions (state SYN_SENT, with their times for the
//! backoff timeline) and data retransmissions (synchronized states) of tracked connects, and the
//! early warning: an established connect whose retransmission timer has fired
//! `CONFIG.at_risk_timeouts` times in a row (`icsk_retransmits`, which the kernel counts up at each
//! timeout before it retransmits, and zeroes when an ACK makes progress) is submitted once as
//! `KIND_AT_RISK`, minutes before the kernel gives up (`tcp_retries2`).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    KIND_AT_RISK, RawEvent, SYN_RETRANSMIT_SLOTS, VALID_ICSK_RETRANSMITS, tcp_state,
};

use crate::{
    emit::{now_ns, submit},
    globals::{config, offset},
    read::{Record, member},
    set_state::read_tcp_counters,
    state::tracked,
};

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit(&ctx);
    0
}

#[inline(always)]
fn try_retransmit(ctx: &TracePointContext) -> Option<()> {
    // skbaddr, skaddr, state: the first 32 bytes.
    let rec = Record::<32>::read(ctx);
    let skaddr: u64 = rec.field(offset!(retransmit.skaddr), 0);
    let state = tracked(skaddr)?;
    let tcp: i32 = rec.field(offset!(retransmit.state), 0);
    if tcp as u8 == tcp_state::SYN_SENT {
        let n = state.syn_retransmits as usize;
        if n < SYN_RETRANSMIT_SLOTS {
            let us = (now_ns().saturating_sub(state.start_ns) / 1_000) as u32;
            state.syn_retransmit_us[n] = us;
        }
        state.syn_retransmits = state.syn_retransmits.saturating_add(1);
    } else {
        state.data_retransmits = state.data_retransmits.saturating_add(1);
        warn_at_risk(skaddr as *const u8, state);
    }
    Some(())
}

/// Submits the at-risk record once the timeouts in a row reach the threshold.
#[inline(always)]
fn warn_at_risk(sk: *const u8, state: &mut RawEvent) {
    let threshold: u8 = config!(at_risk_timeouts);
    if threshold == 0 || state.warned_ns != 0 {
        return;
    }
    let mut timeouts = 0u8;
    if !member(sk, offset!(members.icsk_retransmits), &mut timeouts) || timeouts < threshold {
        return;
    }
    state.icsk_retransmits = timeouts;
    state.valid |= VALID_ICSK_RETRANSMITS;
    read_tcp_counters(sk, state);
    state.warned_ns = now_ns();
    state.ts_ns = state.warned_ns;
    state.kind = KIND_AT_RISK;
    submit(state);
}
