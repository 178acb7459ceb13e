//! Userspace path of one record: bytes → decode → classify → enrich (DNS → workload →
//! listeners) → count → output record. The
//! pipeline returns records; writing them is the caller's (`run`), and `top` and the fuzz
//! target use the same path.
use crate::{
    analysis::aggregate::{Aggregator, Summary},
    analysis::classify::{Classifier, KernelParams},
    analysis::clock::WallClock,
    analysis::outcome::{Direction, Label, Outcome},
    enrich::{
        Enricher,
        dns::DnsCache,
        listeners::causes::ListenerCauses,
        service::{NoRulesets, Services},
        workload::{Workload, WorkloadFilter, Workloads},
    },
    export::counters::Totals,
    export::metrics::Metrics,
    export::names::ReasonNames,
    export::record::{Connect, Failure, Record, Stats, SummaryOut},
    filter::{DstFilter, OverflowFilter},
    kernel::decode::{DecodeError, Raw, decode},
    kernel::ringbuf::KernelTotals,
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
    /// What the metrics listener refused (`set_http_stats`).
    http: Option<std::sync::Arc<crate::export::http_server::ServerStats>>,
    aggregator: Option<Aggregator>,
    clock: WallClock,
    select: Select,
    reasons: ReasonNames,
    workloads: Workloads,
    /// DNS answers by (namespace, address).
    pub dns: DnsCache,
    /// `--dst` with names: matched here, against the answers (the kernel matches prefixes).
    pub dst_filter: Option<DstFilter>,
    /// The listeners of this host, for refusals and overflows (`--no-listeners`: none).
    pub listeners: Option<ListenerCauses>,
    /// The filters as they apply to a listener's overflow (the kernel filters everything else).
    pub overflow_filter: OverflowFilter,
    /// Backends, Services and the rules that dropped SYNs (`enrich::service`).
    pub services: Services,
    /// The latest kernel time seen in a record: the pipeline's clock.
    now_ns: u64,
    pub events: u64,
    pub decode_errors: u64,
    pub failures: u64,
    pub connects: u64,
    /// `warning` records (`at_risk`, `recovered`).
    pub warnings: u64,
}

impl Pipeline {
    /// `aggregator`: per-destination windows, or `None` when summaries are off.
    pub fn new(
        clock: WallClock,
        kernel: KernelParams,
        reasons: ReasonNames,
        select: Select,
        aggregator: Option<Aggregator>,
    ) -> Self {
        Self {
            classifier: Classifier::new(kernel),
            metrics: None,
            http: None,
            aggregator,
            clock,
            select,
            reasons,
            workloads: Workloads::new(
                std::num::NonZeroUsize::new(16_384).expect("non-zero"),
                crate::enrich::workload::KUBELET_LOG_ROOT.into(),
                None,
                WorkloadFilter::default(),
            ),
            dns: DnsCache::new(
                std::num::NonZeroUsize::new(65_536).expect("non-zero"),
                crate::enrich::dns::CACHE_BYTES,
            ),
            dst_filter: None,
            listeners: None,
            overflow_filter: OverflowFilter::default(),
            services: Services::new(Box::new(NoRulesets), None, None, None),
            now_ns: 0,
            events: 0,
            decode_errors: 0,
            failures: 0,
            connects: 0,
            warnings: 0,
        }
    }

    /// Decodes and classifies one ring-buffer record; the outcome it completes, if any, is
    /// enriched, filtered and counted (summaries, metrics, stats) and returned.
    pub fn process(&mut self, bytes: &[u8]) -> Option<Outcome> {
        let ev = match decode(bytes) {
            Ok(Raw::Event(ev)) => ev,
            Ok(Raw::Cgroup(raw)) => {
                self.events += 1;
                self.workloads.announce(&raw, self.now_ns);
                return None;
            }
            Ok(Raw::Dns(raw)) => {
                // DNS has a ring buffer of its own (`process_dns`); an old kernel object or a
                // fuzzer may still hand one here.
                self.events += 1;
                self.dns.observe(&raw);
                return None;
            }
            Ok(Raw::Translation(raw)) => {
                // A forwarded connection's translation or drop: joined to that connection's
                // outcome later, by its original tuple.
                self.events += 1;
                self.now_ns = self.now_ns.max(raw.ts_ns);
                self.services.observe(&raw);
                return None;
            }
            Err(e) => {
                self.undecodable(e);
                return None;
            }
        };
        self.events += 1;
        self.now_ns = self.now_ns.max(ev.ts_ns);
        let outcome = self.classifier.observe(&ev)?;
        self.admit(outcome)
    }

    /// Decodes one record of the DNS ring buffer: a query or an answer, for the cache. Its
    /// counts are the DNS ones (`dns_queries`, `dns_responses`; a record that does not decode
    /// is a `dns_parse_errors`): `events` and `decode_errors` are the connection ring's, whose
    /// `produced` they add up to.
    pub fn process_dns(&mut self, bytes: &[u8]) {
        match crate::kernel::decode::decode_dns(bytes) {
            Ok(raw) => self.dns.observe(&raw),
            Err(e) => {
                self.dns.counts.parse_errors += 1;
                if self.dns.counts.parse_errors.is_power_of_two() {
                    log::warn!("undecodable DNS record ({e})");
                }
            }
        }
    }

    fn undecodable(&mut self, e: DecodeError) {
        self.decode_errors += 1;
        if self.decode_errors.is_power_of_two() {
            log::warn!("undecodable record ({e}); {} so far", self.decode_errors);
        }
    }

    /// The closes that waited long enough for an error report (see `Classifier::flush`),
    /// enriched, filtered and counted; then the refusals held for their listeners whose answer
    /// came or whose wait is over (`ListenerCauses::release`; at exit, `u64::MAX`, all).
    pub fn flush(&mut self, now_mono_ns: u64) -> Vec<Outcome> {
        let outcomes = self.classifier.flush(now_mono_ns);
        let mut out: Vec<Outcome> = outcomes.into_iter().filter_map(|o| self.admit(o)).collect();
        if let Some(l) = self.listeners.as_mut() {
            l.release(now_mono_ns, &mut out);
        }
        out
    }

    /// The listeners that overflowed their accept queue since the last call (one outcome per
    /// listener and window), through the same stage as every outcome; none without listeners.
    pub fn overflows(&mut self, now_mono_ns: u64) -> Vec<Outcome> {
        let Some(listeners) = self.listeners.as_mut() else {
            return Vec::new();
        };
        let filter = &self.overflow_filter;
        let wanted: Vec<Outcome> = listeners
            .overflows(now_mono_ns)
            .into_iter()
            .filter(|o| filter.wants(o))
            .collect();
        wanted.into_iter().filter_map(|o| self.admit(o)).collect()
    }

    /// The one enrichment stage every outcome goes through, in order: its DNS name (and a
    /// `--dst` name filter on it), its workload (and the workload filters: a cgroup the kernel
    /// has no verdict for yet is decided here), its listeners. Counts the outcome if it passes
    /// (before the listeners: a refusal held for their answer is counted in arrival order, and
    /// comes out of `flush`).
    fn admit(&mut self, mut outcome: Outcome) -> Option<Outcome> {
        let now = self.now_ns;
        self.dns.enrich(&mut outcome, now);
        if self.dst_filter.as_ref().is_some_and(|f| !f.wants(&outcome)) {
            return None;
        }
        self.workloads.enrich(&mut outcome, now);
        let wanted = if outcome.direction == Direction::Outbound {
            self.workloads.wanted(outcome.conn.cgroup_id)
        } else {
            // No process of this host made an inbound refusal.
            !self.workloads.filter().is_active()
        };
        if !wanted {
            return None;
        }
        self.services.enrich(&mut outcome, now);
        self.count(&outcome);
        match self.listeners.as_mut() {
            Some(l) => l.admit(outcome, now),
            None => Some(outcome),
        }
    }

    /// Resolves workloads with these settings (the default knows no cgroup filesystem, no
    /// filter).
    pub fn set_workloads(&mut self, workloads: Workloads) {
        self.workloads = workloads;
    }

    pub fn workloads(&self) -> &Workloads {
        &self.workloads
    }

    pub fn workloads_mut(&mut self) -> &mut Workloads {
        &mut self.workloads
    }

    /// The workload that made an outbound outcome, if known.
    pub fn workload(&self, outcome: &Outcome) -> Option<&Workload> {
        (outcome.direction == Direction::Outbound)
            .then(|| self.workloads.get(outcome.conn.cgroup_id))
            .flatten()
    }

    fn count(&mut self, outcome: &Outcome) {
        if let Some(a) = self.aggregator.as_mut() {
            a.record(outcome);
        }
        if let Some(m) = self.metrics.as_mut() {
            let workload = (outcome.direction == Direction::Outbound)
                .then(|| self.workloads.get(outcome.conn.cgroup_id))
                .flatten();
            m.record(outcome, workload);
        }
        match outcome.label {
            Label::Cancelled => {}
            Label::Connected => self.connects += 1,
            Label::AtRisk | Label::Recovered => self.warnings += 1,
            _ => self.failures += 1,
        }
    }

    /// The output record of `outcome`, if the selection prints it.
    pub fn record<'a>(&'a self, outcome: &'a Outcome) -> Option<Record<'a>> {
        let time = || self.clock.timestamp(outcome.at_ns);
        let workload = self.workload(outcome);
        match outcome.label {
            Label::Cancelled => None,
            Label::AtRisk | Label::Recovered => self.select.failures.then(|| {
                Record::Warning(Failure::from_outcome(
                    outcome,
                    time(),
                    &self.reasons,
                    workload,
                ))
            }),
            Label::Connected => self
                .select
                .successes
                .then(|| Record::Connect(Connect::from_outcome(outcome, time(), workload))),
            _ => self.select.failures.then(|| {
                Record::Failure(Failure::from_outcome(
                    outcome,
                    time(),
                    &self.reasons,
                    workload,
                ))
            }),
        }
    }

    /// Counts outcomes into Prometheus metrics too.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = Some(metrics);
    }

    /// Counts what the metrics listener refuses into the totals.
    pub fn set_http_stats(
        &mut self,
        stats: std::sync::Arc<crate::export::http_server::ServerStats>,
    ) {
        self.http = Some(stats);
    }

    /// The metrics, if counted (`set_metrics`).
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
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
            workloads: self.workloads.counts,
            dns: self.dns.counts,
            http: self.http.as_ref().map(|h| h.counts()).unwrap_or_default(),
            listeners_unanswered: self.listeners.as_ref().map_or(0, |l| l.unanswered),
            forwarded_evicted: self.services.counts.forwarded_evicted,
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

    /// Closes the summary window at `now_mono_ns`: the destinations active in it.
    pub fn close_window(&mut self, now_mono_ns: u64) -> Vec<Summary> {
        self.aggregator
            .as_mut()
            .map(|a| a.close_window(now_mono_ns))
            .unwrap_or_default()
    }

    /// Closes the summary window and hands a `summary` record per active destination to
    /// `each` (none when summaries are not selected; the window closes all the same).
    pub fn summaries(&mut self, now_mono_ns: u64, mut each: impl FnMut(Record<'_>)) {
        let Some(aggregator) = self.aggregator.as_mut() else {
            return;
        };
        let (select, clock, workloads) = (self.select.summaries, &self.clock, &self.workloads);
        aggregator.close_window_each(now_mono_ns, |s| {
            if select {
                each(Record::Summary(SummaryOut::from_summary(
                    &s, clock, workloads,
                )));
            }
        });
    }

    /// Outcomes still held: error reports waiting for their close (bounded).
    pub fn pending_reports(&self) -> usize {
        self.classifier.pending_reports()
    }

    /// Destinations held for summaries (bounded by `--max-destinations`).
    pub fn destinations(&self) -> usize {
        self.aggregator.as_ref().map_or(0, Aggregator::len)
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

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;
    use tracer_common::{AF_INET, KIND_CLOSED, RawEvent, VALID_SK_ERR, tcp_state};

    use super::*;

    /// A connect to 10.0.0.2:5432 refused by a RST, as its CLOSE record.
    fn refused_close() -> RawEvent {
        let mut ev = RawEvent::zeroed();
        ev.kind = KIND_CLOSED;
        ev.family = AF_INET;
        ev.old_state = tcp_state::SYN_SENT;
        ev.new_state = tcp_state::CLOSE;
        ev.saddr_be[..4].copy_from_slice(&[10, 0, 0, 1]);
        ev.daddr_be[..4].copy_from_slice(&[10, 0, 0, 2]);
        ev.sport = 40_000;
        ev.dport = 5432;
        ev.pid = 42;
        ev.sk_err = libc::ECONNREFUSED;
        ev.rst_received_state = tcp_state::SYN_SENT;
        ev.valid = VALID_SK_ERR;
        ev.start_ns = 1_000_000;
        ev.ts_ns = 2_000_000;
        ev
    }

    fn pipeline(select: Select) -> Pipeline {
        Pipeline::new(
            WallClock::with_offset_ns(1_700_000_000_000_000_000),
            KernelParams { hz: 250 },
            ReasonNames::default(),
            select,
            Some(Aggregator::new(std::num::NonZeroUsize::MIN, 0)),
        )
    }

    #[test]
    fn outcomes_are_counted_whatever_is_selected_and_mapped_to_records_only_when_selected() {
        let bytes = bytemuck::bytes_of(&refused_close()).to_vec();
        for failures in [true, false] {
            let mut p = pipeline(Select {
                failures,
                ..Select::default()
            });
            let outcome = p.process(&bytes).expect("a refusal");
            assert_eq!(outcome.label, Label::Refused);
            assert_eq!((p.events, p.failures), (1, 1));
            assert_eq!(p.destinations(), 1, "summaries count it too");
            match p.record(&outcome) {
                Some(Record::Failure(f)) => {
                    assert!(failures);
                    assert_eq!(f.label, "refused");
                }
                None => assert!(!failures),
                Some(other) => panic!("not a failure record: {other:?}"),
            }
        }
    }

    #[test]
    fn an_undecodable_record_is_counted_and_yields_nothing() {
        let mut p = pipeline(Select::default());
        assert!(p.process(&[1, 2, 3]).is_none());
        assert_eq!((p.events, p.decode_errors), (0, 1));
    }

    #[test]
    fn dns_records_are_dns_counts_not_events() {
        let mut p = pipeline(Select::default());
        for m in dns_messages() {
            p.process_dns(&m);
        }
        p.process_dns(&[1, 2, 3]);
        let c = p.dns.counts;
        assert_eq!((c.queries, c.responses, c.parse_errors), (1, 1, 1));
        assert_eq!(
            (p.events, p.decode_errors),
            (0, 0),
            "the connection ring's counts"
        );
    }

    /// A DNS query for `api.test` and its answer → 10.0.0.2 (TTL 30) in namespace 7, as
    /// `dns_egress` and `dns_ingress` hand them over.
    fn dns_messages() -> [Vec<u8>; 2] {
        let mut m = vec![0x50, 0x6c, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03api\x04test\x00\x00\x01\x00\x01");
        let mut q = m.clone();
        (q[2], q[3], q[7]) = (0x01, 0, 0);
        m.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04");
        m.extend_from_slice(&[10, 0, 0, 2]);
        [
            (tracer_common::KIND_DNS_QUERY, q),
            (tracer_common::KIND_DNS, m),
        ]
        .map(|(kind, m)| {
            let mut raw: tracer_common::RawDns = Zeroable::zeroed();
            raw.kind = kind;
            raw.family = AF_INET;
            raw.transport = 17;
            raw.netns = 7;
            raw.server_port = 53;
            raw.ts_ns = 500_000;
            raw.len = m.len() as u16;
            raw.wire_len = m.len() as u16;
            raw.payload[..m.len()].copy_from_slice(&m);
            bytemuck::bytes_of(&raw).to_vec()
        })
    }

    #[test]
    fn a_destination_an_answer_gave_is_named_and_a_dst_name_selects_it() {
        let mut named = refused_close();
        named.netns = 7;
        named.valid |= tracer_common::VALID_NETNS;
        let mut p = pipeline(Select::default());
        // The answer alone names nothing: no query was seen.
        p.process_dns(&dns_messages()[1]);
        assert!(p.dns.is_empty());
        for m in dns_messages() {
            p.process_dns(&m);
        }
        let o = p.process(bytemuck::bytes_of(&named)).expect("a refusal");
        let Some(Record::Failure(f)) = p.record(&o) else {
            panic!("a failure record");
        };
        assert_eq!(f.dst.name, Some("api.test"));
        let line = serde_json::to_string(&f).unwrap();
        assert!(
            line.contains(r#""dst":{"ip":"10.0.0.2","port":5432,"name":"api.test"}"#),
            "{line}"
        );
        assert!(
            line.contains(r#""dns":{"name":"api.test","resolved_ms_ago":1.5,"ttl_s":30"#),
            "{line}"
        );
        // Another namespace asked nothing: no name.
        let mut elsewhere = named;
        elsewhere.netns = 8;
        let o = p
            .process(bytemuck::bytes_of(&elsewhere))
            .expect("a refusal");
        assert!(o.evidence.dns.is_none());
        // `--dst '*.test'`: the named one passes, the other is not counted.
        let mut p = pipeline(Select::default());
        p.dst_filter =
            crate::filter::DstFilter::new(&[crate::filter::parse_dst("*.test").unwrap()]);
        for m in dns_messages() {
            p.process_dns(&m);
        }
        assert!(p.process(bytemuck::bytes_of(&named)).is_some());
        assert!(p.process(bytemuck::bytes_of(&elsewhere)).is_none());
        assert_eq!(p.failures, 1);
    }
}
