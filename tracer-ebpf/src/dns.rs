//! `cgroup_skb/ingress` on the cgroup v2 root: DNS answers (source port 53, UDP or TCP) any
//! socket of this host receives, in any network namespace (`--netns`: that one only). Every
//! other packet costs a header read and a port check.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use tracer_common::{AF_INET, AF_INET6, DNS_PAYLOAD, KIND_DNS, RawDns};

use crate::{
    EVENTS,
    emit::{Counter, count, now_ns, wakeup_flag},
    globals::{config, offset},
    read::member,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;

#[cgroup_skb]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = try_dns(&ctx);
    1
}

#[inline(always)]
fn try_dns(ctx: &SkBuffContext) -> Option<()> {
    // A connected socket (an established TCP connection, a connected UDP socket) receives only
    // from its peer: when the peer's port is known and not 53, no answer can arrive here, and a
    // read of the socket's field (no packet access, no helper) settles it. `remote_port` is the
    // port in network order, shifted left 16 bits on little-endian machines.
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
    if u16::from_be_bytes([ports[0], ports[1]]) != DNS_PORT {
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
    if wire == 0 || start > 1500 {
        return None;
    }
    let netns = netns(ctx);
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    let size = core::mem::size_of::<RawDns>();
    let Some(mut entry) = EVENTS.reserve::<RawDns>(0) else {
        count(Counter::Lost);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved ring-buffer slot of exactly one RawDns, ours until submitted.
    let ev = unsafe { &mut *ev };
    ev.kind = KIND_DNS;
    ev.family = family;
    ev.transport = transport;
    ev._pad = 0;
    ev.ts_ns = now_ns();
    // SAFETY: a helper taking the program's own context.
    ev.cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    ev.netns = netns;
    ev.wire_len = wire as u16;
    ev.client_port = u16::from_be_bytes([ports[2], ports[3]]);
    ev._pad1 = 0;
    ev.server_be = [0; 16];
    ev.client_be = [0; 16];
    if family == AF_INET {
        let s: [u8; 4] = ctx.load(12).unwrap_or([0; 4]);
        let d: [u8; 4] = ctx.load(16).unwrap_or([0; 4]);
        ev.server_be[..4].copy_from_slice(&s);
        ev.client_be[..4].copy_from_slice(&d);
    } else {
        ev.server_be = ctx.load(8).unwrap_or([0; 16]);
        ev.client_be = ctx.load(24).unwrap_or([0; 16]);
    }
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
    entry.submit(wakeup_flag(size));
    count(Counter::Produced);
    Some(())
}

/// The network namespace of the device the answer came in on (`sk_buff.dev` → `nd_net`): the
/// context pointer is the kernel's `sk_buff`, read through a scalar copy of it (the verifier
/// allows no variable offset on a context pointer).
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
