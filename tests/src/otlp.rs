//! A Collector's OTLP/HTTP receiver for the tests (a small HTTP/1.1 server): decodes what the
//! tracer POSTs to `/v1/logs` and `/v1/metrics` with the official protobuf definitions
//! (`opentelemetry-proto`), answers as told (status, `Retry-After`, partial success), and keeps
//! what it got.
use std::{
    collections::BTreeSet,
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

/// What the receiver got and how it answers; outlives each listening period.
#[derive(Default)]
pub struct State {
    /// The status it answers with (200 unless set).
    pub status: AtomicU16,
    /// Log records of the requests answered 200, with their resource's attributes.
    pub logs: Mutex<Vec<(Vec<KeyValue>, LogRecord)>>,
    /// Metrics requests answered 200.
    pub metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    /// (path, status) of every request answered.
    pub answered: Mutex<Vec<(String, u16)>>,
    /// Every request's Content-Type.
    pub content_types: Mutex<BTreeSet<String>>,
    /// The `Retry-After` of a non-200 answer (unset: `1` with a 503, none otherwise).
    pub retry_after: Mutex<Option<String>>,
    /// With a 200 to `/v1/logs`: a partial success rejecting one record, with this message.
    pub partial_success: Mutex<Option<String>>,
    /// `/v1/metrics` is answered with this status and plain-text body, whatever `status` says.
    pub metrics_error: Mutex<Option<(u16, String)>>,
    /// When each request to `/v1/logs` came.
    pub log_posts: Mutex<Vec<Instant>>,
}

impl State {
    pub fn failure_logs(&self) -> Vec<(Vec<KeyValue>, LogRecord)> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| str_attr(&r.attributes, "tracer.record.type") == Some("failure"))
            .cloned()
            .collect()
    }

    pub fn answered(&self, path: &str, status: u16) -> usize {
        self.answered
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, s)| p == path && *s == status)
            .count()
    }

    /// The latest exported value of `tracer_connect_failures` for `port` and `label`.
    pub fn failure_counter(&self, port: i64, label: &str) -> Option<i64> {
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
pub struct Receiver {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on `addr` (port 0: any) until `down`.
    pub fn start(addr: &str, state: Arc<State>) -> Self {
        Self::on(TcpListener::bind(addr).expect("the receiver's port"), state)
    }

    /// Serves on `listener` (e.g. one bound inside a test's network namespace).
    pub fn on(listener: TcpListener, state: Arc<State>) -> Self {
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
    pub fn down(mut self) {
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

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

pub fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

pub fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

/// A log record's body: the tracer's JSON record.
pub fn body(r: &LogRecord) -> serde_json::Value {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => serde_json::from_str(s).expect("the body is a JSON record"),
        other => panic!("the body is not a string: {other:?}"),
    }
}
