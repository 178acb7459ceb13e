//! The `--port`, `--dst`, `--pid`, `--comm` filters: parsed and checked here, applied in the
//! kernel (tracer-ebpf `filter`), where a connect that does not match costs nothing further.
//! A `--dst` name is the exception: the kernel knows addresses only, so names (and the
//! addresses beside them) are matched here, against the DNS answers seen (`DstFilter`).
use std::net::IpAddr;

use ipnet::IpNet;

use crate::analysis::outcome::{Direction, Outcome};

use tracer_common::{AF_INET, AF_INET6, Cidr, Config, MAX_CIDRS, MAX_COMMS, MAX_PIDS, MAX_PORTS};

/// `--dst`: an address (`10.1.2.3`, `::1`) or a prefix (`10.0.0.0/8`, `fd00::/8`), parsed by
/// `ipnet`, as the kernel's `Cidr`.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let form = "expected an IP address or a CIDR prefix, e.g. 10.0.0.0/8 or fd00::/8";
    let net = match s.split_once('/') {
        Some((ip, _)) => s.parse::<IpNet>().map_err(|_| match ip.parse::<IpAddr>() {
            Ok(ip) => format!(
                "`{s}`: prefix length must be 0 to {} ({form})",
                if ip.is_ipv4() { 32 } else { 128 }
            ),
            Err(_) => format!("`{s}`: `{ip}` is not an IP address ({form})"),
        })?,
        None => IpNet::from(
            s.parse::<IpAddr>()
                .map_err(|_| format!("`{s}`: `{s}` is not an IP address ({form})"))?,
        ),
    };
    let mut addr_be = [0u8; 16];
    let family = match net.addr() {
        IpAddr::V4(v4) => {
            addr_be[..4].copy_from_slice(&v4.octets());
            AF_INET
        }
        IpAddr::V6(v6) => {
            addr_be = v6.octets();
            AF_INET6
        }
    };
    Ok(Cidr {
        family,
        prefix_len: net.prefix_len(),
        _pad: [0; 2],
        addr_be,
    })
}

/// The kernel's `Cidr` as an `ipnet` prefix (`None` for a family the kernel would not match).
fn ip_net(c: &Cidr) -> Option<IpNet> {
    match c.family {
        AF_INET => {
            let a = &c.addr_be;
            IpNet::new(IpAddr::from([a[0], a[1], a[2], a[3]]), c.prefix_len).ok()
        }
        AF_INET6 => IpNet::new(IpAddr::from(c.addr_be), c.prefix_len).ok(),
        _ => None,
    }
}

/// Whether `ip` is in the prefix, as the kernel's `--dst` match decides (for what userspace
/// makes itself: a listener's overflow). An IPv4-mapped address is its IPv4 address.
pub fn cidr_contains(c: &Cidr, ip: IpAddr) -> bool {
    ip_net(c).is_some_and(|net| net.trunc().contains(&ip.to_canonical()))
}

/// One `--dst` value: a prefix, or a DNS name (`api.example.com`; `*.example.com` for every name
/// under it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dst {
    Cidr(Cidr),
    Name(String),
}

/// `--dst`: an address, a prefix, or a DNS name.
pub fn parse_dst(s: &str) -> Result<Dst, String> {
    if let Ok(c) = parse_cidr(s) {
        return Ok(Dst::Cidr(c));
    }
    let name = s.trim_end_matches('.').to_ascii_lowercase();
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let is_name = !bare.is_empty()
        && name.len() <= 253
        && bare.split('.').all(label_ok)
        && bare.bytes().any(|b| b.is_ascii_alphabetic());
    if is_name {
        Ok(Dst::Name(name))
    } else {
        Err(parse_cidr(s).unwrap_err().replace(
            "expected an IP address or a CIDR prefix",
            "expected an IP address, a CIDR prefix or a DNS name",
        ))
    }
}

/// The `--dst` prefixes the kernel can apply: all of them, or none when a name is among the
/// values (a connect to a named destination must reach userspace to be matched).
pub fn kernel_cidrs(dsts: &[Dst]) -> Vec<Cidr> {
    if dsts.iter().any(|d| matches!(d, Dst::Name(_))) {
        return Vec::new();
    }
    cidrs(dsts)
}

/// The prefixes among the `--dst` values.
pub fn cidrs(dsts: &[Dst]) -> Vec<Cidr> {
    dsts.iter()
        .filter_map(|d| match d {
            Dst::Cidr(c) => Some(*c),
            Dst::Name(_) => None,
        })
        .collect()
}

/// `--dst` with names, applied to outbound outcomes in userspace: an outcome passes when its
/// destination is in a prefix, or the DNS answer that gave it asked for a name (or went through
/// a canonical name) that matches.
#[derive(Clone, Debug, Default)]
pub struct DstFilter {
    cidrs: Vec<Cidr>,
    names: Vec<String>,
}

impl DstFilter {
    /// `None` when the kernel applies every value (no name among them).
    pub fn new(dsts: &[Dst]) -> Option<Self> {
        let mut f = Self::default();
        for d in dsts {
            match d {
                Dst::Cidr(c) => f.cidrs.push(*c),
                Dst::Name(n) => f.names.push(n.clone()),
            }
        }
        (!f.names.is_empty()).then_some(f)
    }

    /// The names asked for.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn wants(&self, o: &Outcome) -> bool {
        if o.direction != Direction::Outbound {
            // The local end of an inbound refusal is never a name a client asked for.
            return self.cidrs.iter().any(|c| cidr_contains(c, o.conn.dst.ip()));
        }
        self.cidrs.iter().any(|c| cidr_contains(c, o.conn.dst.ip()))
            || o.evidence.dns.as_ref().is_some_and(|a| {
                std::iter::once(&a.name)
                    .chain(&a.chain)
                    .any(|n| self.names.iter().any(|want| name_matches(want, n)))
            })
    }
}

/// `want` (`a.b`, or `*.b` for names under `b`) against an answer's name, ignoring case. The
/// resolver may have completed the name the application asked for with a search domain of its
/// resolv.conf (`orders-db.prod.svc` asked, `orders-db.prod.svc.cluster.local` answered, as in
/// every Kubernetes pod): `a.b` also matches `a.b.` followed by more labels, and `*.b` names under
/// `b` followed by more labels.
fn name_matches(want: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    match want.strip_prefix("*.") {
        Some(zone) => name
            .match_indices('.')
            .any(|(dot, _)| starts_with_labels(&name[dot + 1..], zone)),
        None => starts_with_labels(name, want),
    }
}

/// `name` is `prefix`, or `prefix` followed by more labels (ignoring case).
fn starts_with_labels(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.is_char_boundary(prefix.len())
        && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        && (name.len() == prefix.len() || name.as_bytes()[prefix.len()] == b'.')
}

/// `--comm`: a task name as the kernel keeps it (at most 15 bytes).
pub fn parse_comm(s: &str) -> Result<[u8; 16], String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "`{s}`: a task name is 1 to 15 bytes (the kernel truncates longer names; see `ps -o comm`)"
        ));
    }
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    Ok(c)
}

/// The kernel-side configuration for these filters.
pub fn config(
    netns: u32,
    ports: &[u16],
    dsts: &[Cidr],
    pids: &[u32],
    comms: &[[u8; 16]],
) -> Result<Config, String> {
    let too_many =
        |flag: &str, max: usize| format!("at most {max} values of {flag} (one filter each)");
    if ports.len() > MAX_PORTS {
        return Err(too_many("--port", MAX_PORTS));
    }
    if dsts.len() > MAX_CIDRS {
        return Err(too_many("--dst", MAX_CIDRS));
    }
    if pids.len() > MAX_PIDS {
        return Err(too_many("--pid", MAX_PIDS));
    }
    if comms.len() > MAX_COMMS {
        return Err(too_many("--comm", MAX_COMMS));
    }
    let mut c = Config::ALL;
    c.netns = netns;
    c.n_ports = ports.len() as u8;
    c.ports[..ports.len()].copy_from_slice(ports);
    c.n_cidrs = dsts.len() as u8;
    c.cidrs[..dsts.len()].copy_from_slice(dsts);
    c.n_pids = pids.len() as u8;
    c.pids[..pids.len()].copy_from_slice(pids);
    c.n_comms = comms.len() as u8;
    c.comms[..comms.len()].copy_from_slice(comms);
    Ok(c)
}

/// How the filters apply to a listener's overflow, which no process of this host made: `--netns`,
/// `--port` and `--dst` select it by its namespace, port and address (the local end, as for an
/// inbound refusal); `--pid`, `--comm` and the workload filters exclude it. The default selects
/// every overflow.
#[derive(Clone, Debug, Default)]
pub struct OverflowFilter {
    pub netns: Option<u32>,
    pub ports: Vec<u16>,
    pub dsts: Vec<Cidr>,
    /// `--pid` or `--comm` is set.
    pub by_process: bool,
}

impl OverflowFilter {
    pub fn wants(&self, o: &Outcome) -> bool {
        let dst = o.conn.dst;
        !self.by_process
            && self.netns.is_none_or(|n| o.conn.netns == Some(n))
            && (self.ports.is_empty() || self.ports.contains(&dst.port()))
            && (self.dsts.is_empty() || self.dsts.iter().any(|c| cidr_contains(c, dst.ip())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_with_and_without_a_prefix() {
        let c = parse_cidr("10.0.0.0/8").unwrap();
        assert_eq!(
            (c.family, c.prefix_len, &c.addr_be[..4]),
            (AF_INET, 8, &[10, 0, 0, 0][..])
        );
        assert_eq!(parse_cidr("127.0.0.1").unwrap().prefix_len, 32);
        let c = parse_cidr("fd00::/8").unwrap();
        assert_eq!((c.family, c.prefix_len, c.addr_be[0]), (AF_INET6, 8, 0xfd));
        assert_eq!(parse_cidr("::1").unwrap().prefix_len, 128);
    }

    #[test]
    fn bad_cidrs_say_the_accepted_form() {
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(e.contains("CIDR prefix"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_dst_is_a_prefix_or_a_name() {
        assert!(matches!(parse_dst("10.0.0.0/8"), Ok(Dst::Cidr(_))));
        assert_eq!(
            parse_dst("Orders-DB.prod.svc."),
            Ok(Dst::Name("orders-db.prod.svc".into()))
        );
        assert_eq!(parse_dst("*.svc"), Ok(Dst::Name("*.svc".into())));
        assert_eq!(parse_dst("localhost"), Ok(Dst::Name("localhost".into())));
        for bad in ["10.0.0.0/33", "a..b", "*.", "-", "a b", "1.2.3", ""] {
            let e = parse_dst(bad).unwrap_err();
            assert!(e.contains("DNS name"), "{bad}: {e}");
        }
        let (cidr, name) = (
            parse_dst("10.0.0.0/8").unwrap(),
            parse_dst("api.test").unwrap(),
        );
        assert_eq!(kernel_cidrs(std::slice::from_ref(&cidr)).len(), 1);
        assert!(kernel_cidrs(&[cidr.clone(), name.clone()]).is_empty());
        assert!(
            DstFilter::new(&[cidr]).is_none(),
            "the kernel applies prefixes"
        );
    }

    #[test]
    fn a_name_matches_the_answer_asked_or_its_canonical_names() {
        use crate::analysis::outcome::Label;
        let answer = |name: &str, chain: &[&str]| {
            Some(std::sync::Arc::new(crate::analysis::outcome::Answer {
                name: name.into(),
                chain: chain.iter().map(|c| c.to_string()).collect(),
                server: "10.96.0.10".parse().unwrap(),
                ttl_s: 30,
                at_ns: 0,
            }))
        };
        let f = DstFilter::new(&[
            parse_dst("api.test").unwrap(),
            parse_dst("*.prod.svc").unwrap(),
            parse_dst("192.0.2.0/24").unwrap(),
        ])
        .unwrap();
        let mut o = Outcome::example("10.0.0.9:80", Label::Refused);
        assert!(!f.wants(&o), "no answer, not in the prefix");
        o.evidence.dns = answer("API.test", &[]);
        assert!(f.wants(&o));
        o.evidence.dns = answer("www.test", &["orders.prod.svc"]);
        assert!(f.wants(&o), "through a canonical name");
        o.evidence.dns = answer("prod.svc", &[]);
        assert!(!f.wants(&o), "`*.prod.svc` is the names under it");
        o.evidence.dns = answer("xprod.svc", &[]);
        assert!(!f.wants(&o));
        // A search domain appended by the resolver (a Kubernetes pod's resolv.conf).
        o.evidence.dns = answer("orders.prod.svc.cluster.local", &[]);
        assert!(f.wants(&o));
        o.evidence.dns = answer("api.test.cluster.local", &[]);
        assert!(f.wants(&o));
        o.evidence.dns = answer("api.testing", &[]);
        assert!(!f.wants(&o), "a label boundary");
        o.evidence.dns = answer("prod.svc.cluster.local", &[]);
        assert!(!f.wants(&o));
        let o = Outcome::example("192.0.2.7:80", Label::Refused);
        assert!(f.wants(&o), "the prefixes beside the names");
    }

    #[test]
    fn comms_are_checked_against_the_kernel_limit() {
        assert_eq!(&parse_comm("curl").unwrap()[..5], b"curl\0");
        assert!(
            parse_comm("a-very-long-process-name")
                .unwrap_err()
                .contains("15 bytes")
        );
        assert!(parse_comm("").is_err());
    }

    #[test]
    fn too_many_values_name_the_flag() {
        let ports: Vec<u16> = (1..=17).collect();
        assert!(
            config(0, &ports, &[], &[], &[])
                .unwrap_err()
                .contains("--port")
        );
        let c = config(
            7,
            &[80, 443],
            &[parse_cidr("10.0.0.0/8").unwrap()],
            &[42],
            &[],
        )
        .unwrap();
        assert_eq!(
            (
                c.netns, c.n_ports, c.ports[1], c.n_cidrs, c.n_pids, c.pids[0], c.n_comms
            ),
            (7, 2, 443, 1, 1, 42, 0)
        );
    }

    #[test]
    fn prefixes_contain_what_the_kernel_would_match() {
        let c = parse_cidr("10.1.0.0/15").unwrap();
        assert!(cidr_contains(&c, "10.1.2.3".parse().unwrap()));
        assert!(cidr_contains(&c, "10.0.255.1".parse().unwrap()));
        assert!(!cidr_contains(&c, "10.2.0.1".parse().unwrap()));
        assert!(!cidr_contains(&c, "::ffff:10.3.0.1".parse().unwrap()));
        assert!(cidr_contains(&c, "::ffff:10.1.0.1".parse().unwrap()));
        let v6 = parse_cidr("fd00::/8").unwrap();
        assert!(cidr_contains(&v6, "fd12::1".parse().unwrap()));
        assert!(!cidr_contains(&v6, "10.1.2.3".parse().unwrap()));
        assert!(cidr_contains(
            &parse_cidr("0.0.0.0/0").unwrap(),
            "1.2.3.4".parse().unwrap()
        ));
    }
}
