//! Arbitrary ring-buffer bytes through the decoder (any of the three kinds): it must return an
//! error, never panic. The input is decoded as it is (any length) and also cut or padded to an
//! event's size, so that the kind and family checks and the field read are exercised too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_common::RAW_EVENT_SIZE;

fuzz_target!(|data: &[u8]| {
    let _ = tracer::kernel::decode::decode(data);
    let mut record = [0u8; RAW_EVENT_SIZE];
    let n = data.len().min(RAW_EVENT_SIZE);
    record[..n].copy_from_slice(&data[..n]);
    if let Ok(ev) = tracer::kernel::decode::decode_event(&record) {
        use tracer_common::{
            KIND_AT_RISK, KIND_CLOSED, KIND_CONNECT_FAILED, KIND_CONNECTED, KIND_ERROR_REPORT,
            KIND_FORWARD_DROP, KIND_INBOUND_RESET, KIND_NAT,
        };
        let known = [
            KIND_CONNECTED,
            KIND_CLOSED,
            KIND_ERROR_REPORT,
            KIND_INBOUND_RESET,
            KIND_CONNECT_FAILED,
            KIND_AT_RISK,
            KIND_NAT,
            KIND_FORWARD_DROP,
        ];
        assert!(
            known.contains(&ev.kind),
            "decoded an unknown kind {}",
            ev.kind
        );
    }
});
