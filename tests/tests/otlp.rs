//! OTLP export end to end: a receiver in this test process (`tracer_tests::otlp`, on
//! 127.0.0.1) decodes what the tracer POSTs with the official protobuf definitions
//! (`opentelemetry-proto`) and checks attributes and counts; then the same through an outage.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{common::v1::KeyValue, logs::v1::LogRecord};
use serde_json::Value as Json;
use tracer_tests::{
    Netns, Tracer,
    otlp::{Receiver, State, body, int_attr, str_attr},
    scenario::{client_run, sport_of},
    wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

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
