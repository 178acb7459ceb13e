//! What is joined to an outcome from outside its kernel record: the DNS name of its
//! destination, the workload that made it, the listeners behind a refusal or an overflow.
//!
//! The pipeline runs them in one ordered stage, DNS → workload → listeners, for every outcome
//! whatever made it (the classifier, a settled close, a listener's overflow). DNS and workload
//! are [`Enricher`]s; the listeners may hold a refusal until the worker's answer came (at most
//! 200 ms, `listeners::causes`), so they take and give back the outcome instead.
pub mod dns;
pub mod listeners;
pub mod netfilter;
pub mod service;
pub mod socklb;
pub mod workload;

use crate::analysis::outcome::Outcome;

/// One enrichment step: adds to an outcome what this source knows, at kernel monotonic time
/// `now_ns`. It never blocks: what it cannot answer at once is left out.
pub trait Enricher {
    fn enrich(&mut self, outcome: &mut Outcome, now_ns: u64);
}
