//! Userspace capacity: synthetic ring-buffer records through the tracer's own pipeline
//! (decode → classify → aggregate → serialize), on one core, without the kernel.
use std::{
    io,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use bytemuck::Zeroable;
use tracer::{
    analysis::aggregate::Aggregator,
    analysis::classify::KernelParams,
    analysis::clock::WallClock,
    enrich::listeners::causes::ListenerCauses,
    export::names::ReasonNames,
    export::output::{Output, Sink},
    pipeline::{Pipeline, Select},
};
use tracer_common::{
    AF_INET, KIND_CLOSED, KIND_CONNECTED, RawEvent, VALID_NETNS, VALID_PROBES_OUT, VALID_SK_ERR,
    VALID_SK_ERR_SOFT, tcp_state,
};

/// Distinct destinations the synthetic connects go to.
const DESTINATIONS: u32 = 1_000;
const ECONNREFUSED: i32 = 111;

/// Counts the bytes it is given and keeps none: serialization without I/O.
#[derive(Default)]
struct Discard {
    bytes: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Sink for Discard {
    fn send(&mut self, line: &bytes::Bytes) -> io::Result<()> {
        self.bytes.set(self.bytes.get() + line.len() as u64);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "discard".into()
    }
}

/// A connect from 10.0.0.1 to destination `i % DESTINATIONS`, by pid 4242 "client".
fn connect(i: u32, t_ns: u64) -> RawEvent {
    let mut ev = RawEvent::zeroed();
    let d = i % DESTINATIONS;
    ev.family = AF_INET;
    ev.saddr_be[..4].copy_from_slice(&[10, 0, 0, 1]);
    ev.daddr_be[..4].copy_from_slice(&[10, 1, (d >> 8) as u8, d as u8]);
    ev.sport = 32_768 + (i % 28_000) as u16;
    ev.dport = 5432;
    ev.pid = 4242;
    ev.tid = 4242;
    ev.comm[..6].copy_from_slice(b"client");
    ev.netns = 4026531840;
    ev.valid = VALID_NETNS | VALID_SK_ERR | VALID_SK_ERR_SOFT | VALID_PROBES_OUT;
    ev.sock_id = 0xffff_0000_0000_0000 | u64::from(i);
    ev.start_ns = t_ns;
    ev.ts_ns = t_ns;
    ev
}

/// What one synthetic stream holds.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// Every record a refused connect: each one becomes a `failure` line.
    Refusals,
    /// Successful connects (an ESTABLISHED and a CLOSE record each), aggregated into summaries
    /// but not printed (the default without `--successes`).
    Successes,
}

/// `n` records of `stream`, as the ring buffer would hand them over.
pub fn records(stream: Stream, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u32;
    let mut t = 1_000_000_000u64;
    while out.len() < n {
        let mut ev = connect(i, t);
        match stream {
            Stream::Refusals => {
                ev.kind = KIND_CLOSED;
                ev.old_state = tcp_state::SYN_SENT;
                ev.new_state = tcp_state::CLOSE;
                ev.rst_received_state = tcp_state::SYN_SENT;
                ev.sk_err = ECONNREFUSED;
                ev.ts_ns = t + 50_000;
                out.push(bytemuck::bytes_of(&ev).to_vec());
            }
            Stream::Successes => {
                ev.established_ns = t + 40_000;
                let mut up = ev;
                up.kind = KIND_CONNECTED;
                up.old_state = tcp_state::SYN_SENT;
                up.new_state = tcp_state::ESTABLISHED;
                up.ts_ns = ev.established_ns;
                out.push(bytemuck::bytes_of(&up).to_vec());
                let mut down = ev;
                down.kind = KIND_CLOSED;
                down.old_state = tcp_state::ESTABLISHED;
                down.new_state = tcp_state::CLOSE;
                down.ts_ns = t + 1_000_000;
                out.push(bytemuck::bytes_of(&down).to_vec());
            }
        }
        i += 1;
        t += 20_000;
    }
    out.truncate(n);
    out
}

/// One timed pass: how many records per second the pipeline took, the output bytes per record,
/// and the heap allocations per record (`allocations` reads a counting allocator).
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    pub per_second: f64,
    pub bytes_per_record: f64,
    pub allocations_per_record: f64,
}

/// Feeds `records` through a fresh pipeline (default record selection, summaries on) for at
/// least `min_time`, repeating the set.
pub fn pass(records: &[Vec<u8>], min_time: Duration, allocations: fn() -> u64) -> Pass {
    let bytes = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut out = Output::new(vec![Box::new(Discard {
        bytes: bytes.clone(),
    })]);
    let aggregator = Aggregator::new(
        NonZeroUsize::new(100_000).expect("non-zero"),
        WallClock::now_mono_ns(),
    );
    let mut pipeline = Pipeline::new(
        WallClock::sample(),
        KernelParams::default(),
        ReasonNames::default(),
        Select::default(),
        Some(aggregator),
    );
    // As `tracer run` does: every outcome through DNS → workload → listeners.
    pipeline.listeners = Some(ListenerCauses::start(Duration::from_secs(2)));
    // As `tracer run` does: each outcome's record, if selected, to the outputs.
    let mut feed = |r: &[u8]| {
        if let Some(outcome) = pipeline.process(r)
            && let Some(record) = pipeline.record(&outcome)
        {
            out.write(&record);
        }
    };
    // Warm-up: the aggregator's destinations and every buffer exist before timing.
    for r in records {
        feed(r);
    }
    bytes.set(0);
    let allocs_before = allocations();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min_time {
        for r in records {
            feed(r);
        }
        n += records.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let allocs = allocations() - allocs_before;
    assert!(out.error().is_none(), "the discarding sink fails nothing");
    Pass {
        per_second: n as f64 / secs,
        bytes_per_record: bytes.get() as f64 / n as f64,
        allocations_per_record: allocs as f64 / n as f64,
    }
}
