//! What is joined to an outcome from outside its kernel record: the DNS name of its
//! destination, the workload that made it, the listeners behind a refusal or an overflow.
//!
//! Each source is an [`Enricher`]; the pipeline runs them in one ordered stage, DNS → workload →
//! listeners, for every outcome whatever made it (the classifier, a settled close, a listener's
//! overflow).
pub mod dns;
pub mod listeners;
pub mod workload;

use crate::analysis::outcome::Outcome;

/// One enrichment step: adds to an outcome what this source knows, at kernel monotonic time
/// `now_ns`. It never blocks: what it cannot answer at once is left out.
pub trait Enricher {
    fn enrich(&mut self, outcome: &mut Outcome, now_ns: u64);
}
