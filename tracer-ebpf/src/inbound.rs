//! Inbound refusals: `tcp:tcp_send_reset` with no socket and reason `SK_RST_REASON_NO_SOCKET`,
//! i.e. a segment (normally a SYN) arrived for a port where nothing listens and this host answered
//! with a RST. The record names the remote peer (src) and the local address and port (dst), the
//! segment's TCP flags and the namespace it arrived in. A RST over a loopback device is only
//! counted: the peer is this host, whose outbound connect is traced on its own.
use tracer_common::{
    AF_INET, AF_INET6, KIND_INBOUND_RESET, MEMBER_MISSING, RawEvent, SEND_RESET_BYTES,
    VALID_LOOPBACK, VALID_NETNS, VALID_RST_SENT_REASON, VALID_TCP_FLAGS,
};

use crate::{
    emit::{Counter, count, now_ns, submit},
    globals::{config, offset},
    read::{Record, member},
    state::{SCRATCH_INBOUND, scratch},
};

/// `IFF_LOOPBACK` in `net_device.flags` (include/uapi/linux/if.h).
const IFF_LOOPBACK: u32 = 0x8;
/// Offset of the flags byte in a TCP header.
const TCP_FLAGS_OFFSET: u32 = 13;

/// Where a socket-less RST's two ends come from.
pub trait Ends {
    /// Fills family, source (the remote peer) and destination (the local end) of `ev`; false
    /// for a family other than IPv4/IPv6.
    fn ends(&self, ev: &mut RawEvent) -> bool;
}

/// The classic tracepoint's record, whose sockaddrs store the segment's ends reversed: saddr is
/// the local end, daddr the remote peer.
impl Ends for Record<SEND_RESET_BYTES> {
    #[inline(always)]
    fn ends(&self, ev: &mut RawEvent) -> bool {
        let local: [u8; 28] = self.field(offset!(send_reset.saddr), [0; 28]);
        let remote: [u8; 28] = self.field(offset!(send_reset.daddr), [0; 28]);
        let family = u16::from_ne_bytes([local[0], local[1]]) as u8;
        ev.family = family;
        ev.sport = u16::from_be_bytes([remote[2], remote[3]]);
        ev.dport = u16::from_be_bytes([local[2], local[3]]);
        if family == AF_INET {
            ev.saddr_be[..4].copy_from_slice(&remote[4..8]);
            ev.daddr_be[..4].copy_from_slice(&local[4..8]);
        } else if family == AF_INET6 {
            ev.saddr_be.copy_from_slice(&remote[8..24]);
            ev.daddr_be.copy_from_slice(&local[8..24]);
        } else {
            return false;
        }
        true
    }
}

/// The segment itself (the raw tracepoint's `skb`): its IP header's source is the remote peer,
/// its destination the local end, and so for the TCP ports.
pub struct FromSegment(pub u64);

impl Ends for FromSegment {
    #[inline(always)]
    fn ends(&self, ev: &mut RawEvent) -> bool {
        let skb = self.0 as *const u8;
        let (mut head, mut network, mut transport) = (0u64, 0xffffu16, 0xffffu16);
        if !(member(skb, offset!(members.skb_head), &mut head)
            && member(skb, offset!(members.skb_network_header), &mut network)
            && member(skb, offset!(members.skb_transport_header), &mut transport))
            || network == 0xffff
            || transport == 0xffff
        {
            return false;
        }
        let ip = (head + u64::from(network)) as *const u8;
        let tcp = (head + u64::from(transport)) as *const u8;
        let mut ports = [0u8; 4];
        let mut version = 0u8;
        if !(member(ip, 0, &mut version) && member(tcp, 0, &mut ports)) {
            return false;
        }
        ev.sport = u16::from_be_bytes([ports[0], ports[1]]);
        ev.dport = u16::from_be_bytes([ports[2], ports[3]]);
        match version >> 4 {
            4 => {
                let mut addrs = [0u8; 8];
                if !member(ip, IPV4_ADDRS, &mut addrs) {
                    return false;
                }
                ev.family = AF_INET;
                ev.saddr_be[..4].copy_from_slice(&addrs[..4]);
                ev.daddr_be[..4].copy_from_slice(&addrs[4..]);
                true
            }
            6 => {
                ev.family = AF_INET6;
                member(ip, IPV6_SADDR, &mut ev.saddr_be) && member(ip, IPV6_DADDR, &mut ev.daddr_be)
            }
            _ => false,
        }
    }
}

/// Offsets of the addresses in an IPv4 header (source then destination) and an IPv6 header.
const IPV4_ADDRS: u32 = 12;
const IPV6_SADDR: u32 = 8;
const IPV6_DADDR: u32 = 24;

/// A RST this host sent for the segment `skb` that matched no socket, for `reason` (`u32::MAX`:
/// unknown); its ends from `ends`.
#[inline(always)]
pub fn no_socket_reset(reason: u32, skb: u64, ends: &impl Ends) -> Option<()> {
    let no_socket: u32 = offset!(members.rst_reason_no_socket);
    if reason != u32::MAX && no_socket != MEMBER_MISSING && reason != no_socket {
        return None;
    }
    if skb == 0 {
        return None;
    }
    let skb = skb as *const u8;
    let mut dev: *const u8 = core::ptr::null();
    member(skb, offset!(members.skb_dev), &mut dev);
    let mut net: *const u8 = core::ptr::null();
    let mut netns = 0u32;
    if member(dev, offset!(members.dev_nd_net), &mut net) {
        member(net, offset!(members.net_ns_inum), &mut netns);
    }
    let wanted: u32 = config!(netns);
    if wanted != 0 && netns != wanted {
        return None;
    }
    let mut flags = 0u32;
    let flags_read = member(dev, offset!(members.dev_flags), &mut flags);
    let loopback = flags_read && flags & IFF_LOOPBACK != 0;
    let ev = scratch(SCRATCH_INBOUND)?;
    ev.kind = KIND_INBOUND_RESET;
    ev.ts_ns = now_ns();
    if netns != 0 {
        ev.netns = netns;
        ev.valid |= VALID_NETNS;
    }
    if reason != u32::MAX {
        ev.rst_sent_reason = reason as u16;
        ev.valid |= VALID_RST_SENT_REASON;
    }
    if flags_read {
        ev.valid |= VALID_LOOPBACK;
    }
    let mut data: *const u8 = core::ptr::null();
    if member(skb, offset!(members.skb_data), &mut data)
        && member(data, TCP_FLAGS_OFFSET, &mut ev.tcp_flags)
    {
        ev.valid |= VALID_TCP_FLAGS;
    }
    if !ends.ends(ev) {
        return None;
    }
    if !crate::filter::inbound_wanted(ev.family, &ev.daddr_be, ev.dport) {
        return None;
    }
    if loopback {
        // The host refused itself: its outbound connect carries the story. Counted (once the
        // filters passed it: the refused port and address are that connect's destination, so
        // a connect `--port` or `--dst` skipped is not counted), and kept out of the ring
        // buffer (a refusal-heavy local load would double its records).
        count(Counter::InboundLoopback);
        return None;
    }
    submit(ev);
    Some(())
}
