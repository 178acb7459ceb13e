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
//! A tracked socket's packet that conntrack translated (a SYN DNAT-ed in nat OUTPUT, then
//! dropped in filter OUTPUT, never reaches `net_dev_queue`) gives the socket's entry its
//! translation (`VALID_NAT`, `nat.rs`).
//!
//! A packet without an owning socket dropped by netfilter (`NETFILTER_DROP`: forwarded or
//! prerouted traffic, or an inbound SYN to this host refused at INPUT) is reported only if it
//! is a TCP SYN without ACK: one `KIND_FORWARD_DROP` per connection (`CT_SEEN`, by the
//! conntrack entry's original tuple, else the headers'), at most `FORWARD_DROP_RATE` a second
//! per CPU (the rest counted, `forward_drops_limited`).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    AF_INET, AF_INET6, DROP_REASON_BITMAP_BYTES, FORWARD_DROP_RATE, KIND_FORWARD_DROP,
    MEMBER_MISSING, RawEvent, VALID_NAT, VALID_NETNS, VALID_TCP_FLAGS,
};

use crate::{
    FORWARD_DROP_WINDOW,
    emit::{Counter, count, now_ns, submit},
    globals::{config, offset},
    nat::{SEEN_DROP, Tuples, mark_seen, nat_status, packet_ct, unseen},
    read::{Bytes, Record, member, skb_netns},
    state::{SCRATCH_FORWARD_DROP, TupleKey, scratch, tracked},
};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

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
    if !member(skb, offset!(members.skb_sk), &mut sk) {
        return None;
    }
    if sk == 0 {
        let netfilter: u32 = offset!(members.drop_reason_netfilter);
        if netfilter != MEMBER_MISSING && reason == netfilter {
            forward_drop(skb, protocol, reason as u16);
        }
        return None;
    }
    let state = tracked(sk)?;
    let seg = tcp_header(skb, protocol)?;
    // Its own segment goes to the peer's port (its own port may not be in the state yet: a SYN
    // leaves before the first transition that reads it).
    note(state, seg.dport == state.dport, reason as u16, seg.flags);
    count(Counter::LocalDrops);
    if !state.has(VALID_NAT)
        && let Some((ct, _)) = packet_ct(skb)
        && let Some(status) = nat_status(ct)
        && let Some(tuples) = Tuples::read(ct)
    {
        tuples.translation(status, state);
    }
    Some(())
}

/// A SYN no socket of this host sent, dropped by netfilter: one `KIND_FORWARD_DROP` per
/// connection (original tuple), rate-limited per CPU.
#[inline(always)]
fn forward_drop(skb: *const u8, protocol: u16, reason: u16) -> Option<()> {
    let seg = tcp_header(skb, protocol)?;
    let flags = seg.flags;
    if flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return None;
    }
    // `--netns` applies to the namespace of the device the packet came by.
    let netns = skb_netns(skb);
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    let ev = scratch(SCRATCH_FORWARD_DROP)?;
    seg.ends(ev);
    if let Some((ct, _)) = packet_ct(skb)
        && let Some(tuples) = Tuples::read(ct)
    {
        tuples.original(ev);
        if let Some(status) = nat_status(ct) {
            tuples.translation(status, ev);
        }
    }
    let key = TupleKey::of(ev);
    let bits = unseen(&key, SEEN_DROP)?;
    if !within_rate() {
        // Not noted as seen: its retransmission may still be reported.
        count(Counter::ForwardDropsLimited);
        return None;
    }
    mark_seen(&key, bits);
    ev.kind = KIND_FORWARD_DROP;
    ev.drop_reason_out = reason;
    ev.drop_flags_out = flags;
    ev.drops_out = 1;
    ev.valid |= VALID_TCP_FLAGS;
    ev.tcp_flags = flags;
    if netns != 0 {
        ev.netns = netns;
        ev.valid |= VALID_NETNS;
    }
    ev.ts_ns = now_ns();
    ev.drop_first_ns = ev.ts_ns;
    ev.drop_last_ns = ev.ts_ns;
    submit(ev);
    count(Counter::ForwardDrops);
    Some(())
}

/// Whether this CPU has submitted fewer than `FORWARD_DROP_RATE` forwarded drops in the
/// current one-second window; counts this one if so.
#[inline(always)]
fn within_rate() -> bool {
    let Some(w) = FORWARD_DROP_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, touched only by this program on this CPU (classic tracepoint
    // programs do not nest).
    let w = unsafe { &mut *w };
    let now = now_ns();
    if now.wrapping_sub(w[0]) >= 1_000_000_000 {
        w[0] = now;
        w[1] = 0;
    }
    if w[1] >= u64::from(FORWARD_DROP_RATE) {
        return false;
    }
    w[1] += 1;
    true
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

/// A TCP segment's IP header (its first 40 bytes), ports (host order) and flags.
struct Segment {
    ip: Bytes<40>,
    v4: bool,
    sport: u16,
    dport: u16,
    flags: u8,
}

impl Segment {
    /// Family, addresses and ports into `ev`.
    #[inline(always)]
    fn ends(&self, ev: &mut RawEvent) {
        if self.v4 {
            ev.family = AF_INET;
            let s: [u8; 4] = self.ip.at(12, [0; 4]);
            let d: [u8; 4] = self.ip.at(16, [0; 4]);
            ev.saddr_be[..4].copy_from_slice(&s);
            ev.daddr_be[..4].copy_from_slice(&d);
        } else {
            ev.family = AF_INET6;
            ev.saddr_be = self.ip.at(8, ev.saddr_be);
            ev.daddr_be = self.ip.at(24, ev.daddr_be);
        }
        ev.sport = self.sport;
        ev.dport = self.dport;
    }
}

/// The packet's TCP segment, if it is one whose headers are set.
#[inline(always)]
fn tcp_header(skb: *const u8, protocol: u16) -> Option<Segment> {
    let mut head = 0u64;
    let (mut network, mut transport) = (HEADER_UNSET, HEADER_UNSET);
    if !member(skb, offset!(members.skb_head), &mut head)
        || !member(skb, offset!(members.skb_network_header), &mut network)
        || network == HEADER_UNSET
    {
        return None;
    }
    let ip = (head + u64::from(network)) as *const u8;
    // Every TCP segment has 40 bytes of IP and TCP headers at least. (A failed read gives
    // zeroes: no protocol matches.)
    let first = Bytes::<40>::read(ip);
    let v4 = protocol == ETH_P_IP;
    let ip_len = if v4 {
        if first.at::<u8>(9, 0) != IPPROTO_TCP {
            return None;
        }
        u64::from(first.at::<u8>(0, 0) & 0x0f) * 4
    } else {
        // Extension headers are not walked: a segment behind one is not joined.
        if first.at::<u8>(6, 0) != IPPROTO_TCP {
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
    Some(Segment {
        ip: first,
        v4,
        sport: u16::from_be_bytes([th[0], th[1]]),
        dport: u16::from_be_bytes([th[2], th[3]]),
        flags: th[13],
    })
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
