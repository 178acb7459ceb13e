//! Userspace path of one record: bytes → decode → classify → output record.
use std::io::{self, Write};

use crate::{
    classify::Classifier,
    clock::WallClock,
    decode::decode,
    output::ndjson::NdjsonWriter,
    record::{Failure, Record, Stats},
    source::CounterTotals,
};

pub struct Pipeline {
    classifier: Classifier,
    clock: WallClock,
    pub events: u64,
    pub decode_errors: u64,
    pub failures: u64,
}

impl Pipeline {
    pub fn new(clock: WallClock) -> Self {
        Self {
            classifier: Classifier::new(),
            clock,
            events: 0,
            decode_errors: 0,
            failures: 0,
        }
    }

    /// Processes one ring-buffer record, writing a failure record if it ends a failed connection.
    pub fn process<W: Write>(&mut self, bytes: &[u8], out: &mut NdjsonWriter<W>) -> io::Result<()> {
        let ev = match decode(bytes) {
            Ok(ev) => ev,
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors.is_power_of_two() {
                    log::warn!("undecodable record ({e}); {} so far", self.decode_errors);
                }
                return Ok(());
            }
        };
        self.events += 1;
        let Some(outcome) = self.classifier.observe(&ev) else {
            return Ok(());
        };
        if !outcome.label.is_failure() {
            return Ok(());
        }
        self.failures += 1;
        let record = Record::Failure(Failure::from_outcome(
            &outcome,
            self.clock.rfc3339(outcome.at_ns),
        ));
        out.write(&record)
    }

    pub fn stats(&mut self, kernel: &CounterTotals, now_mono_ns: u64) -> Record {
        self.clock.resync();
        let c = self.classifier.counts;
        Record::Stats(Stats {
            time: self.clock.rfc3339(now_mono_ns),
            events: self.events,
            lost: kernel.lost,
            decode_errors: self.decode_errors,
            tracked_sockets: kernel.tracked_now(),
            evicted: kernel.evicted,
            cancelled: c.cancelled,
            failures: self.failures,
            unclassified: c.unclassified,
            read_errors: kernel.read_errors,
        })
    }
}
