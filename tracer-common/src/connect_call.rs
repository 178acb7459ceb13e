//! `PendingConnect`: a connect() call between its entry and its exit, the value of the
//! programs' `CONNECTS` map (keyed by the thread's `pid_tgid`). Userspace reads it only to
//! sweep entries whose exit the kernel never ran the program for.

/// A connect() call between its entry and its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PendingConnect {
    /// Monotonic time of the call's entry.
    pub start_ns: u64,
    /// The socket, once the call took it to SYN_SENT (`inet_sock_set_state` in this thread):
    /// from then on the socket path reports how it ends, unless connect() undid it.
    pub sk: u64,
    /// The destination the caller asked for; IPv4 in the first 4 bytes. Network order.
    pub daddr: [u8; 16],
    /// Destination port, host order.
    pub dport: u16,
    pub family: u8,
    /// 1 when connect() undid the SYN_SENT before sending anything (its CLOSE had
    /// `segs_out` 0): the call, not the socket path, says why.
    pub undone: u8,
    /// The socket's file descriptor.
    pub fd: i32,
}
const _: () = assert!(core::mem::size_of::<PendingConnect>() == 40);

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields and byte arrays, no padding (40 bytes, asserted).
unsafe impl aya::Pod for PendingConnect {}
