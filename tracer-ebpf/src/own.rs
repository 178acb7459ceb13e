//! The tracer's own process: its connects (socket sinks, the OTLP exporter) are not the host's
//! connections, so the filters skip them (`filter::pid_wanted`).
//!
//! The programs see a task's tgid in the initial pid namespace, which a tracer in a container
//! of its own pid namespace (the DaemonSet has no hostPID) cannot know from userspace. So the
//! kernel tells it: `whoami` is never attached; the loader runs it once with
//! `BPF_PROG_TEST_RUN`, which runs a raw tracepoint program in the calling task, and the program
//! stores that task's tgid in `OWN_TGID`, where the loader reads it back.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};

/// The tracer's tgid in the initial pid namespace; 0 until `whoami` ran (then nothing is
/// skipped: no task that connects has tgid 0). An array: the verifier inlines its lookup.
#[map]
static OWN_TGID: Array<u32> = Array::with_max_entries(1, 0);

/// Run by the loader (test run), never attached to a tracepoint.
#[raw_tracepoint(tracepoint = "whoami")]
pub fn whoami(_ctx: RawTracePointContext) -> u32 {
    if let Some(slot) = OWN_TGID.get_ptr_mut(0) {
        // SAFETY: the map's only value; only this program writes it, once, before any program
        // that reads it is attached.
        unsafe { *slot = (bpf_get_current_pid_tgid() >> 32) as u32 };
    }
    0
}

/// Whether `tgid` (from `bpf_get_current_pid_tgid`) is the tracer itself.
#[inline(always)]
pub fn is_own(tgid: u32) -> bool {
    // SAFETY: the map's only value, a u32 written once before this program was attached.
    let own = OWN_TGID.get_ptr(0).map_or(0, |v| unsafe { *v });
    own != 0 && tgid == own
}
