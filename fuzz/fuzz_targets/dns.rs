//! Arbitrary bytes as captured DNS messages (UDP, and TCP with its length prefix), fed to the
//! parser and to the query/answer matcher and cache: never a panic; an answer names an address
//! only after a query of the same transaction and question; the cache keeps to its budget.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer::enrich::dns::{DnsCache, message};
use tracer_common::{KIND_DNS, KIND_DNS_QUERY, RawDns};

const BUDGET: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    for tcp in [false, true] {
        if let Ok(r) = message::parse_response(data, tcp) {
            assert!(r.chain.len() <= message::MAX_CHAIN);
            assert!(r.addresses.iter().all(|(_, ttl)| *ttl <= message::MAX_TTL_S));
        }
        let _ = message::parse_query(data, tcp);
    }
    // The input as a sequence of messages: a byte of kind and namespace, then a 2-byte length.
    let mut cache = DnsCache::new(std::num::NonZeroUsize::new(64).expect("non-zero"), BUDGET);
    let mut rest = data;
    let mut ts = 0u64;
    while rest.len() >= 3 {
        let (head, tail) = rest.split_at(3);
        let len = usize::from(u16::from_le_bytes([head[1], head[2]])).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let mut raw: RawDns = bytemuck::Zeroable::zeroed();
        raw.kind = if head[0] & 1 == 0 { KIND_DNS_QUERY } else { KIND_DNS };
        raw.family = tracer_common::AF_INET;
        raw.transport = if head[0] & 2 == 0 { 17 } else { 6 };
        raw.netns = u32::from(head[0] >> 2 & 3);
        raw.server_port = 53;
        raw.client_port = 40000;
        ts += u64::from(head[0] >> 4) * 4_000_000_000;
        raw.ts_ns = ts;
        let n = payload.len().min(raw.payload.len());
        raw.payload[..n].copy_from_slice(&payload[..n]);
        raw.len = n as u16;
        raw.wire_len = payload.len() as u16;
        let named_before = cache.len();
        let unmatched = cache.counts.unmatched;
        cache.observe(&raw);
        if raw.kind == KIND_DNS_QUERY || cache.counts.unmatched > unmatched {
            assert!(cache.len() <= named_before, "only a matched answer names");
        }
        assert!(cache.bytes() <= BUDGET);
        assert!(cache.len() <= 64);
        assert!(cache.waiting() <= tracer::enrich::dns::MAX_QUERIES);
    }
});
