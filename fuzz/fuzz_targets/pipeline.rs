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
    classify::{KernelParams, Outcome},
    clock::WallClock,
    decode::decode,
    pipeline::{Pipeline, Select},
    record::RstReasons,
};
use tracer_common::{AF_INET, AF_INET6, RAW_EVENT_SIZE};

/// Serializes `o` as `tracer run` would (the pipeline's own record mapping) and checks that it
/// is one line of JSON.
fn write(pipeline: &Pipeline, o: &Outcome, line: &mut Vec<u8>) {
    let Some(record) = pipeline.record(o) else {
        return;
    };
    line.clear();
    serde_json::to_writer(&mut *line, &record).expect("a record serializes");
    assert!(!line.contains(&b'\n'));
    serde_json::from_slice::<serde_json::Value>(line).expect("valid JSON");
}

fuzz_target!(|data: &[u8]| {
    let mut line = Vec::new();
    let select = Select {
        failures: true,
        successes: true,
        summaries: true,
    };
    let mut pipeline = Pipeline::new(
        WallClock::with_offset_ns(1_700_000_000_000_000_000),
        KernelParams { hz: 250 },
        RstReasons::default(),
        select,
        Some(Aggregator::new(NonZeroUsize::new(64).unwrap(), 0)),
    );
    let mut now = 0u64;
    for (i, chunk) in data.chunks(RAW_EVENT_SIZE).enumerate() {
        let mut record = [0u8; RAW_EVENT_SIZE];
        record[..chunk.len()].copy_from_slice(chunk);
        if i % 2 == 0 {
            record[0] = 1 + record[0] % 5; // a valid kind
            record[1] = if record[1] % 2 == 0 {
                AF_INET
            } else {
                AF_INET6
            };
        }
        if let Ok(ev) = decode(&record) {
            now = now.max(ev.ts_ns);
        }
        if let Some(o) = pipeline.process(&record) {
            write(&pipeline, &o, &mut line);
        }
        if i % 16 == 15 {
            for o in pipeline.flush(now) {
                write(&pipeline, &o, &mut line);
            }
            pipeline.summaries(now, |r| {
                line.clear();
                serde_json::to_writer(&mut line, &r).expect("a summary serializes");
            });
        }
        assert!(pipeline.destinations() <= 64);
        assert!(pipeline.pending_reports() <= 4096);
    }
    for o in pipeline.flush(u64::MAX) {
        write(&pipeline, &o, &mut line);
    }
    pipeline.summaries(u64::MAX, |_| {});
});
