//! The `/metrics` values as OTLP metrics (`crate::export::metrics::Snapshot` → `ExportMetricsServiceRequest`),
//! sent to `/v1/metrics` every `--otlp-metrics-interval` seconds by a task of their own.
//!
//! Every value is cumulative since the tracer started (`start_time_unix_nano`), so an export
//! that fails loses nothing: it is not retried, the next one carries the values up to then.
//!
//! Names: the Prometheus metric's name without `_total` (counters: monotonic cumulative sums)
//! and, for the latency histogram, without `_seconds` (its unit, `s`, is the metric's unit), so
//! that a Collector's Prometheus exporter gives back the `/metrics` names. Attributes: `ip` and
//! `port` → `server.address` and `server.port` (the series past `--metrics-max-destinations`:
//! `server.address` = `other`, no port), `label` → `error.type`, the workload labels → their
//! OpenTelemetry names (`k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`,
//! `container.id`, `systemd.unit`).
use std::time::SystemTime;

use hyper::{Uri, body::Bytes};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};
use prost::Message;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, timeout_at},
};

use super::http::{Reporter, Transport, Verdict, judge};
use crate::export::metrics::{self, Desc, Series, Snapshot};

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The OpenTelemetry name of a Prometheus workload label.
fn workload_key(label: &str) -> &str {
    match label {
        "k8s_namespace_name" => "k8s.namespace.name",
        "k8s_pod_name" => "k8s.pod.name",
        "k8s_container_name" => "k8s.container.name",
        "container_id" => "container.id",
        "systemd_unit" => "systemd.unit",
        other => other,
    }
}

fn series_attributes(s: &Series) -> Vec<KeyValue> {
    let mut attrs = match s.dst {
        Some(dst) => vec![
            kv("server.address", Value::StringValue(dst.ip().to_string())),
            kv("server.port", Value::IntValue(i64::from(dst.port()))),
        ],
        None => vec![kv(
            "server.address",
            Value::StringValue(metrics::OTHER.into()),
        )],
    };
    attrs.extend(
        s.workload
            .iter()
            .map(|(k, v)| kv(workload_key(k), Value::StringValue(v.clone()))),
    );
    attrs
}

/// The OTLP name and unit of a metric registered as `name`.
pub fn name_and_unit(name: &str) -> (&str, &str) {
    match name.strip_suffix("_seconds") {
        Some(base) => (base, "s"),
        None => (name, ""),
    }
}

fn metric(desc: Desc, data: Data) -> Metric {
    let (name, unit) = name_and_unit(desc.name);
    Metric {
        name: name.into(),
        description: desc.help.into(),
        unit: unit.into(),
        data: Some(data),
        ..Metric::default()
    }
}

/// The OTLP request of `snapshot`, taken at `now`.
pub fn request(
    snapshot: &Snapshot,
    resource: &Resource,
    scope: &InstrumentationScope,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let (start, time) = (nanos(snapshot.start), nanos(now));
    let point = |attributes, value: u64| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(value).unwrap_or(i64::MAX),
        )),
        ..NumberDataPoint::default()
    };
    let sum = |desc, data_points| {
        metric(
            desc,
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        )
    };
    let mut list = vec![
        sum(
            metrics::ATTEMPTS,
            snapshot
                .attempts
                .iter()
                .map(|(s, v)| point(series_attributes(s), *v))
                .collect(),
        ),
        sum(
            metrics::FAILURES,
            snapshot
                .failures
                .iter()
                .map(|(s, label, v)| {
                    let mut attrs = series_attributes(s);
                    attrs.push(kv("error.type", Value::StringValue((*label).into())));
                    point(attrs, *v)
                })
                .collect(),
        ),
        sum(
            metrics::INBOUND_REFUSALS,
            vec![point(Vec::new(), snapshot.inbound_refusals)],
        ),
        sum(
            metrics::LISTEN_DROPS,
            vec![point(Vec::new(), snapshot.listen_drops)],
        ),
        sum(metrics::AT_RISK, vec![point(Vec::new(), snapshot.at_risk)]),
    ];
    let h = &snapshot.latency;
    list.push(metric(
        metrics::LATENCY,
        Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.buckets.iter().map(|&(_, n)| n).collect(),
                explicit_bounds: h
                    .buckets
                    .iter()
                    .map(|&(upper, _)| upper)
                    .filter(|upper| upper.is_finite())
                    .collect(),
                ..HistogramDataPoint::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    ));
    list.push(sum(
        metrics::OVERFLOW,
        vec![point(Vec::new(), snapshot.overflow)],
    ));
    for &(name, help, value) in &snapshot.health {
        list.push(sum(Desc { name, help }, vec![point(Vec::new(), value)]));
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope.clone()),
                metrics: list,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Sends metrics exports from a task of its own; the event loop hands it the latest encoded
/// request (one not sent yet is replaced: the newer values include it).
pub struct MetricsExporter {
    tx: Option<watch::Sender<Option<Bytes>>>,
    task: Option<JoinHandle<()>>,
    resource: Resource,
    scope: InstrumentationScope,
}

impl MetricsExporter {
    /// Starts the export task (needs a tokio runtime).
    pub fn start<T: Transport>(
        transport: T,
        uri: Uri,
        resource: Resource,
        scope: InstrumentationScope,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(export(transport, uri, rx));
        Self {
            tx: Some(tx),
            task: Some(task),
            resource,
            scope,
        }
    }

    /// Queues an export of `snapshot`.
    pub fn export(&self, snapshot: &Snapshot) {
        let body =
            request(snapshot, &self.resource, &self.scope, SystemTime::now()).encode_to_vec();
        if let Some(tx) = &self.tx {
            tx.send_replace(Some(body.into()));
        }
    }

    /// At exit: waits until the export queued last is sent, or `deadline`.
    pub async fn close(&mut self, deadline: Instant) {
        self.tx = None;
        if let Some(mut task) = self.task.take()
            && timeout_at(deadline, &mut task).await.is_err()
        {
            task.abort();
            log::warn!("otlp metrics: the last export was not answered by the exit deadline");
        }
    }
}

async fn export<T: Transport>(transport: T, uri: Uri, mut rx: watch::Receiver<Option<Bytes>>) {
    let mut reporter = Reporter::new("metrics", uri.clone());
    while rx.changed().await.is_ok() {
        let Some(body) = rx.borrow_and_update().clone() else {
            continue;
        };
        match judge(&transport.post(&uri, body).await) {
            Verdict::Delivered => reporter.delivered(),
            Verdict::Retry { why, .. } => reporter.retrying(
                &why,
                "the next export carries the values (they are cumulative)",
            ),
            Verdict::Reject { why } => reporter.rejected(
                &why,
                "exports go on at each interval (the values are cumulative)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        analysis::outcome::{Label, Outcome},
        enrich::workload::{Workload, rules::Identity},
        export::counters::Totals,
        export::metrics::Metrics,
    };

    fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    fn points(m: &Metric) -> &[NumberDataPoint] {
        match &m.data {
            Some(Data::Sum(s)) => {
                assert!(s.is_monotonic, "{}", m.name);
                assert_eq!(
                    s.aggregation_temporality,
                    AggregationTemporality::Cumulative as i32
                );
                &s.data_points
            }
            other => panic!("{} is not a sum: {other:?}", m.name),
        }
    }

    fn value(p: &NumberDataPoint) -> i64 {
        match p.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            other => panic!("not an int: {other:?}"),
        }
    }

    fn attr<'a>(p: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        p.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    /// The request as a Collector decodes it.
    fn decoded(m: &Metrics) -> ExportMetricsServiceRequest {
        let now = SystemTime::now() + Duration::from_secs(1);
        let req = request(
            &m.snapshot(),
            &Resource::default(),
            &InstrumentationScope::default(),
            now,
        );
        ExportMetricsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap()
    }

    #[test]
    fn the_prometheus_series_become_otlp_sums_and_a_histogram() {
        let mut m = Metrics::new(1, true);
        let unit = Workload {
            cgroup: "/system.slice/cron.service".into(),
            identity: Identity {
                systemd_unit: Some("cron.service".into()),
                ..Identity::default()
            },
            pod: None,
        };
        for _ in 0..7 {
            m.record(
                &Outcome::example("10.1.2.3:5432", Label::Refused),
                Some(&unit),
            );
        }
        let mut ok = Outcome::example("10.1.2.3:5432", Label::Connected);
        ok.evidence.elapsed_ms = 0.03; // 30 µs: the second bucket (25–50 µs]
        m.record(&ok, Some(&unit));
        m.record(&Outcome::example("10.9.9.9:1", Label::Refused), None); // past the limit
        let mut inbound = Outcome::example("10.0.0.1:22", Label::Refused);
        inbound.direction = crate::analysis::outcome::Direction::Inbound;
        m.record(&inbound, None);
        m.health(&Totals {
            events: 11,
            output_dropped: 3,
            ..Totals::default()
        });
        let req = decoded(&m);

        let failures = points(find(&req, "tracer_connect_failures"));
        assert_eq!(failures.len(), 2);
        let mine = failures
            .iter()
            .find(|p| attr(&p.attributes, "server.port").is_some())
            .unwrap();
        assert_eq!(value(mine), 7);
        assert_eq!(
            attr(&mine.attributes, "server.address"),
            Some(&Value::StringValue("10.1.2.3".into()))
        );
        assert_eq!(
            attr(&mine.attributes, "server.port"),
            Some(&Value::IntValue(5432))
        );
        assert_eq!(
            attr(&mine.attributes, "error.type"),
            Some(&Value::StringValue("refused".into()))
        );
        assert_eq!(
            attr(&mine.attributes, "systemd.unit"),
            Some(&Value::StringValue("cron.service".into()))
        );
        assert!(mine.start_time_unix_nano > 0 && mine.start_time_unix_nano < mine.time_unix_nano);
        let other = failures
            .iter()
            .find(|p| attr(&p.attributes, "server.port").is_none())
            .unwrap();
        assert_eq!(value(other), 1);
        assert_eq!(
            attr(&other.attributes, "server.address"),
            Some(&Value::StringValue("other".into()))
        );

        let attempts = points(find(&req, "tracer_connect_attempts"));
        assert_eq!(
            attempts
                .iter()
                .map(value)
                .collect::<std::collections::BTreeSet<_>>(),
            [1, 8].into()
        );
        assert_eq!(value(&points(find(&req, "tracer_inbound_refusals"))[0]), 1);
        assert_eq!(
            value(&points(find(&req, "tracer_metrics_destinations_overflow"))[0]),
            1
        );
        assert_eq!(value(&points(find(&req, "tracer_events"))[0]), 11);
        assert_eq!(value(&points(find(&req, "tracer_output_dropped"))[0]), 3);

        let latency = find(&req, "tracer_connect_latency");
        assert_eq!(latency.unit, "s");
        let Some(Data::Histogram(h)) = &latency.data else {
            panic!("not a histogram: {latency:?}");
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.explicit_bounds.len(), p.bucket_counts.len()),
            (1, 20, 21)
        );
        assert_eq!(p.explicit_bounds[0], 0.000_025);
        assert_eq!(p.bucket_counts[1], 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 1);
        assert!((p.sum.unwrap() - 0.000_03).abs() < 1e-12);
    }

    /// The same values, and the same histogram, as Prometheus serves.
    #[test]
    fn otlp_and_prometheus_read_the_same_values() {
        let mut m = Metrics::new(10, false);
        for ms in [0.01, 0.03, 0.2, 5.0, 1e6] {
            let mut o = Outcome::example("10.0.0.9:443", Label::Connected);
            o.evidence.elapsed_ms = ms;
            m.record(&o, None);
        }
        let text = crate::export::metrics::render(&m.registry());
        let req = decoded(&m);
        let Some(Data::Histogram(h)) = &find(&req, "tracer_connect_latency").data else {
            panic!("not a histogram");
        };
        let p = &h.data_points[0];
        // Prometheus' buckets, (bound, cumulative count), read from the text.
        let served: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("tracer_connect_latency_seconds_bucket{le=\""))
            .filter_map(|l| {
                let (le, n) = l.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, n.parse().ok()?))
            })
            .collect();
        let mut cumulative = 0;
        let mut exported = Vec::new();
        for (i, n) in p.bucket_counts.iter().enumerate() {
            cumulative += n;
            let bound = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
            exported.push((bound, cumulative));
        }
        assert_eq!(served, exported, "{text}");
        assert!(
            text.contains("tracer_connect_latency_seconds_bucket{le=\"+Inf\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("tracer_connect_latency_seconds_count 5"),
            "{text}"
        );
        assert!(
            text.contains(r#"tracer_connect_attempts_total{ip="10.0.0.9",port="443"} 5"#),
            "{text}"
        );
        assert_eq!(value(&points(find(&req, "tracer_connect_attempts"))[0]), 5);
    }

    #[test]
    fn names_lose_the_unit_suffix() {
        assert_eq!(
            name_and_unit("tracer_connect_latency_seconds"),
            ("tracer_connect_latency", "s")
        );
        assert_eq!(name_and_unit("tracer_events"), ("tracer_events", ""));
    }
}
