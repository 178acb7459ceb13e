//! Arbitrary event sequences through the classifier and the aggregator: the input is cut into
//! record-sized pieces, each forced to a valid kind and family half of the time so that the
//! state machines see deep sequences, with windows closed and parked closes settled along the
//! way. Every eighth piece becomes a cgroup record with arbitrary names (the workload rules and
//! filters see any path), and connections are put in a few cgroups so that records carry
//! workloads; refusals and SYN timeouts ask the listeners enricher. Every outcome is also written as its output record. Nothing may panic, every
//! record is one line of valid JSON, and the held state stays within its caps.
#![no_main]
use std::num::NonZeroUsize;

use libfuzzer_sys::fuzz_target;
use tracer::{
    analysis::aggregate::Aggregator,
    analysis::classify::KernelParams,
    analysis::clock::WallClock,
    analysis::outcome::Outcome,
    enrich::listeners::causes::ListenerCauses,
    enrich::workload::{WorkloadFilter, Workloads},
    export::names::ReasonNames,
    kernel::decode::decode_event,
    pipeline::{Pipeline, Select},
};
use tracer_common::{
    AF_INET, AF_INET6, CGROUP_LEVELS, KIND_AT_RISK, KIND_CGROUP, RAW_EVENT_SIZE, RawCgroup,
};

/// Where `RawEvent.cgroup_id` is in a record's bytes.
const CGROUP_ID_AT: usize = core::mem::offset_of!(tracer_common::RawEvent, cgroup_id);

/// A cgroup record for cgroup `1 + chunk[0] % 4` whose names are cut from `chunk`.
fn cgroup_record(chunk: &[u8]) -> Vec<u8> {
    let mut raw: RawCgroup = bytemuck::Zeroable::zeroed();
    raw.kind = KIND_CGROUP;
    raw.cgroup_id = 1 + u64::from(chunk.first().copied().unwrap_or(0) % 4);
    raw.levels = chunk.get(1).copied().unwrap_or(0) % (CGROUP_LEVELS as u8 + 2);
    let flags = chunk.get(2).copied().unwrap_or(0);
    raw.truncated = flags % 2;
    raw.cut = flags >> 1;
    for (name, part) in raw
        .names
        .iter_mut()
        .zip(chunk[chunk.len().min(3)..].chunks(24))
    {
        name[..part.len()].copy_from_slice(part);
    }
    bytemuck::bytes_of(&raw).to_vec()
}

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
        ReasonNames::default(),
        select,
        Some(Aggregator::new(NonZeroUsize::new(64).unwrap(), 0)),
    );
    // Half the inputs run with a workload filter (a unit name and a container prefix that
    // arbitrary names can hit).
    let filter = if data.first().is_some_and(|b| b % 2 == 1) {
        WorkloadFilter {
            containers: vec!["a".into()],
            units: vec!["a.service".into()],
            ..WorkloadFilter::default()
        }
    } else {
        WorkloadFilter::default()
    };
    pipeline.set_workloads(Workloads::new(
        NonZeroUsize::new(16).unwrap(),
        "/nonexistent".into(),
        None,
        filter,
    ));
    // The listeners enricher too, one worker for the whole run (starting one per input would
    // cost a thread each): every outcome goes through DNS → workload → listeners.
    pipeline.listeners = LISTENERS.take();
    if pipeline.listeners.is_none() {
        pipeline.listeners = Some(ListenerCauses::start(std::time::Duration::from_secs(2)));
    }
    let mut now = 0u64;
    for (i, chunk) in data.chunks(RAW_EVENT_SIZE).enumerate() {
        let mut record = [0u8; RAW_EVENT_SIZE];
        record[..chunk.len()].copy_from_slice(chunk);
        if i % 8 == 7 {
            let _ = pipeline.process(&cgroup_record(chunk));
            assert!(pipeline.workloads().len() <= 16);
            continue;
        }
        if i % 2 == 0 {
            let cgroup = 1 + u64::from(record[2] % 4);
            record[CGROUP_ID_AT..CGROUP_ID_AT + 8].copy_from_slice(&cgroup.to_ne_bytes());
            // A valid kind: 1..=5, KIND_AT_RISK (7), or a forwarded translation or drop.
            record[0] = [
                1,
                2,
                3,
                4,
                5,
                KIND_AT_RISK,
                tracer_common::KIND_NAT,
                tracer_common::KIND_FORWARD_DROP,
            ][usize::from(record[0] % 8)];
            record[1] = if record[1] % 2 == 0 {
                AF_INET
            } else {
                AF_INET6
            };
        }
        if let Ok(ev) = decode_event(&record) {
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
        assert!(pipeline.services.forwarded_len() <= tracer::enrich::service::FORWARDED_CAP);
        assert!(pipeline.pending_reports() <= 4096);
    }
    for o in pipeline.flush(u64::MAX) {
        write(&pipeline, &o, &mut line);
    }
    pipeline.summaries(u64::MAX, |_| {});
    LISTENERS.set(pipeline.listeners.take());
});

thread_local! {
    /// The listeners' worker, handed from one input to the next.
    static LISTENERS: std::cell::Cell<Option<ListenerCauses>> = const { std::cell::Cell::new(None) };
}
