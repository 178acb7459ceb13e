//! Ring-buffer bytes → one of the three raw kinds (a connection's event, a cgroup's
//! announcement, a DNS message), with the length, kind and family checked (never transmuted);
//! and the addresses in them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{
    AF_INET, AF_INET6, KIND_AT_RISK, KIND_CGROUP, KIND_CLOSED, KIND_CONNECT_FAILED, KIND_CONNECTED,
    KIND_DNS, KIND_DNS_QUERY, KIND_ERROR_REPORT, KIND_FORWARD_DROP, KIND_INBOUND_RESET, KIND_NAT,
    RAW_CGROUP_SIZE, RAW_DNS_SIZE, RAW_EVENT_SIZE, RawCgroup, RawDns, RawEvent,
};

/// What one ring-buffer record holds, told apart by its first byte (the kind).
#[derive(Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "an event, the hot path, stays by value (no allocation); the rare kinds are boxed"
)]
pub enum Raw {
    /// A connection's state change, error, reset, call or warning.
    Event(RawEvent),
    /// A cgroup the kernel saw for the first time (`KIND_CGROUP`); boxed, as the rare kinds
    /// are several times larger than an event.
    Cgroup(Box<RawCgroup>),
    /// A DNS query a socket sent (`KIND_DNS_QUERY`) or an answer to one it received
    /// (`KIND_DNS`); boxed likewise.
    Dns(Box<RawDns>),
    /// A translation or a drop of traffic no tracked socket of this host sent (`KIND_NAT`,
    /// `KIND_FORWARD_DROP`: forwarded through this namespace); boxed: rare, and not a
    /// connection's own event.
    Translation(Box<RawEvent>),
}

/// Decodes one ring-buffer record of any kind.
pub fn decode(bytes: &[u8]) -> Result<Raw, DecodeError> {
    match bytes.first() {
        Some(&KIND_CGROUP) => decode_cgroup(bytes).map(|c| Raw::Cgroup(Box::new(c))),
        Some(&KIND_DNS | &KIND_DNS_QUERY) => decode_dns(bytes).map(|d| Raw::Dns(Box::new(d))),
        _ => decode_event(bytes).map(|ev| {
            if matches!(ev.kind, KIND_NAT | KIND_FORWARD_DROP) {
                Raw::Translation(Box::new(ev))
            } else {
                Raw::Event(ev)
            }
        }),
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
}

/// A connection's record (every kind but the cgroup and DNS ones), or a translation's.
pub fn decode_event(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
    let length = DecodeError::Length {
        got: bytes.len(),
        expected: RAW_EVENT_SIZE,
    };
    if bytes.len() != RAW_EVENT_SIZE {
        return Err(length);
    }
    let ev: RawEvent = bytemuck::try_pod_read_unaligned(bytes).map_err(|_| length)?;
    if !matches!(
        ev.kind,
        KIND_CONNECTED
            | KIND_CLOSED
            | KIND_ERROR_REPORT
            | KIND_INBOUND_RESET
            | KIND_CONNECT_FAILED
            | KIND_AT_RISK
            | KIND_NAT
            | KIND_FORWARD_DROP
    ) {
        return Err(DecodeError::Kind(ev.kind));
    }
    if !matches!(ev.family, AF_INET | AF_INET6) {
        return Err(DecodeError::Family(ev.family));
    }
    Ok(ev)
}

/// A cgroup record (`KIND_CGROUP`, told apart by its first byte).
pub fn decode_cgroup(bytes: &[u8]) -> Result<RawCgroup, DecodeError> {
    let length = DecodeError::Length {
        got: bytes.len(),
        expected: RAW_CGROUP_SIZE,
    };
    if bytes.len() != RAW_CGROUP_SIZE {
        return Err(length);
    }
    let raw: RawCgroup = bytemuck::try_pod_read_unaligned(bytes).map_err(|_| length)?;
    if raw.kind != KIND_CGROUP {
        return Err(DecodeError::Kind(raw.kind));
    }
    Ok(raw)
}

/// A DNS record (`KIND_DNS` or `KIND_DNS_QUERY`, told apart by its first byte).
pub fn decode_dns(bytes: &[u8]) -> Result<RawDns, DecodeError> {
    let length = DecodeError::Length {
        got: bytes.len(),
        expected: RAW_DNS_SIZE,
    };
    if bytes.len() != RAW_DNS_SIZE {
        return Err(length);
    }
    let raw: RawDns = bytemuck::try_pod_read_unaligned(bytes).map_err(|_| length)?;
    if raw.kind != KIND_DNS && raw.kind != KIND_DNS_QUERY {
        return Err(DecodeError::Kind(raw.kind));
    }
    Ok(raw)
}

/// An address from the tracepoint's bytes; IPv4-mapped IPv6 addresses are shown as IPv4.
pub fn ip(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        Ipv6Addr::from(*bytes).to_canonical()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    fn bytes_of(ev: &RawEvent) -> Vec<u8> {
        bytemuck::bytes_of(ev).to_vec()
    }

    #[test]
    fn round_trips_a_valid_record() {
        let mut ev = RawEvent::zeroed();
        ev.kind = KIND_CLOSED;
        ev.family = AF_INET6;
        ev.dport = 443;
        ev.comm[..4].copy_from_slice(b"curl");
        assert_eq!(decode_event(&bytes_of(&ev)), Ok(ev));
    }

    #[test]
    fn rejects_wrong_length_kind_and_family() {
        let mut ev = RawEvent::zeroed();
        ev.kind = KIND_CLOSED;
        ev.family = AF_INET;
        let b = bytes_of(&ev);
        let length = |got| DecodeError::Length {
            got,
            expected: RAW_EVENT_SIZE,
        };
        assert_eq!(decode_event(&b[..100]), Err(length(100)));
        assert_eq!(
            decode_event(&[b.clone(), vec![0]].concat()),
            Err(length(RAW_EVENT_SIZE + 1))
        );
        ev.kind = 12;
        assert_eq!(decode_event(&bytes_of(&ev)), Err(DecodeError::Kind(12)));
        ev.kind = KIND_CONNECTED;
        ev.family = 1;
        assert_eq!(decode_event(&bytes_of(&ev)), Err(DecodeError::Family(1)));
        assert_eq!(decode_event(&[]), Err(length(0)));
    }

    #[test]
    fn every_record_kind_is_told_apart_by_its_first_byte() {
        let mut kinds = [
            KIND_CONNECTED,
            KIND_CLOSED,
            KIND_ERROR_REPORT,
            KIND_INBOUND_RESET,
            KIND_CONNECT_FAILED,
            KIND_CGROUP,
            KIND_AT_RISK,
            KIND_DNS,
            KIND_DNS_QUERY,
            KIND_NAT,
            KIND_FORWARD_DROP,
        ];
        let n = kinds.len();
        kinds.sort_unstable();
        let mut unique = kinds.to_vec();
        unique.dedup();
        assert_eq!(unique.len(), n, "two kinds share a value: {kinds:?}");
    }

    #[test]
    fn a_translation_is_its_own_raw_kind() {
        for kind in [KIND_NAT, KIND_FORWARD_DROP] {
            let mut ev = RawEvent::zeroed();
            ev.kind = kind;
            ev.family = AF_INET;
            ev.nat_dport = 8080;
            assert_eq!(decode(&bytes_of(&ev)), Ok(Raw::Translation(Box::new(ev))));
        }
        let mut ev = RawEvent::zeroed();
        ev.kind = KIND_CLOSED;
        ev.family = AF_INET;
        assert_eq!(decode(&bytes_of(&ev)), Ok(Raw::Event(ev)));
    }

    #[test]
    fn a_cgroup_record_is_told_by_its_kind_and_length() {
        let mut raw = RawCgroup::zeroed();
        raw.kind = KIND_CGROUP;
        raw.cgroup_id = 42;
        let b = bytemuck::bytes_of(&raw).to_vec();
        assert_eq!(decode_cgroup(&b), Ok(raw));
        assert!(decode_cgroup(&b[..RAW_EVENT_SIZE]).is_err());
        raw.kind = KIND_CLOSED;
        assert_eq!(
            decode_cgroup(bytemuck::bytes_of(&raw)),
            Err(DecodeError::Kind(KIND_CLOSED))
        );
    }
}
