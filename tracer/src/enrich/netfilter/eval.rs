//! Which rule drops or rejects a new TCP SYN at a hook: the base chains of the hook, in
//! priority order, walked by a small register machine over the expressions a SYN's facts
//! decide (addresses, ports, protocol, uid, conntrack state "new"). Pure.
//!
//! Every value is a pair (bits, which bits are known). A comparison whose outcome depends on
//! an unknown bit (the TTL, a mark, a random number, an interface, an expression this module
//! does not know) makes the rule *uncertain*: an uncertain rule that would drop or reject is
//! reported with `certain: false` and ends the walk; one that would do anything else is
//! skipped, and a later hit in the same base chain is uncertain too (the skipped rule might
//! have accepted). Chains after NAT (priority > −100 at prerouting and output; every chain at
//! input, forward, postrouting) see the translated destination.
use std::net::IpAddr;

use super::ruleset::{
    Data, Expr, NF_ACCEPT, NF_DROP, NF_QUEUE, NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6, NFT_BREAK,
    NFT_CONTINUE, NFT_GOTO, NFT_JUMP, NFT_RETURN, Rule, Ruleset, Table, Verdict,
};

/// Netfilter hooks of the IP families (`NF_INET_*`): the outcome model's.
pub use crate::analysis::outcome::Hook;

/// The kernel's number of a hook (`NF_INET_*`).
pub trait HookNumber {
    fn number(self) -> u32;
}

impl HookNumber for Hook {
    fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }
}

/// A new TCP SYN, as far as the tracer knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The destination after DNAT, where it was translated.
    pub translated_daddr: Option<IpAddr>,
    pub translated_dport: Option<u16>,
    /// The sending socket's uid (output only).
    pub uid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    Reject,
}

/// The rule that drops or rejects the packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHit {
    /// `ip`, `ip6` or `inet`.
    pub family: &'static str,
    pub table: String,
    pub chain: String,
    /// The rule's handle; 0 for a base chain's policy.
    pub handle: u64,
    /// The rule's comment; else, for a verdict map's drop, the element's comment; `policy`
    /// for a base chain's policy.
    pub comment: Option<String>,
    pub verdict: Action,
    /// False when an expression on the way could not be evaluated.
    pub certain: bool,
}

/// The deepest jump stack walked.
pub const MAX_DEPTH: usize = 16;
/// The most expressions evaluated for one question.
pub const MAX_STEPS: u32 = 100_000;

pub fn family_name(f: u8) -> &'static str {
    match f {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        _ => "unknown",
    }
}

/// The rule (or base-chain policy) that drops or rejects `pkt` at `hook`, if any.
pub fn dropping_rule(rs: &Ruleset, hook: Hook, pkt: &Packet) -> Option<RuleHit> {
    let v4 = pkt.daddr.to_canonical().is_ipv4();
    let fam = if v4 { NFPROTO_IPV4 } else { NFPROTO_IPV6 };
    let mut bases: Vec<(i32, usize, usize)> = Vec::new();
    for (ti, t) in rs.tables.iter().enumerate() {
        if t.family != fam && t.family != NFPROTO_INET {
            continue;
        }
        for (ci, c) in t.chains.iter().enumerate() {
            if let Some(b) = &c.base
                && b.hook == hook.number()
            {
                bases.push((b.priority, ti, ci));
            }
        }
    }
    bases.sort_by_key(|&(p, ti, ci)| (p, ti, ci));
    let mut steps = 0u32;
    for (prio, ti, ci) in bases {
        let translated = match hook {
            Hook::Prerouting | Hook::Output => prio > -100,
            _ => true,
        };
        let view = View::new(pkt, fam, hook, translated);
        let table = &rs.tables[ti];
        match walk(table, ci, &view, &mut steps) {
            Walk::Accept | Walk::Stop => {
                if steps >= MAX_STEPS {
                    return None;
                }
                continue;
            }
            Walk::Queue => return None,
            Walk::Hit(h) => return Some(h),
        }
    }
    None
}

enum Walk {
    Accept,
    Hit(RuleHit),
    Queue,
    /// Bounds reached: nothing more is said.
    Stop,
}

/// The packet's bytes and facts as seen by one base chain.
struct View {
    net: Vec<u8>,
    net_known: Vec<u8>,
    th: [u8; 20],
    th_known: [u8; 20],
    fam: u8,
    hook: Hook,
    uid: Option<u32>,
    dnat: bool,
}

impl View {
    fn new(pkt: &Packet, fam: u8, hook: Hook, translated: bool) -> Self {
        let (daddr, dport) = match translated {
            true => (
                pkt.translated_daddr.unwrap_or(pkt.daddr),
                pkt.translated_dport.unwrap_or(pkt.dport),
            ),
            false => (pkt.daddr, pkt.dport),
        };
        let dnat = translated && (pkt.translated_daddr.is_some() || pkt.translated_dport.is_some());
        let (mut net, mut known) = match fam {
            NFPROTO_IPV4 => (vec![0u8; 20], vec![0u8; 20]),
            _ => (vec![0u8; 40], vec![0u8; 40]),
        };
        let mut put = |off: usize, bytes: &[u8]| {
            net[off..off + bytes.len()].copy_from_slice(bytes);
            known[off..off + bytes.len()].fill(0xff);
        };
        match (pkt.saddr.to_canonical(), daddr.to_canonical()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                put(0, &[0x45]);
                put(9, &[6]);
                put(12, &s.octets());
                put(16, &d.octets());
            }
            (s, d) => {
                let six = |a: IpAddr| match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    IpAddr::V6(a) => a.octets(),
                };
                put(6, &[6]);
                put(8, &six(s));
                put(24, &six(d));
                net[0] = 0x60;
                known[0] = 0xf0;
            }
        }
        let mut th = [0u8; 20];
        let mut th_known = [0u8; 20];
        th[0..2].copy_from_slice(&pkt.sport.to_be_bytes());
        th[2..4].copy_from_slice(&dport.to_be_bytes());
        th_known[0..4].fill(0xff);
        th_known[8..12].fill(0xff); // ack 0
        th[13] = 0x02; // SYN; FIN, RST, PSH, ACK, URG clear; ECE, CWR unknown
        th_known[13] = 0x3f;
        th_known[16..18].fill(0); // checksum
        th_known[18..20].fill(0xff); // urgent pointer 0
        Self {
            net,
            net_known: known,
            th,
            th_known,
            fam,
            hook,
            uid: pkt.uid,
            dnat,
        }
    }
}

/// 16 registers of 4 bytes (`NFT_REG32_00..15`; `NFT_REG_1..4` are 16-byte views of them).
struct Regs {
    v: [u8; 64],
    k: [u8; 64],
}

/// Byte offset of register `r` in the register file.
fn reg_off(r: u32) -> Option<usize> {
    match r {
        1..=4 => Some((r as usize - 1) * 16),
        8..=23 => Some((r as usize - 8) * 4),
        _ => None,
    }
}

impl Regs {
    fn new() -> Self {
        Self {
            v: [0; 64],
            k: [0; 64],
        }
    }
    /// Stores `len` bytes at register `r`, zero-padded to 4 bytes as the kernel does.
    fn store(&mut self, r: u32, val: &[u8], known: &[u8]) -> bool {
        let Some(off) = reg_off(r) else {
            return false;
        };
        let padded = val.len().next_multiple_of(4);
        if off + padded > 64 {
            return false;
        }
        self.v[off..off + padded].fill(0);
        self.k[off..off + padded].fill(0xff);
        self.v[off..off + val.len()].copy_from_slice(val);
        self.k[off..off + val.len()].copy_from_slice(known);
        true
    }
    fn unknown(&mut self, r: u32, len: usize) -> bool {
        let Some(off) = reg_off(r) else {
            return false;
        };
        let end = (off + len.next_multiple_of(4)).min(64);
        self.k[off..end].fill(0);
        true
    }
    fn load(&self, r: u32, len: usize) -> Option<(&[u8], &[u8])> {
        let off = reg_off(r)?;
        let end = off.checked_add(len).filter(|&e| e <= 64)?;
        Some((&self.v[off..end], &self.k[off..end]))
    }
}

/// A three-valued truth.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Maybe,
}

/// Compares `a` (with known bits `k`) to `b` as big-endian unsigned numbers.
fn compare(a: &[u8], k: &[u8], b: &[u8]) -> Option<std::cmp::Ordering> {
    if k.iter().all(|&x| x == 0xff) {
        return Some(a.cmp(b));
    }
    // The first byte where the known bits already differ decides, if every byte before is
    // fully known and equal.
    for i in 0..a.len().min(b.len()) {
        if k[i] != 0xff {
            return None;
        }
        if a[i] != b[i] {
            return Some(a[i].cmp(&b[i]));
        }
    }
    Some(std::cmp::Ordering::Equal)
}

fn equal(a: &[u8], k: &[u8], b: &[u8]) -> Tri {
    if a.len() != b.len() {
        return Tri::No;
    }
    let mut all = true;
    for i in 0..a.len() {
        if (a[i] ^ b[i]) & k[i] != 0 {
            return Tri::No;
        }
        all &= k[i] == 0xff;
    }
    if all { Tri::Yes } else { Tri::Maybe }
}

/// What one rule does.
enum RuleOut {
    /// Did not match (or fell through without a verdict).
    Next,
    /// A verdict, whether the rule was certain, and the comment of the map element that gave
    /// it (a vmap).
    Verdict(Verdict, bool, Option<String>),
    /// `reject`, certain or not.
    Reject(bool),
    /// Ended the base chain accepting (NAT set up).
    Accept(bool),
    Queue,
    /// Could not decide whether it matches or what it does, and it does not drop.
    Skip,
}

fn eval_rule(t: &Table, rule: &Rule, view: &View, steps: &mut u32) -> RuleOut {
    let mut r = Regs::new();
    let mut certain = true;
    for e in &rule.exprs {
        *steps += 1;
        if *steps >= MAX_STEPS {
            return RuleOut::Skip;
        }
        match e {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let (src, known): (&[u8], &[u8]) = match base {
                    1 => (&view.net, &view.net_known),
                    2 => (&view.th, &view.th_known),
                    _ => (&[], &[]),
                };
                let (o, l) = (*offset as usize, *len as usize);
                if l > 16 {
                    certain = false;
                    continue;
                }
                let mut v = vec![0u8; l];
                let mut k = vec![0u8; l];
                if let Some(s) = src.get(o..o + l) {
                    v.copy_from_slice(s);
                    k.copy_from_slice(&known[o..o + l]);
                }
                if !r.store(*dreg, &v, &k) {
                    certain = false;
                }
            }
            Expr::Meta { key, dreg } => {
                let (v, known): (Vec<u8>, bool) = match key {
                    // NFT_META_PROTOCOL: the ethertype
                    1 => (
                        if view.fam == NFPROTO_IPV4 {
                            0x0800u16
                        } else {
                            0x86ddu16
                        }
                        .to_be_bytes()
                        .to_vec(),
                        true,
                    ),
                    15 => (vec![view.fam], true), // NFT_META_NFPROTO
                    16 => (vec![6], true),        // NFT_META_L4PROTO
                    10 => match (view.hook, view.uid) {
                        // NFT_META_SKUID (host byte order)
                        (Hook::Output, Some(u)) => (u.to_ne_bytes().to_vec(), true),
                        _ => (vec![0; 4], false),
                    },
                    _ => (vec![0; 16], false),
                };
                let ok = if known {
                    r.store(*dreg, &v, &vec![0xff; v.len()])
                } else {
                    r.unknown(*dreg, 4)
                };
                certain &= ok;
            }
            Expr::Ct { key, dreg } => {
                let ok = match key {
                    // NFT_CT_STATE: NF_CT_STATE_BIT(IP_CT_NEW) = 8, host order
                    0 => r.store(*dreg, &8u32.to_ne_bytes(), &[0xff; 4]),
                    // NFT_CT_DIRECTION: original
                    1 => r.store(*dreg, &[0], &[0xff]),
                    // NFT_CT_STATUS: not expected, seen-reply, assured, confirmed; DST_NAT
                    // as translated; the rest unknown.
                    2 => {
                        let v: u32 = if view.dnat { 0x20 } else { 0 };
                        r.store(*dreg, &v.to_ne_bytes(), &0x2fu32.to_ne_bytes())
                    }
                    _ => r.unknown(*dreg, 16),
                };
                certain &= ok;
            }
            Expr::Opaque { dreg, len } => {
                certain &= r.unknown(*dreg, *len as usize);
            }
            Expr::Cmp { sreg, op, data } => {
                let Some((a, k)) = r.load(*sreg, data.len()) else {
                    certain = false;
                    continue;
                };
                let t = match op {
                    0 => equal(a, k, data),
                    1 => match equal(a, k, data) {
                        Tri::Yes => Tri::No,
                        Tri::No => Tri::Yes,
                        Tri::Maybe => Tri::Maybe,
                    },
                    2..=5 => match compare(a, k, data) {
                        None => Tri::Maybe,
                        Some(o) => {
                            use std::cmp::Ordering::*;
                            let yes = match op {
                                2 => o == Less,
                                3 => o != Greater,
                                4 => o == Greater,
                                _ => o != Less,
                            };
                            if yes { Tri::Yes } else { Tri::No }
                        }
                    },
                    _ => Tri::Maybe,
                };
                match t {
                    Tri::Yes => {}
                    Tri::No => return RuleOut::Next,
                    Tri::Maybe => certain = false,
                }
            }
            Expr::Range { sreg, op, from, to } => {
                let Some((a, k)) = r.load(*sreg, from.len()) else {
                    certain = false;
                    continue;
                };
                let inside = match (compare(a, k, from), compare(a, k, to)) {
                    (Some(lo), Some(hi)) => Some(lo.is_ge() && hi.is_le()),
                    _ => None,
                };
                match (inside, op) {
                    (None, _) => certain = false,
                    (Some(i), 0) if !i => return RuleOut::Next,
                    (Some(i), 1) if i => return RuleOut::Next,
                    _ => {}
                }
            }
            Expr::Bitwise {
                sreg,
                dreg,
                len,
                mask,
                xor,
            } => {
                let l = *len as usize;
                let Some((a, k)) = r.load(*sreg, l) else {
                    certain = false;
                    continue;
                };
                if mask.len() < l || xor.len() < l {
                    certain = false;
                    continue;
                }
                let v: Vec<u8> = (0..l).map(|i| (a[i] & mask[i]) ^ xor[i]).collect();
                let kn: Vec<u8> = (0..l).map(|i| k[i] | !mask[i]).collect();
                certain &= r.store(*dreg, &v, &kn);
            }
            Expr::Lookup {
                sreg,
                dreg,
                set,
                invert,
            } => {
                let Some(s) = t.set(set).filter(|s| s.elements_read) else {
                    if *dreg == Some(0) {
                        return RuleOut::Skip;
                    }
                    certain = false;
                    continue;
                };
                let Some((key, k)) = r.load(*sreg, s.key_len as usize) else {
                    certain = false;
                    continue;
                };
                if k.iter().any(|&x| x != 0xff) {
                    // An unknown key: no element can be chosen.
                    if dreg.is_some() {
                        if *dreg == Some(0) {
                            return RuleOut::Skip;
                        }
                        r.unknown(dreg.unwrap_or(1), s.data_len as usize);
                    }
                    certain = false;
                    continue;
                }
                let found = s.find(key);
                match (dreg, found) {
                    (None, f) => {
                        if f.is_some() == *invert {
                            return RuleOut::Next;
                        }
                    }
                    (Some(_), None) => return RuleOut::Next,
                    (Some(0), Some(el)) => match &el.data {
                        Some(Data::Verdict(v)) => {
                            return RuleOut::Verdict(v.clone(), certain, el.comment.clone());
                        }
                        _ => return RuleOut::Skip,
                    },
                    (Some(d), Some(el)) => match &el.data {
                        Some(Data::Value(v)) => {
                            certain &= r.store(*d, v, &vec![0xff; v.len()]);
                        }
                        _ => certain &= r.unknown(*d, s.data_len as usize),
                    },
                }
            }
            Expr::Immediate { dreg, data } => match data {
                Data::Verdict(v) => return RuleOut::Verdict(v.clone(), certain, None),
                Data::Value(v) => certain &= r.store(*dreg, v, &vec![0xff; v.len()]),
            },
            Expr::Reject => return RuleOut::Reject(certain),
            Expr::Nat => return RuleOut::Accept(certain),
            Expr::Queue => {
                return if certain {
                    RuleOut::Queue
                } else {
                    RuleOut::Skip
                };
            }
            Expr::NoOp => {}
            Expr::XtMatch { name, info, .. } => match xt_match(name, info, view) {
                Tri::Yes => {}
                Tri::No => return RuleOut::Next,
                Tri::Maybe => certain = false,
            },
            Expr::XtTarget { name, .. } => match name.as_str() {
                "REJECT" => return RuleOut::Reject(certain),
                "DROP" => {
                    return RuleOut::Verdict(
                        Verdict {
                            code: NF_DROP,
                            chain: None,
                        },
                        certain,
                        None,
                    );
                }
                "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "ACCEPT" => {
                    return RuleOut::Accept(certain);
                }
                "MARK" | "CONNMARK" | "LOG" | "NFLOG" | "CT" | "NOTRACK" | "TCPMSS" => {}
                _ => return RuleOut::Skip,
            },
            Expr::Unknown(_) => certain = false,
        }
    }
    if certain {
        RuleOut::Next
    } else {
        RuleOut::Skip
    }
}

/// The x_tables matches a SYN decides: `comment`, `tcp` (ports and flags), `conntrack`
/// (state only).
fn xt_match(name: &str, info: &[u8], view: &View) -> Tri {
    match name {
        "comment" => Tri::Yes,
        "tcp" => {
            // struct xt_tcp: u16 spts[2], u16 dpts[2], u8 option, flg_mask, flg_cmp, invflags
            if info.len() < 12 {
                return Tri::Maybe;
            }
            let u = |i: usize| u16::from_ne_bytes([info[i], info[i + 1]]);
            let sport = u16::from_be_bytes([view.th[0], view.th[1]]);
            let dport = u16::from_be_bytes([view.th[2], view.th[3]]);
            let inv = info[11];
            let s_ok = (u(0)..=u(2)).contains(&sport) ^ (inv & 1 != 0);
            let d_ok = (u(4)..=u(6)).contains(&dport) ^ (inv & 2 != 0);
            let (mask, cmp) = (info[9], info[10]);
            let f_ok = match mask & !view.th_known[13] {
                0 => ((view.th[13] & mask) == cmp) ^ (inv & 4 != 0),
                _ => return Tri::Maybe,
            };
            if info[8] != 0 {
                return Tri::Maybe; // --tcp-option
            }
            if s_ok && d_ok && f_ok {
                Tri::Yes
            } else {
                Tri::No
            }
        }
        "conntrack" => {
            // struct xt_conntrack_mtinfo1..3: match_flags at 146, invert_flags 148 (u16),
            // state_mask at 150 (u16; rev 1 has u8 fields at 146..)
            if info.len() < 152 {
                return Tri::Maybe;
            }
            let u = |i: usize| u16::from_ne_bytes([info[i], info[i + 1]]);
            let (flags, inv, state) = (u(146), u(148), u(150));
            if flags & !1 != 0 {
                return Tri::Maybe; // anything but --ctstate
            }
            // XT_CONNTRACK_STATE_BIT(IP_CT_NEW) = 8
            let hit = (state & 8 != 0) ^ (inv & 1 != 0);
            if hit { Tri::Yes } else { Tri::No }
        }
        _ => Tri::Maybe,
    }
}

struct Frame {
    chain: usize,
    rule: usize,
}

fn walk(t: &Table, base: usize, view: &View, steps: &mut u32) -> Walk {
    let base_chain = &t.chains[base];
    let mut stack: Vec<Frame> = Vec::with_capacity(MAX_DEPTH);
    let mut cur = Frame {
        chain: base,
        rule: 0,
    };
    let mut tainted = false;
    let hit = |chain: &str, rule: &Rule, verdict: Action, certain: bool, el: Option<String>| {
        Walk::Hit(RuleHit {
            family: family_name(t.family),
            table: t.name.clone(),
            chain: chain.to_string(),
            handle: rule.handle,
            comment: rule.comment.clone().or(el),
            verdict,
            certain,
        })
    };
    loop {
        *steps += 1;
        if *steps >= MAX_STEPS {
            return Walk::Stop;
        }
        let chain = &t.chains[cur.chain];
        let Some(rule) = chain.rules.get(cur.rule) else {
            // End of chain: return to the caller, or the base chain's policy.
            match stack.pop() {
                Some(f) => {
                    cur = f;
                    continue;
                }
                None => {
                    let policy = base_chain.base.as_ref().map_or(NF_ACCEPT, |b| b.policy);
                    if policy == NF_DROP {
                        return Walk::Hit(RuleHit {
                            family: family_name(t.family),
                            table: t.name.clone(),
                            chain: base_chain.name.clone(),
                            handle: 0,
                            comment: Some("policy".into()),
                            verdict: Action::Drop,
                            certain: !tainted,
                        });
                    }
                    return Walk::Accept;
                }
            }
        };
        cur.rule += 1;
        let (v, certain, el) = match eval_rule(t, rule, view, steps) {
            RuleOut::Next => continue,
            RuleOut::Skip => {
                tainted = true;
                continue;
            }
            RuleOut::Queue => return Walk::Queue,
            RuleOut::Accept(c) => {
                if c && !tainted {
                    return Walk::Accept;
                }
                tainted = true;
                continue;
            }
            RuleOut::Reject(c) => {
                return hit(&chain.name, rule, Action::Reject, c && !tainted, None);
            }
            RuleOut::Verdict(v, c, el) => (v, c, el),
        };
        match v.code {
            NF_DROP => return hit(&chain.name, rule, Action::Drop, certain && !tainted, el),
            NF_ACCEPT if certain && !tainted => return Walk::Accept,
            c if c == NF_QUEUE || (c & 0xff) == NF_QUEUE => {
                if certain {
                    return Walk::Queue;
                }
                tainted = true;
            }
            NFT_CONTINUE | NFT_BREAK => {}
            NFT_RETURN if certain => match stack.pop() {
                Some(f) => cur = f,
                None => cur.rule = usize::MAX,
            },
            NFT_JUMP | NFT_GOTO => {
                if !certain {
                    // The jump might not be taken: taking it could name a rule the packet
                    // never reaches, and not taking it could miss one. Follow it, and any hit
                    // there is uncertain.
                    tainted = true;
                }
                let Some(target) = v.chain.as_deref().and_then(|n| t.chain_ix.get(n)) else {
                    tainted = true;
                    continue;
                };
                if v.code == NFT_JUMP {
                    if stack.len() >= MAX_DEPTH {
                        return Walk::Stop;
                    }
                    stack.push(Frame {
                        chain: cur.chain,
                        rule: cur.rule,
                    });
                }
                cur = Frame {
                    chain: *target,
                    rule: 0,
                };
            }
            _ => tainted = true,
        }
    }
}
