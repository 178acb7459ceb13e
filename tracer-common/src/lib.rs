//! The ABI shared by the eBPF programs (`tracer-ebpf`) and userspace (`tracer`).
//!
//! Rules (ARCHITECTURE.md §1): `#[repr(C)]`, fixed-width integers and byte arrays only, explicit
//! padding, and a compile-time size assertion per type so both targets agree on the layout.
//! Fields in network byte order say so in their name; everything else is host order.
#![no_std]

pub mod cgroup;
pub mod config;
pub mod connect_call;
pub mod counters;
pub mod dns;
pub mod event;
pub mod offsets;

pub use cgroup::*;
pub use config::*;
pub use connect_call::*;
pub use counters::*;
pub use dns::*;
pub use event::*;
pub use offsets::*;

/// Linux TCP states as the `sock:inet_sock_set_state` tracepoint reports them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const IPPROTO_TCP: u16 = 6;
