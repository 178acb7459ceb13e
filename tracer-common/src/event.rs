//! `RawEvent`: the one record type the programs put in the ring buffer.
//!
//! The same struct is the per-socket state kept in the `SOCKS` LRU map from connect() to CLOSE:
//! the programs fill it in as facts arrive and submit a copy at ESTABLISHED and at CLOSE.

/// SYN_SENT→ESTABLISHED of a tracked outbound connect.
pub const KIND_CONNECTED: u8 = 1;
/// →CLOSE of a tracked outbound connect: every fact gathered over its life.
pub const KIND_CLOSED: u8 = 2;
/// `sock:inet_sk_error_report` with a non-zero error, for any TCP socket (no socket address:
/// userspace joins it to a connection by 4-tuple).
pub const KIND_ERROR_REPORT: u8 = 3;

/// `tcp:tcp_send_reset` for a segment that matched no socket (`SK_RST_REASON_NO_SOCKET`): someone
/// knocked on a port where nothing listens. src = the remote peer, dst = the local address.
pub const KIND_INBOUND_RESET: u8 = 4;

/// `syscalls:sys_exit_connect` with an error, for a TCP socket that sent no segment: connect()
/// failed inside the call (no route, no local port, a local policy). `error` is the errno,
/// `start_ns` the call's entry; the destination is the one the caller asked for; the source is
/// what the socket holds (its port is 0). `sock_id` joins it to that socket's CLOSE, if any.
pub const KIND_CONNECT_FAILED: u8 = 5;

/// `tcp:tcp_retransmit_skb` of an established tracked connect that has now gone
/// `CONFIG.at_risk_timeouts` retransmission timeouts in a row without progress: a copy of its
/// state with the socket's facts so far, submitted once (`warned_ns` set). Its later CLOSE
/// record carries `warned_ns` too.
pub const KIND_AT_RISK: u8 = 7;

/// A connection this host translated (conntrack NAT) for a packet that no tracked socket of this
/// host sent: traffic forwarded through it (a pod's SYN DNAT-ed in the node's namespace).
/// `saddr_be`/`daddr_be`/`sport`/`dport` = the connection as its sender made it (conntrack's
/// original tuple: for a pod, its socket's 4-tuple); `nat_*` = where the translation sends it;
/// `netns` = the namespace of the device the packet was queued on; `ts_ns` = then. Seen on the
/// packet's way out (`net:net_dev_queue`), once per conntrack entry.
pub const KIND_NAT: u8 = 10;
/// A new connection's packet (a SYN, conntrack `IP_CT_NEW`) that no tracked socket of this host
/// sent, dropped by netfilter (`skb:kfree_skb` reason `NETFILTER_DROP`): as `KIND_NAT` (the
/// tuple; `nat_*` with `VALID_NAT` if it was translated before the drop), plus
/// `drop_reason_out`, `drop_flags_out` and `netns` (the device the packet came in on).
pub const KIND_FORWARD_DROP: u8 = 11;

/// `KIND_FORWARD_DROP` records one CPU submits per second at most; the rest are counted
/// (`forward_drops_limited`).
pub const FORWARD_DROP_RATE: u32 = 1000;

/// `RawEvent::nat_status` bits: conntrack `IPS_DST_NAT` / `IPS_SRC_NAT` were set.
pub const NAT_DST: u8 = 1 << 0;
pub const NAT_SRC: u8 = 1 << 1;

/// How many SYN retransmission times are kept for the evidence timeline.
pub const SYN_RETRANSMIT_SLOTS: usize = 8;

/// Bits of `RawEvent::valid`: which struct-member reads succeeded (see `KernelOffsets`).
pub const VALID_SK_ERR: u32 = 1 << 0;
pub const VALID_SK_ERR_SOFT: u32 = 1 << 1;
pub const VALID_NETNS: u32 = 1 << 2;
pub const VALID_ICSK_RETRANSMITS: u32 = 1 << 3;
pub const VALID_PROBES_OUT: u32 = 1 << 4;
pub const VALID_KEEPALIVE: u32 = 1 << 5;
pub const VALID_RST_SENT_REASON: u32 = 1 << 6;
pub const VALID_ERR_QUEUE: u32 = 1 << 7;
pub const VALID_SRTT: u32 = 1 << 8;
pub const VALID_IDLE: u32 = 1 << 9;
pub const VALID_KEEPALIVE_CFG: u32 = 1 << 10;
pub const VALID_BYTES: u32 = 1 << 11;
pub const VALID_TCP_FLAGS: u32 = 1 << 12;
pub const VALID_LOOPBACK: u32 = 1 << 13;
pub const VALID_UNACKED: u32 = 1 << 14;
/// KIND_CLOSED: the CLOSE transition itself was not traced; this record was made when the
/// socket was freed (`tcp:tcp_destroy_sock`), so `sk_err` may already have been handed to the
/// application (and cleared), and `ts_ns` is the time of the free, not of the close.
pub const VALID_CLOSE_UNSEEN: u32 = 1 << 15;
/// KIND_CLOSED: closed from SYN_SENT inside the connect() call that opened it, without ever
/// sending a segment (`tcp_sock.segs_out` 0): connect() undid it (e.g. no local port left).
pub const VALID_NOT_SENT: u32 = 1 << 16;
/// KIND_CONNECT_FAILED: the socket holds the destination the caller asked for, so the kernel's
/// route lookup ran (a route error), rather than a policy check refusing before it.
pub const VALID_ROUTED: u32 = 1 << 17;
/// KIND_CONNECT_FAILED: `port_range_low`/`_high` hold the namespace's ephemeral port range.
pub const VALID_PORT_RANGE: u32 = 1 << 18;
/// KIND_CLOSED: `icmp_from_be` holds the source address of the queued ICMP error (the host or
/// router that sent it).
pub const VALID_ICMP_FROM: u32 = 1 << 19;
/// `nat_*` hold the connection's translation as conntrack made it on this host (the SYN's
/// `skb->_nfct`: `IPS_DST_NAT`/`IPS_SRC_NAT`, reply tuple), for a tracked socket or `KIND_NAT`.
pub const VALID_NAT: u32 = 1 << 20;
/// `requested_*` hold the destination connect() was passed, which differs from the socket's
/// (a `cgroup/connect4`/`connect6` program rewrote it inside the call: socket-level load balancing).
pub const VALID_REQUESTED: u32 = 1 << 21;

/// `rst_*_state` value when a RST happened but the socket state could not be read.
pub const STATE_UNKNOWN: u8 = 0xff;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RawEvent {
    /// One of the `KIND_*` constants.
    pub kind: u8,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// TCP state before the transition that emitted this record (CLOSED: the state it died in).
    pub old_state: u8,
    /// TCP state after the transition.
    pub new_state: u8,
    /// Thread-group id (the process id) of the task that called connect().
    pub pid: u32,
    /// Thread id of the task that called connect().
    pub tid: u32,
    /// Real uid of the task that called connect().
    pub uid: u32,
    /// Inode of the socket's network namespace (0 if unreadable).
    pub netns: u32,
    /// `sock.sk_err` at CLOSE (a positive errno, 0 for none).
    pub sk_err: i32,
    /// `sock.sk_err_soft` at CLOSE.
    pub sk_err_soft: i32,
    /// KIND_ERROR_REPORT: the reported errno. KIND_CLOSED: the last errno reported on the
    /// connection while it was open (raw `inet_sk_error_report`), 0 if none: the error the
    /// application may have taken before the close.
    pub error: i32,
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// `tcp:tcp_retransmit_skb` seen in SYN_SENT.
    pub syn_retransmits: u16,
    /// `tcp:tcp_retransmit_skb` seen in a synchronized state.
    pub data_retransmits: u16,
    /// `inet_connection_sock.icsk_retransmits` at CLOSE.
    pub icsk_retransmits: u8,
    /// `inet_connection_sock.icsk_probes_out` at CLOSE (keepalive or zero-window probes).
    pub probes_out: u8,
    /// SO_KEEPALIVE set on the socket at CLOSE (0 or 1).
    pub keepalive: u8,
    /// State in which a RST was received (`tcp:tcp_receive_reset`), 0 for none.
    pub rst_received_state: u8,
    /// State in which this host sent a RST on the socket (`tcp:tcp_send_reset`), 0 for none.
    pub rst_sent_state: u8,
    pub _pad0: u8,
    /// `enum sk_rst_reason` of the RST this host sent.
    pub rst_sent_reason: u16,
    /// `VALID_*` bits.
    pub valid: u32,
    /// `ee_errno` of the first error queued on the socket at CLOSE (an ICMP error the kernel
    /// queued while connect() held the socket; it survives `getsockopt(SO_ERROR)`), 0 for none.
    pub err_queue_errno: u32,
    /// `ee_origin` (2 ICMP, 3 ICMPv6), `ee_type` and `ee_code` of that queued error.
    pub err_queue_origin: u8,
    pub err_queue_type: u8,
    pub err_queue_code: u8,
    pub _pad1: u8,
    /// KIND_CONNECT_FAILED: `net.ipv4.ip_local_port_range` of the socket's namespace.
    pub port_range_low: u16,
    pub port_range_high: u16,
    /// Monotonic time (`bpf_ktime_get_ns`) of this record.
    pub ts_ns: u64,
    /// Monotonic time of connect() (CLOSE→SYN_SENT).
    pub start_ns: u64,
    /// Monotonic time of SYN_SENT→ESTABLISHED, 0 if never.
    pub established_ns: u64,
    /// Kernel address of the socket: identifies the connection while it lives.
    pub sock_id: u64,
    /// cgroup v2 id of the task that called connect().
    pub cgroup_id: u64,
    /// Source address; IPv4 in the first 4 bytes. Network order.
    pub saddr_be: [u8; 16],
    /// Destination address; IPv4 in the first 4 bytes. Network order.
    pub daddr_be: [u8; 16],
    /// `comm` of the task that called connect(), NUL-padded.
    pub comm: [u8; 16],
    /// Time of each SYN retransmission after connect(), microseconds (first `SYN_RETRANSMIT_SLOTS`).
    pub syn_retransmit_us: [u32; SYN_RETRANSMIT_SLOTS],
    /// `tcp_sock.srtt_us` at CLOSE: the smoothed RTT in µs, shifted left by 3.
    pub srtt_us: u32,
    /// Jiffies from the last segment received (`tcp_sock.rcv_tstamp`) to CLOSE.
    pub idle_jiffies: u32,
    /// Per-socket TCP_KEEPIDLE / TCP_KEEPINTVL in jiffies (0: the namespace's sysctl applies).
    pub keepalive_time_j: u32,
    pub keepalive_intvl_j: u32,
    /// Per-socket TCP_KEEPCNT (0: the namespace's sysctl applies).
    pub keepalive_probes: u8,
    /// KIND_INBOUND_RESET: TCP flags of the segment that matched no socket.
    pub tcp_flags: u8,
    /// KIND_INBOUND_RESET: 1 when it arrived on a loopback device (the peer is this host).
    pub loopback: u8,
    pub _pad2: u8,
    /// Bytes the application wrote that the peer has not acknowledged
    /// (`tcp_sock.write_seq - tcp_sock.snd_una`) at CLOSE.
    pub unacked: u32,
    /// `tcp_sock.bytes_sent`, `bytes_acked`, `bytes_received` at CLOSE.
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// Packets of this connection this host dropped (`skb:kfree_skb`, reasons the loader did
    /// not mark ignorable): sent by it (`_out`: SYN, ACK, data) and arriving for it (`_in`:
    /// SYN-ACK, data, ACK), with the first drop's `enum skb_drop_reason` value and the TCP flags
    /// of the dropped segments OR-ed, per direction.
    pub drops_out: u16,
    pub drops_in: u16,
    pub drop_reason_out: u16,
    pub drop_reason_in: u16,
    pub drop_flags_out: u8,
    pub drop_flags_in: u8,
    pub _pad3: [u8; 6],
    /// Monotonic time of the first and the last of those drops.
    pub drop_first_ns: u64,
    pub drop_last_ns: u64,
    /// Monotonic time of the at-risk warning (`KIND_AT_RISK`), 0 if none was given.
    pub warned_ns: u64,
    /// Source address of the queued ICMP error (`VALID_ICMP_FROM`), network order, IPv4 in the
    /// first 4 bytes.
    pub icmp_from_be: [u8; 16],
    /// `VALID_NAT`: conntrack's reply tuple, reversed: `nat_daddr_be`/`nat_dport` = the address
    /// the connection was sent to after translation (the backend, its reply's source), and
    /// `nat_saddr_be`/`nat_sport` = the source the peer sees (the reply's destination: differs
    /// from the socket's under SNAT/masquerade). Network order, IPv4 in the first 4 bytes.
    pub nat_daddr_be: [u8; 16],
    pub nat_saddr_be: [u8; 16],
    pub nat_dport: u16,
    pub nat_sport: u16,
    /// `VALID_REQUESTED`: the port connect() was passed (host order).
    pub requested_port: u16,
    /// `NAT_DST`/`NAT_SRC` bits of the conntrack entry's status.
    pub nat_status: u8,
    pub _pad4: u8,
    /// `VALID_REQUESTED`: the address connect() was passed, network order.
    pub requested_be: [u8; 16],
}

pub const RAW_EVENT_SIZE: usize = 344;
const _: () = assert!(core::mem::size_of::<RawEvent>() == RAW_EVENT_SIZE);

impl RawEvent {
    /// Whether the read behind a `VALID_*` bit succeeded.
    #[inline(always)]
    pub const fn has(&self, bit: u32) -> bool {
        self.valid & bit != 0
    }
}

// SAFETY: repr(C), only integer fields and byte arrays, explicit padding: every bit pattern is
// valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RawEvent {}
