//! Per-destination summaries and the output sinks, end to end on the real kernel.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    process::field,
    scenario::{client_run, sport_of, table},
    schema, wait_until,
};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn one_window_summarizes_three_destinations_with_exact_counts() {
    let ns = Netns::new("summary");
    ns.nft(&table("tcp dport 49 drop"));
    // One window for the whole test: it closes when the tracer stops.
    let tracer = Tracer::start(&ns, &["--summary-interval", "3600"]);
    let server = ns.client(&["listen", "--addr", "127.0.0.1:0"]);
    let port = field(&server.wait_line("listening", WAIT), "port")
        .unwrap()
        .to_string();
    let healthy = format!("127.0.0.1:{port}");
    let (_, ok) = client_run(&ns, &["connect", "--addr", &healthy, "--count", "50"], WAIT);
    assert!(ok.iter().all(|l| l.starts_with("result=ok")), "{ok:?}");
    let (_, refused) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "7"],
        WAIT,
    );
    assert_eq!(refused.len(), 7);
    let (_, gave_up) = client_run(
        &ns,
        &[
            "connect",
            "--addr",
            "127.0.0.1:49",
            "--count",
            "2",
            "--give-up-ms",
            "1500",
        ],
        WAIT,
    );
    assert!(
        gave_up.iter().all(|l| l.starts_with("result=gave_up")),
        "{gave_up:?}"
    );
    tracer.wait_failures(9, WAIT, |_| true);
    drop(server);
    let records = tracer.stop();
    let summaries: Vec<&Value> = records.iter().filter(|r| r["type"] == "summary").collect();
    let by_port = |p: u64| -> &Value {
        summaries
            .iter()
            .find(|s| s["dst"]["port"] == p)
            .unwrap_or_else(|| panic!("no summary for port {p}: {summaries:#?}"))
    };
    assert_eq!(summaries.len(), 3, "{summaries:#?}");

    let s = by_port(47);
    assert_eq!(s["verdict"], "refusing", "{s}");
    assert_eq!(
        (s["attempts"].as_u64(), s["connected"].as_u64()),
        (Some(7), Some(0)),
        "{s}"
    );
    assert_eq!(s["failures"]["refused"], 7);
    assert_eq!(s["failure_streak"], 7);
    assert_eq!(s["connect_ms"], Value::Null);
    assert_eq!(s["top_processes"][0]["comm"], "tt-client");
    assert_eq!(s["top_processes"][0]["attempts"], 7);

    let s = by_port(49);
    assert_eq!(s["verdict"], "blackholed", "{s}");
    assert_eq!(s["attempts"], 2);
    assert_eq!(s["failures"]["syn_timeout"], 2);
    assert!(s["syn_retransmits"].as_u64().unwrap() >= 2, "{s}");

    let s = by_port(port.parse().unwrap());
    assert_eq!(s["verdict"], "healthy", "{s}");
    assert_eq!(
        (s["attempts"].as_u64(), s["connected"].as_u64()),
        (Some(50), Some(50)),
        "{s}"
    );
    assert_eq!(
        s["failures"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        0
    );
    let l = &s["connect_ms"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max && max < 1000.0, "{s}");
}

/// A log shipper's TCP input: accepts one connection (then stops listening) and collects
/// the NDJSON lines it receives until it is closed.
struct Collector {
    lines: Arc<Mutex<Vec<Value>>>,
    conn: Arc<Mutex<Option<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(listener: TcpListener) -> Self {
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let conn: Arc<Mutex<Option<TcpStream>>> = Arc::default();
        let (sink, slot) = (lines.clone(), conn.clone());
        let thread = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            drop(listener);
            *slot.lock().unwrap() = Some(stream.try_clone().unwrap());
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).expect("a JSON line"));
            }
        });
        Self {
            lines,
            conn,
            thread: Some(thread),
        }
    }

    fn failures(&self) -> BTreeSet<u64> {
        sports(&self.lines.lock().unwrap())
    }

    /// The shipper goes away: its connection closes and nothing listens on its port.
    fn close(mut self) {
        if let Some(c) = self.conn.lock().unwrap().take() {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.thread.take().unwrap().join().unwrap();
    }
}

fn sports(records: &[Value]) -> BTreeSet<u64> {
    records
        .iter()
        .filter(|r| r["type"] == "failure")
        .map(|r| r["src"]["port"].as_u64().unwrap())
        .collect()
}

#[test]
fn tcp_sink_survives_the_shipper_going_away_for_two_seconds() {
    let ns = Netns::new("tcpsink");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let first = Collector::start(listener);
    let tracer = Tracer::start(&ns, &["--output", &format!("tcp:{addr}"), "--output", "-"]);
    let refuse = || -> BTreeSet<u64> {
        let (_, lines) = client_run(
            &ns,
            &["connect", "--addr", "127.0.0.1:47", "--count", "3"],
            WAIT,
        );
        lines.iter().map(|l| sport_of(l)).collect()
    };
    let before = refuse();
    wait_until("the first records over TCP", WAIT, || {
        (first.failures() == before).then_some(())
    });
    first.close();
    let gap = std::time::Instant::now();
    let during = refuse();
    wait_until("2 s without a shipper", Duration::from_secs(5), || {
        (gap.elapsed() >= Duration::from_secs(2)).then_some(())
    });
    let second = Collector::start(TcpListener::bind(addr).expect("the shipper's port again"));
    let after = refuse();
    let want: BTreeSet<u64> = during.union(&after).copied().collect();
    wait_until("the records made during and after the gap", WAIT, || {
        (second.failures() == want).then_some(())
    });
    let records = tracer.stop();
    assert_eq!(
        sports(&records),
        before.union(&want).copied().collect(),
        "stdout has every failure"
    );
    let stats = records.last().unwrap();
    assert_eq!(
        stats["output_dropped"], 0,
        "nothing had to be dropped: {stats}"
    );
    schema::validate(&second.lines.lock().unwrap());
}

#[test]
fn file_sink_appends_and_reopens_on_sighup() {
    let ns = Netns::new("filesink");
    let dir = std::env::temp_dir().join(format!("tt-filesink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let path = dir.join("tracer.ndjson");
    std::fs::write(&path, "").unwrap();
    let tracer = Tracer::start(&ns, &["--output", path.to_str().unwrap(), "--output", "-"]);
    let read = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    wait_until("the first record in the file", WAIT, || {
        (sports(&read(&path)).len() == 1).then_some(())
    });
    // logrotate: move the file away, then SIGHUP.
    let rotated = dir.join("tracer.ndjson.1");
    std::fs::rename(&path, &rotated).unwrap();
    tracer.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("the tracer to reopen its file", WAIT, || {
        path.exists().then_some(())
    });
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    wait_until("the second record in the new file", WAIT, || {
        (sports(&read(&path)).len() == 1).then_some(())
    });
    let records = tracer.stop();
    assert_eq!(
        sports(&read(&rotated)).len(),
        1,
        "the rotated file keeps the first record only"
    );
    let in_files: BTreeSet<u64> = sports(&read(&rotated))
        .union(&sports(&read(&path)))
        .copied()
        .collect();
    assert_eq!(in_files, sports(&records));
    schema::validate(&read(&path));
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// With its sinks down (a TCP shipper and an OTLP Collector on closed ports of its own
/// namespace), the tracer keeps reconnecting: those are its own connects, never the host's
/// failures, and they enter no summary. A client's refusal in the same namespace is reported
/// all the same (the tracer sees that namespace).
#[test]
fn its_own_connections_are_not_the_hosts_failures() {
    let ns = Netns::new("own");
    let inode = ns.inode.to_string();
    let mut cmd = Tracer::command(&[
        "run",
        "--netns",
        &inode,
        "--output",
        "-",
        "--output",
        "tcp:127.0.0.1:9",
        "--otlp-endpoint",
        "http://127.0.0.1:4318",
        "--summary-interval",
        "3600",
    ]);
    ns.join_at_exec(&mut cmd);
    let tracer = Tracer::start_command(cmd);
    let ready = std::time::Instant::now();
    let (_, lines) = client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    let client = sport_of(&lines[0]);
    tracer.wait_failures(1, WAIT, |r| r["src"]["port"] == client);
    // The sink and the exporter retry with backoff (100 ms, doubling): 3 s see several of
    // each after the programs were attached.
    wait_until("3 s of reconnecting sinks", Duration::from_secs(5), || {
        (ready.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    let log = tracer.stderr();
    assert!(
        log.contains("output tcp:127.0.0.1:9: cannot connect") && log.contains("otlp logs"),
        "the sinks were down and said so: {log}"
    );
    let pid = tracer.pid();
    let records = tracer.stop();
    let own: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["process"]["pid"] == pid
                || [9, 4318].contains(&r["dst"]["port"].as_u64().unwrap_or(0))
        })
        .collect();
    assert!(own.is_empty(), "its own connects were reported: {own:#?}");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "failure" && r["src"]["port"] == client),
        "the client's refusal is reported"
    );
    let stats = records.iter().rev().find(|r| r["type"] == "stats").unwrap();
    assert_eq!(
        stats["evicted"], 0,
        "its own connects are not evictions: {stats}"
    );
}
