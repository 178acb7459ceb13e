//! The `--port`, `--dst`, `--pid`, `--comm` filters: parsed and checked here, applied in the
//! kernel (tracer-ebpf `filter`), where a connect that does not match costs nothing further.
use std::net::IpAddr;

use tracer_common::{AF_INET, AF_INET6, Cidr, Config, MAX_CIDRS, MAX_COMMS, MAX_PIDS, MAX_PORTS};

/// `--dst`: an address (`10.1.2.3`, `::1`) or a prefix (`10.0.0.0/8`, `fd00::/8`).
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let form = "expected an IP address or a CIDR prefix, e.g. 10.0.0.0/8 or fd00::/8";
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("`{s}`: `{ip}` is not an IP address ({form})"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max} ({form})"))?,
    };
    let mut addr_be = [0u8; 16];
    let family = match ip {
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
        prefix_len,
        _pad: [0; 2],
        addr_be,
    })
}

/// Whether `ip` is in the prefix, as the kernel's `--dst` match decides (for what userspace
/// makes itself: a listener's overflow).
pub fn cidr_contains(c: &Cidr, ip: IpAddr) -> bool {
    let (family, bytes) = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (AF_INET, b)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    };
    if family != c.family {
        return false;
    }
    let bits = usize::from(c.prefix_len);
    let (whole, rest) = (bits / 8, bits % 8);
    if bytes[..whole] != c.addr_be[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        bytes[whole] & mask == c.addr_be[whole] & mask
    }
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
