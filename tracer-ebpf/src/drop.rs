//! `skb:kfree_skb`: a packet this host dropped, with the kernel's reason. Joined in the kernel to
//! the tracked connect it belonged to, through the packet's owning socket (`sk_buff.sk`: the
//! sender of an outgoing segment; for an incoming one the socket early demux found, which
//! happens before the INPUT hook) — a SYN that netfilter dropped on OUTPUT, a SYN-ACK dropped on
//! INPUT, a data segment or keepalive probe dropped either way.
//!
//! The tracepoint fires for every dropped packet on the host, so the program returns as early
//! as it can: not IPv4/IPv6 (one field read), an ignored reason (a bitmap the loader builds from
//! BTF names: NO_SOCKET — the refusal itself, told by its RST — and the drops of a socket's own
//! bookkeeping), no owning socket, a socket not tracked (one map lookup). Only then are the
//! packet's headers read: the TCP ports tell the direction, the flags which segment it was.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{DROP_REASON_BITMAP_BYTES, RawEvent};

use crate::{
    emit::{Counter, count, now_ns},
    globals::offset,
    read::{Record, member},
    state::tracked,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// `sk_buff` header offsets not set.
const HEADER_UNSET: u16 = 0xffff;

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let _ = try_drop(&ctx);
    0
}

#[inline(always)]
fn try_drop(ctx: &TracePointContext) -> Option<()> {
    // skbaddr, location, protocol, reason (and rx_sk on 6.x): the first 40 bytes.
    let rec = Record::<40>::read(ctx);
    // `skb->protocol`, which the tracepoint stores in host order.
    let protocol: u16 = rec.field(offset!(drop.protocol), 0);
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return None;
    }
    let reason: u32 = rec.field(offset!(drop.reason), 0);
    if ignored(reason) {
        return None;
    }
    let skb: u64 = rec.field(offset!(drop.skbaddr), 0);
    let skb = skb as *const u8;
    let mut sk = 0u64;
    if !member(skb, offset!(members.skb_sk), &mut sk) || sk == 0 {
        return None;
    }
    let state = tracked(sk)?;
    let (dport, flags) = tcp_header(skb, protocol)?;
    // Its own segment goes to the peer's port (its own port may not be in the state yet: a SYN
    // leaves before the first transition that reads it).
    note(state, dport == state.dport, reason as u16, flags);
    count(Counter::LocalDrops);
    Some(())
}

/// Whether the loader marked `reason` as one to ignore.
#[inline(always)]
fn ignored(reason: u32) -> bool {
    const _: () = assert!(DROP_REASON_BITMAP_BYTES.is_power_of_two());
    // The index is bounded by the mask itself, and the (volatile, so unconditional) load comes
    // before the range check: a check first lets the compiler drop the mask and bound only a
    // copy of the register, which leaves the verifier without a bound on the index.
    let byte = ((reason >> 3) as usize) & (DROP_REASON_BITMAP_BYTES - 1);
    // SAFETY: OFFSETS is a plain static of integers; the index is masked into the bitmap; a
    // volatile read keeps the loader's value.
    let bits = unsafe {
        core::ptr::read_volatile(
            (&raw const crate::globals::OFFSETS.drop.ignored_reasons)
                .cast::<u8>()
                .add(byte),
        )
    };
    (reason >> 3) < DROP_REASON_BITMAP_BYTES as u32 && bits & (1 << (reason & 7)) != 0
}

/// The TCP destination port (host order) and flags of the packet, if it is a TCP segment whose
/// headers are set.
#[inline(always)]
fn tcp_header(skb: *const u8, protocol: u16) -> Option<(u16, u8)> {
    let mut head = 0u64;
    let (mut network, mut transport) = (HEADER_UNSET, HEADER_UNSET);
    if !member(skb, offset!(members.skb_head), &mut head)
        || !member(skb, offset!(members.skb_network_header), &mut network)
        || network == HEADER_UNSET
    {
        return None;
    }
    let ip = (head + u64::from(network)) as *const u8;
    let mut first = [0u8; 10];
    if !member(ip, 0, &mut first) {
        return None;
    }
    let ip_len = if protocol == ETH_P_IP {
        if first[9] != IPPROTO_TCP {
            return None;
        }
        u64::from(first[0] & 0x0f) * 4
    } else {
        // Extension headers are not walked: a segment behind one is not joined.
        if first[6] != IPPROTO_TCP {
            return None;
        }
        40
    };
    member(skb, offset!(members.skb_transport_header), &mut transport);
    let tcp = if transport != HEADER_UNSET && transport > network {
        (head + u64::from(transport)) as *const u8
    } else {
        (ip as u64 + ip_len) as *const u8
    };
    let mut th = [0u8; 14];
    if !member(tcp, 0, &mut th) {
        return None;
    }
    Some((u16::from_be_bytes([th[2], th[3]]), th[13]))
}

/// Adds the drop to the connection's state. `out`: the segment was this socket's own.
#[inline(always)]
fn note(state: &mut RawEvent, out: bool, reason: u16, flags: u8) {
    let now = now_ns();
    if state.drop_first_ns == 0 {
        state.drop_first_ns = now;
    }
    state.drop_last_ns = now;
    if out {
        if state.drops_out == 0 {
            state.drop_reason_out = reason;
        }
        state.drops_out = state.drops_out.saturating_add(1);
        state.drop_flags_out |= flags;
    } else {
        if state.drops_in == 0 {
            state.drop_reason_in = reason;
        }
        state.drops_in = state.drops_in.saturating_add(1);
        state.drop_flags_in |= flags;
    }
}
