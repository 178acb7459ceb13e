//! DNS answers seen by this host's sockets (`KIND_DNS`, captured by `dns_ingress` in the kernel),
//! parsed with hickory-proto and kept in a bounded, TTL-aware cache by (network namespace,
//! answered address): the name a connection's destination came from.
use std::{net::IpAddr, num::NonZeroUsize, sync::Arc};

use hickory_proto::{
    op::{Message, MessageType},
    rr::RData,
};
use lru::LruCache;
use tracer_common::{IPPROTO_TCP, RawDns};

use crate::{
    analysis::outcome::{Answer, Direction, Outcome},
    enrich::Enricher,
};

/// Why a captured packet gave no answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a DNS message: {0}")]
    Malformed(String),
    #[error("a DNS query, not a response")]
    NotResponse,
    #[error("no question in the response")]
    NoQuestion,
}

/// The address records of a response payload (`tcp`: with the 2-byte length prefix), each
/// with the answer it belongs to.
pub fn parse(
    payload: &[u8],
    tcp: bool,
    server: IpAddr,
    at_ns: u64,
) -> Result<Vec<(IpAddr, Answer)>, ParseError> {
    let message = if tcp {
        payload.get(2..).unwrap_or_default()
    } else {
        payload
    };
    let m = Message::from_vec(message).map_err(|e| ParseError::Malformed(e.to_string()))?;
    if m.metadata.message_type != MessageType::Response {
        return Err(ParseError::NotResponse);
    }
    let name = m
        .queries
        .first()
        .ok_or(ParseError::NoQuestion)?
        .name()
        .to_utf8();
    let name = name.trim_end_matches('.').to_string();
    let mut chain = Vec::new();
    let mut out = Vec::new();
    for r in &m.answers {
        match &r.data {
            RData::CNAME(c) => chain.push(c.0.to_utf8().trim_end_matches('.').to_string()),
            RData::A(a) => out.push((IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => out.push((IpAddr::V6(a.0), r.ttl)),
            _ => {}
        }
    }
    Ok(out
        .into_iter()
        .map(|(ip, ttl_s)| {
            let answer = Answer {
                name: name.clone(),
                chain: chain.clone(),
                server,
                ttl_s,
                at_ns,
            };
            (ip, answer)
        })
        .collect())
}

/// The answers seen, by (network namespace inode, address): the latest wins.
pub struct DnsCache {
    answers: LruCache<(u32, IpAddr), Arc<Answer>, foldhash::fast::RandomState>,
    /// DNS responses seen, malformed ones, answers evicted at the cap, and answers longer than
    /// the captured bytes (not parsed: a cut message does not parse).
    pub seen: u64,
    pub parse_errors: u64,
    pub evicted: u64,
    pub truncated: u64,
}

impl DnsCache {
    pub fn new(cap: NonZeroUsize) -> Self {
        Self {
            answers: LruCache::with_hasher(cap, Default::default()),
            seen: 0,
            parse_errors: 0,
            evicted: 0,
            truncated: 0,
        }
    }

    /// Takes a captured response.
    pub fn observe(&mut self, raw: &RawDns) {
        self.seen += 1;
        let server = crate::kernel::decode::ip(raw.family, &raw.server_be);
        let len = usize::from(raw.len).min(raw.payload.len());
        if raw.wire_len > raw.len {
            self.truncated += 1;
            return;
        }
        match parse(
            &raw.payload[..len],
            raw.transport == IPPROTO_TCP as u8,
            server,
            raw.ts_ns,
        ) {
            Ok(records) => {
                for (ip, answer) in records {
                    let key = (raw.netns, ip.to_canonical());
                    if !self.answers.contains(&key)
                        && self.answers.len() == self.answers.cap().get()
                    {
                        self.evicted += 1;
                    }
                    self.answers.put(key, Arc::new(answer));
                }
            }
            Err(_) => self.parse_errors += 1,
        }
    }

    /// The answer that gave `ip` in namespace `netns`, if one was seen.
    pub fn lookup(&mut self, netns: u32, ip: IpAddr) -> Option<Arc<Answer>> {
        self.answers.get(&(netns, ip.to_canonical())).cloned()
    }
}

/// Names the destination of an outbound outcome from the answers seen in its network namespace.
impl Enricher for DnsCache {
    fn enrich(&mut self, o: &mut Outcome, _now_ns: u64) {
        if let Some(netns) = o.conn.netns
            && o.direction == Direction::Outbound
        {
            o.evidence.dns = self.lookup(netns, o.conn.dst.ip());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for `api.test` A 10.53.9.9 TTL 30, as the test responder builds it.
    fn response() -> Vec<u8> {
        let mut m = vec![0x50, 0x6c, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03api\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04");
        m.extend_from_slice(&[10, 53, 9, 9]);
        m
    }

    #[test]
    fn an_a_answer_gives_its_name_ttl_and_server() {
        let server: IpAddr = "10.53.0.1".parse().unwrap();
        let got = parse(&response(), false, server, 7).unwrap();
        assert_eq!(got.len(), 1);
        let (ip, a) = &got[0];
        assert_eq!(*ip, "10.53.9.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            (a.name.as_str(), a.ttl_s, a.server, a.at_ns),
            ("api.test", 30, server, 7)
        );
        assert!(!a.expired_at(7 + 30_000_000_000));
        assert!(a.expired_at(7 + 30_000_000_001));
        let mut tcp = vec![0, response().len() as u8];
        tcp.extend(response());
        assert_eq!(parse(&tcp, true, server, 7).unwrap(), got);
    }

    #[test]
    fn garbage_and_queries_are_errors_never_names() {
        let server: IpAddr = "10.53.0.1".parse().unwrap();
        assert!(parse(&[1, 2, 3], false, server, 0).is_err());
        let mut query = response();
        query[2] = 0x01; // QR = 0: a query
        assert_eq!(
            parse(&query, false, server, 0),
            Err(ParseError::NotResponse)
        );
        for cut in 0..response().len() {
            let _ = parse(&response()[..cut], false, server, 0);
        }
    }

    /// A captured answer of `payload` in namespace 7 from 10.53.0.1.
    fn raw(payload: &[u8], wire_len: u16) -> RawDns {
        let mut raw: RawDns = bytemuck::Zeroable::zeroed();
        raw.kind = tracer_common::KIND_DNS;
        raw.family = tracer_common::AF_INET;
        raw.transport = 17;
        raw.netns = 7;
        raw.server_be[..4].copy_from_slice(&[10, 53, 0, 1]);
        raw.len = payload.len() as u16;
        raw.wire_len = wire_len;
        raw.payload[..payload.len()].copy_from_slice(payload);
        raw
    }

    #[test]
    fn the_cache_answers_per_namespace_counts_cut_answers_and_evicts_at_its_cap() {
        let ip: IpAddr = "10.53.9.9".parse().unwrap();
        let mut cache = DnsCache::new(NonZeroUsize::new(1).unwrap());
        cache.observe(&raw(&response(), response().len() as u16));
        assert_eq!(cache.lookup(7, ip).unwrap().name, "api.test");
        assert_eq!(cache.lookup(8, ip), None, "another namespace's answer");
        // An answer longer than what was captured: counted, not parsed.
        cache.observe(&raw(&response(), 900));
        assert_eq!((cache.seen, cache.truncated, cache.parse_errors), (2, 1, 0));
        let mut other = response();
        let n = other.len();
        other[n - 1] = 10; // 10.53.9.10
        cache.observe(&raw(&other, n as u16));
        assert_eq!(cache.evicted, 1);
        assert_eq!(cache.lookup(7, ip), None, "evicted at the cap of 1");
        cache.observe(&raw(&[0xde, 0xad], 2));
        assert_eq!(cache.parse_errors, 1);
    }
}
