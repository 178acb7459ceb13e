//! The tracer's eBPF programs: thin readers of kernel facts on stable tracepoints
//! (ARCHITECTURE.md §2).
//!
//! They never decide a verdict. They keep one `RawEvent` per outbound connect in the `SOCKS` hash
//! map (keyed by the socket's kernel address), fill it in as facts arrive, and submit it to the
//! `EVENTS` ring buffer at ESTABLISHED and at CLOSE (except a clean close of an established connect,
//! which has nothing to report). Every offset they use comes from the
//! `OFFSETS` global that the loader resolves at start-up (tracefs formats and BTF).
#![no_std]
#![no_main]

mod cgroup;
mod connect_call;
mod destroy;
mod dns;
mod drop;
mod emit;
mod error_report;
mod filter;
mod globals;
mod inbound;
mod nat;
mod own;
mod read;
mod reset;
mod retransmit;
mod set_state;
mod state;

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{COUNTER_COUNT, PendingConnect, RawEvent};

/// Records for userspace. The loader sets the real size.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// DNS queries and their answers (`dns.rs`), apart from `EVENTS`: no DNS traffic can take the
/// place of a failure record. The loader sets the real size.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

/// The DNS queries in flight (`dns.rs`): each transaction seen leaving, with when. An answer is
/// submitted only if it takes its query out of here. An LRU: under a storm of queries the
/// oldest are forgotten first (their late answers then name nothing).
#[map]
static DNS_QUERIES: LruHashMap<tracer_common::DnsKey, u64> =
    LruHashMap::with_max_entries(16_384, 0);

/// Per-socket state of outbound connects, from connect() to CLOSE. The loader sets the size
/// (`--max-sockets`). A preallocated plain hash: its capacity is global (a per-CPU LRU gave each
/// CPU max/CPUs entries and silently evicted live connections beyond that), and when it is
/// full the insert at connect fails, counted exactly in `insert_errors`; nothing is ever
/// evicted. An entry leaves at CLOSE or at the socket's free (`destroy.rs`).
#[map]
static SOCKS: HashMap<u64, RawEvent> = HashMap::with_max_entries(65_536, 0);

/// The 4-tuples of recent error reports (`error_report.rs`), with when: an established
/// connect that then closes without an error of its own is still submitted if one was reported
/// for it (the application may have taken the error: `set_state.rs`). An LRU: a report older
/// than the last 4,096 only loses that shortcut's precision, never a record.
#[map]
static REPORTED: LruHashMap<state::TupleKey, u64> = LruHashMap::with_max_entries(4096, 0);

/// Per-CPU scratch space for building a record (too large for the 512-byte BPF stack), one slot
/// per program that builds one (see `state::scratch`).
#[map]
static SCRATCH: PerCpuArray<RawEvent> = PerCpuArray::with_max_entries(6, 0);

/// The connect() calls in progress, by thread (`pid_tgid`): what each asked for, from the
/// call's entry to its exit (`connect_call.rs`). A thread is in at most one call. A plain hash:
/// an LRU insert cost three times as much on every connect(); an entry whose exit the kernel
/// skipped the program for is swept by userspace (`Session`).
#[map]
static CONNECTS: HashMap<u64, PendingConnect> = HashMap::with_max_entries(16_384, 0);

/// The cgroups whose names were announced (`cgroup.rs`), with userspace's verdict for the
/// workload filters (`CGROUP_*`). Evicting one only means it is announced again.
#[map]
static CGROUPS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16_384, 0);

/// Per CPU, the cgroup of the last connect whose verdict is final: a run of connects from one
/// workload skips the `CGROUPS` lookup.
#[map]
static LAST_CGROUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The connections a translation (`KIND_NAT`, bit `nat::SEEN_NAT`) or a dropped SYN that no
/// socket sent (`KIND_FORWARD_DROP`, `nat::SEEN_DROP`) was submitted for, by original tuple: a
/// retransmitted SYN is `IP_CT_NEW` again (and, dropped unconfirmed, has a new conntrack entry
/// each time) and must not submit again. An LRU of 8,192 entries (about 0.8 MiB): forgetting
/// one only means a second record; a new connection on the very same 4-tuple while its
/// predecessor is remembered is not reported.
#[map]
static CT_SEEN: LruHashMap<state::TupleKey, u8> = LruHashMap::with_max_entries(8192, 0);

/// Per CPU, the forwarded-drop rate limit's window: [start (ns), records submitted in it].
#[map]
static FORWARD_DROP_WINDOW: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `tracer_common::Counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT as u32, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
