//! Ring-buffer bytes → `RawEvent`, with the length, kind and family checked (never transmuted).
use tracer_common::{
    AF_INET, AF_INET6, KIND_CLOSED, KIND_CONNECT_FAILED, KIND_CONNECTED, KIND_ERROR_REPORT,
    KIND_INBOUND_RESET, RAW_EVENT_SIZE, RawEvent,
};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes, expected {RAW_EVENT_SIZE}")]
    Length { got: usize },
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
}

pub fn decode(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
    if bytes.len() != RAW_EVENT_SIZE {
        return Err(DecodeError::Length { got: bytes.len() });
    }
    let ev: RawEvent = bytemuck::try_pod_read_unaligned(bytes)
        .map_err(|_| DecodeError::Length { got: bytes.len() })?;
    if !matches!(
        ev.kind,
        KIND_CONNECTED | KIND_CLOSED | KIND_ERROR_REPORT | KIND_INBOUND_RESET | KIND_CONNECT_FAILED
    ) {
        return Err(DecodeError::Kind(ev.kind));
    }
    if !matches!(ev.family, AF_INET | AF_INET6) {
        return Err(DecodeError::Family(ev.family));
    }
    Ok(ev)
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
        assert_eq!(decode(&b[..100]), Err(DecodeError::Length { got: 100 }));
        assert_eq!(
            decode(&[b.clone(), vec![0]].concat()),
            Err(DecodeError::Length {
                got: RAW_EVENT_SIZE + 1
            })
        );
        ev.kind = 9;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Kind(9)));
        ev.kind = KIND_CONNECTED;
        ev.family = 1;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Family(1)));
        assert_eq!(decode(&[]), Err(DecodeError::Length { got: 0 }));
    }
}
