//! Arbitrary event sequences through the classifier and the aggregator: the input is cut into
//! record-sized pieces, each forced to a valid kind and family half of the time so that the
//! state machines see deep sequences, with windows closed and parked closes settled along the
//! way. Nothing may panic, and the held state stays within its caps.
#![no_main]
use std::num::NonZeroUsize;

use libfuzzer_sys::fuzz_target;
use tracer::{aggregate::Aggregator, classify::{Classifier, KernelParams}, decode::decode};
use tracer_common::{AF_INET, AF_INET6, RAW_EVENT_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut classifier = Classifier::new(KernelParams { hz: 250 });
    let mut aggregator = Aggregator::new(NonZeroUsize::new(64).unwrap(), 0);
    let mut now = 0u64;
    for (i, chunk) in data.chunks(RAW_EVENT_SIZE).enumerate() {
        let mut record = [0u8; RAW_EVENT_SIZE];
        record[..chunk.len()].copy_from_slice(chunk);
        if i % 2 == 0 {
            record[0] = 1 + record[0] % 4; // a valid kind
            record[1] = if record[1] % 2 == 0 { AF_INET } else { AF_INET6 };
        }
        let Ok(ev) = decode(&record) else { continue };
        now = now.max(ev.ts_ns);
        if let Some(o) = classifier.observe(&ev) {
            aggregator.record(&o);
        }
        if i % 16 == 15 {
            for o in classifier.flush(now) {
                aggregator.record(&o);
            }
            let _ = aggregator.close_window(now);
        }
        assert!(aggregator.len() <= 64);
        assert!(classifier.pending_reports() <= 4096);
    }
    for o in classifier.flush(u64::MAX) {
        aggregator.record(&o);
    }
    let _ = aggregator.close_window(u64::MAX);
});
