//! Offsets the programs cannot know at compile time, resolved by the loader at start-up and
//! handed over in the read-only global `OFFSETS` (the run-time settings are `crate::config`).
//!
//! Tracepoint field offsets come from `/sys/kernel/tracing/events/<group>/<name>/format`;
//! struct member offsets come from the running kernel's BTF. A value that could not be resolved
//! is `FIELD_MISSING` / `MEMBER_MISSING` and the programs skip that read.

/// The bytes of `tcp:tcp_send_reset`'s record the program copies (its addresses end at 88 on
/// 6.x); the loader checks the fields it needs lie within them.
pub const SEND_RESET_BYTES: usize = 88;

pub const FIELD_MISSING: u16 = u16::MAX;
pub const MEMBER_MISSING: u32 = u32::MAX;

/// Offsets of the 4-tuple fields that several tracepoints share (same names, own offsets).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleFields {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<TupleFields>() == 16);

impl TupleFields {
    pub const MISSING: TupleFields = TupleFields {
        family: FIELD_MISSING,
        sport: FIELD_MISSING,
        dport: FIELD_MISSING,
        saddr: FIELD_MISSING,
        daddr: FIELD_MISSING,
        saddr_v6: FIELD_MISSING,
        daddr_v6: FIELD_MISSING,
        _pad: 0,
    };
}

/// Field offsets of `sock:inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetStateFields {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub protocol: u16,
    pub tuple: TupleFields,
}
const _: () = assert!(core::mem::size_of::<SetStateFields>() == 24);

/// Field offsets of `tcp:tcp_retransmit_skb`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockStateFields {
    pub skaddr: u16,
    pub state: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(core::mem::size_of::<SockStateFields>() == 8);

/// Field offsets of `sock:inet_sk_error_report`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorReportFields {
    pub error: u16,
    pub protocol: u16,
    pub _pad: [u16; 2],
    pub tuple: TupleFields,
}
const _: () = assert!(core::mem::size_of::<ErrorReportFields>() == 24);

/// Field offsets of `tcp:tcp_send_reset`. `saddr`/`daddr` are 28-byte socket addresses
/// (`sockaddr_in` / `sockaddr_in6`); for a segment that matched no socket they hold the local
/// and the remote end of that segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendResetFields {
    pub skaddr: u16,
    pub skbaddr: u16,
    pub state: u16,
    pub reason: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(core::mem::size_of::<SendResetFields>() == 16);

impl SendResetFields {
    pub const MISSING: SendResetFields = SendResetFields {
        skaddr: FIELD_MISSING,
        skbaddr: FIELD_MISSING,
        state: FIELD_MISSING,
        reason: FIELD_MISSING,
        saddr: FIELD_MISSING,
        daddr: FIELD_MISSING,
        _pad: [0; 2],
    };
}

/// Field offsets of `syscalls:sys_enter_connect` (`fd`, `uservaddr`, `addrlen`: each stored as
/// 8 bytes) and `syscalls:sys_exit_connect` (`ret`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCallFields {
    pub fd: u16,
    pub uservaddr: u16,
    pub addrlen: u16,
    pub ret: u16,
}
const _: () = assert!(core::mem::size_of::<ConnectCallFields>() == 8);

impl ConnectCallFields {
    pub const MISSING: ConnectCallFields = ConnectCallFields {
        fd: FIELD_MISSING,
        uservaddr: FIELD_MISSING,
        addrlen: FIELD_MISSING,
        ret: FIELD_MISSING,
    };
}

/// Field offsets of `skb:kfree_skb`, and the drop reasons (`enum skb_drop_reason` values, from
/// BTF) the program ignores: bit `r` of `ignored_reasons` set = ignore reason `r`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropFields {
    pub skbaddr: u16,
    pub protocol: u16,
    pub reason: u16,
    pub _pad: u16,
    pub ignored_reasons: [u8; DROP_REASON_BITMAP_BYTES],
}
const _: () = assert!(core::mem::size_of::<DropFields>() == 40);

/// Reasons up to 255 fit the bitmap; a larger value is never ignored.
pub const DROP_REASON_BITMAP_BYTES: usize = 32;

impl DropFields {
    pub const MISSING: DropFields = DropFields {
        skbaddr: FIELD_MISSING,
        protocol: FIELD_MISSING,
        reason: FIELD_MISSING,
        _pad: 0,
        ignored_reasons: [0; DROP_REASON_BITMAP_BYTES],
    };
}

/// Byte offsets of kernel struct members, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberOffsets {
    /// `sock.sk_err` (int).
    pub sk_err: u32,
    /// `sock.sk_err_soft` (int).
    pub sk_err_soft: u32,
    /// `sock.__sk_common.skc_net.net` (struct net *).
    pub skc_net: u32,
    /// `net.ns.inum` (unsigned int).
    pub net_ns_inum: u32,
    /// `sock.__sk_common.skc_state` (unsigned char).
    pub skc_state: u32,
    /// `inet_connection_sock.icsk_retransmits` (u8).
    pub icsk_retransmits: u32,
    /// `inet_connection_sock.icsk_probes_out` (u8).
    pub icsk_probes_out: u32,
    /// `sock.__sk_common.skc_flags` (`sk_flags`, unsigned long).
    pub sk_flags: u32,
    /// Bit number of `SOCK_KEEPOPEN` in `sk_flags` (from the BTF enum `sock_flags`).
    pub sock_keepopen_bit: u32,
    /// `sock.sk_error_queue.next` (struct sk_buff *): the first queued socket error.
    pub sk_error_queue_next: u32,
    /// `sk_buff.cb` + `sock_exterr_skb.ee`: the `sock_extended_err` of a queued error.
    pub skb_exterr_ee: u32,
    /// `tcp_sock.srtt_us` (u32).
    pub srtt_us: u32,
    /// `tcp_sock.rcv_tstamp` (u32 jiffies).
    pub rcv_tstamp: u32,
    /// `tcp_sock.bytes_sent`, `bytes_acked`, `bytes_received` (u64).
    pub bytes_sent: u32,
    pub bytes_acked: u32,
    pub bytes_received: u32,
    /// `tcp_sock.keepalive_time`, `keepalive_intvl` (unsigned int, jiffies), `keepalive_probes` (u8).
    pub keepalive_time: u32,
    pub keepalive_intvl: u32,
    pub keepalive_probes: u32,
    /// `sk_buff.dev` (struct net_device *), `sk_buff.data` (unsigned char *).
    pub skb_dev: u32,
    pub skb_data: u32,
    /// `net_device.nd_net.net` (struct net *), `net_device.flags` (unsigned int).
    pub dev_nd_net: u32,
    pub dev_flags: u32,
    /// Value of `SK_RST_REASON_NO_SOCKET` in `enum sk_rst_reason`.
    pub rst_reason_no_socket: u32,
    /// `tcp_sock.write_seq`, `tcp_sock.snd_una` (u32).
    pub write_seq: u32,
    pub snd_una: u32,
    /// `tcp_sock.segs_out` (u32): segments sent; 0 at a close means no SYN ever left.
    pub segs_out: u32,
    /// From a file descriptor to its socket: `task_struct.files` → `files_struct.fdt` →
    /// `fdtable.max_fds` / `fdtable.fd` → `file.private_data` (a `struct socket *`, checked by
    /// `socket.file` pointing back) → `socket.sk`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_file: u32,
    pub socket_sk: u32,
    /// `sock.sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `inet_sock.cork.fl.u.ip4.daddr` (IPv4 connect's flow, filled before its route lookup) and
    /// `sock.__sk_common.skc_v6_daddr` (set by an IPv6 connect before its route lookup).
    pub cork_daddr: u32,
    pub skc_v6_daddr: u32,
    /// The socket's own source address: `skc_rcv_saddr` (IPv4), `skc_v6_rcv_saddr`.
    pub skc_rcv_saddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `net.ipv4.ip_local_ports.range` (u32: low | high << 16, kernels 6.3+).
    pub net_port_range: u32,
    /// From the calling task to its cgroup v2 path: `task_struct.cgroups` (struct css_set *) →
    /// `css_set.dfl_cgrp` (struct cgroup *) → `cgroup.kn` (struct kernfs_node *), then
    /// `kernfs_node.name` (const char *) and `kernfs_node.__parent` (`parent` before 6.15) up to
    /// the root.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_name: u32,
    pub kernfs_parent: u32,
    /// A packet's headers and owner: `sk_buff.head` (unsigned char *), `sk_buff.network_header`
    /// and `sk_buff.transport_header` (u16 offsets from `head`), `sk_buff.sk` (struct sock *).
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_sk: u32,
    /// The socket's own 4-tuple, for the raw tracepoint programs (which get the socket, not a
    /// record with the tuple): `sock.__sk_common.skc_daddr` (IPv4 peer), `skc_dport` (peer
    /// port, network order), `skc_family` (u16), and `inet_sock.inet_sport` (local port,
    /// network order: what the classic tracepoint reports; `skc_num` is zeroed when the port is
    /// released, before the CLOSE transition).
    pub skc_daddr: u32,
    pub skc_dport: u32,
    pub inet_sport: u32,
    pub skc_family: u32,
    /// A connect() call's arguments at its exit, from the registers the task saved on entering
    /// the kernel (`struct pt_regs`, per architecture: x86-64 `di`, `si`, `dx`, `orig_ax`;
    /// arm64 `orig_x0`, `regs[1]`, `regs[2]`, `syscallno`): the file descriptor, the
    /// `sockaddr` pointer, its length, and the number of the syscall in progress.
    pub regs_fd: u32,
    pub regs_uservaddr: u32,
    pub regs_addrlen: u32,
    pub regs_syscall: u32,
    /// Conntrack's translation of a packet (`net:net_dev_queue`, `skb:kfree_skb`):
    /// `sk_buff._nfct` (unsigned long: the `nf_conn` address | `enum ip_conntrack_info`),
    /// `nf_conn.status` (unsigned long, `IPS_*` bits), and the two tuples, as offsets from the
    /// `nf_conn`: `tuplehash[0].tuple` (original) and `tuplehash[1].tuple` (reply).
    pub skb_nfct: u32,
    pub ct_status: u32,
    pub ct_tuple_original: u32,
    pub ct_tuple_reply: u32,
    /// Inside a `struct nf_conntrack_tuple`: `src.u3` (16 bytes), `src.u.all` (network
    /// order), `src.l3num` (u16 family), `dst.u3`, `dst.u.all`, `dst.protonum` (u8).
    pub tuple_src_u3: u32,
    pub tuple_src_port: u32,
    pub tuple_l3num: u32,
    pub tuple_dst_u3: u32,
    pub tuple_dst_port: u32,
    pub tuple_protonum: u32,
    /// Value of `IP_CT_NEW` in `enum ip_conntrack_info` (the low 3 bits of `_nfct`).
    pub ct_new: u32,
    /// Value of `SKB_DROP_REASON_NETFILTER_DROP` in `enum skb_drop_reason`.
    pub drop_reason_netfilter: u32,
}
const _: () = assert!(core::mem::size_of::<MemberOffsets>() == 276);

/// Everything the programs need to find their data on this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub set_state: SetStateFields,
    pub retransmit: SockStateFields,
    pub send_reset: SendResetFields,
    /// `skaddr` of `tcp:tcp_receive_reset`.
    pub receive_reset_skaddr: u16,
    /// `skaddr` of `tcp:tcp_destroy_sock`.
    pub destroy_skaddr: u16,
    pub _pad: u32,
    pub error_report: ErrorReportFields,
    pub connect_call: ConnectCallFields,
    pub drop: DropFields,
    /// `skbaddr` of `net:net_dev_queue` (the classic program's only field).
    pub dev_queue_skbaddr: u16,
    pub _pad2: [u16; 3],
    pub members: MemberOffsets,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 412);

impl KernelOffsets {
    /// Every offset missing: what the programs see if userspace sets nothing.
    pub const MISSING: KernelOffsets = KernelOffsets {
        set_state: SetStateFields {
            skaddr: FIELD_MISSING,
            oldstate: FIELD_MISSING,
            newstate: FIELD_MISSING,
            protocol: FIELD_MISSING,
            tuple: TupleFields::MISSING,
        },
        retransmit: SockStateFields::MISSING,
        send_reset: SendResetFields::MISSING,
        receive_reset_skaddr: FIELD_MISSING,
        destroy_skaddr: FIELD_MISSING,
        _pad: 0,
        error_report: ErrorReportFields {
            error: FIELD_MISSING,
            protocol: FIELD_MISSING,
            _pad: [0; 2],
            tuple: TupleFields::MISSING,
        },
        connect_call: ConnectCallFields::MISSING,
        drop: DropFields::MISSING,
        dev_queue_skbaddr: FIELD_MISSING,
        _pad2: [0; 3],
        members: MemberOffsets {
            sk_err: MEMBER_MISSING,
            sk_err_soft: MEMBER_MISSING,
            skc_net: MEMBER_MISSING,
            net_ns_inum: MEMBER_MISSING,
            skc_state: MEMBER_MISSING,
            icsk_retransmits: MEMBER_MISSING,
            icsk_probes_out: MEMBER_MISSING,
            sk_flags: MEMBER_MISSING,
            sock_keepopen_bit: MEMBER_MISSING,
            sk_error_queue_next: MEMBER_MISSING,
            skb_exterr_ee: MEMBER_MISSING,
            srtt_us: MEMBER_MISSING,
            rcv_tstamp: MEMBER_MISSING,
            bytes_sent: MEMBER_MISSING,
            bytes_acked: MEMBER_MISSING,
            bytes_received: MEMBER_MISSING,
            keepalive_time: MEMBER_MISSING,
            keepalive_intvl: MEMBER_MISSING,
            keepalive_probes: MEMBER_MISSING,
            skb_dev: MEMBER_MISSING,
            skb_data: MEMBER_MISSING,
            dev_nd_net: MEMBER_MISSING,
            dev_flags: MEMBER_MISSING,
            rst_reason_no_socket: MEMBER_MISSING,
            write_seq: MEMBER_MISSING,
            snd_una: MEMBER_MISSING,
            segs_out: MEMBER_MISSING,
            task_files: MEMBER_MISSING,
            files_fdt: MEMBER_MISSING,
            fdt_max_fds: MEMBER_MISSING,
            fdt_fd: MEMBER_MISSING,
            file_private_data: MEMBER_MISSING,
            socket_file: MEMBER_MISSING,
            socket_sk: MEMBER_MISSING,
            sk_protocol: MEMBER_MISSING,
            cork_daddr: MEMBER_MISSING,
            skc_v6_daddr: MEMBER_MISSING,
            skc_rcv_saddr: MEMBER_MISSING,
            skc_v6_rcv_saddr: MEMBER_MISSING,
            net_port_range: MEMBER_MISSING,
            task_cgroups: MEMBER_MISSING,
            css_set_dfl_cgrp: MEMBER_MISSING,
            cgroup_kn: MEMBER_MISSING,
            kernfs_name: MEMBER_MISSING,
            kernfs_parent: MEMBER_MISSING,
            skb_head: MEMBER_MISSING,
            skb_network_header: MEMBER_MISSING,
            skb_transport_header: MEMBER_MISSING,
            skb_sk: MEMBER_MISSING,
            skc_daddr: MEMBER_MISSING,
            skc_dport: MEMBER_MISSING,
            inet_sport: MEMBER_MISSING,
            skc_family: MEMBER_MISSING,
            regs_fd: MEMBER_MISSING,
            regs_uservaddr: MEMBER_MISSING,
            regs_addrlen: MEMBER_MISSING,
            regs_syscall: MEMBER_MISSING,
            skb_nfct: MEMBER_MISSING,
            ct_status: MEMBER_MISSING,
            ct_tuple_original: MEMBER_MISSING,
            ct_tuple_reply: MEMBER_MISSING,
            tuple_src_u3: MEMBER_MISSING,
            tuple_src_port: MEMBER_MISSING,
            tuple_l3num: MEMBER_MISSING,
            tuple_dst_u3: MEMBER_MISSING,
            tuple_dst_port: MEMBER_MISSING,
            tuple_protonum: MEMBER_MISSING,
            ct_new: MEMBER_MISSING,
            drop_reason_netfilter: MEMBER_MISSING,
        },
    };
}

impl SockStateFields {
    pub const MISSING: SockStateFields = SockStateFields {
        skaddr: FIELD_MISSING,
        state: FIELD_MISSING,
        _pad: [0; 2],
    };
}

// SAFETY: repr(C), only integer fields, explicit padding: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
