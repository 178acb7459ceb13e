//! Access to the per-socket state in `SOCKS`, and the 4-tuple key of `REPORTED`.
use tracer_common::RawEvent;

use crate::{SCRATCH, SOCKS};

/// A connection's 4-tuple, as the tracepoints report it (IPv4 in the first 4 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TupleKey {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    /// A whole word: no padding to zero (a byte loop in BPF).
    family: u32,
}

impl TupleKey {
    #[inline(always)]
    pub fn of(ev: &RawEvent) -> Self {
        Self {
            saddr: ev.saddr_be,
            daddr: ev.daddr_be,
            sport: ev.sport,
            dport: ev.dport,
            family: u32::from(ev.family),
        }
    }
}

/// The state entry of a tracked socket, for in-place updates.
#[inline(always)]
pub fn tracked(skaddr: u64) -> Option<&'static mut RawEvent> {
    let ptr = SOCKS.get_ptr_mut(skaddr)?;
    // SAFETY: a map value pointer stays valid for the duration of the program; updates to one
    // socket's entry are serialised by the kernel's socket lock / softirq context.
    Some(unsafe { &mut *ptr })
}

/// Scratch slots: one per program, so that a program never overwrites another's half-built record.
pub const SCRATCH_CONNECT: u32 = 0;
pub const SCRATCH_ERROR_REPORT: u32 = 1;
pub const SCRATCH_INBOUND: u32 = 2;
pub const SCRATCH_CONNECT_CALL: u32 = 3;
pub const SCRATCH_NAT: u32 = 4;
pub const SCRATCH_FORWARD_DROP: u32 = 5;

/// A zeroed per-CPU record to build in place.
#[inline(always)]
pub fn scratch(slot: u32) -> Option<&'static mut RawEvent> {
    let ptr = SCRATCH.get_ptr_mut(slot)?;
    let words = ptr.cast::<u64>();
    for i in 0..core::mem::size_of::<RawEvent>() / 8 {
        // SAFETY: within the slot (RawEvent is a whole number of u64 words, 8-aligned in the
        // map). Volatile keeps LLVM from turning the loop into a `memset` call, which the BPF
        // backend emits as a byte-at-a-time subprogram.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: a per-CPU slot used by a single program, which does not nest in itself on a CPU
    // (a classic tracepoint program: the kernel's CPU-wide bpf_prog_active guard; a raw one:
    // the program's own recursion counter), so nothing else touches it meanwhile.
    Some(unsafe { &mut *ptr })
}
