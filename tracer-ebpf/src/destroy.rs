//! `tcp:tcp_destroy_sock`: the socket is freed; its state entry must not outlive it (a later
//! socket may reuse the address).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    SOCKS,
    emit::{COUNTER_UNTRACKED, count},
    read::{field, offset},
};

#[tracepoint]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    let skaddr: u64 = field(&ctx, offset!(destroy_skaddr), 0);
    if skaddr != 0 && SOCKS.remove(skaddr).is_ok() {
        count(COUNTER_UNTRACKED);
    }
    0
}
