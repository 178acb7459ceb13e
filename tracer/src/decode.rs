//! Ring-buffer bytes → `RawEvent`, with the length, kind and family checked (never transmuted).
use tracer_common::{
    AF_INET, AF_INET6, KIND_AT_RISK, KIND_CGROUP, KIND_CLOSED, KIND_CONNECT_FAILED, KIND_CONNECTED,
    KIND_ERROR_REPORT, KIND_INBOUND_RESET, RAW_CGROUP_SIZE, RAW_EVENT_SIZE, RawCgroup, RawEvent,
};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
}

pub fn decode(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
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
        assert_eq!(decode(&bytes_of(&ev)), Ok(ev));
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
        assert_eq!(decode(&b[..100]), Err(length(100)));
        assert_eq!(
            decode(&[b.clone(), vec![0]].concat()),
            Err(length(RAW_EVENT_SIZE + 1))
        );
        ev.kind = 9;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Kind(9)));
        ev.kind = KIND_CONNECTED;
        ev.family = 1;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Family(1)));
        assert_eq!(decode(&[]), Err(length(0)));
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
