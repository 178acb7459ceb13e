//! OTLP export end to end: a receiver in this test process (a small HTTP/1.1 server on
//! 127.0.0.1) decodes what the tracer POSTs with the official protobuf definitions
//! (`opentelemetry-proto`) and checks attributes and counts; then the same through an outage.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse},
        metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    },
    common::v1::{KeyValue, any_value::Value},
    logs::v1::LogRecord,
    metrics::v1::{metric::Data, number_data_point},
};
use prost::Message;
use serde_json::Value as Json;
use tracer_tests::{
    Netns, Tracer,
    scenario::{client_run, sport_of},
    wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

/// What the receiver got and how it answers; outlives each listening period.
#[derive(Default)]
struct State {
    /// The status it answers with (200 unless set).
    status: AtomicU16,
    /// Log records of the requests answered 200, with their resource's attributes.
    logs: Mutex<Vec<(Vec<KeyValue>, LogRecord)>>,
    /// Metrics requests answered 200.
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    /// (path, status) of every request answered.
    answered: Mutex<Vec<(String, u16)>>,
    /// Every request's Content-Type.
    content_types: Mutex<BTreeSet<String>>,
    /// The `Retry-After` of a non-200 answer (unset: `1` with a 503, none otherwise).
    retry_after: Mutex<Option<String>>,
    /// With a 200 to `/v1/logs`: a partial success rejecting one record, with this message.
    partial_success: Mutex<Option<String>>,
    /// `/v1/metrics` is answered with this status and plain-text body, whatever `status` says.
    metrics_error: Mutex<Option<(u16, String)>>,
    /// When each request to `/v1/logs` came.
    log_posts: Mutex<Vec<Instant>>,
}

impl State {
    fn failure_logs(&self) -> Vec<(Vec<KeyValue>, LogRecord)> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| str_attr(&r.attributes, "tracer.record.type") == Some("failure"))
            .cloned()
            .collect()
    }

    fn answered(&self, path: &str, status: u16) -> usize {
        self.answered
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, s)| p == path && *s == status)
            .count()
    }

    /// The latest exported value of `tracer_connect_failures` for `port` and `label`.
    fn failure_counter(&self, port: i64, label: &str) -> Option<i64> {
        let metrics = self.metrics.lock().unwrap();
        let last = metrics.last()?;
        let m = last.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == "tracer_connect_failures")?;
        let Some(Data::Sum(sum)) = &m.data else {
            panic!("tracer_connect_failures is not a sum: {m:?}");
        };
        sum.data_points
            .iter()
            .find(|p| {
                int_attr(&p.attributes, "server.port") == Some(port)
                    && str_attr(&p.attributes, "error.type") == Some(label)
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(v)) => v,
                other => panic!("not an int: {other:?}"),
            })
    }
}

/// A listening period of the receiver.
struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr` (port 0: any) until `down`.
    fn start(addr: &str, state: Arc<State>) -> Self {
        let listener = TcpListener::bind(addr).expect("the receiver's port");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        conns2.lock().unwrap().push(stream.try_clone().unwrap());
                        let state = state.clone();
                        std::thread::spawn(move || serve(stream, &state));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    /// Stops listening and closes every connection: nothing answers on the port.
    fn down(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// HTTP/1.1 with keep-alive: requests with a Content-Length body, one after another.
fn serve(stream: TcpStream, state: &State) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        state.content_types.lock().unwrap().insert(content_type);
        if path == "/v1/logs" {
            state.log_posts.lock().unwrap().push(Instant::now());
        }
        let mut status = match state.status.load(Ordering::Relaxed) {
            0 => 200,
            s => s,
        };
        let mut answer_type = "application/x-protobuf";
        let metrics_error = state.metrics_error.lock().unwrap().clone();
        let answer: Vec<u8> =
            if let Some((s, text)) = metrics_error.filter(|_| path == "/v1/metrics") {
                status = s;
                answer_type = "text/plain; charset=utf-8";
                text.into_bytes()
            } else if status == 200 {
                match path.as_str() {
                    "/v1/logs" => {
                        let req = ExportLogsServiceRequest::decode(body.as_slice())
                            .expect("a valid ExportLogsServiceRequest");
                        let mut logs = state.logs.lock().unwrap();
                        for rl in req.resource_logs {
                            let resource = rl.resource.unwrap_or_default().attributes;
                            for sl in rl.scope_logs {
                                for r in sl.log_records {
                                    logs.push((resource.clone(), r));
                                }
                            }
                        }
                        ExportLogsServiceResponse {
                            partial_success: state.partial_success.lock().unwrap().clone().map(
                                |error_message| ExportLogsPartialSuccess {
                                    rejected_log_records: 1,
                                    error_message,
                                },
                            ),
                        }
                        .encode_to_vec()
                    }
                    "/v1/metrics" => {
                        let req = ExportMetricsServiceRequest::decode(body.as_slice())
                            .expect("a valid ExportMetricsServiceRequest");
                        state.metrics.lock().unwrap().push(req);
                        ExportMetricsServiceResponse::default().encode_to_vec()
                    }
                    other => panic!("POST to {other}"),
                }
            } else {
                Vec::new()
            };
        state.answered.lock().unwrap().push((path, status));
        let retry_after = match state.retry_after.lock().unwrap().clone() {
            Some(v) if status != 200 => Some(v),
            None if status == 503 => Some("1".to_string()),
            _ => None,
        };
        let extra = retry_after
            .map(|v| format!("Retry-After: {v}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {answer_type}\r\nContent-Length: {}\r\n{extra}\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer).is_err() {
            return;
        }
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

fn body(r: &LogRecord) -> Json {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => serde_json::from_str(s).expect("the body is a JSON record"),
        other => panic!("the body is not a string: {other:?}"),
    }
}

/// `n` refusals of connects to 127.0.0.1:47 in `ns`: the client's pid and source ports.
fn refuse(ns: &Netns, n: usize) -> (u32, BTreeSet<u64>) {
    let count = n.to_string();
    let (pid, lines) = client_run(
        ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", &count],
        WAIT,
    );
    assert_eq!(lines.len(), n, "{lines:?}");
    (pid, lines.iter().map(|l| sport_of(l)).collect())
}

fn sports(logs: &[(Vec<KeyValue>, LogRecord)]) -> BTreeSet<u64> {
    logs.iter()
        .map(|(_, r)| int_attr(&r.attributes, "client.port").expect("client.port") as u64)
        .collect()
}

#[test]
fn refusals_arrive_as_log_records_and_metrics_with_their_attributes() {
    const N: usize = 5;
    let ns = Netns::new("otlp");
    let state = Arc::new(State::default());
    let receiver = Receiver::start("127.0.0.1:0", state.clone());
    let endpoint = format!("http://{}", receiver.addr);
    let tracer = Tracer::start(
        &ns,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-metrics-interval",
            "1",
            "--summary-interval",
            "3600",
        ],
    );
    let (pid, ports) = refuse(&ns, N);
    wait_until("a log record per refusal", WAIT, || {
        (sports(&state.failure_logs()) == ports).then_some(())
    });
    wait_until("the exported failure counter at N", WAIT, || {
        (state.failure_counter(47, "refused") == Some(N as i64)).then_some(())
    });
    let records = tracer.stop();
    let stats = records.last().unwrap();
    assert_eq!(stats["failures"], N as u64, "{stats}");
    assert_eq!(stats["output_dropped"], 0, "{stats}");

    // Exactly one log record per failure record, which is its body.
    let logs = state.failure_logs();
    assert_eq!(logs.len(), N, "no duplicates");
    let printed: BTreeMap<u64, &Json> = records
        .iter()
        .filter(|r| r["type"] == "failure")
        .map(|r| (r["src"]["port"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(printed.len(), N);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    for (resource, r) in &logs {
        let a = &r.attributes;
        let sport = int_attr(a, "client.port").unwrap() as u64;
        let record = printed[&sport];
        assert_eq!(&body(r), record, "the body is the printed record");
        let time = tracer::analysis::clock::WallClock::with_offset_ns(0).rfc3339(r.time_unix_nano);
        assert_eq!(record["time"], time, "time_unix_nano is the record's time");
        assert!(r.observed_time_unix_nano >= r.time_unix_nano);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
        for (key, want) in [
            ("tracer.record.type", "failure"),
            ("error.type", "refused"),
            ("tracer.direction", "outbound"),
            ("network.transport", "tcp"),
            ("network.type", "ipv4"),
            ("server.address", "127.0.0.1"),
            ("client.address", "127.0.0.1"),
            ("process.executable.name", "tt-client"),
        ] {
            assert_eq!(str_attr(a, key), Some(want), "{key} in {a:?}");
        }
        assert_eq!(int_attr(a, "server.port"), Some(47));
        assert_eq!(int_attr(a, "process.pid"), Some(i64::from(pid)));
        assert_eq!(str_attr(resource, "service.name"), Some("tracer"));
        assert_eq!(str_attr(resource, "host.name"), Some(host));
        assert_eq!(
            str_attr(resource, "service.version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
    // The final export at exit has the final values too.
    assert_eq!(state.failure_counter(47, "refused"), Some(N as i64));
    assert_eq!(
        *state.content_types.lock().unwrap(),
        BTreeSet::from(["application/x-protobuf".to_string()])
    );
    drop(receiver);
}

#[test]
fn an_outage_loses_no_record_uncounted() {
    let ns = Netns::new("otlp-out");
    let state = Arc::new(State::default());
    let first = Receiver::start("127.0.0.1:0", state.clone());
    let addr = first.addr;
    let tracer = Tracer::start(
        &ns,
        &[
            "--otlp-endpoint",
            &format!("http://{addr}"),
            "--summary-interval",
            "3600",
        ],
    );
    let (_, before) = refuse(&ns, 3);
    wait_until("the first records", WAIT, || {
        (sports(&state.failure_logs()) == before).then_some(())
    });

    // Nothing listens for 2 s.
    first.down();
    let gap = Instant::now();
    let (_, during) = refuse(&ns, 3);
    wait_until("2 s without a receiver", Duration::from_secs(5), || {
        (gap.elapsed() >= Duration::from_secs(2)).then_some(())
    });

    // Then it answers 503 (Retry-After: 1) to a few exports.
    state.status.store(503, Ordering::Relaxed);
    let second = Receiver::start(&addr.to_string(), state.clone());
    let (_, after) = refuse(&ns, 3);
    wait_until("two exports answered 503", WAIT, || {
        (state.answered("/v1/logs", 503) >= 2).then_some(())
    });
    assert_eq!(
        sports(&state.failure_logs()),
        before,
        "nothing accepted meanwhile"
    );

    // Then it accepts.
    state.status.store(200, Ordering::Relaxed);
    let all: BTreeSet<u64> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .copied()
        .collect();
    wait_until("every record delivered", WAIT, || {
        (sports(&state.failure_logs()) == all).then_some(())
    });
    let stopped = tracer.finish_with(9);
    let delivered = state.failure_logs().len() as u64;
    let dropped = stopped.stats["output_dropped"].as_u64().unwrap();
    let produced = stopped.stats["failures"].as_u64().unwrap();
    assert_eq!(
        delivered + dropped,
        produced,
        "delivered + output_dropped = failures: {}",
        stopped.stats
    );
    assert_eq!((delivered, dropped), (9, 0), "the queue held them all");
    drop(second);
}

/// The Collector's text (a partial success' message, an error body) with a newline, a carriage
/// return and terminal escapes in it: each warning about it is one stderr line, escaped; no
/// line of stderr is the forged `tracer: error: …` it carries.
#[test]
fn the_collectors_text_cannot_forge_a_log_line() {
    const FORGED: &str = "tracer: error: forged by the collector";
    let ns = Netns::new("otlp-esc");
    let state = Arc::new(State::default());
    *state.partial_success.lock().unwrap() =
        Some(format!("one record too old\n{FORGED}\r\u{1b}[2K\u{1b}[31m"));
    *state.metrics_error.lock().unwrap() =
        Some((400, format!("bad metrics\r\n{FORGED} (metrics)\n")));
    let receiver = Receiver::start("127.0.0.1:0", state.clone());
    let tracer = Tracer::start(
        &ns,
        &[
            "--otlp-endpoint",
            &format!("http://{}", receiver.addr),
            "--otlp-metrics-interval",
            "1",
            "--summary-interval",
            "3600",
        ],
    );
    refuse(&ns, 1);
    let log = wait_until("both warnings on stderr", WAIT, || {
        let log = tracer.stderr();
        (log.contains("partial success") && log.contains("bad metrics")).then_some(log)
    });
    let stopped = tracer.finish_with(1);
    // Each request had one record rejected (the failure's; at exit the summary's).
    assert!(
        stopped.stats["output_dropped"].as_u64() >= Some(1),
        "{}",
        stopped.stats
    );
    for line in log.lines() {
        assert!(
            line.starts_with("tracer: "),
            "a line not of the tracer's:\n{log}"
        );
        assert!(!line.starts_with(FORGED), "a forged line:\n{log}");
        assert!(
            !line.contains(['\r', '\u{1b}']),
            "a raw control character: {line:?}"
        );
    }
    let partial = log.lines().find(|l| l.contains("partial success")).unwrap();
    assert!(
        partial.starts_with("tracer: warn: otlp logs to "),
        "{partial}"
    );
    assert!(
        partial.contains(&format!(
            "one record too old\\n{FORGED}\\r\\u{{1b}}[2K\\u{{1b}}[31m"
        )),
        "escaped in place: {partial}"
    );
    let metrics = log.lines().find(|l| l.contains("bad metrics")).unwrap();
    assert!(
        metrics.contains(&format!("bad metrics\\r\\n{FORGED} (metrics)")),
        "{metrics}"
    );
    drop(receiver);
}

/// The POSTs to `/v1/logs` in [`from`, `from + len`).
fn posts_within(state: &State, from: Instant, len: Duration) -> usize {
    state
        .log_posts
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t >= from && **t < from + len)
        .count()
}

/// A Collector that answers `429` with `Retry-After: 0`, then with an HTTP date long past, for
/// 3 s each: every wait is at least the backoff's 100 ms floor (jittered, the ceiling doubling
/// from 200 ms to 5 s), so one export is sent at most 1 + 3 s / 100 ms = 31 times in 3 s (about
/// seven by the schedule's means: 150, 250, 450, 850, 1,650 ms). Then it accepts: the record
/// is delivered, nothing dropped.
#[test]
fn retry_after_zero_or_a_date_past_cannot_make_the_exporter_spin() {
    const WINDOW: Duration = Duration::from_secs(3);
    const BOUND: usize = 31;
    let ns = Netns::new("otlp-429");
    let state = Arc::new(State::default());
    state.status.store(429, Ordering::Relaxed);
    *state.retry_after.lock().unwrap() = Some("0".into());
    let receiver = Receiver::start("127.0.0.1:0", state.clone());
    let tracer = Tracer::start(
        &ns,
        &[
            "--otlp-endpoint",
            &format!("http://{}", receiver.addr),
            "--otlp-metrics-interval",
            "0",
            "--summary-interval",
            "3600",
        ],
    );
    let (_, ports) = refuse(&ns, 1);
    let mut counts = Vec::new();
    for retry_after in ["0", "Thu, 01 Jan 1970 00:00:00 GMT"] {
        *state.retry_after.lock().unwrap() = Some(retry_after.into());
        let from = wait_until("a POST answered 429", WAIT, || {
            state.log_posts.lock().unwrap().last().copied()
        });
        wait_until("3 s of 429s", WINDOW * 2, || {
            (from.elapsed() >= WINDOW).then_some(())
        });
        let n = posts_within(&state, from, WINDOW);
        assert!(
            (1..=BOUND).contains(&n),
            "Retry-After: {retry_after}: {n} POSTs in {WINDOW:?}, at most {BOUND}"
        );
        counts.push(n);
    }
    state.status.store(200, Ordering::Relaxed);
    wait_until("the record delivered", WAIT, || {
        (sports(&state.failure_logs()) == ports).then_some(())
    });
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.stats["output_dropped"], 0, "{}", stopped.stats);
    eprintln!(
        "POSTs in 3 s: Retry-After: 0 → {}, a date past → {}",
        counts[0], counts[1]
    );
    drop(receiver);
}
