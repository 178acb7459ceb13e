//! `syscalls:sys_enter_connect` / `syscalls:sys_exit_connect`: connects that fail inside the
//! connect() call, before any SYN leaves — no route (the route lookup runs in the call), no
//! local port left, a local policy (cgroup BPF, LSM) refusing. The socket tracepoints see
//! nothing of the first and last, and only an undone SYN_SENT of the second.
//!
//! Where the kernel lets a program find the registers the task saved on entering the kernel
//! (`bpf_task_pt_regs`, 5.15+; `Config::calls_at_exit`), the exit alone does it: a call that
//! succeeded, is in progress, or failed the way only the socket path can tell (refused, timed
//! out, interrupted) costs one record read; any other failure reads the call's arguments from
//! those registers (fd, `sockaddr`) and is submitted as `KIND_CONNECT_FAILED`. Userspace joins
//! it to its socket's CLOSE: an undone SYN_SENT (`VALID_NOT_SENT`) gives the source and the
//! start; a CLOSE that already reported the failure (an ICMP error on a blocking connect) makes
//! the call's record a duplicate, dropped.
//!
//! Elsewhere the entry keeps the calling thread's destination (read from its `sockaddr` in user
//! memory) and fd in `CONNECTS`, keyed by the thread; `inet_sock_set_state` notes there the
//! socket the call took to SYN_SENT, and whether connect() undid that SYN_SENT before sending
//! anything. At exit, an error other than "in progress" on a TCP socket that never reached
//! SYN_SENT, or was undone, is submitted as `KIND_CONNECT_FAILED`. A connect that did go out (a
//! refused or timed-out blocking connect) is the socket path's to report, so each failure is
//! reported once. Every connect() on the host passes here (UNIX and UDP too): the entry reads
//! two bytes of the family and returns for anything but IPv4/IPv6; the exit does one map lookup
//! and returns on success.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    AF_INET, AF_INET6, Counter, IPPROTO_TCP, KIND_CONNECT_FAILED, PendingConnect, VALID_PORT_RANGE,
    VALID_ROUTED, tcp_state,
};

use crate::{
    CONNECTS,
    emit::{count, now_ns, submit},
    globals::{config, offset},
    read::{Record, destination, member, sock_netns},
    state::{SCRATCH_CONNECT_CALL, scratch},
};

const EINPROGRESS: i64 = 115;
const EALREADY: i64 = 114;
const EISCONN: i64 = 106;
const ECONNREFUSED: i64 = 111;
const ETIMEDOUT: i64 = 110;
const EINTR: i64 = 4;
/// Errors from here up (`ERESTARTSYS`…) are the kernel's own: the call is restarted.
const KERNEL_INTERNAL: i64 = 512;

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let at_exit: u8 = config!(calls_at_exit);
    let _ = if at_exit != 0 {
        try_exit_alone(&ctx)
    } else {
        try_exit(&ctx)
    };
    0
}

#[inline(always)]
fn try_enter(ctx: &TracePointContext) -> Option<()> {
    let f = offset!(connect_call);
    // nr, fd, uservaddr, addrlen: 40 bytes on 64-bit kernels.
    let rec = Record::<40>::read(ctx);
    let uservaddr: u64 = rec.field(f.uservaddr, 0);
    let addrlen: u64 = rec.field(f.addrlen, 0);
    let (pid_tgid, family, daddr, dport) = wanted_call(uservaddr, addrlen)?;
    let fd: u64 = rec.field(f.fd, u64::MAX);
    // Every field from a value computed here: zero constants next to each other are merged
    // into a memset call, a byte loop in BPF.
    let pending = PendingConnect {
        start_ns: now_ns(),
        sk: 0,
        daddr,
        dport,
        family,
        undone: 0,
        fd: fd as i32,
    };
    if CONNECTS.insert(pid_tgid, pending, 0).is_err() {
        // Full: this call is not traced (counted like any state that could not be created).
        count(Counter::InsertErrors);
    }
    Some(())
}

/// The calling thread (`pid_tgid`) and the destination of its connect() call, if the filters
/// (`--port/--dst/--pid/--comm`) want it.
#[inline(always)]
fn wanted_call(uservaddr: u64, addrlen: u64) -> Option<(u64, u8, [u8; 16], u16)> {
    let (family, daddr, dport) = destination(uservaddr, addrlen)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    crate::filter::call_wanted(family, &daddr, dport, (pid_tgid >> 32) as u32, || {
        bpf_get_current_comm().unwrap_or([0; 16])
    })
    .then_some((pid_tgid, family, daddr, dport))
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pending = *CONNECTS.get_ptr(pid_tgid).map(|p| {
        // SAFETY: a map value pointer, valid while this program runs; copied out at once.
        unsafe { &*p }
    })?;
    let _ = CONNECTS.remove(pid_tgid);
    let ret: i64 = Record::<24>::read(ctx).field(offset!(connect_call.ret), 0);
    if ret >= 0 || ret == -EINPROGRESS || ret == -EALREADY || ret == -EISCONN {
        return None;
    }
    // A connect that reached SYN_SENT is the socket path's (its CLOSE says how it failed:
    // refused, timed out, no ARP answer), unless connect() undid it before sending anything.
    // (The socket's own counters cannot tell: a failed blocking connect() disconnects the
    // socket, which zeroes them before this exit.)
    if pending.sk != 0 && pending.undone == 0 {
        return None;
    }
    let sk = if pending.sk != 0 {
        pending.sk as *const u8
    } else {
        socket_of(pending.fd)?
    };
    report(pid_tgid, ret, sk, &pending)
}

/// The exit alone (`Config::calls_at_exit`): a failure only the call can tell has its
/// arguments read from the registers the task saved on entering the kernel.
#[inline(always)]
fn try_exit_alone(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = Record::<24>::read(ctx).field(offset!(connect_call.ret), 0);
    if ret >= 0
        || ret <= -KERNEL_INTERNAL
        || matches!(
            -ret,
            EINPROGRESS | EALREADY | EISCONN | ECONNREFUSED | ETIMEDOUT | EINTR
        )
    {
        // Connected, in progress, or how a SYN that left ended: the socket path's.
        return None;
    }
    let regs = crate::read::current_regs();
    let (mut fd, mut uservaddr, mut addrlen) = (0u64, 0u64, 0u64);
    if !(member(regs, offset!(members.regs_fd), &mut fd)
        && member(regs, offset!(members.regs_uservaddr), &mut uservaddr)
        && member(regs, offset!(members.regs_addrlen), &mut addrlen))
    {
        return None;
    }
    let (pid_tgid, family, daddr, dport) = wanted_call(uservaddr, addrlen)?;
    let sk = socket_of(fd as i32)?;
    // The call's start is not known here (0: the exit's time): userspace takes it from the
    // undone SYN_SENT's state when there is one (a failure before SYN_SENT is immediate).
    let pending = PendingConnect {
        start_ns: 0,
        sk: sk as u64,
        daddr,
        dport,
        family,
        undone: 0,
        fd: fd as i32,
    };
    report(pid_tgid, ret, sk, &pending)
}

/// Submits the failure `ret` of the connect() call `pending` on the socket `sk`, if the socket is
/// TCP and in the traced namespace.
#[inline(always)]
fn report(pid_tgid: u64, ret: i64, sk: *const u8, pending: &PendingConnect) -> Option<()> {
    let mut protocol = 0u16;
    if !member(sk, offset!(members.sk_protocol), &mut protocol) || protocol != IPPROTO_TCP {
        return None;
    }
    let netns = sock_netns(sk);
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    let ev = scratch(SCRATCH_CONNECT_CALL)?;
    ev.kind = KIND_CONNECT_FAILED;
    ev.family = pending.family;
    ev.old_state = tcp_state::CLOSE;
    ev.new_state = tcp_state::CLOSE;
    crate::set_state::record_caller(ev, pid_tgid, netns);
    if !crate::cgroup::note(ev.cgroup_id) {
        return None;
    }
    ev.error = (-ret) as i32;
    ev.sock_id = sk as u64;
    ev.ts_ns = now_ns();
    ev.start_ns = if pending.start_ns == 0 {
        ev.ts_ns
    } else {
        pending.start_ns
    };
    ev.daddr_be = pending.daddr;
    ev.dport = pending.dport;
    read_socket_facts(sk, ev);
    submit(ev);
    Some(())
}

/// The source address the socket holds, whether its route lookup ran, and its namespace's
/// ephemeral port range.
#[inline(always)]
fn read_socket_facts(sk: *const u8, ev: &mut tracer_common::RawEvent) {
    // An IPv4-mapped IPv6 destination is connected by the IPv4 code.
    let d = ev.daddr_be;
    let mapped = ev.family == AF_INET6 && d[..10] == [0; 10] && d[10] == 0xff && d[11] == 0xff;
    if ev.family == AF_INET || mapped {
        let mut held = [0u8; 4];
        let want = if mapped { &d[12..16] } else { &d[..4] };
        if member(sk, offset!(members.cork_daddr), &mut held) && held == *want {
            ev.valid |= VALID_ROUTED;
        }
    } else {
        let mut held = [0u8; 16];
        if member(sk, offset!(members.skc_v6_daddr), &mut held) && held == d {
            ev.valid |= VALID_ROUTED;
        }
    }
    if ev.family == AF_INET {
        let mut s = [0u8; 4];
        if member(sk, offset!(members.skc_rcv_saddr), &mut s) {
            ev.saddr_be[..4].copy_from_slice(&s);
        }
    } else {
        member(sk, offset!(members.skc_v6_rcv_saddr), &mut ev.saddr_be);
    }
    let mut net: *const u8 = core::ptr::null();
    let mut range = 0u32;
    if member(sk, offset!(members.skc_net), &mut net)
        && member(net, offset!(members.net_port_range), &mut range)
    {
        ev.port_range_low = range as u16;
        ev.port_range_high = (range >> 16) as u16;
        ev.valid |= VALID_PORT_RANGE;
    }
}

/// The `struct sock` behind the calling task's file descriptor `fd`, if it is a socket.
#[inline(always)]
fn socket_of(fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    // SAFETY: a helper without arguments; the task it returns is only read through
    // bpf_probe_read_kernel.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as *const u8;
    let mut files: *const u8 = core::ptr::null();
    let mut fdt: *const u8 = core::ptr::null();
    let mut max_fds = 0u32;
    let mut fds: *const u8 = core::ptr::null();
    if !(member(task, offset!(members.task_files), &mut files)
        && member(files, offset!(members.files_fdt), &mut fdt)
        && member(fdt, offset!(members.fdt_max_fds), &mut max_fds)
        && (fd as u32) < max_fds
        && member(fdt, offset!(members.fdt_fd), &mut fds))
    {
        return None;
    }
    let mut file: *const u8 = core::ptr::null();
    let mut socket: *const u8 = core::ptr::null();
    let mut back: *const u8 = core::ptr::null();
    let mut sk: *const u8 = core::ptr::null();
    let slot = (fd as u32) * 8;
    if !(member(fds, slot, &mut file)
        && member(file, offset!(members.file_private_data), &mut socket)
        && member(socket, offset!(members.socket_file), &mut back)
        && back == file
        && member(socket, offset!(members.socket_sk), &mut sk)
        && !sk.is_null())
    {
        return None;
    }
    Some(sk)
}
