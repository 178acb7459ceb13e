//! Userspace path of one record: bytes → decode → classify → output record.
use std::io;

use crate::{
    aggregate::{Aggregator, Summary},
    classify::{Classifier, KernelParams, Label, Outcome},
    clock::WallClock,
    counters::{KernelTotals, Totals},
    decode::decode,
    metrics::Metrics,
    output::Output,
    record::{Connect, Failure, Record, RstReasons, Stats, SummaryOut},
};

/// Which records to print (`stats` always are).
#[derive(Clone, Copy, Debug)]
pub struct Select {
    /// `failure` records.
    pub failures: bool,
    /// `connect` records for successful connects.
    pub successes: bool,
    /// `summary` records.
    pub summaries: bool,
}

impl Default for Select {
    fn default() -> Self {
        Self {
            failures: true,
            successes: false,
            summaries: true,
        }
    }
}

pub struct Pipeline {
    classifier: Classifier,
    metrics: Option<Metrics>,
    aggregator: Option<Aggregator>,
    clock: WallClock,
    select: Select,
    reasons: RstReasons,
    pub events: u64,
    pub decode_errors: u64,
    pub failures: u64,
    pub connects: u64,
}

impl Pipeline {
    /// `aggregator`: per-destination windows, or `None` when summaries are off.
    pub fn new(
        clock: WallClock,
        kernel: KernelParams,
        reasons: RstReasons,
        select: Select,
        aggregator: Option<Aggregator>,
    ) -> Self {
        Self {
            classifier: Classifier::new(kernel),
            metrics: None,
            aggregator,
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
    pub fn process(&mut self, bytes: &[u8], out: &mut Output) -> io::Result<()> {
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
        match self.classifier.observe(&ev) {
            Some(outcome) => self.emit(&outcome, out),
            None => Ok(()),
        }
    }

    /// Classifies closes that waited long enough for an error report (see `Classifier::flush`).
    pub fn flush(&mut self, now_mono_ns: u64, out: &mut Output) -> io::Result<()> {
        for outcome in self.classifier.flush(now_mono_ns) {
            self.emit(&outcome, out)?;
        }
        Ok(())
    }

    fn emit(&mut self, outcome: &Outcome, out: &mut Output) -> io::Result<()> {
        if let Some(a) = self.aggregator.as_mut() {
            a.record(outcome);
        }
        if let Some(m) = self.metrics.as_mut() {
            m.record(outcome);
        }
        match outcome.label {
            Label::Cancelled => Ok(()),
            Label::Connected => {
                self.connects += 1;
                if !self.select.successes {
                    return Ok(());
                }
                let time = self.clock.timestamp(outcome.at_ns);
                out.write(&Record::Connect(Connect::from_outcome(outcome, time)))
            }
            _ => {
                self.failures += 1;
                if !self.select.failures {
                    return Ok(());
                }
                let time = self.clock.timestamp(outcome.at_ns);
                out.write(&Record::Failure(Failure::from_outcome(
                    outcome,
                    time,
                    &self.reasons,
                )))
            }
        }
    }

    /// Counts outcomes into Prometheus metrics too.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Everything counted so far: the kernel's counters, the sinks' `output_dropped`, and this
    /// pipeline's own counts.
    pub fn totals(&self, kernel: &KernelTotals, output_dropped: u64) -> Totals {
        Totals {
            kernel: *kernel,
            events: self.events,
            decode_errors: self.decode_errors,
            failures: self.failures,
            connects: self.connects,
            classifier: self.classifier.counts,
            destinations_evicted: self.aggregator.as_ref().map_or(0, |a| a.evicted),
            output_dropped,
        }
    }

    /// Brings the health metrics up to date.
    pub fn update_health(&mut self, kernel: &KernelTotals, output_dropped: u64) {
        let totals = self.totals(kernel, output_dropped);
        if let Some(m) = self.metrics.as_mut() {
            m.health(&totals);
        }
    }

    /// The totals the loss monitor compares (`totals`; the monitor reads the counters marked as
    /// losses in the counter tables).
    pub fn losses(&self, kernel: &KernelTotals, output_dropped: u64) -> Totals {
        self.totals(kernel, output_dropped)
    }

    /// Closes the summary window at `now_mono_ns`: the destinations active in it.
    pub fn close_window(&mut self, now_mono_ns: u64) -> Vec<Summary> {
        self.aggregator
            .as_mut()
            .map(|a| a.close_window(now_mono_ns))
            .unwrap_or_default()
    }

    /// Closes the summary window and writes a `summary` per active destination.
    pub fn summaries(&mut self, now_mono_ns: u64, out: &mut Output) -> io::Result<()> {
        let Some(aggregator) = self.aggregator.as_mut() else {
            return Ok(());
        };
        let (select, clock) = (self.select.summaries, &self.clock);
        let mut written = Ok(());
        aggregator.close_window_each(now_mono_ns, |s| {
            if select && written.is_ok() {
                written = out.write(&Record::Summary(SummaryOut::from_summary(&s, clock)));
            }
        });
        written
    }

    pub fn stats(
        &mut self,
        kernel: &KernelTotals,
        output_dropped: u64,
        now_mono_ns: u64,
    ) -> Record<'static> {
        self.clock.resync();
        Record::Stats(Stats {
            time: self.clock.rfc3339(now_mono_ns),
            totals: self.totals(kernel, output_dropped),
        })
    }
}
