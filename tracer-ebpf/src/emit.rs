//! Ring-buffer output and the per-CPU counters.
use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
pub use tracer_common::Counter;
use tracer_common::RawEvent;

use crate::{COUNTERS, EVENTS};

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
        unsafe { *c += 1 };
    }
}

/// Submits a copy of `event`; counts it as produced or, if the buffer is full, as lost (and a
/// lost close separately: that connection's outcome is unknown).
#[inline(always)]
pub fn submit(event: &RawEvent) {
    match EVENTS.output::<RawEvent>(event, wakeup_flag(core::mem::size_of::<RawEvent>())) {
        Ok(()) => count(Counter::Produced),
        Err(_) => {
            count(Counter::Lost);
            if event.kind == tracer_common::KIND_CLOSED {
                count(Counter::LostConnections);
            }
        }
    }
}

/// Wakes the reader only when `CONFIG.wakeup_bytes` are waiting: under load one wakeup then
/// carries hundreds of records, and a trickle is drained by the reader's timer. `size`: the
/// record about to be submitted.
#[inline(always)]
pub fn wakeup_flag(size: usize) -> u64 {
    let threshold: u32 = crate::globals::config!(wakeup_bytes);
    if threshold == 0 {
        return 0;
    }
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if waiting + size as u64 >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Monotonic time, as userspace's CLOCK_MONOTONIC.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments, available to every program type.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_ns() }
}
