//! `RawDns`: a DNS answer as a socket of this host received it (`dns_ingress`).

/// The DNS record's kind.
pub const KIND_DNS: u8 = 8;
/// Bytes of the DNS message kept (UDP answers without EDNS fit; the rest is cut, and counted).
pub const DNS_PAYLOAD: usize = 512;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RawDns {
    pub kind: u8,
    /// `AF_INET` / `AF_INET6`.
    pub family: u8,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub transport: u8,
    pub _pad: u8,
    /// The receiving socket's network namespace (inode; 0 unknown).
    pub netns: u32,
    /// The receiving socket's cgroup (`bpf_skb_cgroup_id`).
    pub cgroup_id: u64,
    pub ts_ns: u64,
    /// Bytes of the message in `payload`, and of the message on the wire (TCP: the segment's).
    pub len: u16,
    pub wire_len: u16,
    /// The client's port (the answer's destination port).
    pub client_port: u16,
    pub _pad1: u16,
    /// The answering server's address (the packet's source), network order.
    pub server_be: [u8; 16],
    pub client_be: [u8; 16],
    pub payload: [u8; DNS_PAYLOAD],
}

pub const RAW_DNS_SIZE: usize = 64 + DNS_PAYLOAD;
const _: () = assert!(core::mem::size_of::<RawDns>() == RAW_DNS_SIZE);

// SAFETY: repr(C), only integers and byte arrays, explicit padding: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RawDns {}
