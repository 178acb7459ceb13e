use super::*;
use tracer_common::KIND_DNS;

/// A response for `name` A `ip` TTL `ttl`, id 0x506c.
fn response(name: &[u8], ips: &[[u8; 4]], ttl: u32) -> Vec<u8> {
    let mut m = vec![0x50, 0x6c, 0x81, 0x80, 0, 1, 0, ips.len() as u8, 0, 0, 0, 0];
    m.extend_from_slice(&[name.len() as u8]);
    m.extend_from_slice(name);
    m.extend_from_slice(b"\x04test\x00\x00\x01\x00\x01");
    for ip in ips {
        m.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01");
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(b"\x00\x04");
        m.extend_from_slice(ip);
    }
    m
}

/// The query that `response` answers.
fn query(name: &[u8]) -> Vec<u8> {
    let mut m = response(name, &[], 0);
    m[2] = 0x01;
    m[3] = 0;
    m
}

/// A captured message of `payload` in namespace 7, between 10.0.0.1:40000 and 10.53.0.1:53.
fn raw(kind: u8, payload: &[u8], wire_len: u16, ts_ns: u64) -> RawDns {
    let mut raw: RawDns = bytemuck::Zeroable::zeroed();
    raw.kind = kind;
    raw.family = tracer_common::AF_INET;
    raw.transport = 17;
    raw.netns = 7;
    raw.ts_ns = ts_ns;
    raw.client_port = 40000;
    raw.server_port = 53;
    raw.client_be[..4].copy_from_slice(&[10, 0, 0, 1]);
    raw.server_be[..4].copy_from_slice(&[10, 53, 0, 1]);
    let n = payload.len().min(raw.payload.len());
    raw.len = n as u16;
    raw.wire_len = wire_len;
    raw.payload[..n].copy_from_slice(&payload[..n]);
    raw
}

fn asked_and_answered(cache: &mut DnsCache, name: &[u8], ips: &[[u8; 4]], ttl: u32, at: u64) {
    let q = query(name);
    cache.observe(&raw(KIND_DNS_QUERY, &q, q.len() as u16, at));
    let r = response(name, ips, ttl);
    cache.observe(&raw(KIND_DNS, &r, r.len() as u16, at + 1));
}

fn cache(cap: usize, budget: usize) -> DnsCache {
    DnsCache::new(NonZeroUsize::new(cap).unwrap(), budget)
}

#[test]
fn an_answered_query_names_its_addresses_in_its_namespace() {
    let mut c = cache(16, CACHE_BYTES);
    asked_and_answered(&mut c, b"api", &[[10, 53, 9, 9], [10, 53, 9, 10]], 30, 5);
    let a = c.lookup(7, "10.53.9.9".parse().unwrap()).unwrap();
    assert_eq!((a.name.as_str(), a.ttl_s, a.at_ns), ("api.test", 30, 6));
    assert_eq!(a.server, "10.53.0.1".parse::<IpAddr>().unwrap());
    let b = c.lookup(7, "10.53.9.10".parse().unwrap()).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one answer, shared by its addresses");
    assert_eq!(c.lookup(8, "10.53.9.9".parse().unwrap()), None);
    assert_eq!((c.counts.queries, c.counts.responses), (1, 1));
    assert_eq!(c.waiting(), 0);
}

#[test]
fn an_unsolicited_answer_names_nothing_even_with_a_huge_ttl() {
    let mut c = cache(16, CACHE_BYTES);
    let r = response(b"payments", &[[10, 53, 9, 9]], u32::MAX);
    c.observe(&raw(KIND_DNS, &r, r.len() as u16, 1));
    assert_eq!(c.lookup(7, "10.53.9.9".parse().unwrap()), None);
    assert_eq!(c.counts.unmatched, 1);
    // Asked, the TTL is clamped to a day.
    asked_and_answered(&mut c, b"payments", &[[10, 53, 9, 9]], u32::MAX, 2);
    let a = c.lookup(7, "10.53.9.9".parse().unwrap()).unwrap();
    assert_eq!(a.ttl_s, message::MAX_TTL_S);
}

#[test]
fn an_answer_to_another_question_or_from_another_server_names_nothing() {
    let mut c = cache(16, CACHE_BYTES);
    let q = query(b"api");
    c.observe(&raw(KIND_DNS_QUERY, &q, q.len() as u16, 1));
    let r = response(b"evil", &[[10, 53, 9, 9]], 30);
    c.observe(&raw(KIND_DNS, &r, r.len() as u16, 2));
    let r = response(b"api", &[[10, 53, 9, 9]], 30);
    let mut other = raw(KIND_DNS, &r, r.len() as u16, 2);
    other.server_be[3] = 2;
    c.observe(&other);
    assert_eq!(c.counts.unmatched, 2);
    assert!(c.is_empty());
    c.observe(&raw(KIND_DNS, &r, r.len() as u16, 3));
    assert_eq!(c.len(), 1, "the real answer still names");
}

#[test]
fn cut_and_garbage_messages_are_counted_never_names() {
    let mut c = cache(16, CACHE_BYTES);
    let r = response(b"api", &[[10, 53, 9, 9]], 30);
    c.observe(&raw(KIND_DNS, &r, 900, 1));
    c.observe(&raw(KIND_DNS, &[0xde, 0xad], 2, 1));
    c.observe(&raw(KIND_DNS_QUERY, &[0xde, 0xad], 2, 1));
    assert_eq!((c.counts.truncated, c.counts.parse_errors), (1, 2));
    assert!(c.is_empty());
}

#[test]
fn the_cache_keeps_to_its_entry_cap_and_its_byte_budget() {
    let mut c = cache(2, CACHE_BYTES);
    for i in 0..3u8 {
        asked_and_answered(&mut c, b"api", &[[10, 53, 9, i]], 30, u64::from(i) * 10);
    }
    assert_eq!((c.len(), c.counts.evicted), (2, 1));
    assert_eq!(c.lookup(7, "10.53.9.0".parse().unwrap()), None);
    // A budget of three entries' worth: 200 addresses leave three.
    let one = ENTRY_BYTES + answer_bytes(&c.lookup(7, "10.53.9.1".parse().unwrap()).unwrap());
    let mut c = cache(1000, one * 3 + one / 2);
    let ips: Vec<[u8; 4]> = (0..20u8).map(|i| [10, 53, 8, i]).collect();
    for round in 0..10u64 {
        let mut ips = ips.clone();
        for ip in &mut ips {
            ip[2] = round as u8;
        }
        asked_and_answered(&mut c, b"api", &ips, 30, round * 10);
        assert!(c.bytes() <= one * 3 + one / 2);
    }
    assert_eq!(c.len(), 3);
    assert_eq!(c.counts.evicted, 200 - 3);
}
