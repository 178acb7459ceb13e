//! `RawDns`: a DNS message as a socket of this host sent it (a query, `dns_egress`) or received
//! it (an answer to a query seen leaving, `dns_ingress`); `DnsKey`: the transaction the kernel
//! side matches an answer to.

/// The DNS answer record's kind.
pub const KIND_DNS: u8 = 8;
/// The DNS query record's kind (the same layout).
pub const KIND_DNS_QUERY: u8 = 9;
/// How long a query waits for its answer, in the kernel's map and in userspace's matcher: an
/// answer later than this names nothing. Resolvers give up far sooner (glibc: 5 s × 2 tries).
pub const DNS_QUERY_LIFETIME_NS: u64 = 30_000_000_000;
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
    /// The client's port (the answer's destination port, the query's source port).
    pub client_port: u16,
    /// The server's port (53).
    pub server_port: u16,
    /// A query: the sending task (`bpf_get_current_pid_tgid`) when the packet left in the
    /// context of the task that owns the socket (same cgroup), else 0. An answer: 0.
    pub pid: u32,
    pub tid: u32,
    /// The server's address (a query's destination, an answer's source), network order.
    pub server_be: [u8; 16],
    pub client_be: [u8; 16],
    pub payload: [u8; DNS_PAYLOAD],
}

pub const RAW_DNS_SIZE: usize = 72 + DNS_PAYLOAD;
const _: () = assert!(core::mem::size_of::<RawDns>() == RAW_DNS_SIZE);

// SAFETY: repr(C), only integers and byte arrays, explicit padding: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RawDns {}

/// A DNS transaction as both directions see it: the key of the kernel's map of queries in
/// flight (`DNS_QUERIES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct DnsKey {
    /// The client socket's network namespace (inode).
    pub netns: u32,
    /// The message's id (the first two bytes of a UDP payload, after the length on TCP).
    pub txid: u16,
    pub client_port: u16,
    pub server_port: u16,
    pub family: u8,
    pub transport: u8,
    pub client_be: [u8; 16],
    pub server_be: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<DnsKey>() == 44);

// SAFETY: repr(C), only integers and byte arrays, no implicit padding (44 = 4+2+2+2+1+1+16+16).
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsKey {}
