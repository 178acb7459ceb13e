//! DNS names for destinations: the queries this host's sockets send (`KIND_DNS_QUERY`, captured
//! by `dns_egress`) and the answers to them (`KIND_DNS`, `dns_ingress`), from their own ring
//! buffer. An answer is taken only if it answers a query seen leaving its namespace
//! (`matcher`); its address records go in a cache by (network namespace, address) that is
//! bounded in entries and in bytes, each answer's name and chain stored once and shared by its
//! addresses.
use std::{net::IpAddr, num::NonZeroUsize, sync::Arc};

use lru::LruCache;
use tracer_common::{IPPROTO_TCP, KIND_DNS_QUERY, RawDns};

use crate::{
    analysis::outcome::{Answer, Direction, Outcome},
    enrich::Enricher,
};

pub mod matcher;
pub mod message;

use matcher::{Matcher, Query, Transaction, Unmatched};

/// The default byte budget of the answers cache: what its entries may hold, counted as if no
/// answer were shared (an over-estimate), so that the real use stays below it.
pub const CACHE_BYTES: usize = 16 << 20;
/// The queries waiting for an answer, at most (as the kernel's `DNS_QUERIES`).
pub const MAX_QUERIES: usize = 16_384;
/// What one cache entry costs beyond its answer's text: the key, the shared pointer, the LRU
/// node and the hash table's slot (measured: about 100 bytes on x86-64), rounded up.
const ENTRY_BYTES: usize = 160;

/// What the DNS capture counted (each in `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCounts {
    /// Answers delivered by the kernel (each answers a query it saw leave).
    pub responses: u64,
    /// Queries seen leaving.
    pub queries: u64,
    /// Captured packets that did not parse as the message they should be.
    pub parse_errors: u64,
    /// Cache entries dropped at the entry cap or the byte budget (least recently used first).
    pub evicted: u64,
    /// Answers longer than the captured bytes (not parsed: a cut message does not parse).
    pub truncated: u64,
    /// Answers the matcher did not take: no query waiting (forgotten at its cap), too late, or
    /// another question.
    pub unmatched: u64,
}

/// The answers seen, by (network namespace inode, address): the latest wins.
pub struct DnsCache {
    answers: LruCache<(u32, IpAddr), (Arc<Answer>, usize), foldhash::fast::RandomState>,
    cap: NonZeroUsize,
    budget: usize,
    /// What the entries are charged, bytes (≤ `budget`).
    bytes: usize,
    queries: Matcher,
    pub counts: DnsCounts,
}

impl DnsCache {
    /// At most `cap` addresses, charged at most `budget` bytes.
    pub fn new(cap: NonZeroUsize, budget: usize) -> Self {
        Self {
            answers: LruCache::unbounded_with_hasher(Default::default()),
            cap,
            budget,
            bytes: 0,
            queries: Matcher::new(NonZeroUsize::new(MAX_QUERIES).expect("non-zero")),
            counts: DnsCounts::default(),
        }
    }

    /// Takes a captured query or answer.
    pub fn observe(&mut self, raw: &RawDns) {
        let len = usize::from(raw.len).min(raw.payload.len());
        let tcp = raw.transport == IPPROTO_TCP as u8;
        let payload = &raw.payload[..len];
        let query = raw.kind == KIND_DNS_QUERY;
        if query {
            self.counts.queries += 1;
        } else {
            self.counts.responses += 1;
        }
        if raw.wire_len > raw.len {
            // A query is small: only an answer is ever cut.
            self.counts.truncated += 1;
            return;
        }
        let transaction = |id| Transaction {
            netns: raw.netns,
            transport: raw.transport,
            client: crate::kernel::decode::ip(raw.family, &raw.client_be),
            client_port: raw.client_port,
            server: crate::kernel::decode::ip(raw.family, &raw.server_be),
            server_port: raw.server_port,
            id,
        };
        if query {
            match message::parse_query(payload, tcp) {
                Ok((id, question)) => self.queries.ask(
                    transaction(id),
                    Query {
                        question,
                        at_ns: raw.ts_ns,
                        pid: raw.pid,
                        cgroup_id: raw.cgroup_id,
                    },
                ),
                Err(_) => self.counts.parse_errors += 1,
            }
            return;
        }
        let response = match message::parse_response(payload, tcp) {
            Ok(r) => r,
            Err(_) => {
                self.counts.parse_errors += 1;
                return;
            }
        };
        let t = transaction(response.id);
        match self.queries.answer(&t, &response.question, raw.ts_ns) {
            Ok(_) => {}
            Err(Unmatched::NoQuery | Unmatched::Expired | Unmatched::OtherQuestion) => {
                self.counts.unmatched += 1;
                return;
            }
        }
        let Some(ttl_s) = response.addresses.iter().map(|(_, ttl)| *ttl).min() else {
            return;
        };
        // One answer, shared by its addresses; the shortest TTL of its records is its TTL.
        let answer = Arc::new(Answer {
            name: response.question.name,
            chain: response.chain,
            server: t.server,
            ttl_s,
            at_ns: raw.ts_ns,
        });
        let cost = ENTRY_BYTES + answer_bytes(&answer);
        for (ip, _) in response.addresses {
            self.put((raw.netns, ip.to_canonical()), answer.clone(), cost);
        }
    }

    fn put(&mut self, key: (u32, IpAddr), answer: Arc<Answer>, cost: usize) {
        if cost > self.budget {
            return;
        }
        if let Some((_, old)) = self.answers.pop(&key) {
            self.bytes -= old;
        }
        while self.answers.len() >= self.cap.get() || self.bytes + cost > self.budget {
            let Some((_, (_, old))) = self.answers.pop_lru() else {
                break;
            };
            self.bytes -= old;
            self.counts.evicted += 1;
        }
        self.bytes += cost;
        self.answers.put(key, (answer, cost));
    }

    /// The answer that gave `ip` in namespace `netns`, if one was seen.
    pub fn lookup(&mut self, netns: u32, ip: IpAddr) -> Option<Arc<Answer>> {
        self.answers
            .get(&(netns, ip.to_canonical()))
            .map(|(a, _)| a.clone())
    }

    /// Bytes the cache's entries are charged (an upper bound of what they hold).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Addresses in the cache.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Queries still waiting for their answer.
    pub fn waiting(&self) -> usize {
        self.queries.len()
    }
}

/// The heap bytes of an answer (its name and chain) and the answer itself.
fn answer_bytes(a: &Answer) -> usize {
    std::mem::size_of::<Answer>()
        + a.name.capacity()
        + a.chain.capacity() * std::mem::size_of::<String>()
        + a.chain.iter().map(String::capacity).sum::<usize>()
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
mod tests;
