//! Ring-buffer output and the per-CPU counters.
use tracer_common::RawEvent;
pub use tracer_common::{
    COUNTER_EVICTED, COUNTER_INBOUND_LOOPBACK, COUNTER_INSERT_ERRORS, COUNTER_LOST,
    COUNTER_LOST_CLOSED, COUNTER_PRODUCED, COUNTER_READ_ERRORS, COUNTER_TRACKED, COUNTER_UNTRACKED,
};

use crate::{COUNTERS, EVENTS};

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
        unsafe { *c += 1 };
    }
}

/// Submits a copy of `event`; counts it as produced or, if the buffer is full, as lost (and a
/// lost close separately: that connection's outcome is unknown).
#[inline(always)]
pub fn submit(event: &RawEvent) {
    match EVENTS.output::<RawEvent>(event, 0) {
        Ok(()) => count(COUNTER_PRODUCED),
        Err(_) => {
            count(COUNTER_LOST);
            if event.kind == tracer_common::KIND_CLOSED {
                count(COUNTER_LOST_CLOSED);
            }
        }
    }
}

/// Monotonic time, as userspace's CLOCK_MONOTONIC.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments, available to every program type.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_ns() }
}
