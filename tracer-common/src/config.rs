//! Run-time settings of the programs, handed over in the read-only global `CONFIG`: the
//! namespace and the process/destination filters, and the ring buffer's wakeup threshold.

/// Most values per filter kind (`--port`, `--dst`, `--pid`, `--comm`).
pub const MAX_PORTS: usize = 16;
pub const MAX_CIDRS: usize = 8;
pub const MAX_PIDS: usize = 16;
pub const MAX_COMMS: usize = 8;

/// A destination prefix: `family` AF_INET (address in the first 4 bytes) or AF_INET6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub family: u8,
    pub prefix_len: u8,
    pub _pad: [u8; 2],
    pub addr_be: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Cidr>() == 20);

/// Run-time settings of the programs. Filters: a connect is traced when it matches every kind
/// that has values, and one value of each (`n_*` = how many are set; 0 = no filter).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Track only connects made in this network namespace (inode); 0 tracks all.
    pub netns: u32,
    pub n_ports: u8,
    pub n_cidrs: u8,
    pub n_pids: u8,
    pub n_comms: u8,
    /// Destination ports, host order.
    pub ports: [u16; MAX_PORTS],
    /// Process ids (thread-group ids).
    pub pids: [u32; MAX_PIDS],
    pub cidrs: [Cidr; MAX_CIDRS],
    /// Task names, NUL-padded, compared whole.
    pub comms: [[u8; 16]; MAX_COMMS],
    /// Wake the reader only once this many bytes are waiting in the ring buffer; below it the
    /// reader drains on its own short timer (one wakeup per record would cost more than the
    /// record). 0 wakes it for every record.
    pub wakeup_bytes: u32,
    /// 1 when `--container`, `--pod` or `--unit` is set: connects from a cgroup userspace judged
    /// `CGROUP_UNWANTED` are dropped (cgroups not judged yet pass, and userspace decides).
    pub filter_workloads: u8,
    /// Submit a `KIND_AT_RISK` record when an established tracked connect reaches this many
    /// retransmission timeouts in a row (`icsk_retransmits`); 0: never.
    pub at_risk_timeouts: u8,
    /// 1 when the raw `inet_sk_error_report` program runs: it notes an error reported on a
    /// tracked connect in the connect's own state (`RawEvent.error`), so a close need not look
    /// the 4-tuple up in `REPORTED` (which only the classic program fills).
    pub reports_in_state: u8,
    /// 1 when a connect() call is read at its exit alone, from the registers the task saved
    /// (`MemberOffsets::regs_*`): no entry program, no per-call map entry. 0: the entry program
    /// keeps each call in `CONNECTS` until its exit (kernels without `bpf_task_pt_regs`).
    pub calls_at_exit: u8,
    /// The number of the connect() syscall on this architecture (`calls_at_exit`).
    pub connect_syscall: u32,
    /// `wakeup_bytes` for the DNS ring buffer (`DNS_EVENTS`).
    pub dns_wakeup_bytes: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 408);

impl Config {
    pub const ALL: Config = Config {
        netns: 0,
        n_ports: 0,
        n_cidrs: 0,
        n_pids: 0,
        n_comms: 0,
        ports: [0; MAX_PORTS],
        pids: [0; MAX_PIDS],
        cidrs: [Cidr {
            family: 0,
            prefix_len: 0,
            _pad: [0; 2],
            addr_be: [0; 16],
        }; MAX_CIDRS],
        comms: [[0; 16]; MAX_COMMS],
        wakeup_bytes: 0,
        filter_workloads: 0,
        at_risk_timeouts: 0,
        reports_in_state: 0,
        calls_at_exit: 0,
        connect_syscall: 0,
        dns_wakeup_bytes: 0,
    };
}

// SAFETY: repr(C), only integer fields and byte arrays, explicit padding: every bit pattern is
// valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
