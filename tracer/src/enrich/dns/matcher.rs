//! Queries in flight, and the answers that match them: an answer names a destination only if it
//! answers a query seen leaving the same network namespace — the same transaction id, question,
//! server address and ports — within the query's lifetime (`DNS_QUERY_LIFETIME_NS`). The kernel
//! side already drops answers without such a query (`dns_ingress`); this also checks the question
//! and keeps who asked, for the answer and, later, for the query that got no answer. Pure, with
//! the time passed in.
use std::{net::IpAddr, num::NonZeroUsize};

use lru::LruCache;
use tracer_common::DNS_QUERY_LIFETIME_NS;

use crate::enrich::dns::message::Question;

/// A transaction as both of its messages carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transaction {
    pub netns: u32,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub transport: u8,
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    pub id: u16,
}

/// A query seen leaving: what it asked, when, and who asked (0: not known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub question: Question,
    pub at_ns: u64,
    pub pid: u32,
    pub cgroup_id: u64,
}

/// Why an answer was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmatched {
    /// No query of that transaction is waiting (never seen, already answered, or forgotten
    /// at the cap).
    NoQuery,
    /// The query was older than its lifetime.
    Expired,
    /// The answer's question is not the query's.
    OtherQuestion,
}

/// The queries waiting for their answer, at most `cap` (the oldest forgotten first). Each holds
/// one bounded name (`message::MAX_NAME`), so the bytes are bounded by the cap.
pub struct Matcher {
    waiting: LruCache<Transaction, Query, foldhash::fast::RandomState>,
    /// Queries forgotten at the cap before an answer came.
    pub evicted: u64,
}

impl Matcher {
    pub fn new(cap: NonZeroUsize) -> Self {
        Self {
            waiting: LruCache::with_hasher(cap, Default::default()),
            evicted: 0,
        }
    }

    /// Notes a query; a retransmission (same transaction) replaces the first.
    pub fn ask(&mut self, t: Transaction, q: Query) {
        if !self.waiting.contains(&t) && self.waiting.len() == self.waiting.cap().get() {
            self.evicted += 1;
        }
        self.waiting.put(t, q);
    }

    /// The query `question`, arriving at `at_ns`, answers; it is taken out (a second answer to
    /// one query is not taken).
    pub fn answer(
        &mut self,
        t: &Transaction,
        question: &Question,
        at_ns: u64,
    ) -> Result<Query, Unmatched> {
        let q = self.waiting.peek(t).ok_or(Unmatched::NoQuery)?;
        if at_ns.saturating_sub(q.at_ns) > DNS_QUERY_LIFETIME_NS {
            self.waiting.pop(t);
            return Err(Unmatched::Expired);
        }
        // A forged answer to a guessed transaction must also guess the question; a mismatch
        // leaves the query waiting for its real answer.
        if q.question != *question {
            return Err(Unmatched::OtherQuestion);
        }
        self.waiting.pop(t).ok_or(Unmatched::NoQuery)
    }

    /// Queries waiting now.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u16) -> Transaction {
        Transaction {
            netns: 7,
            transport: 17,
            client: "10.0.0.1".parse().unwrap(),
            client_port: 40000,
            server: "10.0.0.53".parse().unwrap(),
            server_port: 53,
            id,
        }
    }

    fn q(name: &str) -> Question {
        Question {
            name: name.into(),
            qtype: 1,
            qclass: 1,
        }
    }

    fn query(name: &str, at_ns: u64) -> Query {
        Query {
            question: q(name),
            at_ns,
            pid: 42,
            cgroup_id: 9,
        }
    }

    #[test]
    fn an_answer_matches_its_query_once() {
        let mut m = Matcher::new(NonZeroUsize::new(4).unwrap());
        m.ask(t(1), query("api.test", 100));
        assert_eq!(m.answer(&t(1), &q("api.test"), 200).unwrap().pid, 42);
        assert_eq!(
            m.answer(&t(1), &q("api.test"), 300),
            Err(Unmatched::NoQuery)
        );
    }

    #[test]
    fn unsolicited_other_transactions_questions_and_late_answers_name_nothing() {
        let mut m = Matcher::new(NonZeroUsize::new(4).unwrap());
        assert_eq!(m.answer(&t(1), &q("a"), 0), Err(Unmatched::NoQuery));
        m.ask(t(1), query("api.test", 100));
        let mut other = t(1);
        other.netns = 8;
        assert_eq!(
            m.answer(&other, &q("api.test"), 200),
            Err(Unmatched::NoQuery)
        );
        other = t(1);
        other.server = "10.0.0.54".parse().unwrap();
        assert_eq!(
            m.answer(&other, &q("api.test"), 200),
            Err(Unmatched::NoQuery)
        );
        assert_eq!(
            m.answer(&t(2), &q("api.test"), 200),
            Err(Unmatched::NoQuery)
        );
        assert_eq!(
            m.answer(&t(1), &q("payments.bank.example"), 200),
            Err(Unmatched::OtherQuestion)
        );
        // The real answer still matches after a forged one.
        assert!(m.answer(&t(1), &q("api.test"), 300).is_ok());
        m.ask(t(3), query("late.test", 0));
        assert_eq!(
            m.answer(&t(3), &q("late.test"), DNS_QUERY_LIFETIME_NS + 1),
            Err(Unmatched::Expired)
        );
        assert!(m.is_empty());
    }

    #[test]
    fn the_oldest_query_is_forgotten_at_the_cap_and_counted() {
        let mut m = Matcher::new(NonZeroUsize::new(2).unwrap());
        for id in 0..3 {
            m.ask(t(id), query("a", 0));
        }
        m.ask(t(2), query("a", 1)); // a retransmission: not an eviction
        assert_eq!((m.len(), m.evicted), (2, 1));
        assert_eq!(m.answer(&t(0), &q("a"), 5), Err(Unmatched::NoQuery));
    }
}
