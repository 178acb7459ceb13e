//! Arbitrary event sequences through the classifier and the aggregator: the input is cut into
//! record-sized pieces, each forced to a valid kind and family half of the time so that the
//! state machines see deep sequences, with windows closed and parked closes settled along the
//! way. Every outcome is also written as its output record. Nothing may panic, every record is
//! one line of valid JSON, and the held state stays within its caps.
#![no_main]
use std::num::NonZeroUsize;

use libfuzzer_sys::fuzz_target;
use tracer::{
    aggregate::Aggregator,
    classify::{Classifier, KernelParams, Label, Outcome},
    clock::WallClock,
    decode::decode,
    record::{Connect, Failure, Record, RstReasons},
};
use tracer_common::{AF_INET, AF_INET6, RAW_EVENT_SIZE};

/// Serializes `o` as the pipeline would and checks that it is one line of JSON.
fn write(o: &Outcome, line: &mut Vec<u8>) {
    let clock = WallClock::with_offset_ns(1_700_000_000_000_000_000);
    let reasons = RstReasons::default();
    let time = clock.timestamp(o.at_ns);
    let record = match o.label {
        Label::Cancelled => return,
        Label::Connected => Record::Connect(Connect::from_outcome(o, time)),
        _ => Record::Failure(Failure::from_outcome(o, time, &reasons)),
    };
    line.clear();
    serde_json::to_writer(&mut *line, &record).expect("a record serializes");
    assert!(!line.contains(&b'\n'));
    serde_json::from_slice::<serde_json::Value>(line).expect("valid JSON");
}

fuzz_target!(|data: &[u8]| {
    let mut line = Vec::new();
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
            write(&o, &mut line);
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
