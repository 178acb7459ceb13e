//! The floor's programs that bpftrace cannot attach, loaded here with raw bpf(2) (no libbpf):
//! - empty `cgroup_skb/ingress` and `/egress` programs (`r0 = 1; exit`: every packet passes) on
//!   the cgroup v2 root, the tracer's `dns_ingress` and `dns_egress` hooks, where they run for
//!   every packet any socket of this host receives or sends, in every network namespace
//!   (`FloorSkb`: `floor_skb` and `floor_skb_out`, in both floors);
//! - empty raw tracepoint programs (`r0 = 0; exit`, `BPF_RAW_TRACEPOINT_OPEN`) on the tracer's
//!   socket and skb tracepoints (`FloorRaw`, the raw floor: the same hooks without the perf trace
//!   buffer record a classic tracepoint program is handed; bpftrace 0.17 has no raw tracepoint
//!   probes).
//!
//! Closing an attachment's fd (on drop) detaches its program.
use std::{
    fs::File,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use anyhow::{Context, Result};

use crate::cgroup::find_cgroup2_mount;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
/// BPF_ALU64 | BPF_MOV | BPF_K.
const MOV64_IMM: u8 = 0x07 | 0xb0;
/// BPF_JMP | BPF_EXIT.
const EXIT: u8 = 0x05 | 0x90;

/// `struct bpf_insn`; `regs` is the `dst_reg:4, src_reg:4` bitfield byte (both r0 here).
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The leading fields of `union bpf_attr` that BPF_PROG_LOAD reads, up to
/// `expected_attach_type`; the kernel zero-fills the rest.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The leading fields of `union bpf_attr` that BPF_LINK_CREATE reads for a cgroup target.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// The leading fields of `union bpf_attr` that BPF_RAW_TRACEPOINT_OPEN reads.
#[repr(C)]
struct RawTracepointOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

// No implicit padding in any (every byte handed to the kernel is initialised), at the
// offsets of the kernel's layout.
const _: () = assert!(size_of::<Insn>() == 8);
const _: () = assert!(size_of::<ProgLoadAttr>() == 72);
const _: () = assert!(size_of::<LinkCreateAttr>() == 16);
const _: () = assert!(size_of::<RawTracepointOpenAttr>() == 16);

/// The tracepoints the tracer attaches to, other than the syscall ones (which stay classic in
/// both floors: a raw `sys_enter` program would run for every system call).
pub const RAW_TRACEPOINTS: [&str; 8] = [
    "inet_sock_set_state",
    "tcp_retransmit_skb",
    "tcp_receive_reset",
    "tcp_send_reset",
    "inet_sk_error_report",
    "tcp_destroy_sock",
    "kfree_skb",
    "net_dev_queue",
];

/// Empty raw tracepoint programs on `RAW_TRACEPOINTS`, attached while this value lives.
pub struct FloorRaw {
    // Each attachment before the program it holds.
    _attached: Vec<(OwnedFd, OwnedFd)>,
}

impl FloorRaw {
    pub fn attach() -> Result<Self> {
        let mut attached = Vec::new();
        for name in RAW_TRACEPOINTS {
            // Named after its tracepoint, cut to the kernel's 15 characters (as bpftrace does).
            let short = &name.as_bytes()[..name.len().min(15)];
            let prog = load(BPF_PROG_TYPE_RAW_TRACEPOINT, 0, short, 0)
                .with_context(|| format!("BPF_PROG_LOAD of the raw floor's program for {name}"))?;
            let cname = std::ffi::CString::new(name).expect("no NUL in a tracepoint name");
            let attr = RawTracepointOpenAttr {
                name: cname.as_ptr() as u64,
                prog_fd: prog.as_raw_fd() as u32,
                _pad: 0,
            };
            let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &attr)
                .with_context(|| format!("BPF_RAW_TRACEPOINT_OPEN of {name}"))?;
            attached.push((link, prog));
        }
        Ok(Self {
            _attached: attached,
        })
    }
}

/// The empty programs, attached to the cgroup v2 root's ingress and egress while this value
/// lives.
pub struct FloorSkb {
    // Dropped in this order: each link (which detaches its program), then the program.
    _attached: Vec<(OwnedFd, OwnedFd)>,
}

impl FloorSkb {
    /// Loads `floor_skb` (ingress) and `floor_skb_out` (egress) and links them to the cgroup v2
    /// root.
    pub fn attach() -> Result<Self> {
        let root = find_cgroup2_mount().context(
            "no cgroup v2 mount in /proc/self/mounts (the floor's cgroup_skb needs one)",
        )?;
        let mut attached = Vec::new();
        for (attach_type, name, direction) in [
            (BPF_CGROUP_INET_INGRESS, &b"floor_skb"[..], "ingress"),
            (BPF_CGROUP_INET_EGRESS, &b"floor_skb_out"[..], "egress"),
        ] {
            let prog = load(BPF_PROG_TYPE_CGROUP_SKB, attach_type, name, 1).with_context(|| {
                format!("BPF_PROG_LOAD of the floor's empty cgroup_skb program ({direction})")
            })?;
            let dir =
                File::open(&root).with_context(|| format!("cannot open {}", root.display()))?;
            let attr = LinkCreateAttr {
                prog_fd: prog.as_raw_fd() as u32,
                target_fd: dir.as_raw_fd() as u32,
                attach_type,
                flags: 0,
            };
            let link = bpf(BPF_LINK_CREATE, &attr).with_context(|| {
                format!(
                    "BPF_LINK_CREATE of the floor's cgroup_skb program on {} ({direction})",
                    root.display()
                )
            })?;
            attached.push((link, prog));
        }
        Ok(Self {
            _attached: attached,
        })
    }
}

/// Loads `r0 = ret; exit` as a program of `prog_type` named `name`.
fn load(prog_type: u32, attach_type: u32, name: &[u8], ret: i32) -> io::Result<OwnedFd> {
    let insns = [
        Insn {
            code: MOV64_IMM,
            regs: 0,
            off: 0,
            imm: ret,
        },
        Insn {
            code: EXIT,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len()].copy_from_slice(name);
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: attach_type,
    };
    bpf(BPF_PROG_LOAD, &attr)
}

/// bpf(2) with `attr`, one of the `#[repr(C)]` prefixes of `union bpf_attr` above, for a
/// command that returns a new fd (BPF_PROG_LOAD, BPF_LINK_CREATE, BPF_RAW_TRACEPOINT_OPEN).
fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` points at size_of::<T>() initialised bytes (the structs have no padding)
    // that outlive the call, and the kernel only reads them for these commands; the pointers
    // inside (instructions, license, tracepoint name) point at buffers the caller keeps alive across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: these commands return a new fd on success, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}
