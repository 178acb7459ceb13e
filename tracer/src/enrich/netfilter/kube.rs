//! kube-proxy's Services, read from its own rules in a [`Ruleset`]. Pure.
//!
//! - **nftables mode** (`table ip kube-proxy`, `table ip6 kube-proxy`): map `service-ips`
//!   (key `ipv4_addr . inet_proto . inet_service`, each field padded to 4 bytes; value `goto
//!   service-HASH-NS/SVC/PROTO/PORTNAME`, or `external-…`), map `service-nodeports` (key
//!   `inet_proto . inet_service`), maps `no-endpoint-services` / `no-endpoint-nodeports`
//!   (element comment `NS/SVC:PORTNAME`; verdict `goto reject-chain`: no endpoints, `drop`: no
//!   local endpoints), endpoint chains `endpoint-HASH-NS/SVC/PROTO/PORTNAME__IP/PORT`.
//! - **iptables mode through iptables-nft** (`table ip nat`, `table ip filter`): `KUBE-SERVICES`
//!   rules `-d VIP -p tcp --dport P -m comment --comment "NS/SVC:PORT cluster IP" -j KUBE-SVC-…`
//!   (the comment is an x_tables `comment` match, the address and port nftables payload
//!   comparisons), filter `KUBE-SERVICES`/`KUBE-EXTERNAL-SERVICES` rules commented "… has no
//!   endpoints" (`REJECT`) and "… has no local endpoints" (`DROP`), and `KUBE-SEP-…` chains
//!   whose `DNAT` target names the backend.
//!
//! Only TCP entries are kept.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::ruleset::{
    Data, Expr, NF_DROP, NFPROTO_IPV4, NFPROTO_IPV6, NFT_GOTO, NFT_JUMP, Ruleset, Table,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    HasEndpoints,
    /// Rejected: the client sees a refusal (ICMP port unreachable).
    NoEndpoints,
    /// Dropped (external traffic policy Local): the client sees a timeout.
    NoLocalEndpoints,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::HasEndpoints => "has_endpoints",
            ServiceState::NoEndpoints => "no_endpoints",
            ServiceState::NoLocalEndpoints => "no_local_endpoints",
        }
    }
}

pub const SOURCE_NFTABLES: &str = "kube-proxy nftables";
pub const SOURCE_IPTABLES: &str = "kube-proxy iptables";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHit {
    /// `namespace/name:port` (the Service port's name, or its number in iptables mode's
    /// comments, as kube-proxy writes it).
    pub name: String,
    pub state: ServiceState,
    pub source: &'static str,
}

/// The most entries of each index (a hostile ruleset costs a bounded amount).
pub const MAX_ENTRIES: usize = 1 << 20;

/// kube-proxy's Services and backends in one namespace's ruleset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    by_vip: HashMap<(IpAddr, u16), ServiceHit>,
    by_nodeport: HashMap<u16, ServiceHit>,
    backends: HashMap<(IpAddr, u16), String>,
    /// Entries skipped for being malformed or over `MAX_ENTRIES`.
    pub skipped: u64,
}

impl Services {
    pub fn is_empty(&self) -> bool {
        self.by_vip.is_empty() && self.by_nodeport.is_empty() && self.backends.is_empty()
    }

    /// An estimate of the heap bytes it holds.
    pub fn heap_bytes(&self) -> usize {
        let hit = size_of::<((IpAddr, u16), ServiceHit)>() + 1;
        self.by_vip.capacity() * hit
            + self
                .by_vip
                .values()
                .map(|h| h.name.capacity())
                .sum::<usize>()
            + self.by_nodeport.capacity() * (size_of::<(u16, ServiceHit)>() + 1)
            + self
                .by_nodeport
                .values()
                .map(|h| h.name.capacity())
                .sum::<usize>()
            + self.backends.capacity() * (size_of::<((IpAddr, u16), String)>() + 1)
            + self.backends.values().map(String::capacity).sum::<usize>()
    }

    pub fn len(&self) -> usize {
        self.by_vip.len() + self.by_nodeport.len() + self.backends.len()
    }

    /// The Service behind virtual address `ip:port` (cluster, external or load-balancer IP).
    pub fn service(&self, ip: IpAddr, port: u16) -> Option<&ServiceHit> {
        self.by_vip.get(&(ip.to_canonical(), port))
    }

    /// The Service behind node port `port` (on any of the node's addresses).
    pub fn nodeport(&self, port: u16) -> Option<&ServiceHit> {
        self.by_nodeport.get(&port)
    }

    /// The Service `ip:port` is a backend (endpoint) of.
    pub fn service_of_backend(&self, ip: IpAddr, port: u16) -> Option<&str> {
        self.backends
            .get(&(ip.to_canonical(), port))
            .map(String::as_str)
    }

    fn put_vip(&mut self, ip: IpAddr, port: u16, hit: ServiceHit) {
        if self.by_vip.len() >= MAX_ENTRIES {
            self.skipped += 1;
            return;
        }
        // A "no endpoints" entry wins over a translation entry for the same address: the
        // filter chain that rejects runs before the nat chain (priority −110 < −100).
        let e = self.by_vip.entry((ip.to_canonical(), port));
        match e {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().state == ServiceState::HasEndpoints {
                    o.insert(hit);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(hit);
            }
        }
    }

    fn put_backend(&mut self, ip: IpAddr, port: u16, name: String) {
        if self.backends.len() >= MAX_ENTRIES {
            self.skipped += 1;
            return;
        }
        self.backends.insert((ip.to_canonical(), port), name);
    }

    /// Indexes every kube-proxy table of `rs`.
    pub fn index(rs: &Ruleset) -> Self {
        let mut s = Services::default();
        for t in &rs.tables {
            match (t.family, t.name.as_str()) {
                (NFPROTO_IPV4 | NFPROTO_IPV6, "kube-proxy") => s.nftables(t),
                (NFPROTO_IPV4 | NFPROTO_IPV6, "nat") => s.iptables_nat(t),
                (NFPROTO_IPV4 | NFPROTO_IPV6, "filter") => s.iptables_filter(t),
                _ => {}
            }
        }
        s
    }

    fn nftables(&mut self, t: &Table) {
        let ip_len = if t.family == NFPROTO_IPV4 { 4 } else { 16 };
        let hit = |name: String, state| ServiceHit {
            name,
            state,
            source: SOURCE_NFTABLES,
        };
        for (set, with_ip) in [
            ("service-ips", true),
            ("service-nodeports", false),
            ("no-endpoint-services", true),
            ("no-endpoint-nodeports", false),
        ] {
            let Some(set) = t.set(set) else { continue };
            let no_endpoints = set.name.starts_with("no-endpoint");
            for e in &set.elements {
                let Some((ip, proto, port)) = vip_key(&e.key, with_ip.then_some(ip_len)) else {
                    self.skipped += 1;
                    continue;
                };
                if proto != 6 {
                    continue;
                }
                let Some(Data::Verdict(v)) = &e.data else {
                    self.skipped += 1;
                    continue;
                };
                let found = match no_endpoints {
                    true => {
                        let state = match v.code {
                            NF_DROP => ServiceState::NoLocalEndpoints,
                            _ => ServiceState::NoEndpoints,
                        };
                        e.comment.clone().map(|c| hit(c, state))
                    }
                    false => v
                        .chain
                        .as_deref()
                        .filter(|_| v.code == NFT_GOTO || v.code == NFT_JUMP)
                        .and_then(service_chain_name)
                        .map(|n| hit(n, ServiceState::HasEndpoints)),
                };
                let Some(h) = found else {
                    self.skipped += 1;
                    continue;
                };
                match ip {
                    Some(ip) => self.put_vip(ip, port, h),
                    None => {
                        let e = self.by_nodeport.entry(port).or_insert_with(|| h.clone());
                        if e.state == ServiceState::HasEndpoints {
                            *e = h;
                        }
                    }
                }
            }
        }
        for c in &t.chains {
            let Some(rest) = c.name.strip_prefix("endpoint-") else {
                continue;
            };
            let Some((svc, ep)) = rest.split_once("__") else {
                continue;
            };
            let Some(name) = service_chain_name(&format!("service-{svc}")) else {
                continue;
            };
            let Some((ip, port)) = ep.rsplit_once('/') else {
                continue;
            };
            match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
                (Ok(ip), Ok(port)) => self.put_backend(ip, port, name),
                _ => self.skipped += 1,
            }
        }
    }

    fn iptables_nat(&mut self, t: &Table) {
        for c in &t.chains {
            let services = c.name == "KUBE-SERVICES";
            let endpoint = c.name.starts_with("KUBE-SEP-");
            if !services && !endpoint {
                continue;
            }
            for r in &c.rules {
                let Some(comment) = r.comment.as_deref() else {
                    continue;
                };
                let name = comment.split(' ').next().unwrap_or_default().to_string();
                if !name.contains('/') {
                    continue;
                }
                if services {
                    let is_vip = [" cluster IP", " external IP", " loadbalancer IP"]
                        .iter()
                        .any(|s| comment.ends_with(s));
                    let jumps_svc = r.exprs.iter().any(|e| {
                        matches!(e, Expr::Immediate { data: Data::Verdict(v), .. }
                            if v.chain.as_deref().is_some_and(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SVL-") || c.starts_with("KUBE-EXT-")))
                    });
                    if !is_vip || !jumps_svc {
                        continue;
                    }
                    let (Some(ip), Some(port)) = (match_daddr(&r.exprs), match_dport(&r.exprs))
                    else {
                        self.skipped += 1;
                        continue;
                    };
                    self.put_vip(
                        ip,
                        port,
                        ServiceHit {
                            name,
                            state: ServiceState::HasEndpoints,
                            source: SOURCE_IPTABLES,
                        },
                    );
                } else if let Some((ip, port)) = dnat_target(&r.exprs, t.family) {
                    self.put_backend(ip, port, name);
                }
            }
        }
    }

    fn iptables_filter(&mut self, t: &Table) {
        for c in &t.chains {
            if c.name != "KUBE-SERVICES" && c.name != "KUBE-EXTERNAL-SERVICES" {
                continue;
            }
            for r in &c.rules {
                let Some(comment) = r.comment.as_deref() else {
                    continue;
                };
                let state = if comment.ends_with(" has no local endpoints") {
                    ServiceState::NoLocalEndpoints
                } else if comment.ends_with(" has no endpoints") {
                    ServiceState::NoEndpoints
                } else {
                    continue;
                };
                let name = comment.split(' ').next().unwrap_or_default().to_string();
                let (Some(ip), Some(port)) = (match_daddr(&r.exprs), match_dport(&r.exprs)) else {
                    // A node-port rule (`--dport` with `-m addrtype --dst-type LOCAL`).
                    if let Some(port) = match_dport(&r.exprs) {
                        self.by_nodeport.insert(
                            port,
                            ServiceHit {
                                name,
                                state,
                                source: SOURCE_IPTABLES,
                            },
                        );
                    }
                    continue;
                };
                self.put_vip(
                    ip,
                    port,
                    ServiceHit {
                        name,
                        state,
                        source: SOURCE_IPTABLES,
                    },
                );
            }
        }
    }
}

/// `service-HASH-NS/SVC/PROTO/PORTNAME` (or `external-…`) → `NS/SVC:PORTNAME`.
pub fn service_chain_name(chain: &str) -> Option<String> {
    let rest = chain
        .strip_prefix("service-")
        .or_else(|| chain.strip_prefix("external-"))?;
    let (_hash, path) = rest.split_once('-')?;
    let mut parts = path.splitn(4, '/');
    let (ns, svc, _proto, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if ns.is_empty() || svc.is_empty() {
        return None;
    }
    Some(format!("{ns}/{svc}:{port}"))
}

/// A concatenated key `[ADDR .] inet_proto . inet_service`, each field padded to 4 bytes.
fn vip_key(key: &[u8], ip_len: Option<usize>) -> Option<(Option<IpAddr>, u8, u16)> {
    let off = ip_len.unwrap_or(0);
    if key.len() != off + 8 {
        return None;
    }
    let ip = match ip_len {
        Some(4) => Some(IpAddr::V4(Ipv4Addr::from(*key.first_chunk::<4>()?))),
        Some(_) => Some(IpAddr::V6(Ipv6Addr::from(*key.first_chunk::<16>()?))),
        None => None,
    };
    let port = u16::from_be_bytes([key[off + 4], key[off + 5]]);
    Some((ip, key[off], port))
}

/// The destination address a rule requires: `payload @network + 16 (4)` or `+ 24 (16)` and a
/// `cmp eq` of that register.
fn match_daddr(exprs: &[Expr]) -> Option<IpAddr> {
    payload_eq(exprs, 1, &[(16, 4), (24, 16)]).and_then(|d| match d.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(*d.first_chunk::<4>()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(*d.first_chunk::<16>()?))),
        _ => None,
    })
}

/// The destination port a rule requires: `payload @transport + 2 (2)` and `cmp eq`, or an
/// x_tables `tcp` match with one port.
fn match_dport(exprs: &[Expr]) -> Option<u16> {
    if let Some(d) = payload_eq(exprs, 2, &[(2, 2)]) {
        return Some(u16::from_be_bytes([*d.first()?, *d.get(1)?]));
    }
    exprs.iter().find_map(|e| match e {
        Expr::XtMatch { name, info, .. } if name == "tcp" && info.len() >= 8 => {
            let lo = u16::from_ne_bytes([info[4], info[5]]);
            let hi = u16::from_ne_bytes([info[6], info[7]]);
            (lo == hi).then_some(lo)
        }
        _ => None,
    })
}

fn payload_eq<'a>(exprs: &'a [Expr], want_base: u32, at: &[(u32, u32)]) -> Option<&'a [u8]> {
    let mut pending: Option<u32> = None;
    for e in exprs {
        match e {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                pending = (*base == want_base && at.contains(&(*offset, *len))).then_some(*dreg);
            }
            Expr::Cmp { sreg, op: 0, data } if pending == Some(*sreg) => return Some(data),
            _ => pending = None,
        }
    }
    None
}

/// The backend of an x_tables `DNAT` target (`nf_nat_range`/`nf_nat_range2` for revisions 1
/// and 2: flags u32, min_addr at 4, min_proto at 36; revision 0 (IPv4): a compat range with
/// min_ip at 8, min proto at 16).
fn dnat_target(exprs: &[Expr], family: u8) -> Option<(IpAddr, u16)> {
    exprs.iter().find_map(|e| match e {
        Expr::XtTarget { name, rev, info } if name == "DNAT" => {
            let (addr, proto) = match rev {
                0 => (info.get(8..12)?, info.get(16..18)?),
                _ => (
                    info.get(4..if family == NFPROTO_IPV4 { 8 } else { 20 })?,
                    info.get(36..38)?,
                ),
            };
            let ip = match addr.len() {
                4 => IpAddr::V4(Ipv4Addr::from(*addr.first_chunk::<4>()?)),
                _ => IpAddr::V6(Ipv6Addr::from(*addr.first_chunk::<16>()?)),
            };
            Some((ip, u16::from_be_bytes([proto[0], proto[1]])))
        }
        _ => None,
    })
}
