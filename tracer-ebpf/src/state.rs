//! Access to the per-socket state in `SOCKS`.
use tracer_common::RawEvent;

use crate::SOCKS;

/// The state entry of a tracked socket, for in-place updates.
#[inline(always)]
pub fn tracked(skaddr: u64) -> Option<&'static mut RawEvent> {
    let ptr = SOCKS.get_ptr_mut(skaddr)?;
    // SAFETY: a map value pointer stays valid for the duration of the program; updates to one
    // socket's entry are serialised by the kernel's socket lock / softirq context.
    Some(unsafe { &mut *ptr })
}
