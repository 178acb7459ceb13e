//! Reads at offsets known only at run time: tracepoint record fields and kernel struct members.
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext, helpers::generated::bpf_probe_read_kernel, programs::TracePointContext,
};
use tracer_common::{AF_INET, AF_INET6, FIELD_MISSING, MEMBER_MISSING, RawEvent, TupleFields};

use crate::{
    emit::{Counter, count},
    globals::{config, offset},
};

// The readers below never return an `Option` of the value: LLVM treats the payload of a `None`
// as undefined and may copy that register on the merged path, which the verifier rejects
// ("!read_ok"). They write into, or return, an always-initialised value instead.

/// The first `N` bytes at a kernel address, copied in one helper call, read back at offsets
/// known only at run time: a classic tracepoint's record (`Record`), or the head of a socket
/// (`sock_tuple`). One call instead of one per field: the helper's fixed cost is most of a small
/// read's. (A direct load from a tracepoint's `ctx` would cost nothing, but the verifier allows
/// only offsets fixed at compile time, and these come from tracefs and BTF at start-up.)
pub struct Bytes<const N: usize> {
    base: *const u8,
    bytes: [u8; N],
}

impl<const N: usize> Bytes<N> {
    #[inline(always)]
    pub fn read(base: *const u8) -> Self {
        let mut bytes = core::mem::MaybeUninit::<[u8; N]>::uninit();
        // SAFETY: the destination is exactly N writable bytes; bpf_probe_read_kernel checks the
        // source and writes all N bytes either way (zeroes when the read fails).
        let ret = unsafe {
            bpf_probe_read_kernel(
                bytes.as_mut_ptr().cast::<c_void>(),
                N as u32,
                base.cast::<c_void>(),
            )
        };
        if ret != 0 {
            count(Counter::ReadErrors);
        }
        Self {
            base,
            // SAFETY: every byte was written by the helper above.
            bytes: unsafe { bytes.assume_init() },
        }
    }

    /// The value at `at`, or `default` if it cannot be read. A value beyond the copied bytes
    /// (another kernel's layout) is read from `base` itself.
    #[inline(always)]
    pub fn at<T: Copy>(&self, at: usize, default: T) -> T {
        let size = core::mem::size_of::<T>();
        let mut v = default;
        if at > N || size > N - at {
            return if probe_read(&mut v, self.base, at) {
                v
            } else {
                default
            };
        }
        let dst = (&mut v as *mut T).cast::<u8>();
        for i in 0..size {
            // SAFETY: `at + i < N` (checked above); `dst` is `v`'s `size` bytes. Byte by byte:
            // the offset is known only at run time, and the verifier refuses a misaligned wider
            // load from the stack.
            unsafe { *dst.add(i) = *self.bytes.as_ptr().add(at + i) };
        }
        v
    }

    /// The member at `offset` (from BTF), or `default` if it is missing.
    #[inline(always)]
    pub fn member<T: Copy>(&self, offset: u32, default: T) -> T {
        if offset == MEMBER_MISSING {
            default
        } else {
            self.at(offset as usize, default)
        }
    }
}

/// A classic tracepoint's record, its first `N` bytes copied from the perf trace buffer (`N`:
/// where the program's fields end on the kernels known; the perf trace buffer behind `ctx` is
/// 8 KiB, so reading past a shorter record stays inside it).
pub struct Record<const N: usize>(Bytes<N>);

impl<const N: usize> Record<N> {
    #[inline(always)]
    pub fn read(ctx: &TracePointContext) -> Self {
        Self(Bytes::read(ctx.as_ptr() as *const u8))
    }

    /// The field at `offset` (from the tracefs format), or `default` if it is missing.
    #[inline(always)]
    pub fn field<T: Copy>(&self, offset: u16, default: T) -> T {
        if offset == FIELD_MISSING {
            default
        } else {
            self.0.at(offset as usize, default)
        }
    }
}

/// Reads a member of a kernel struct at `base + offset` (from BTF) into `dst`; false (and
/// `dst` unchanged) if the offset is missing or the read failed.
#[inline(always)]
pub fn member<T: Copy>(base: *const u8, offset: u32, dst: &mut T) -> bool {
    if offset == MEMBER_MISSING || base.is_null() {
        return false;
    }
    let mut v = *dst;
    if probe_read(&mut v, base, offset as usize) {
        *dst = v;
        true
    } else {
        false
    }
}

/// The inode of the network namespace a socket belongs to, 0 if unknown (no netns has inode 0).
#[inline(always)]
pub fn sock_netns(sk: *const u8) -> u32 {
    let mut net: *const u8 = core::ptr::null();
    let mut inum = 0u32;
    if member(sk, offset!(members.skc_net), &mut net) {
        member(net, offset!(members.net_ns_inum), &mut inum);
    }
    inum
}

/// The registers the running task saved on entering the kernel (its syscall's arguments),
/// read only through `member`. Only where `Config::calls_at_exit` says the helpers exist
/// (5.15+); the verifier never sees this call on other kernels, the branch being pruned on the
/// read-only config.
#[inline(always)]
pub fn current_regs() -> *const u8 {
    // SAFETY: helpers of tracing programs; the task pointer goes straight from one to the
    // other, and the registers are read only through bpf_probe_read_kernel.
    unsafe {
        let task = aya_ebpf::helpers::generated::bpf_get_current_task_btf();
        aya_ebpf::helpers::generated::bpf_task_pt_regs(task) as *const u8
    }
}

/// Whether the running task is inside a connect() call (`Config::calls_at_exit` only).
#[inline(always)]
pub fn in_connect_call() -> bool {
    let mut nr = u32::MAX;
    member(current_regs(), offset!(members.regs_syscall), &mut nr) && nr == config!(connect_syscall)
}

#[inline(always)]
fn probe_read<T>(dst: &mut T, base: *const u8, offset: usize) -> bool {
    // SAFETY: bpf_probe_read_kernel checks the source address and fails cleanly instead of
    // faulting; `dst` is a valid, initialised destination of exactly size_of::<T>() bytes.
    let ret = unsafe {
        bpf_probe_read_kernel(
            (dst as *mut T).cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset).cast::<c_void>(),
        )
    };
    if ret == 0 {
        true
    } else {
        count(Counter::ReadErrors);
        false
    }
}

/// Reads family, ports and addresses (IPv4 into the first 4 bytes) from a tracepoint's record
/// into `ev`.
#[inline(always)]
pub fn tuple<const N: usize>(rec: &Record<N>, f: &TupleFields, ev: &mut RawEvent) {
    let family: u16 = rec.field(f.family, 0);
    ev.family = family as u8;
    ev.sport = rec.field(f.sport, 0);
    ev.dport = rec.field(f.dport, 0);
    if ev.family == AF_INET {
        let s: [u8; 4] = rec.field(f.saddr, [0; 4]);
        let d: [u8; 4] = rec.field(f.daddr, [0; 4]);
        ev.saddr_be[..4].copy_from_slice(&s);
        ev.daddr_be[..4].copy_from_slice(&d);
    } else if ev.family == AF_INET6 {
        ev.saddr_be = rec.field(f.saddr_v6, [0; 16]);
        ev.daddr_be = rec.field(f.daddr_v6, [0; 16]);
    }
}

/// How much of a socket `sock_tuple` copies: `struct sock_common` up to the end of
/// `skc_v6_rcv_saddr` (88 on 6.x x86-64 kernels).
const SOCK_COMMON_BYTES: usize = 88;

/// Reads the 4-tuple from the socket itself, as the tracepoints report it, but the source port
/// (`sock_sport`): family, peer port in host order (`skc_dport`), and the addresses
/// (`skc_rcv_saddr`/`skc_daddr`, or the IPv6 ones). For the raw tracepoint programs, which get
/// the socket and not a record.
#[inline(always)]
pub fn sock_tuple(sk: *const u8, ev: &mut RawEvent) {
    let head = Bytes::<SOCK_COMMON_BYTES>::read(sk);
    let family: u16 = head.member(offset!(members.skc_family), 0);
    ev.family = family as u8;
    let dport: u16 = head.member(offset!(members.skc_dport), 0);
    ev.dport = u16::from_be(dport);
    if ev.family == AF_INET {
        let s: [u8; 4] = head.member(offset!(members.skc_rcv_saddr), [0; 4]);
        let d: [u8; 4] = head.member(offset!(members.skc_daddr), [0; 4]);
        ev.saddr_be[..4].copy_from_slice(&s);
        ev.daddr_be[..4].copy_from_slice(&d);
    } else if ev.family == AF_INET6 {
        ev.saddr_be = head.member(offset!(members.skc_v6_rcv_saddr), [0; 16]);
        ev.daddr_be = head.member(offset!(members.skc_v6_daddr), [0; 16]);
    }
}

/// The socket's source port in host order (`inet_sock.inet_sport`, outside `struct
/// sock_common`), as the tracepoints report it: 0 until connect() has hashed the socket.
#[inline(always)]
pub fn sock_sport(sk: *const u8) -> u16 {
    let mut sport = 0u16;
    member(sk, offset!(members.inet_sport), &mut sport);
    u16::from_be(sport)
}

/// The inode of the network namespace of a packet's device (`sk_buff.dev` →
/// `net_device.nd_net.net` → `ns.inum`), 0 if unknown.
#[inline(always)]
pub fn skb_netns(skb: *const u8) -> u32 {
    let mut dev: *const u8 = core::ptr::null();
    let mut net: *const u8 = core::ptr::null();
    let mut inum = 0u32;
    if member(skb, offset!(members.skb_dev), &mut dev)
        && member(dev, offset!(members.dev_nd_net), &mut net)
    {
        member(net, offset!(members.net_ns_inum), &mut inum);
    }
    inum
}

/// The destination of a connect() call: family, address (IPv4 in the first 4 bytes, network
/// order) and port (host order), read from the caller's `sockaddr`; None for other families.
#[inline(always)]
pub fn destination(uservaddr: u64, addrlen: u64) -> Option<(u8, [u8; 16], u16)> {
    if uservaddr == 0 || addrlen < 16 {
        return None;
    }
    // One read of the longest prefix that can matter: family, port, and for IPv4 the address
    // (sockaddr_in); for IPv6 flowinfo then the address at 8 (sockaddr_in6). Built without
    // zero-filled byte arrays (each is a byte loop in BPF).
    let base = uservaddr as *const u8;
    let (head, v6_tail) = if addrlen >= 24 {
        let sa: [u64; 3] = user_words(base)?;
        (sa[0], Some((sa[1], sa[2])))
    } else {
        let sa: [u64; 2] = user_words(base)?;
        (sa[0], None)
    };
    let bytes = head.to_ne_bytes();
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let (lo, hi) = if family == u16::from(AF_INET) {
        // The address is bytes 4..8 of the first word; the rest of `daddr` stays zero.
        (head >> 32, 0)
    } else if family == u16::from(AF_INET6)
        && let Some(tail) = v6_tail
    {
        tail
    } else {
        return None;
    };
    let family = family as u8;
    // SAFETY: two u64 are 16 bytes, in memory order (the address bytes as read).
    let daddr = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([lo, hi]) };
    let dport = u16::from_be_bytes([bytes[2], bytes[3]]);
    Some((family, daddr, dport))
}

/// `N` words of the calling task's memory at `base`, or None if they cannot be read. Words,
/// not bytes: the stack copy is then aligned and needs no zero-filling loop first.
#[inline(always)]
pub fn user_words<const N: usize>(base: *const u8) -> Option<[u64; N]> {
    let mut words = core::mem::MaybeUninit::<[u64; N]>::uninit();
    // SAFETY: the destination is exactly N words; bpf_probe_read_user checks the user address
    // and writes all of them either way (zeroes when the read fails).
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            words.as_mut_ptr().cast::<core::ffi::c_void>(),
            (N * 8) as u32,
            base.cast::<core::ffi::c_void>(),
        )
    };
    // SAFETY: every word was written by the helper above.
    (ret == 0).then(|| unsafe { words.assume_init() })
}
