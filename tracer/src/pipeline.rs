//! Userspace path of one record: bytes → decode → classify → output record.
use std::io::{self, Write};

use crate::{
    classify::{Classifier, KernelParams, Label},
    clock::WallClock,
    decode::decode,
    output::ndjson::NdjsonWriter,
    record::{Connect, Failure, Record, RstReasons, Stats},
    source::CounterTotals,
};

/// Which records to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Select {
    /// Print `connect` records for successful connects.
    pub successes: bool,
}

pub struct Pipeline {
    classifier: Classifier,
    clock: WallClock,
    select: Select,
    reasons: RstReasons,
    pub events: u64,
    pub decode_errors: u64,
    pub failures: u64,
    pub connects: u64,
}

impl Pipeline {
    pub fn new(
        clock: WallClock,
        kernel: KernelParams,
        reasons: RstReasons,
        select: Select,
    ) -> Self {
        Self {
            classifier: Classifier::new(kernel),
            clock,
            select,
            reasons,
            events: 0,
            decode_errors: 0,
            failures: 0,
            connects: 0,
        }
    }

    /// Processes one ring-buffer record, writing the record it produces, if any.
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
        match outcome.label {
            Label::Cancelled => Ok(()),
            Label::Connected => {
                self.connects += 1;
                if !self.select.successes {
                    return Ok(());
                }
                let time = self.clock.rfc3339(outcome.at_ns);
                out.write(&Record::Connect(Connect::from_outcome(&outcome, time)))
            }
            _ => {
                self.failures += 1;
                let time = self.clock.rfc3339(outcome.at_ns);
                out.write(&Record::Failure(Failure::from_outcome(
                    &outcome,
                    time,
                    &self.reasons,
                )))
            }
        }
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
            connects: self.connects,
            unclassified: c.unclassified,
            inbound_ignored: c.inbound_ignored,
            read_errors: kernel.read_errors,
        })
    }
}
