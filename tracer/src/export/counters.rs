//! Every counter the tracer reports, and the totals they are read from.
//!
//! The kernel's counters are declared once in `tracer_common::counters`; the ones userspace
//! computes (its own counts, and values derived from the kernel's) are declared once in
//! `DERIVED` below, in the same shape. The `stats` record (`record::Stats`), the Prometheus
//! health metrics (`metrics`) and the loss warnings (`loss`) all walk `entries()`: none of them
//! names a counter, so a new one needs only its table entry, the code that counts it, and its
//! field in the schema.

use tracer_common::{Counter, CounterSpec};

use crate::analysis::classify::ClassifierCounts;
use crate::kernel::ringbuf::KernelTotals;

/// Everything counted so far, at one moment: what every reported counter is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub kernel: KernelTotals,
    /// Records received from the kernel and decoded.
    pub events: u64,
    pub decode_errors: u64,
    /// Failure records produced (printed unless `--summaries-only`).
    pub failures: u64,
    /// Successful connects classified.
    pub connects: u64,
    pub classifier: ClassifierCounts,
    /// Destinations the aggregator evicted at `--max-destinations`.
    pub destinations_evicted: u64,
    /// Lines the output sinks could not deliver.
    pub output_dropped: u64,
    pub workloads: crate::enrich::workload::WorkloadCounts,
    /// What the DNS capture counted.
    pub dns: crate::enrich::dns::DnsCounts,
    /// What the metrics listener refused (`--metrics-addr`; zero without it).
    pub http: crate::export::http_server::ServerCounts,
    /// Refusals that went out without `listeners`: the listeners worker did not answer in time.
    pub listeners_unanswered: u64,
    /// Forwarded connections' translations or drops pushed out unused (`enrich::service`).
    pub forwarded_evicted: u64,
}

/// A counter userspace computes from the totals.
#[derive(Clone, Copy)]
pub struct Derived {
    pub spec: CounterSpec,
    pub value: fn(&Totals) -> u64,
}

/// The counters userspace computes, beside the kernel's (`tracer_common::Counter`).
pub const DERIVED: &[Derived] = &[
    Derived {
        spec: CounterSpec::stats(
            "dns_responses",
            "DNS answers to queries seen leaving (the kernel drops the others: dns_unsolicited)",
        ),
        value: |t| t.dns.responses,
    },
    Derived {
        spec: CounterSpec::stats("dns_queries", "DNS queries this host's sockets sent"),
        value: |t| t.dns.queries,
    },
    Derived {
        spec: CounterSpec::stats(
            "dns_unmatched",
            "DNS answers not used: another question than the query's, too late, or the query forgotten",
        ),
        value: |t| t.dns.unmatched,
    },
    Derived {
        spec: CounterSpec::stats(
            "dns_parse_errors",
            "Captured DNS packets that did not parse as a query or response (counted, never a name)",
        ),
        value: |t| t.dns.parse_errors,
    },
    Derived {
        spec: CounterSpec::stats(
            "dns_evicted",
            "DNS cache entries dropped at the entry cap or the byte budget (least recently used first)",
        ),
        value: |t| t.dns.evicted,
    },
    Derived {
        spec: CounterSpec::stats(
            "dns_truncated",
            "DNS answers longer than the 512 bytes captured (EDNS): not parsed, no name",
        ),
        value: |t| t.dns.truncated,
    },
    Derived {
        spec: CounterSpec::stats("events", "Records of the kernel's ring buffer received and decoded (DNS messages: dns_queries, dns_responses)")
            .metric("tracer_events"),
        value: |t| t.events,
    },
    Derived {
        spec: CounterSpec::stats(
            "kernel_skipped",
            "Tracepoint hits the kernel did not run the tracer for (another BPF program was running on that CPU)",
        )
        .metric("tracer_kernel_skipped")
        .loss(
            "tracepoint hits skipped by the kernel",
            Some("another BPF program was running on that CPU"),
        ),
        value: |t| t.kernel.skipped,
    },
    Derived {
        spec: CounterSpec::stats("decode_errors", "Records that could not be decoded")
            .metric("tracer_decode_errors")
            .loss("undecodable records", None),
        value: |t| t.decode_errors,
    },
    Derived {
        spec: CounterSpec::stats(
            "tracked_sockets",
            "Outbound connections the kernel is tracking now",
        ),
        // An estimate if entries were evicted.
        value: |t| {
            t.kernel[Counter::Tracked]
                .saturating_sub(t.kernel[Counter::Untracked])
                .saturating_sub(t.kernel[Counter::Evicted])
        },
    },
    Derived {
        spec: CounterSpec::stats(
            "cancelled",
            "Connects closed by the application in SYN_SENT before any retransmission (not failures)",
        ),
        value: |t| t.classifier.cancelled,
    },
    Derived {
        spec: CounterSpec::stats(
            "failures",
            "Failure records produced (printed unless --summaries-only)",
        ),
        value: |t| t.failures,
    },
    Derived {
        spec: CounterSpec::stats(
            "connects",
            "Successful connects seen (printed only with --successes)",
        ),
        value: |t| t.connects,
    },
    Derived {
        spec: CounterSpec::stats(
            "unclassified",
            "Established connections that ended with an errno no label covers",
        ),
        value: |t| t.classifier.unclassified,
    },
    Derived {
        spec: CounterSpec::stats(
            "inbound_ignored",
            "Socket-less RSTs that were not inbound refusals (over loopback, or not answering a SYN)",
        ),
        // Those over loopback are counted in the kernel, the others by the classifier.
        value: |t| t.classifier.inbound_ignored + t.kernel[Counter::InboundLoopback],
    },
    Derived {
        spec: CounterSpec::stats(
            "destinations_evicted",
            "Destinations dropped from summaries at --max-destinations",
        )
        .metric("tracer_evicted_destinations"),
        value: |t| t.destinations_evicted,
    },
    Derived {
        spec: CounterSpec::stats(
            "workloads_evicted",
            "Workload identities dropped at --max-workloads (least recently used first)",
        )
        .metric("tracer_evicted_workloads"),
        value: |t| t.workloads.evicted,
    },
    Derived {
        spec: CounterSpec::stats(
            "workloads_unresolved",
            "Connections whose cgroup was neither announced by the kernel nor found in the cgroup filesystem (no workload on their record)",
        ),
        value: |t| t.workloads.unresolved,
    },
    Derived {
        spec: CounterSpec::stats(
            "listeners_unanswered",
            "Refusals that went out without listeners because the listeners worker did not answer within 200 ms (or its queue was full): their listeners unknown, not absent",
        ),
        value: |t| t.listeners_unanswered,
    },
    Derived {
        spec: CounterSpec::stats(
            "forwarded_evicted",
            "Translations or drops of connections forwarded through a namespace of this host (a node routing a pod's traffic) pushed out of their table (16,384) before their connection ended: that connection's record lacks them",
        ),
        value: |t| t.forwarded_evicted,
    },
    Derived {
        spec: CounterSpec::stats(
            "output_dropped",
            "Output lines (OTLP: log records) the sinks could not deliver",
        )
            .metric("tracer_output_dropped")
            .loss("lines the outputs could not deliver", None),
        value: |t| t.output_dropped,
    },
    Derived {
        spec: CounterSpec::stats(
            "metrics_listener_evicted",
            "Connections to the metrics listener closed to make room for a new one (at its connection cap, or out of file descriptors), oldest first",
        )
        .metric("tracer_metrics_listener_evicted"),
        value: |t| t.http.evicted,
    },
    Derived {
        spec: CounterSpec::stats(
            "metrics_listener_timeouts",
            "Connections to the metrics listener closed because their request head (5 s) or a response (10 s) took too long",
        )
        .metric("tracer_metrics_listener_timeouts"),
        value: |t| t.http.timeouts,
    },
    Derived {
        spec: CounterSpec::stats(
            "metrics_listener_refused",
            "Requests to the metrics listener answered 431 (a head over 16 KiB) or 400 (not HTTP/1), then closed",
        )
        .metric("tracer_metrics_listener_refused"),
        value: |t| t.http.refused,
    },
    Derived {
        spec: CounterSpec::stats(
            "metrics_listener_accept_errors",
            "accept() failures on the metrics listener (out of file descriptors: backed off, 100 ms doubling to 1 s)",
        )
        .metric("tracer_metrics_listener_accept_errors"),
        value: |t| t.http.accept_errors,
    },
];

/// One reported counter: its spec and where its value is.
#[derive(Clone, Copy)]
pub struct Entry {
    pub spec: &'static CounterSpec,
    source: Source,
}

#[derive(Clone, Copy)]
enum Source {
    Kernel(Counter),
    Derived(fn(&Totals) -> u64),
}

impl Entry {
    /// Its value in `t`.
    pub fn value(&self, t: &Totals) -> u64 {
        match self.source {
            Source::Kernel(c) => t.kernel[c],
            Source::Derived(f) => f(t),
        }
    }
}

/// Every counter: the kernel's, then userspace's.
pub fn entries() -> impl Iterator<Item = Entry> + Clone {
    let kernel = Counter::ALL.into_iter().map(|c| Entry {
        spec: c.spec(),
        source: Source::Kernel(c),
    });
    let derived = DERIVED.iter().map(|d| Entry {
        spec: &d.spec,
        source: Source::Derived(d.value),
    });
    kernel.chain(derived)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tracer_common::Loss;

    use super::*;

    /// `LostConnections` → `lost_connections`.
    fn snake(camel: &str) -> String {
        let mut s = String::new();
        for ch in camel.chars() {
            if ch.is_ascii_uppercase() && !s.is_empty() {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
        }
        s
    }

    #[test]
    fn kernel_counters_are_named_as_their_variants() {
        for (i, c) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "{c:?}: Counter::ALL is in index order");
            assert_eq!(c.spec().name, snake(&format!("{c:?}")));
        }
    }

    #[test]
    fn names_and_metrics_are_unique_and_loss_parts_name_a_cause() {
        let specs: Vec<_> = entries().map(|e| e.spec).collect();
        let names: BTreeSet<_> = specs.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), specs.len(), "a name is declared twice");
        let metrics: Vec<_> = specs.iter().filter_map(|s| s.metric).collect();
        assert_eq!(
            metrics.iter().collect::<BTreeSet<_>>().len(),
            metrics.len(),
            "a metric is declared twice"
        );
        for m in &metrics {
            assert!(
                m.starts_with("tracer_") && !m.ends_with("_total"),
                "{m}: tracer_…, without the _total the registry appends"
            );
        }
        for s in &specs {
            if let Loss::Part { of, .. } = s.loss {
                assert!(
                    specs
                        .iter()
                        .any(|c| c.name == of && matches!(c.loss, Loss::Cause { .. })),
                    "{}: part of `{of}`, which is no loss cause",
                    s.name
                );
            }
        }
    }

    #[test]
    fn entries_read_their_own_value() {
        let mut t = Totals {
            events: 3,
            output_dropped: 4,
            ..Totals::default()
        };
        t.kernel[Counter::LateCloses] = 5;
        t.kernel[Counter::Tracked] = 10;
        t.kernel[Counter::Untracked] = 6;
        t.kernel[Counter::Evicted] = 1;
        t.kernel[Counter::InboundLoopback] = 2;
        t.classifier.inbound_ignored = 7;
        let value = |name| {
            entries()
                .find(|e| e.spec.name == name)
                .unwrap_or_else(|| panic!("no counter {name}"))
                .value(&t)
        };
        assert_eq!(value("events"), 3);
        assert_eq!(value("output_dropped"), 4);
        assert_eq!(value("late_closes"), 5);
        assert_eq!(value("tracked_sockets"), 3);
        assert_eq!(value("inbound_ignored"), 9);
    }
}
