//! Records as OTLP `LogRecord`s, written in protobuf's wire format straight from the borrowed
//! record into a reused buffer: no allocation per record once the buffers have grown. Building
//! `opentelemetry_proto`'s owned messages instead would cost some thirty `String`s per record;
//! everything else (the resource, the scope, the metrics) is encoded by prost from those types,
//! and the unit tests decode what this module writes with them.
//!
//! Each record becomes one `ScopeLogs.log_records` entry (field 2, length-delimited). Entries
//! appended one after another are a valid run of that repeated field, so batches are joined by
//! concatenation and wrapped once per request (`Envelope::logs_request`).
use std::{fmt::Write as _, net::IpAddr};

use opentelemetry_proto::tonic::{common::v1::InstrumentationScope, resource::v1::Resource};
use prost::Message;

use crate::export::record::{Endpoint, Process, Record};

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// `SeverityNumber::Warn`, for failures.
pub const SEVERITY_WARN: u64 = 13;
/// `SeverityNumber::Info`, for the other records.
pub const SEVERITY_INFO: u64 = 9;

fn varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key(tag: u32, wire: u64, buf: &mut Vec<u8>) {
    varint((u64::from(tag) << 3) | wire, buf);
}

/// The encoded size of a length-delimited field `tag` (< 16) of `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn bytes(tag: u32, b: &[u8], buf: &mut Vec<u8>) {
    key(tag, LEN, buf);
    varint(b.len() as u64, buf);
    buf.extend_from_slice(b);
}

fn fixed64(tag: u32, v: u64, buf: &mut Vec<u8>) {
    key(tag, FIXED64, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn uint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    key(tag, VARINT, buf);
    varint(v, buf);
}

/// `LogRecord.attributes` (field 6): `KeyValue { key, value: AnyValue { string_value } }`.
fn str_attr(name: &str, value: &str, buf: &mut Vec<u8>) {
    let any = field_len(value.len());
    let kv = field_len(name.len()) + field_len(any);
    key(6, LEN, buf);
    varint(kv as u64, buf);
    bytes(1, name.as_bytes(), buf);
    key(2, LEN, buf);
    varint(any as u64, buf);
    bytes(1, value.as_bytes(), buf);
}

/// `LogRecord.attributes` (field 6): `KeyValue { key, value: AnyValue { int_value } }`.
fn int_attr(name: &str, value: u64, buf: &mut Vec<u8>) {
    let any = 1 + varint_len(value);
    let kv = field_len(name.len()) + field_len(any);
    key(6, LEN, buf);
    varint(kv as u64, buf);
    bytes(1, name.as_bytes(), buf);
    key(2, LEN, buf);
    varint(any as u64, buf);
    uint(3, value, buf);
}

/// Writes records as `ScopeLogs.log_records` entries. Holds scratch buffers only.
#[derive(Default)]
pub struct LogEncoder {
    /// The `LogRecord` being written (its length must precede it).
    record: Vec<u8>,
    /// An attribute value being formatted (an address).
    text: String,
}

impl LogEncoder {
    /// Appends `record`, whose JSON line is `line` (its newline is left out of the body), to
    /// `out` as one `ScopeLogs.log_records` entry; `observed_ns`: when it was written (Unix
    /// ns). Returns false, appending nothing, for a `stats` record (not exported as a log).
    pub fn append(
        &mut self,
        record: &Record<'_>,
        line: &[u8],
        observed_ns: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let buf = &mut self.record;
        buf.clear();
        let (kind, time, severity) = match record {
            Record::Failure(f) => ("failure", f.time, SEVERITY_WARN),
            Record::Warning(w) => ("warning", w.time, SEVERITY_WARN),
            Record::Connect(c) => ("connect", c.time, SEVERITY_INFO),
            Record::Summary(s) => ("summary", s.time, SEVERITY_INFO),
            Record::Stats(_) => return false,
        };
        fixed64(1, time.unix_nanos(), buf);
        uint(2, severity, buf);
        let text = if severity == SEVERITY_WARN {
            "WARN"
        } else {
            "INFO"
        };
        bytes(3, text.as_bytes(), buf);
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        key(5, LEN, buf);
        varint(field_len(body.len()) as u64, buf);
        bytes(1, body, buf);
        str_attr("tracer.record.type", kind, buf);
        let t = &mut self.text;
        match record {
            Record::Failure(f) | Record::Warning(f) => {
                str_attr("error.type", f.label, buf);
                str_attr("tracer.direction", f.direction, buf);
                connection(&f.src, &f.dst, t, buf);
                if let Some(p) = &f.process {
                    process(p, buf);
                }
                if let Some(w) = f.workload {
                    workload(w, t, buf);
                }
            }
            Record::Connect(c) => {
                connection(&c.src, &c.dst, t, buf);
                process(&c.process, buf);
                if let Some(w) = c.workload {
                    workload(w, t, buf);
                }
            }
            Record::Summary(s) => {
                str_attr("network.transport", "tcp", buf);
                network_type(s.dst.ip, buf);
                address(SERVER, &s.dst, t, buf);
                str_attr("tracer.summary.verdict", s.verdict, buf);
            }
            Record::Stats(_) => unreachable!("returned above"),
        }
        fixed64(11, observed_ns, buf);
        let event = match kind {
            "failure" => "tracer.failure",
            "warning" => "tracer.warning",
            "connect" => "tracer.connect",
            _ => "tracer.summary",
        };
        bytes(12, event.as_bytes(), buf);
        bytes(2, buf, out);
        true
    }
}

fn network_type(ip: IpAddr, buf: &mut Vec<u8>) {
    let t = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    str_attr("network.type", t, buf);
}

/// `server.*` = the destination, `client.*` = the source: outbound, this host's connect is the
/// client; inbound, the record's `dst` is the local port that refused (the server) and its
/// `src` the remote peer.
fn connection(src: &Endpoint, dst: &Endpoint, t: &mut String, buf: &mut Vec<u8>) {
    str_attr("network.transport", "tcp", buf);
    network_type(dst.ip, buf);
    address(SERVER, dst, t, buf);
    address(CLIENT, src, t, buf);
}

const SERVER: (&str, &str) = ("server.address", "server.port");
const CLIENT: (&str, &str) = ("client.address", "client.port");

/// `(address, port)` attributes of `e`, and the name DNS gave it (`dns.question.name`: the
/// name the client asked for; `server.address` stays the address it connected to).
fn address((addr, port): (&str, &str), e: &Endpoint, t: &mut String, buf: &mut Vec<u8>) {
    t.clear();
    let _ = write!(t, "{}", e.ip);
    str_attr(addr, t, buf);
    int_attr(port, u64::from(e.port), buf);
    if let Some(name) = e.name {
        str_attr("dns.question.name", name, buf);
    }
}

fn process(p: &Process<'_>, buf: &mut Vec<u8>) {
    int_attr("process.pid", u64::from(p.pid), buf);
    int_attr("thread.id", u64::from(p.tid), buf);
    str_attr("process.executable.name", &p.comm, buf);
    int_attr("process.real_user.id", u64::from(p.uid), buf);
}

/// The workload's fields under their OpenTelemetry names; its cgroup v2 path as
/// `process.linux.cgroup`, in /proc/PID/cgroup's form (`0::PATH`).
fn workload(w: &crate::enrich::workload::Workload, t: &mut String, buf: &mut Vec<u8>) {
    for (name, value) in w.fields() {
        if name == "cgroup" {
            t.clear();
            t.push_str("0::");
            t.push_str(value);
            str_attr("process.linux.cgroup", t, buf);
        } else {
            str_attr(name, value, buf);
        }
    }
}

/// What wraps the records of every request: the resource and the scope, encoded once.
#[derive(Clone, Debug)]
pub struct Envelope {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Envelope {
    pub fn new(resource: &Resource, scope: &InstrumentationScope) -> Self {
        Self {
            resource: resource.encode_to_vec(),
            scope: scope.encode_to_vec(),
        }
    }

    /// An `ExportLogsServiceRequest` with one `ResourceLogs` holding one `ScopeLogs` whose
    /// `log_records` are the entries in `records` (as `LogEncoder::append` writes them).
    pub fn logs_request(&self, records: &[u8]) -> Vec<u8> {
        let scope_logs = field_len(self.scope.len()) + records.len();
        let resource_logs = field_len(self.resource.len()) + field_len(scope_logs);
        let mut out = Vec::with_capacity(field_len(resource_logs));
        key(1, LEN, &mut out); // ExportLogsServiceRequest.resource_logs
        varint(resource_logs as u64, &mut out);
        bytes(1, &self.resource, &mut out); // ResourceLogs.resource
        key(2, LEN, &mut out); // ResourceLogs.scope_logs
        varint(scope_logs as u64, &mut out);
        bytes(1, &self.scope, &mut out); // ScopeLogs.scope
        out.extend_from_slice(records); // ScopeLogs.log_records
        out
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{AnyValue, KeyValue, any_value::Value},
        logs::v1::LogRecord,
    };

    use super::*;
    use crate::{
        analysis::clock::WallClock,
        analysis::outcome::{Label, Outcome},
        enrich::workload::{Workload, kubelet::PodNames, rules::Identity},
        export::names::ReasonNames,
        export::record::{Connect, Failure, Stats, SummaryOut},
    };

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn attrs(r: &LogRecord) -> Vec<(String, Value)> {
        r.attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
            .collect()
    }

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    /// One request with `records`, decoded with the official types.
    fn roundtrip(records: &[Record<'_>]) -> (ExportLogsServiceRequest, Vec<String>) {
        let mut enc = LogEncoder::default();
        let mut entries = Vec::new();
        let mut lines = Vec::new();
        for r in records {
            let mut line = serde_json::to_vec(r).unwrap();
            line.push(b'\n');
            if enc.append(r, &line, 42, &mut entries) {
                lines.push(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
            }
        }
        let resource = Resource {
            attributes: vec![kv("service.name", s("tracer"))],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: "tracer".into(),
            version: "1".into(),
            ..InstrumentationScope::default()
        };
        let body = Envelope::new(&resource, &scope).logs_request(&entries);
        let req = ExportLogsServiceRequest::decode(body.as_slice()).expect("a valid request");
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        assert_eq!(rl.resource.as_ref(), Some(&resource));
        assert_eq!(rl.scope_logs[0].scope.as_ref(), Some(&scope));
        (req, lines)
    }

    fn pod() -> Workload {
        Workload {
            cgroup: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope".into(),
            identity: Identity {
                container_id: Some("c1".into()),
                container_runtime: Some("containerd"),
                pod_uid: Some("1".into()),
                ..Identity::default()
            },
            pod: Some(PodNames {
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: Some("nginx".into()),
            }),
        }
    }

    #[test]
    fn an_outbound_failure_maps_to_semantic_convention_attributes() {
        let clock = WallClock::with_offset_ns(1_700_000_000_000_000_000);
        let mut o = Outcome::example("10.1.2.3:5432", Label::Refused);
        o.conn.src = "10.0.0.1:40000".parse().unwrap();
        o.conn.pid = 42;
        o.conn.tid = 43;
        o.conn.uid = 1000;
        o.conn.comm[..4].copy_from_slice(b"psql");
        let w = pod();
        let reasons = ReasonNames::default();
        let time = clock.timestamp(5_000);
        let f = Record::Failure(Failure::from_outcome(&o, time, &reasons, Some(&w)));
        let (req, lines) = roundtrip(&[f]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_005_000);
        assert_eq!(r.observed_time_unix_nano, 42);
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(r.event_name, "tracer.failure");
        assert_eq!(
            r.body.as_ref().unwrap().value,
            Some(Value::StringValue(lines[0].clone())),
            "the body is the JSON line, without its newline"
        );
        let want = vec![
            ("tracer.record.type", s("failure")),
            ("error.type", s("refused")),
            ("tracer.direction", s("outbound")),
            ("network.transport", s("tcp")),
            ("network.type", s("ipv4")),
            ("server.address", s("10.1.2.3")),
            ("server.port", Value::IntValue(5432)),
            ("client.address", s("10.0.0.1")),
            ("client.port", Value::IntValue(40000)),
            ("process.pid", Value::IntValue(42)),
            ("thread.id", Value::IntValue(43)),
            ("process.executable.name", s("psql")),
            ("process.real_user.id", Value::IntValue(1000)),
            (
                "process.linux.cgroup",
                s("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope"),
            ),
            ("container.id", s("c1")),
            ("container.runtime.name", s("containerd")),
            ("k8s.pod.uid", s("1")),
            ("k8s.namespace.name", s("shop")),
            ("k8s.pod.name", s("web-1")),
            ("k8s.container.name", s("nginx")),
        ];
        let want: Vec<(String, Value)> = want.into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(attrs(r), want);
    }

    #[test]
    fn a_named_destination_carries_the_name_the_client_asked_for() {
        let clock = WallClock::with_offset_ns(0);
        let mut o = Outcome::example("10.43.7.19:5432", Label::Refused);
        let reasons = ReasonNames::default();
        let plain = Record::Failure(Failure::from_outcome(
            &o,
            clock.timestamp(1),
            &reasons,
            None,
        ));
        let (req, _) = roundtrip(&[plain]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(attr(r, "dns.question.name"), None, "no answer, no name");
        o.evidence.dns = Some(std::sync::Arc::new(crate::analysis::outcome::Answer {
            name: "orders-db.prod.svc".into(),
            chain: Vec::new(),
            server: "10.96.0.10".parse().unwrap(),
            ttl_s: 30,
            at_ns: 0,
        }));
        let named = Record::Failure(Failure::from_outcome(
            &o,
            clock.timestamp(1),
            &reasons,
            None,
        ));
        let (req, _) = roundtrip(&[named]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(attr(r, "dns.question.name"), Some(&s("orders-db.prod.svc")));
        assert_eq!(
            attr(r, "server.address"),
            Some(&s("10.43.7.19")),
            "still the address"
        );
    }

    #[test]
    fn an_inbound_refusal_has_the_local_end_as_server_and_no_process() {
        let clock = WallClock::with_offset_ns(0);
        let mut o = Outcome::example("[fd00::1]:8080", Label::Refused);
        o.direction = crate::analysis::outcome::Direction::Inbound;
        o.conn.src = "[fd00::9]:51000".parse().unwrap();
        let reasons = ReasonNames::default();
        let w = pod();
        let f = Record::Failure(Failure::from_outcome(
            &o,
            clock.timestamp(1),
            &reasons,
            Some(&w),
        ));
        let (req, _) = roundtrip(&[f]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(attr(r, "tracer.direction"), Some(&s("inbound")));
        assert_eq!(attr(r, "network.type"), Some(&s("ipv6")));
        assert_eq!(attr(r, "server.address"), Some(&s("fd00::1")));
        assert_eq!(attr(r, "server.port"), Some(&Value::IntValue(8080)));
        assert_eq!(attr(r, "client.address"), Some(&s("fd00::9")));
        assert_eq!(attr(r, "client.port"), Some(&Value::IntValue(51000)));
        for absent in ["process.pid", "process.executable.name", "container.id"] {
            assert_eq!(attr(r, absent), None, "{absent}");
        }
    }

    #[test]
    fn connects_and_summaries_are_info_and_stats_are_not_exported() {
        let clock = WallClock::with_offset_ns(0);
        let mut o = Outcome::example("127.0.0.1:80", Label::Connected);
        o.conn.comm[..4].copy_from_slice(b"curl");
        let connect = Record::Connect(Connect::from_outcome(&o, clock.timestamp(7), None));
        let summary = Record::Summary(SummaryOut {
            time: clock.timestamp(9),
            window_s: 10.0,
            dst: "127.0.0.1:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            attempts: 1,
            connected: 1,
            cancelled: 0,
            failures: Default::default(),
            syn_retransmits: 0,
            connect_ms: None,
            top_processes: Vec::new(),
            first_failure: None,
            last_failure: None,
            failure_streak: 0,
            longest_streak: 0,
            at_risk: 0,
            verdict: "healthy",
            dns: None,
        });
        let stats = Record::Stats(Stats::default());
        let (req, lines) = roundtrip(&[connect, stats, summary]);
        let records = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records.len(), 2, "stats is not a log record");
        assert_eq!(lines.len(), 2);
        let (c, s_) = (&records[0], &records[1]);
        assert_eq!((c.severity_number, c.severity_text.as_str()), (9, "INFO"));
        assert_eq!(c.time_unix_nano, 7);
        assert_eq!(attr(c, "tracer.record.type"), Some(&s("connect")));
        assert_eq!(attr(c, "process.executable.name"), Some(&s("curl")));
        assert_eq!(attr(c, "error.type"), None);
        assert_eq!(s_.severity_number, 9);
        assert_eq!(s_.time_unix_nano, 9);
        assert_eq!(s_.event_name, "tracer.summary");
        assert_eq!(attr(s_, "tracer.record.type"), Some(&s("summary")));
        assert_eq!(attr(s_, "server.port"), Some(&Value::IntValue(80)));
        assert_eq!(attr(s_, "tracer.summary.verdict"), Some(&s("healthy")));
        assert_eq!(attr(s_, "client.address"), None);
    }

    #[test]
    fn a_hostile_process_name_stays_one_attribute() {
        let clock = WallClock::with_offset_ns(0);
        let mut o = Outcome::example("127.0.0.1:80", Label::Refused);
        o.conn.comm = *b"a\"b\n\xff\\\x01zzzzzzzzz";
        let reasons = ReasonNames::default();
        let f = Record::Failure(Failure::from_outcome(
            &o,
            clock.timestamp(1),
            &reasons,
            None,
        ));
        let (req, _) = roundtrip(&[f]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        let Some(Value::StringValue(name)) = attr(r, "process.executable.name") else {
            panic!("no name");
        };
        assert_eq!(
            Cow::Borrowed(name.as_str()),
            crate::export::names::comm(&o.conn.comm)
        );
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct One {
        #[prost(uint64, tag = "1")]
        v: u64,
    }

    #[test]
    fn varints_of_every_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            uint(1, v, &mut buf);
            assert_eq!(buf.len(), 1 + varint_len(v), "{v}");
            assert_eq!(One::decode(buf.as_slice()).unwrap().v, v);
        }
    }
}
