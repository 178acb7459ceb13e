//! Indices of the per-CPU `COUNTERS` array the programs increment and `tracer` sums.

/// Records submitted to the ring buffer.
pub const COUNTER_PRODUCED: u32 = 0;
/// Records lost because the ring buffer was full (reserve/output failed).
pub const COUNTER_LOST: u32 = 1;
/// Outbound connects whose state entry was created (CLOSE→SYN_SENT).
pub const COUNTER_TRACKED: u32 = 2;
/// State entries removed (at CLOSE or at destroy).
pub const COUNTER_UNTRACKED: u32 = 3;
/// A socket closed from SYN_SENT without a state entry: it was evicted from the LRU map.
pub const COUNTER_EVICTED: u32 = 4;
/// A kernel memory read (`bpf_probe_read_kernel`) failed.
pub const COUNTER_READ_ERRORS: u32 = 5;
/// Inserting a state entry failed.
pub const COUNTER_INSERT_ERRORS: u32 = 6;
/// Of the lost records, those that ended a connection (`KIND_CLOSED`): connections whose
/// outcome userspace never learns.
pub const COUNTER_LOST_CLOSED: u32 = 7;
/// Socket-less RSTs sent over a loopback device, not submitted: the host refused itself, and
/// the outbound connect that caused it is reported on its own.
pub const COUNTER_INBOUND_LOOPBACK: u32 = 8;
/// Closes reported when the socket was freed (`tcp:tcp_destroy_sock`) because their CLOSE
/// transition was not traced: the kernel skipped the program (it would have nested in another
/// BPF program on that CPU).
pub const COUNTER_CLOSES_AT_DESTROY: u32 = 9;
/// Number of counters (the array's size).
pub const COUNTER_COUNT: u32 = 10;
