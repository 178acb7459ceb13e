//! Prometheus / OpenMetrics endpoint (`--metrics-addr`): connect attempts and failures per
//! destination — and per workload with `--metrics-labels workload` — with a cardinality limit
//! (past it, new series share `ip="other"`), a connect-latency histogram, and the tracer's own
//! health.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::{MetricType, counter::Counter, family::Family, histogram::exponential_buckets},
    registry::Registry,
};

use crate::{
    analysis::outcome::{Direction, Label, Outcome},
    enrich::workload::Workload,
    export::counters::{self, Entry, Totals},
    export::health::Health,
};

/// The workload labels of a series (`--metrics-labels workload`): only those known, so a
/// series without them has exactly the labels it has without the flag.
pub type WorkloadLabels = Vec<(&'static str, String)>;

/// The labels of a workload: Kubernetes names when the kubelet's logs gave them (they stay the
/// same when a container restarts), else the container id, and the systemd unit.
fn workload_labels(w: &Workload) -> WorkloadLabels {
    let mut labels = Vec::new();
    if let Some(p) = &w.pod {
        labels.push(("k8s_namespace_name", p.namespace.clone()));
        labels.push(("k8s_pod_name", p.pod.clone()));
        if let Some(c) = &p.container {
            labels.push(("k8s_container_name", c.clone()));
        }
    } else if let Some(id) = &w.identity.container_id {
        labels.push(("container_id", id.clone()));
    }
    if let Some(unit) = &w.identity.systemd_unit {
        labels.push(("systemd_unit", unit.clone()));
    }
    labels
}

/// The port `--metrics-addr` listens on when none is given: unassigned in IANA's registry, away
/// from the Prometheus exporters' 9100–9999 and from 9464, the OpenTelemetry SDKs' default.
pub const DEFAULT_PORT: u16 = 10140;

/// The series destinations share once the cardinality limit is reached.
pub const OTHER: &str = "other";

/// A metric's name (as registered: the registry appends `_total` to counters) and help.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
}

pub const ATTEMPTS: Desc = Desc {
    name: "tracer_connect_attempts",
    help: "Outbound TCP connects that succeeded or failed in the connect phase, per destination",
};
pub const FAILURES: Desc = Desc {
    name: "tracer_connect_failures",
    help: "Failed outbound TCP connections per destination and label (refused, syn_timeout, dropped_keepalive, unreachable, reset, rto_timeout, no_local_port, blocked_locally)",
};
pub const LISTEN_DROPS: Desc = Desc {
    name: "tracer_listen_overflow_drops",
    help: "Connection attempts this host's listeners dropped because their accept queue was full",
};
pub const AT_RISK: Desc = Desc {
    name: "tracer_at_risk_warnings",
    help: "Established outbound connections warned about as at risk (retransmission timeouts in a row without progress)",
};
pub const INBOUND_REFUSALS: Desc = Desc {
    name: "tracer_inbound_refusals",
    help: "SYNs from remote peers that found no listener on this host",
};
pub const LATENCY: Desc = Desc {
    name: "tracer_connect_latency_seconds",
    help: "Time from connect() to ESTABLISHED",
};
pub const OVERFLOW: Desc = Desc {
    name: "tracer_metrics_destinations_overflow",
    help: "Outcomes counted under ip=\"other\" because the destination limit was reached",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DstLabels {
    ip: String,
    port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    ip: String,
    port: String,
    label: String,
}

/// One per-destination series: its destination (`None`: the series past the limit share,
/// `ip="other"`) and its workload labels (`--metrics-labels workload`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Series {
    pub dst: Option<SocketAddr>,
    pub workload: WorkloadLabels,
}

impl Series {
    fn dst_labels(&self) -> DstLabels {
        match self.dst {
            Some(dst) => DstLabels {
                ip: dst.ip().to_string(),
                port: dst.port().to_string(),
            },
            None => DstLabels {
                ip: OTHER.into(),
                port: OTHER.into(),
            },
        }
    }
}

/// A Prometheus counter that follows one of the counter tables' counters, and that counter's value at
/// the last update.
struct CounterMetric {
    entry: Entry,
    metric: Counter,
    last: u64,
}

/// The connect-latency histogram. Its buckets are ours, so that both the registry (which encodes
/// it through `EncodeMetric`, exactly as a `prometheus_client` histogram) and `Metrics::snapshot`
/// read them: `prometheus_client`'s own histogram does not show its buckets.
#[derive(Clone, Debug)]
struct Latency(Arc<Mutex<HistogramValues>>);

/// A histogram's values: Prometheus' classic buckets, not cumulative.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValues {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, observations in this bucket); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Latency {
    fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let buckets = bounds
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        Self(Arc::new(Mutex::new(HistogramValues {
            buckets,
            ..HistogramValues::default()
        })))
    }

    fn values(&self) -> std::sync::MutexGuard<'_, HistogramValues> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `v` in the first bucket whose upper bound is ≥ `v` (NaN: the last), as
    /// `prometheus_client` does.
    fn observe(&self, v: f64) {
        let mut h = self.values();
        h.sum += v;
        h.count += 1;
        let last = h.buckets.len() - 1;
        let i = h
            .buckets
            .iter()
            .position(|&(upper, _)| upper >= v)
            .unwrap_or(last);
        h.buckets[i].1 += 1;
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.values();
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Every metric's value at one moment (what the OTLP exporter sends).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When counting began: the start of every cumulative value.
    pub start: SystemTime,
    pub attempts: Vec<(Series, u64)>,
    pub failures: Vec<(Series, &'static str, u64)>,
    pub inbound_refusals: u64,
    pub listen_drops: u64,
    pub at_risk: u64,
    pub overflow: u64,
    pub latency: HistogramValues,
    /// The health counters: (metric name, help, value).
    pub health: Vec<(&'static str, &'static str, u64)>,
}

pub struct Metrics {
    registry: Arc<Registry>,
    attempts: Family<(DstLabels, WorkloadLabels), Counter>,
    failures: Family<(FailureLabels, WorkloadLabels), Counter>,
    /// The counters of `attempts` and `failures` by series, sharing their values with the
    /// registry's (a `Family` cannot be walked): what `snapshot` reads. Looked up here first, so
    /// an outcome of a known series builds no label strings.
    attempt_series: HashMap<Series, Counter>,
    failure_series: HashMap<(Series, Label), Counter>,
    inbound_refusals: Counter,
    listen_drops: Counter,
    at_risk: Counter,
    latency: Latency,
    overflow: Counter,
    /// One per counter of `counters::entries()` that has a metric.
    health: Vec<CounterMetric>,
    /// The series admitted under the limit: destinations, or (destination, workload) pairs.
    admitted: HashSet<Series>,
    limit: usize,
    /// `--metrics-labels workload`.
    by_workload: bool,
    start: SystemTime,
}

impl Metrics {
    /// `limit`: destinations (or, `by_workload`, destination and workload pairs) with their own
    /// series.
    pub fn new(limit: usize, by_workload: bool) -> Self {
        let mut r = Registry::default();
        let attempts = Family::<(DstLabels, WorkloadLabels), Counter>::default();
        let failures = Family::<(FailureLabels, WorkloadLabels), Counter>::default();
        let inbound_refusals = Counter::default();
        let listen_drops = Counter::default();
        let at_risk = Counter::default();
        let latency = Latency::new(exponential_buckets(0.000_025, 2.0, 20));
        let overflow = Counter::default();
        r.register(ATTEMPTS.name, ATTEMPTS.help, attempts.clone());
        r.register(FAILURES.name, FAILURES.help, failures.clone());
        r.register(
            INBOUND_REFUSALS.name,
            INBOUND_REFUSALS.help,
            inbound_refusals.clone(),
        );
        r.register(LISTEN_DROPS.name, LISTEN_DROPS.help, listen_drops.clone());
        r.register(AT_RISK.name, AT_RISK.help, at_risk.clone());
        r.register(LATENCY.name, LATENCY.help, latency.clone());
        r.register(OVERFLOW.name, OVERFLOW.help, overflow.clone());
        let health = counters::entries()
            .filter_map(|entry| {
                let name = entry.spec.metric?;
                let metric = Counter::default();
                r.register(name, entry.spec.help, metric.clone());
                Some(CounterMetric {
                    entry,
                    metric,
                    last: 0,
                })
            })
            .collect();
        Self {
            registry: Arc::new(r),
            attempts,
            failures,
            attempt_series: HashMap::new(),
            failure_series: HashMap::new(),
            inbound_refusals,
            listen_drops,
            at_risk,
            latency,
            overflow,
            health,
            admitted: HashSet::new(),
            limit,
            by_workload,
            start: SystemTime::now(),
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The series of an outcome to `dst`: its own while under the limit, else `other`.
    fn series(&mut self, dst: SocketAddr, workload: Option<&Workload>) -> Series {
        let workload = match (self.by_workload, workload) {
            (true, Some(w)) => workload_labels(w),
            _ => Vec::new(),
        };
        let series = Series {
            dst: Some(dst),
            workload,
        };
        if self.admitted.contains(&series) {
            return series;
        }
        if self.admitted.len() < self.limit {
            self.admitted.insert(series.clone());
            return series;
        }
        self.overflow.inc();
        Series {
            dst: None,
            workload: Vec::new(),
        }
    }

    fn attempt(&mut self, series: &Series) {
        if let Some(c) = self.attempt_series.get(series) {
            c.inc();
            return;
        }
        let c = self
            .attempts
            .get_or_create(&(series.dst_labels(), series.workload.clone()))
            .clone();
        c.inc();
        self.attempt_series.insert(series.clone(), c);
    }

    fn failure(&mut self, series: Series, label: Label) {
        let key = (series, label);
        if let Some(c) = self.failure_series.get(&key) {
            c.inc();
            return;
        }
        let DstLabels { ip, port } = key.0.dst_labels();
        let labels = FailureLabels {
            ip,
            port,
            label: label.as_str().into(),
        };
        let c = self
            .failures
            .get_or_create(&(labels, key.0.workload.clone()))
            .clone();
        c.inc();
        self.failure_series.insert(key, c);
    }

    /// Counts `o`; `workload`: who connected, if known.
    pub fn record(&mut self, o: &Outcome, workload: Option<&Workload>) {
        match (o.direction, o.label) {
            (Direction::Inbound, Label::ListenOverflow) => {
                let dropped = o.evidence.listen.as_ref().map_or(0, |q| q.dropped);
                self.listen_drops.inc_by(dropped);
                return;
            }
            (Direction::Inbound, _) => {
                self.inbound_refusals.inc();
                return;
            }
            (_, Label::AtRisk) => {
                self.at_risk.inc();
                return;
            }
            (_, Label::Cancelled | Label::Recovered) => return,
            _ => {}
        }
        let series = self.series(o.conn.dst, workload);
        let connect_phase = o.evidence.connection_age_ms.is_none();
        if o.label == Label::Connected {
            self.attempt(&series);
            self.latency.observe(o.evidence.elapsed_ms / 1000.0);
            return;
        }
        if connect_phase {
            self.attempt(&series);
        }
        self.failure(series, o.label);
    }

    /// Moves the health counters up to `now`'s totals.
    pub fn health(&mut self, now: &Totals) {
        for h in &mut self.health {
            let value = h.entry.value(now);
            h.metric.inc_by(value.saturating_sub(h.last));
            h.last = value;
        }
    }

    /// Every value now, as the registry serves them (bring the health counters up to date
    /// first).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            start: self.start,
            attempts: self
                .attempt_series
                .iter()
                .map(|(s, c)| (s.clone(), c.get()))
                .collect(),
            failures: self
                .failure_series
                .iter()
                .map(|((s, l), c)| (s.clone(), l.as_str(), c.get()))
                .collect(),
            inbound_refusals: self.inbound_refusals.get(),
            listen_drops: self.listen_drops.get(),
            at_risk: self.at_risk.get(),
            overflow: self.overflow.get(),
            latency: self.latency.values().clone(),
            health: self
                .health
                .iter()
                .filter_map(|h| Some((h.entry.spec.metric?, h.entry.spec.help, h.metric.get())))
                .collect(),
        }
    }
}

/// The OpenMetrics text of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut s = String::new();
    encode(&mut s, registry).expect("writing to a String cannot fail");
    s
}

/// `--metrics-addr`: `PORT` (binds 127.0.0.1), `IP` (port `DEFAULT_PORT`) or `IP:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    s.parse().map_err(|_| {
        format!(
            "`{s}`: expected PORT (binds 127.0.0.1), IP (port {DEFAULT_PORT}) or IP:PORT, e.g. \
             {DEFAULT_PORT} or 0.0.0.0:{DEFAULT_PORT}"
        )
    })
}

/// How long one rendering of `/metrics` is served: every response within it shares the same
/// bytes, so a flood of scrapes costs one rendering a second, and slow readers (each answered
/// within the server's response timeout) hold a few copies at most, not one each.
const PAGE_TTL: Duration = Duration::from_secs(1);

/// What the metrics listener answers: `GET /metrics`, `/healthz` and `/readyz` (the server and
/// its bounds: `http_server`).
pub struct Pages {
    registry: Arc<Registry>,
    health: Arc<Health>,
    /// The last rendering of `/metrics`, and when.
    page: Mutex<Option<(Instant, Bytes)>>,
}

impl Pages {
    pub fn new(registry: Arc<Registry>, health: Arc<Health>) -> Self {
        Self {
            registry,
            health,
            page: Mutex::new(None),
        }
    }

    /// This, as the server's handler.
    pub fn handler(self) -> crate::export::http_server::Handler {
        Arc::new(move |req| self.respond(req))
    }

    /// The OpenMetrics text, rendered at most once per `PAGE_TTL`.
    fn metrics(&self) -> Bytes {
        let mut page = self
            .page
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, body)) = page.as_ref()
            && at.elapsed() < PAGE_TTL
        {
            return body.clone();
        }
        let body = Bytes::from(render(&self.registry));
        *page = Some((Instant::now(), body.clone()));
        body
    }

    fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        const TEXT: &str = "text/plain; charset=utf-8";
        let (status, ctype, body) = match req.uri().path() {
            "/metrics" => (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics(),
            ),
            "/healthz" => (200, TEXT, Bytes::from_static(b"ok\n")),
            "/readyz" => match self
                .health
                .readiness(crate::analysis::clock::WallClock::now_mono_ns())
            {
                Ok(()) => (200, TEXT, Bytes::from_static(b"ready\n")),
                Err(why) => (503, TEXT, Bytes::from(format!("not ready: {why}\n"))),
            },
            _ => (
                404,
                TEXT,
                Bytes::from_static(b"not found: /metrics, /healthz and /readyz are served here\n"),
            ),
        };
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(body))
            .expect("a valid response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(dst: &str, label: Label) -> Outcome {
        let mut o = Outcome::example(dst, label);
        o.evidence.elapsed_ms = 2.0;
        o
    }

    #[test]
    fn counts_per_destination_and_label() {
        let mut m = Metrics::new(10, false);
        for _ in 0..7 {
            m.record(&outcome("10.1.2.3:5432", Label::Refused), None);
        }
        m.record(&outcome("10.1.2.3:5432", Label::Connected), None);
        let text = render(&m.registry());
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="10.1.2.3",port="5432",label="refused"} 7"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"tracer_connect_attempts_total{ip="10.1.2.3",port="5432"} 8"#),
            "{text}"
        );
        assert!(
            text.contains("tracer_connect_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics: {text}");
    }

    #[test]
    fn destinations_past_the_limit_share_the_other_series() {
        let mut m = Metrics::new(2, false);
        for d in [
            "10.0.0.1:1",
            "10.0.0.2:1",
            "10.0.0.3:1",
            "10.0.0.4:1",
            "10.0.0.1:1",
        ] {
            m.record(&outcome(d, Label::Refused), None);
        }
        let text = render(&m.registry());
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="other",port="other",label="refused"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="10.0.0.1",port="1",label="refused"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("tracer_metrics_destinations_overflow_total 2"),
            "{text}"
        );
    }

    #[test]
    fn workload_labels_are_opt_in_and_share_the_limit() {
        use crate::enrich::workload::{Workload, kubelet::PodNames, rules::Identity};
        let pod = Workload {
            cgroup: "/kubepods/pod1/c1".into(),
            identity: Identity {
                container_id: Some("c1".into()),
                ..Identity::default()
            },
            pod: Some(PodNames {
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: Some("nginx".into()),
            }),
        };
        let unit = Workload {
            cgroup: "/system.slice/cron.service".into(),
            identity: Identity {
                systemd_unit: Some("cron.service".into()),
                ..Identity::default()
            },
            pod: None,
        };
        let refused = outcome("10.0.0.1:80", Label::Refused);
        let mut m = Metrics::new(2, true);
        m.record(&refused, Some(&pod));
        m.record(&refused, Some(&unit));
        m.record(&refused, None);
        let text = render(&m.registry());
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="10.0.0.1",port="80",label="refused",k8s_namespace_name="shop",k8s_pod_name="web-1",k8s_container_name="nginx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="10.0.0.1",port="80",label="refused",systemd_unit="cron.service"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="other",port="other",label="refused"} 1"#
            ),
            "a third (destination, workload) pair is past the limit of 2: {text}"
        );
        let mut plain = Metrics::new(2, false);
        plain.record(&refused, Some(&pod));
        let text = render(&plain.registry());
        assert!(
            text.contains(
                r#"tracer_connect_failures_total{ip="10.0.0.1",port="80",label="refused"} 1"#
            ),
            "without the flag the series are as before: {text}"
        );
    }

    #[test]
    fn health_counters_follow_the_totals() {
        let mut m = Metrics::new(1, false);
        let mut totals = Totals {
            events: 5,
            ..Totals::default()
        };
        totals.kernel[tracer_common::Counter::Lost] = 1;
        m.health(&totals);
        totals.events = 9;
        m.health(&totals);
        let text = render(&m.registry());
        assert!(text.contains("tracer_events_total 9"), "{text}");
        assert!(text.contains("tracer_lost_events_total 1"), "{text}");
    }

    /// The health metrics' names are a contract with dashboards: each counter with a metric is
    /// served under its name, with its help.
    #[test]
    fn health_metrics_keep_their_names() {
        let mut m = Metrics::new(1, false);
        let mut totals = Totals {
            events: 1,
            decode_errors: 2,
            destinations_evicted: 3,
            output_dropped: 4,
            ..Totals::default()
        };
        totals.kernel.skipped = 5;
        for (c, n) in [
            (tracer_common::Counter::Lost, 6),
            (tracer_common::Counter::Evicted, 7),
            (tracer_common::Counter::LostConnections, 8),
            (tracer_common::Counter::LateCloses, 9),
        ] {
            totals.kernel[c] = n;
        }
        m.health(&totals);
        let text = render(&m.registry());
        for line in [
            "tracer_events_total 1",
            "tracer_decode_errors_total 2",
            "tracer_evicted_destinations_total 3",
            "tracer_output_dropped_total 4",
            "tracer_kernel_skipped_total 5",
            "tracer_lost_events_total 6",
            "tracer_evicted_sockets_total 7",
            "tracer_lost_connections_total 8",
            "tracer_late_closes_total 9",
            "# HELP tracer_late_closes Connection closes among those skipped, reported when the socket was freed.",
            "# HELP tracer_lost_events Records the kernel dropped because the ring buffer was full.",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn metrics_addr_forms() {
        assert_eq!(parse_addr("9464"), Ok("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            parse_addr("0.0.0.0:9464"),
            Ok("0.0.0.0:9464".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:9464"), Ok("[::1]:9464".parse().unwrap()));
        assert_eq!(
            parse_addr("0.0.0.0"),
            Ok(format!("0.0.0.0:{DEFAULT_PORT}").parse().unwrap())
        );
        assert!(
            parse_addr("localhost:9464")
                .unwrap_err()
                .contains("IP:PORT")
        );
    }

    #[test]
    fn probes_answer_on_the_metrics_listener() {
        let health = Arc::new(Health::default());
        let pages = Pages::new(Arc::new(Registry::default()), health.clone());
        let get = |path: &str, _: &Health| {
            let req = Request::builder().uri(path).body(()).unwrap();
            let resp = pages.respond(&req);
            let body = String::from_utf8(
                resp.body()
                    .clone()
                    .into_inner()
                    .unwrap_or_default()
                    .to_vec(),
            )
            .unwrap();
            (resp.status().as_u16(), body)
        };
        assert_eq!(get("/healthz", &health), (200, "ok\n".into()));
        let (status, body) = get("/readyz", &health);
        assert_eq!(status, 503);
        assert!(body.contains("not attached"), "{body}");
        health.set_attached();
        health.checked(crate::analysis::clock::WallClock::now_mono_ns(), None);
        assert_eq!(get("/readyz", &health), (200, "ready\n".into()));
        assert_eq!(get("/nope", &health).0, 404);
    }
}
