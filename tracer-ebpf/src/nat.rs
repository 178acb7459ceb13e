//! `net:net_dev_queue`: every packet this host transmits, and conntrack's translation of a new
//! connection's first packet (ARCHITECTURE.md §2). A refused connect's conntrack entry is gone
//! by the time anyone could ask netlink; the SYN on its way out still carries it
//! (`sk_buff._nfct`), with the backend in the reply tuple.
//!
//! Per packet, so the common case is one read: `_nfct` null (no conntrack) or its
//! `ip_conntrack_info` not `IP_CT_NEW` (every packet of a connection but its first, and its
//! retransmissions) returns at once. A new connection's packet reads `nf_conn.status` next and
//! returns unless `IPS_DST_NAT`/`IPS_SRC_NAT` is set; only a translated TCP SYN reads the
//! tuples. A tracked socket's SYN fills its `SOCKS` entry (`VALID_NAT`: its CONNECTED, AT_RISK
//! and CLOSE records carry it); any other (forwarded through this namespace, an untracked
//! socket) submits one `KIND_NAT` per conntrack entry (`CT_SEEN`).
//!
//! The conntrack helpers shared with `drop.rs` are here too.
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    AF_INET, AF_INET6, KIND_NAT, MEMBER_MISSING, NAT_DST, NAT_SRC, RawEvent, VALID_NAT, VALID_NETNS,
};

use crate::{
    CT_SEEN,
    emit::{Counter, count, now_ns, submit},
    globals::{config, offset},
    read::{Record, member, skb_netns},
    state::{SCRATCH_NAT, TupleKey, scratch, tracked},
};

/// `CT_SEEN` bits: a `KIND_NAT` / a `KIND_FORWARD_DROP` was submitted for the entry.
pub const SEEN_NAT: u8 = 1 << 0;
pub const SEEN_DROP: u8 = 1 << 1;

/// `enum ip_conntrack_status` bits.
const IPS_SRC_NAT: u64 = 1 << 4;
const IPS_DST_NAT: u64 = 1 << 5;
/// The low bits of `_nfct` hold the `ip_conntrack_info` (`NFCT_INFOMASK`).
const NFCT_INFOMASK: u64 = 7;
const IPPROTO_TCP: u8 = 6;

/// The raw tracepoint (`net_dev_queue(struct sk_buff *skb)`, checked against BTF at start-up).
#[raw_tracepoint(tracepoint = "net_dev_queue")]
pub fn net_dev_queue_raw(ctx: RawTracePointContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    let _ = on_packet(skb as *const u8);
    0
}

/// The classic tracepoint (`--classic-tracepoints`): the packet from the record's `skbaddr`.
#[tracepoint]
pub fn net_dev_queue(ctx: TracePointContext) -> u32 {
    let skb: u64 = Record::<16>::read(&ctx).field(offset!(dev_queue_skbaddr), 0);
    let _ = on_packet(skb as *const u8);
    0
}

#[inline(always)]
fn on_packet(skb: *const u8) -> Option<()> {
    let mut nfct = 0u64;
    if !member(skb, offset!(members.skb_nfct), &mut nfct) || nfct == 0 {
        return None;
    }
    let new: u32 = offset!(members.ct_new);
    if nfct & NFCT_INFOMASK != u64::from(new) {
        return None;
    }
    let ct = (nfct & !NFCT_INFOMASK) as *const u8;
    let status = nat_status(ct)?;
    let tuples = Tuples::read(ct)?;
    let mut sk = 0u64;
    member(skb, offset!(members.skb_sk), &mut sk);
    if sk != 0
        && let Some(state) = tracked(sk)
    {
        if !state.has(VALID_NAT) {
            tuples.translation(status, state);
        }
        return Some(());
    }
    // `--netns` applies to the namespace of the device the packet leaves by.
    let netns = skb_netns(skb);
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    let ev = scratch(SCRATCH_NAT)?;
    tuples.original(ev);
    let key = TupleKey::of(ev);
    mark_seen(&key, unseen(&key, SEEN_NAT)?);
    ev.kind = KIND_NAT;
    tuples.translation(status, ev);
    if netns != 0 {
        ev.netns = netns;
        ev.valid |= VALID_NETNS;
    }
    ev.ts_ns = now_ns();
    submit(ev);
    count(Counter::NatRecords);
    Some(())
}

/// The `NAT_DST`/`NAT_SRC` bits of the conntrack entry `ct`, None if it translates neither way.
#[inline(always)]
pub fn nat_status(ct: *const u8) -> Option<u8> {
    let mut status = 0u64;
    if !member(ct, offset!(members.ct_status), &mut status) {
        return None;
    }
    let mut bits = 0u8;
    if status & IPS_DST_NAT != 0 {
        bits |= NAT_DST;
    }
    if status & IPS_SRC_NAT != 0 {
        bits |= NAT_SRC;
    }
    (bits != 0).then_some(bits)
}

/// The conntrack entry of a packet and its `ip_conntrack_info`, if it has one.
#[inline(always)]
pub fn packet_ct(skb: *const u8) -> Option<(*const u8, u32)> {
    let mut nfct = 0u64;
    if !member(skb, offset!(members.skb_nfct), &mut nfct) || nfct & !NFCT_INFOMASK == 0 {
        return None;
    }
    Some((
        (nfct & !NFCT_INFOMASK) as *const u8,
        (nfct & NFCT_INFOMASK) as u32,
    ))
}

/// Both tuples of a TCP conntrack entry, IPv4 or IPv6, read member by member from the entry
/// (only a translated connection's first packet gets here: a copy of both tuples would not fit
/// the BPF stack of `kfree_skb` beside its record and headers).
pub struct Tuples {
    original: *const u8,
    reply: *const u8,
    family: u8,
}

impl Tuples {
    /// None for another protocol or family, or a layout BTF did not give.
    #[inline(always)]
    pub fn read(ct: *const u8) -> Option<Self> {
        let original: u32 = offset!(members.ct_tuple_original);
        let reply: u32 = offset!(members.ct_tuple_reply);
        if original == MEMBER_MISSING || reply == MEMBER_MISSING {
            return None;
        }
        let original = ct.wrapping_add(original as usize);
        // Protocol (dst.protonum) and family (src.l3num).
        let (mut protonum, mut l3num) = (0u8, 0u16);
        if !member(original, offset!(members.tuple_protonum), &mut protonum)
            || protonum != IPPROTO_TCP
            || !member(original, offset!(members.tuple_l3num), &mut l3num)
        {
            return None;
        }
        let family = l3num as u8;
        if l3num > 255 || !(family == AF_INET || family == AF_INET6) {
            return None;
        }
        Some(Self {
            original,
            reply: ct.wrapping_add(reply as usize),
            family,
        })
    }

    /// An address of the tuple at `tuple`, member `off`, into `dst` (IPv4: its first 4 bytes).
    #[inline(always)]
    fn addr(&self, tuple: *const u8, off: u32, dst: &mut [u8; 16]) {
        if self.family == AF_INET {
            let mut v4 = [0u8; 4];
            if member(tuple, off, &mut v4) {
                dst[..4].copy_from_slice(&v4);
            }
        } else {
            member(tuple, off, dst);
        }
    }

    /// A port of the tuple at `tuple`, member `off`, in host order.
    #[inline(always)]
    fn port(tuple: *const u8, off: u32) -> u16 {
        let mut be = 0u16;
        member(tuple, off, &mut be);
        u16::from_be(be)
    }

    /// The connection as its sender made it (the original tuple) into the 4-tuple of `ev`.
    #[inline(always)]
    pub fn original(&self, ev: &mut RawEvent) {
        let t = self.original;
        ev.family = self.family;
        self.addr(t, offset!(members.tuple_src_u3), &mut ev.saddr_be);
        self.addr(t, offset!(members.tuple_dst_u3), &mut ev.daddr_be);
        ev.sport = Self::port(t, offset!(members.tuple_src_port));
        ev.dport = Self::port(t, offset!(members.tuple_dst_port));
    }

    /// The translation (the reply tuple, reversed) into `nat_*` of `ev`, with `VALID_NAT`.
    #[inline(always)]
    pub fn translation(&self, status: u8, ev: &mut RawEvent) {
        let r = self.reply;
        self.addr(r, offset!(members.tuple_src_u3), &mut ev.nat_daddr_be);
        self.addr(r, offset!(members.tuple_dst_u3), &mut ev.nat_saddr_be);
        ev.nat_dport = Self::port(r, offset!(members.tuple_src_port));
        ev.nat_sport = Self::port(r, offset!(members.tuple_dst_port));
        ev.nat_status = status;
        ev.valid |= VALID_NAT;
    }
}

/// The `CT_SEEN` bits of the connection `key` (its original tuple: an unconfirmed conntrack
/// entry, e.g. one whose SYN was dropped, is freed with the packet, and each retransmission gets
/// a new one, often at another address), None if a record of kind `bit` was submitted for it.
#[inline(always)]
pub fn unseen(key: &TupleKey, bit: u8) -> Option<u8> {
    let seen = match CT_SEEN.get_ptr(key) {
        // SAFETY: a map value pointer, read at once while this program runs.
        Some(v) => unsafe { *v },
        None => 0,
    };
    (seen & bit == 0).then_some(seen | bit)
}

/// Notes that a record was submitted for `key` (`bits` from `unseen`).
#[inline(always)]
pub fn mark_seen(key: &TupleKey, bits: u8) {
    let _ = CT_SEEN.insert(key, bits, 0);
}
