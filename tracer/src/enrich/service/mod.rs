//! What stands behind the address a connection asked for: the backend a translation sent it to,
//! the Service that address is, and the netfilter rule that dropped or rejected its SYN.
//!
//! Three sources, joined here to every outbound outcome:
//! - the connection's own record: the translation conntrack made for its SYN on this host, or
//!   the destination a connect program rewrote (`classify::translation`);
//! - the translations and drops of packets **forwarded** through another namespace of this host
//!   (`KIND_NAT`, `KIND_FORWARD_DROP`: a node namespace routing a pod's traffic), kept here by
//!   their original tuple — a pod's socket's own 4-tuple — until the pod's connection ends;
//! - the rulesets of the namespaces ([`Rulesets`]: kube-proxy's Services, the rule a SYN meets)
//!   and the connect programs of the caller's cgroup ([`ConnectPrograms`]).
//!
//! Every lookup is in memory (the rulesets are read by a worker thread): nothing here waits.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
};

use libc::{EHOSTUNREACH, ENETUNREACH, EPERM};
use tracer_common::{KIND_FORWARD_DROP, NAT_DST, NAT_SRC, RawEvent, VALID_NAT, VALID_NETNS};

use super::Enricher;
use crate::{
    analysis::outcome::{
        Direction, Hook, Label, NetfilterDrop, Outcome, Phase, RuleSeen, Service, ServiceState,
        TranslatedBy, Translation,
    },
    kernel::decode::ip,
};

/// How long a forwarded connection's translation or drop waits for the connection's outcome:
/// longer than a SYN timeout with the default `tcp_syn_retries` (127 s).
pub const FORWARDED_TTL_NS: u64 = 300_000_000_000;
/// Most forwarded connections remembered (each under 128 bytes: about 2 MiB).
pub const FORWARDED_CAP: usize = 16_384;

/// A SYN as a ruleset sees it: the connection's addresses before and after translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syn {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The destination after DNAT (chains after the NAT hook see it), if translated.
    pub translated_dst: Option<SocketAddr>,
    /// The uid of the socket's owner (output path only).
    pub uid: Option<u32>,
}

/// The rulesets of this host's network namespaces, as last read.
pub trait Rulesets {
    /// The Service `ip:port` is in namespace `netns`, by the rules that implement it.
    fn service(&self, netns: u32, addr: SocketAddr) -> Option<Service>;
    /// The Service whose backend `addr` is, in namespace `netns`.
    fn service_of_backend(&self, netns: u32, addr: SocketAddr) -> Option<Service>;
    /// The first rule of `hook`'s chains in `netns` that drops or rejects `syn`.
    fn dropping_rule(&self, netns: u32, hook: Hook, syn: &Syn) -> Option<RuleSeen>;
}

/// The connect programs (`cgroup/connect4`, `connect6`) in effect for a cgroup.
pub trait ConnectPrograms {
    fn of(&mut self, cgroup_id: u64, now_ns: u64) -> Vec<Arc<str>>;
}

/// No rulesets read (`--no-netfilter`, or in tests).
pub struct NoRulesets;

impl Rulesets for NoRulesets {
    fn service(&self, _: u32, _: SocketAddr) -> Option<Service> {
        None
    }
    fn service_of_backend(&self, _: u32, _: SocketAddr) -> Option<Service> {
        None
    }
    fn dropping_rule(&self, _: u32, _: Hook, _: &Syn) -> Option<RuleSeen> {
        None
    }
}

impl ConnectPrograms for crate::enrich::socklb::SockLb {
    fn of(&mut self, cgroup_id: u64, _now_ns: u64) -> Vec<Arc<str>> {
        self.programs(cgroup_id, std::time::Instant::now())
            .map(|p| p.iter().map(|name| Arc::from(name.as_str())).collect())
            .unwrap_or_default()
    }
}

/// What a forwarding namespace of this host did to a connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Forwarded {
    /// Where its translation sent it, and the source the peer sees.
    nat: Option<(SocketAddr, Option<SocketAddr>)>,
    /// The namespace it was seen in.
    netns: Option<u32>,
    /// Netfilter dropped it there.
    dropped: bool,
    at_ns: u64,
}

/// Counts of the forwarded table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    /// Forwarded translations and drops noted (`KIND_NAT`, `KIND_FORWARD_DROP`).
    pub forwarded: u64,
    /// Noted ones pushed out, unused, by a full table (`FORWARDED_CAP`): a pod connection that
    /// ends after it loses its node's translation or drop.
    pub forwarded_evicted: u64,
}

/// The enricher (see the module doc).
pub struct Services {
    forwarded: HashMap<(SocketAddr, SocketAddr), Forwarded>,
    /// Insertion order, for expiry and eviction (an entry replaced later is skipped by time).
    order: VecDeque<((SocketAddr, SocketAddr), u64)>,
    rulesets: Box<dyn Rulesets>,
    programs: Option<Box<dyn ConnectPrograms>>,
    /// This process's network namespace: the host's, where kube-proxy's rules are.
    own_netns: Option<u32>,
    /// `enum skb_drop_reason` value of `NETFILTER_DROP`, if the kernel has it.
    netfilter_drop: Option<u16>,
    pub counts: ServiceCounts,
}

impl Services {
    pub fn new(
        rulesets: Box<dyn Rulesets>,
        programs: Option<Box<dyn ConnectPrograms>>,
        own_netns: Option<u32>,
        netfilter_drop: Option<u16>,
    ) -> Self {
        Self {
            forwarded: HashMap::new(),
            order: VecDeque::new(),
            rulesets,
            programs,
            own_netns,
            netfilter_drop,
            counts: ServiceCounts::default(),
        }
    }

    /// Notes a `KIND_NAT` or `KIND_FORWARD_DROP` record.
    pub fn observe(&mut self, ev: &RawEvent) {
        let src = SocketAddr::new(ip(ev.family, &ev.saddr_be), ev.sport);
        let dst = SocketAddr::new(ip(ev.family, &ev.daddr_be), ev.dport);
        let nat =
            (ev.valid & VALID_NAT != 0 && ev.nat_status & (NAT_DST | NAT_SRC) != 0).then(|| {
                let backend = if ev.nat_status & NAT_DST != 0 {
                    SocketAddr::new(ip(ev.family, &ev.nat_daddr_be), ev.nat_dport)
                } else {
                    dst
                };
                let seen = (ev.nat_status & NAT_SRC != 0)
                    .then(|| SocketAddr::new(ip(ev.family, &ev.nat_saddr_be), ev.nat_sport))
                    .filter(|s| *s != src);
                (backend, seen)
            });
        let dropped = ev.kind == KIND_FORWARD_DROP;
        let netns = (ev.valid & VALID_NETNS != 0).then_some(ev.netns);
        self.expire(ev.ts_ns);
        self.counts.forwarded += 1;
        let entry = self.forwarded.entry((src, dst)).or_insert(Forwarded {
            nat: None,
            netns,
            dropped: false,
            at_ns: ev.ts_ns,
        });
        entry.nat = nat.or(entry.nat);
        entry.dropped |= dropped;
        entry.netns = netns.or(entry.netns);
        entry.at_ns = ev.ts_ns;
        self.order.push_back(((src, dst), ev.ts_ns));
        while self.forwarded.len() > FORWARDED_CAP {
            let Some((key, at)) = self.order.pop_front() else {
                break;
            };
            if self.forwarded.get(&key).is_some_and(|f| f.at_ns == at) {
                self.forwarded.remove(&key);
                self.counts.forwarded_evicted += 1;
            }
        }
    }

    /// Forgets what is older than `FORWARDED_TTL_NS`, and the oldest order entries beyond
    /// four per remembered connection (a connection noted again pushes one more).
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(key, at)) = self.order.front() {
            let stale = now_ns.saturating_sub(at) > FORWARDED_TTL_NS;
            if !stale && self.order.len() <= 4 * FORWARDED_CAP {
                break;
            }
            self.order.pop_front();
            if self.forwarded.get(&key).is_some_and(|f| f.at_ns == at) {
                self.forwarded.remove(&key);
            }
        }
    }

    /// How many forwarded connections are remembered.
    pub fn forwarded_len(&self) -> usize {
        self.forwarded.len()
    }

    /// The namespaces whose rules may name this connection's Service, best first: where its
    /// translation happened, the client's own, the host's.
    fn namespaces(&self, o: &Outcome) -> impl Iterator<Item = u32> {
        let t = o.evidence.translation.and_then(|t| t.netns);
        let mut seen: [Option<u32>; 3] = [t, o.conn.netns, self.own_netns];
        for i in 1..3 {
            if seen[..i].contains(&seen[i]) {
                seen[i] = None;
            }
        }
        seen.into_iter().flatten()
    }

    fn name_service(&self, o: &Outcome) -> Option<Service> {
        let requested = o.evidence.translation.map_or(o.conn.dst, |t| t.requested);
        let backend = o.evidence.translation.map(|t| t.backend);
        for netns in self.namespaces(o) {
            if let Some(s) = self.rulesets.service(netns, requested) {
                return Some(s);
            }
        }
        let backend = backend.filter(|b| *b != requested)?;
        self.namespaces(o)
            .find_map(|netns| self.rulesets.service_of_backend(netns, backend))
    }

    /// The rule that dropped the SYN in namespace `netns`, walking `hooks` in order; without
    /// one, the hook the path is told by (`path`: where a socket's SYN leaves, or where a
    /// forwarded one is filtered), not a guess at where the drop was.
    fn rule(
        &self,
        netns: Option<u32>,
        hooks: &[Hook],
        path: Hook,
        syn: &Syn,
    ) -> (Hook, Option<RuleSeen>) {
        if let Some(netns) = netns {
            for &hook in hooks {
                if let Some(rule) = self.rulesets.dropping_rule(netns, hook, syn) {
                    return (hook, Some(rule));
                }
            }
        }
        (path, None)
    }
}

/// Outcomes of a connection that sent a SYN (or tried to): where a translation or a dropped SYN
/// says something.
fn connect_phase(o: &Outcome) -> bool {
    matches!(
        o.label,
        Label::Refused | Label::SynTimeout | Label::Unreachable
    ) && o.evidence.phase.is_none()
}

impl Enricher for Services {
    fn enrich(&mut self, o: &mut Outcome, now_ns: u64) {
        if o.direction != Direction::Outbound {
            return;
        }
        // A pod's connection translated or dropped by the namespace that forwarded it.
        let key = (o.conn.src, o.conn.dst);
        let forwarded = self
            .forwarded
            .get(&key)
            .copied()
            .filter(|f| now_ns.saturating_sub(f.at_ns) <= FORWARDED_TTL_NS || now_ns < f.at_ns);
        if let Some(f) = forwarded {
            if o.evidence.translation.is_none()
                && let Some((backend, source_seen)) = f.nat
            {
                o.evidence.translation = Some(Translation {
                    requested: o.conn.dst,
                    backend,
                    source_seen,
                    by: TranslatedBy::Conntrack,
                    netns: f.netns,
                    forwarded: true,
                });
            }
            // The connection's first outcome (its connect, or its failure in the connect phase)
            // takes the entry: a node forwarding thousands of pod connections a second keeps
            // only those still connecting. A later failure of an established connection (a
            // reset) has no forwarded translation.
            self.forwarded.remove(&key);
        }
        // Every failure and warning is looked up; a successful connect (the hot path: every
        // connect of the host) only when it was translated, the one case its record names one.
        let wanted = o.label.is_failure()
            || o.label.is_warning()
            || (o.label == Label::Connected && o.evidence.translation.is_some());
        if wanted {
            o.evidence.service = self.name_service(o);
        }
        if !connect_phase(o) {
            self.socket_lb(o, now_ns);
            return;
        }
        let translated_dst = o
            .evidence
            .translation
            .filter(|t| t.by == TranslatedBy::Conntrack && t.backend != t.requested)
            .map(|t| t.backend);
        let syn = Syn {
            src: o.conn.src,
            dst: o.conn.dst,
            translated_dst,
            uid: Some(o.conn.uid),
        };
        let dropped_here = o
            .evidence
            .local_drops
            .and_then(|d| d.sent)
            .is_some_and(|d| self.netfilter_drop.is_some_and(|r| r == d.reason));
        if dropped_here {
            let (hook, rule) = self.rule(
                o.conn.netns,
                &[Hook::Output, Hook::Postrouting],
                Hook::Output,
                &syn,
            );
            o.evidence.netfilter_drop = Some(NetfilterDrop {
                netns: o.conn.netns,
                hook,
                forwarded: false,
                rule,
            });
        } else if let Some(f) = forwarded.filter(|f| f.dropped) {
            let syn = Syn { uid: None, ..syn };
            let syn = Syn {
                translated_dst: f.nat.map(|(b, _)| b).filter(|b| *b != syn.dst),
                ..syn
            };
            let (hook, rule) = self.rule(
                f.netns,
                &[Hook::Prerouting, Hook::Forward],
                Hook::Forward,
                &syn,
            );
            o.evidence.netfilter_drop = Some(NetfilterDrop {
                netns: f.netns,
                hook,
                forwarded: true,
                rule,
            });
        }
    }
}

impl Services {
    /// A connect() refused inside the call by the caller's connect program: with
    /// EHOSTUNREACH/ENETUNREACH (what a socket-LB program sets when the Service has no backend,
    /// e.g. Cilium), the Service has no backends; with EPERM (a policy, or an older kernel's
    /// socket-LB), the programs are named as evidence only.
    fn socket_lb(&mut self, o: &mut Outcome, now_ns: u64) {
        if o.evidence.phase != Some(Phase::ConnectCall) {
            return;
        }
        let Some(errno) = o
            .errno
            .filter(|e| matches!(*e, EHOSTUNREACH | ENETUNREACH | EPERM))
        else {
            return;
        };
        let Some(programs) = self.programs.as_mut() else {
            return;
        };
        let names = programs.of(o.conn.cgroup_id, now_ns);
        if names.is_empty() {
            return;
        }
        if errno == EPERM {
            o.evidence.connect_programs = Some(names);
            return;
        }
        let named = o.evidence.service.take();
        o.evidence.service = Some(Service {
            name: named.and_then(|s| s.name),
            state: ServiceState::NoBackends,
            source: "socket-lb",
            programs: names,
        });
    }
}

mod rulesets;

#[cfg(test)]
mod tests;
