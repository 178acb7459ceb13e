//! `cgroup_skb` on the cgroup v2 root, both directions: DNS queries (destination port 53, UDP or
//! TCP) any socket of this host sends (`dns_egress`), and the answers to them (`dns_ingress`), in
//! any network namespace (`--netns`: that one only). Every other packet costs a header read and a
//! port check.
//!
//! An answer is submitted only if it answers a query seen leaving: `dns_egress` puts each query's
//! transaction (`DnsKey`: namespace, id, addresses and ports) in `DNS_QUERIES`, and `dns_ingress`
//! takes it out. An unsolicited answer (forged, late, or to a query asked before the tracer
//! started) is counted (`DnsUnsolicited`) and costs one map lookup: a flood of them never leaves
//! the kernel. Both go to their own ring buffer, `DNS_EVENTS`, so that no DNS traffic can take
//! the place of a failure record in `EVENTS`.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_skb_cgroup_id, bpf_skb_load_bytes,
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use tracer_common::{
    AF_INET, AF_INET6, DNS_PAYLOAD, DNS_QUERY_LIFETIME_NS, DnsKey, KIND_DNS, KIND_DNS_QUERY, RawDns,
};

use crate::{
    DNS_EVENTS, DNS_QUERIES,
    emit::{Counter, count, now_ns},
    globals::{config, offset},
    read::member,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;

#[cgroup_skb]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns(&ctx, false);
    1
}

#[cgroup_skb]
pub fn dns_egress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns(&ctx, true);
    1
}

/// `query`: the packet leaves (the client's query: destination port 53); else it arrives (the
/// server's answer: source port 53).
#[inline(always)]
fn try_dns(ctx: &SkBuffContext, query: bool) -> Option<()> {
    // A connected socket (an established TCP connection, a connected UDP socket) talks only to
    // its peer: when the peer's port is known and not 53, this is no DNS, and a read of the
    // socket's field (no packet access, no helper) settles it. `remote_port` is the port in
    // network order, shifted left 16 bits on little-endian machines.
    let remote = ctx.skb.remote_port();
    let remote = u16::from_be(if remote > 0xffff {
        (remote >> 16) as u16
    } else {
        remote as u16
    });
    if remote != 0 && remote != DNS_PORT {
        return None;
    }
    let first: u8 = ctx.load(0).ok()?;
    let (l4, transport, family) = match first >> 4 {
        4 => (
            usize::from(first & 0x0f) * 4,
            ctx.load::<u8>(9).ok()?,
            AF_INET,
        ),
        6 => (40, ctx.load::<u8>(6).ok()?, AF_INET6),
        _ => return None,
    };
    if transport != IPPROTO_UDP && transport != IPPROTO_TCP {
        return None;
    }
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let (src_port, dst_port) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    let (client_port, server_port) = if query {
        (src_port, dst_port)
    } else {
        (dst_port, src_port)
    };
    if server_port != DNS_PORT {
        return None;
    }
    let header = if transport == IPPROTO_UDP {
        8
    } else {
        let off: u8 = ctx.load(l4 + 12).ok()?;
        usize::from(off >> 4) * 4
    };
    let start = l4 + header;
    let wire = (ctx.len() as usize).saturating_sub(start);
    // A TCP segment without data (SYN, ACK, FIN) carries no message.
    if wire == 0 || start > 1500 {
        return None;
    }
    let netns = netns(ctx);
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    // The message's id: its first two bytes, after the 2-byte length on TCP.
    let id_at = if transport == IPPROTO_TCP {
        start + 2
    } else {
        start
    };
    let txid: [u8; 2] = ctx.load(id_at).ok()?;
    let mut key = DnsKey {
        netns,
        txid: u16::from_be_bytes(txid),
        client_port,
        server_port,
        family,
        transport,
        client_be: [0; 16],
        server_be: [0; 16],
    };
    let (src, dst) = if family == AF_INET {
        let s: [u8; 4] = ctx.load(12).unwrap_or([0; 4]);
        let d: [u8; 4] = ctx.load(16).unwrap_or([0; 4]);
        let (mut s16, mut d16) = ([0u8; 16], [0u8; 16]);
        s16[..4].copy_from_slice(&s);
        d16[..4].copy_from_slice(&d);
        (s16, d16)
    } else {
        (
            ctx.load(8).unwrap_or([0; 16]),
            ctx.load(24).unwrap_or([0; 16]),
        )
    };
    let now = now_ns();
    if query {
        key.client_be = src;
        key.server_be = dst;
        // A retransmitted query (same id) only renews its time.
        let _ = DNS_QUERIES.insert(key, now, 0);
    } else {
        key.client_be = dst;
        key.server_be = src;
        // SAFETY: the value is a u64 that this program only reads, at once.
        let asked = unsafe { DNS_QUERIES.get(key) }.copied();
        match asked {
            Some(at) if now.saturating_sub(at) <= DNS_QUERY_LIFETIME_NS => {
                let _ = DNS_QUERIES.remove(key);
            }
            _ => {
                count(Counter::DnsUnsolicited);
                return None;
            }
        }
    }
    let Some(mut entry) = DNS_EVENTS.reserve::<RawDns>(0) else {
        count(Counter::DnsLost);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved ring-buffer slot of exactly one RawDns, ours until submitted.
    let ev = unsafe { &mut *ev };
    ev.kind = if query { KIND_DNS_QUERY } else { KIND_DNS };
    ev.family = family;
    ev.transport = transport;
    ev._pad = 0;
    ev.ts_ns = now;
    // SAFETY: a helper taking the program's own context.
    ev.cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    ev.netns = netns;
    ev.wire_len = wire as u16;
    ev.client_port = client_port;
    ev.server_port = server_port;
    ev.pid = 0;
    ev.tid = 0;
    // A query sent by the task that owns the socket (not a retransmission from a timer or
    // softirq, where another task is current): that task asked.
    // SAFETY: helpers without arguments.
    if query && unsafe { bpf_get_current_cgroup_id() } == ev.cgroup_id {
        // SAFETY: a helper without arguments.
        let id = unsafe { bpf_get_current_pid_tgid() };
        ev.pid = (id >> 32) as u32;
        ev.tid = id as u32;
    }
    ev.server_be = key.server_be;
    ev.client_be = key.client_be;
    // 1..=DNS_PAYLOAD bytes (`wire` > 0 above), a bound the verifier can see.
    let n = if wire >= DNS_PAYLOAD {
        DNS_PAYLOAD
    } else {
        wire
    } as u32;
    // Opaque to LLVM, so that the check below stays where the verifier needs it.
    let n = core::hint::black_box(n);
    if n == 0 || n > DNS_PAYLOAD as u32 {
        entry.discard(0);
        return None;
    }
    // SAFETY: the helper writes at most `n` ≤ DNS_PAYLOAD bytes into the reserved slot's payload.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast::<c_void>(),
            start as u32,
            ev.payload.as_mut_ptr().cast::<c_void>(),
            n,
        )
    };
    ev.len = if ret == 0 { n as u16 } else { 0 };
    entry.submit(wakeup_flag());
    Some(())
}

/// Wakes the reader when a quarter of `DNS_EVENTS` is waiting (the trickle is drained by the
/// reader's timer), as `emit::wakeup_flag` does for `EVENTS`.
#[inline(always)]
fn wakeup_flag() -> u64 {
    let threshold: u32 = config!(dns_wakeup_bytes);
    if threshold == 0 {
        return 0;
    }
    let waiting = DNS_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if waiting + core::mem::size_of::<RawDns>() as u64 >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The network namespace of the device the packet goes out or came in on (`sk_buff.dev` →
/// `nd_net`): the context pointer is the kernel's `sk_buff`, read through a scalar copy of it
/// (the verifier allows no variable offset on a context pointer).
#[inline(always)]
fn netns(ctx: &SkBuffContext) -> u32 {
    let ptr = ctx.skb.skb as u64;
    let mut skb = 0u64;
    // SAFETY: reads 8 bytes of this program's own stack into `skb`: the pointer's value as a
    // scalar.
    let ret = unsafe {
        bpf_probe_read_kernel(
            (&mut skb as *mut u64).cast::<c_void>(),
            8,
            (&ptr as *const u64).cast::<c_void>(),
        )
    };
    if ret != 0 {
        return 0;
    }
    let mut dev: *const u8 = core::ptr::null();
    let mut net: *const u8 = core::ptr::null();
    let mut inum = 0u32;
    if member(skb as *const u8, offset!(members.skb_dev), &mut dev)
        && member(dev, offset!(members.dev_nd_net), &mut net)
    {
        member(net, offset!(members.net_ns_inum), &mut inum);
    }
    inum
}
