//! Per-destination summaries and the output sinks, end to end on the real kernel.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    process::field,
    scenario::{client_run, http_get, sport_of, table},
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

/// A log shipper's TCP or Unix socket input: accepts one connection (then stops listening) and
/// collects the NDJSON lines it receives until it is closed.
struct Collector {
    lines: Arc<Mutex<Vec<Value>>>,
    conn: Arc<Mutex<Option<Box<dyn Shut>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A connection the collector can end.
trait Shut: Send {
    fn shut(&self);
}
impl Shut for TcpStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}
impl Shut for UnixStream {
    fn shut(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Collector {
    fn start(listener: TcpListener) -> Self {
        Self::start_with(move || {
            let (stream, _) = listener.accept().ok()?;
            let shut: Box<dyn Shut> = Box::new(stream.try_clone().unwrap());
            Some((Box::new(stream) as Box<dyn Read + Send>, shut))
        })
    }

    fn start_unix(listener: UnixListener) -> Self {
        Self::start_with(move || {
            let (stream, _) = listener.accept().ok()?;
            let shut: Box<dyn Shut> = Box::new(stream.try_clone().unwrap());
            Some((Box::new(stream) as Box<dyn Read + Send>, shut))
        })
    }

    /// `accept` waits for the one connection (and drops the listener).
    fn start_with(
        accept: impl FnOnce() -> Option<(Box<dyn Read + Send>, Box<dyn Shut>)> + Send + 'static,
    ) -> Self {
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let conn: Arc<Mutex<Option<Box<dyn Shut>>>> = Arc::default();
        let (sink, slot) = (lines.clone(), conn.clone());
        let thread = std::thread::spawn(move || {
            let Some((stream, shut)) = accept() else {
                return;
            };
            *slot.lock().unwrap() = Some(shut);
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
            c.shut();
        }
        self.thread.take().unwrap().join().unwrap();
    }

    /// Every line, once the tracer has closed the connection.
    fn received(mut self) -> Vec<Value> {
        let thread = self.thread.take().unwrap();
        wait_until("the tracer to close the connection", WAIT, || {
            thread.is_finished().then_some(())
        });
        thread.join().unwrap();
        self.lines.lock().unwrap().clone()
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

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory of this test's own, removed at the end.
fn scratch_dir(tag: &str) -> (PathBuf, Cleanup) {
    let dir = std::env::temp_dir().join(format!("tt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (dir.clone(), Cleanup(dir))
}

/// The JSON lines of a file (each must parse).
fn read_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l:?}"))
        })
        .collect()
}

#[test]
fn socket_sinks_deliver_the_final_summaries_and_stats() {
    let ns = Netns::new("sockfinal");
    let (dir, _cleanup) = scratch_dir("sockfinal");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let unix_path = dir.join("shipper.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();
    let (over_tcp, over_unix) = (Collector::start(tcp), Collector::start_unix(unix));
    // One summary window for the whole run: it closes at exit.
    let tracer = Tracer::start(
        &ns,
        &[
            "--summary-interval",
            "3600",
            "--output",
            &format!("tcp:{tcp_addr}"),
            "--output",
            &format!("unix:{}", unix_path.display()),
            "--output",
            "-",
        ],
    );
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "5"],
        WAIT,
    );
    tracer.wait_failures(5, WAIT, |_| true);
    let records = tracer.stop();
    assert_eq!(
        records.iter().filter(|r| r["type"] == "summary").count(),
        1,
        "the window's summary, at exit: {records:#?}"
    );
    assert_eq!(records.last().unwrap()["output_dropped"], 0);
    for (name, c) in [("tcp", over_tcp), ("unix", over_unix)] {
        let got = c.received();
        assert_eq!(
            got.len(),
            records.len(),
            "{name}: every line stdout got, the final summary and stats included"
        );
        assert_eq!(got, records, "{name}: the same lines in the same order");
    }
}

/// The number in the exit's `output TARGET: N lines not delivered at exit` line.
fn undelivered_at_exit(stderr: &str, target: &str) -> usize {
    let prefix = format!("output {target}: ");
    stderr
        .lines()
        .find_map(|l| {
            let (n, _) = l
                .split_once(&prefix)?
                .1
                .split_once(" lines not delivered at exit")?;
            n.parse().ok()
        })
        .unwrap_or_else(|| panic!("no count of lines undelivered to {target}: {stderr}"))
}

#[test]
fn a_stalled_peer_costs_counted_lines_not_the_exit() {
    let ns = Netns::new("sockstall");
    let (dir, _cleanup) = scratch_dir("sockstall");
    let path = dir.join("shipper.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // Accepts, and reads nothing until the tracer is gone.
    let peer = std::thread::spawn(move || listener.accept().unwrap().0);
    let target = format!("unix:{}", path.display());
    let tracer = Tracer::start(&ns, &["--output", &target, "--output", "-"]);
    // Far more than a Unix socket's buffer holds (about 200 KiB).
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "1000"],
        WAIT,
    );
    tracer.wait_failures(1000, WAIT, |_| true);
    let t0 = Instant::now();
    let (records, stderr) = tracer.stop_with_log();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM to exit took {took:?}"
    );
    let mut got = String::new();
    let mut conn = peer.join().unwrap();
    conn.read_to_string(&mut got).unwrap();
    // Whole lines only: the one cut at the deadline is among the undelivered.
    let whole: Vec<Value> = got
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let undelivered = undelivered_at_exit(&stderr, &target);
    assert!(undelivered > 0, "the peer took everything: not stalled");
    assert_eq!(
        whole.len() + undelivered,
        records.len(),
        "delivered + counted = written"
    );
    assert_eq!(whole[..], records[..whole.len()], "delivered in order");
}

/// A tmpfs of `size` mounted on a directory of this test's own; unmounted and removed on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(tag: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tt-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = SmallDisk { dir };
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&disk.dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", disk.dir.display());
        disk
    }

    /// Fills what is left with `filler`.
    fn fill(&self, filler: &Path) {
        let mut f = std::fs::File::create(filler).unwrap();
        let block = [b'x'; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(b"x").is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_full_disk_loses_no_line_uncounted_and_leaves_only_whole_lines() {
    let ns = Netns::new("fulldisk");
    let disk = SmallDisk::mount("fulldisk", "64k");
    let path = disk.dir.join("tracer.ndjson");
    let tracer = Tracer::start(&ns, &["--output", path.to_str().unwrap(), "--output", "-"]);
    wait_until("the first stats in the file", WAIT, || {
        (!read_lines(&path).is_empty()).then_some(())
    });
    let filler = disk.dir.join("filler");
    disk.fill(&filler);
    // About 150 KiB of failure lines into a full disk: the file's last page takes a part.
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "200"],
        WAIT,
    );
    tracer.wait_failures(200, WAIT, |_| true);
    wait_until("the write error on stderr", WAIT, || {
        tracer
            .stderr()
            .contains("No space left on device")
            .then_some(())
    });
    std::fs::remove_file(&filler).unwrap();
    tracer.signal(nix::sys::signal::Signal::SIGHUP);
    let again = format!("writing to {} again", path.display());
    wait_until("writing again", WAIT, || {
        tracer.stderr().contains(&again).then_some(())
    });
    let (_, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "3"],
        WAIT,
    );
    let after: BTreeSet<u64> = lines.iter().map(|l| sport_of(l)).collect();
    wait_until("the records after the disk had room again", WAIT, || {
        after.is_subset(&sports(&read_lines(&path))).then_some(())
    });
    let records = tracer.stop();
    let in_file = read_lines(&path); // every line parses: none cut, none glued
    let dropped = records.last().unwrap()["output_dropped"].as_u64().unwrap() as usize;
    assert!(
        dropped > 0,
        "the disk was full: {}",
        records.last().unwrap()
    );
    assert_eq!(
        in_file.len() + dropped,
        records.len(),
        "lines in the file + output_dropped = lines written to stdout"
    );
    assert_eq!(
        in_file.last(),
        records.last(),
        "the final stats in the file too"
    );
    schema::validate(&in_file);
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
        "--metrics-addr",
        "127.0.0.1:0",
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
    // Their health is the tracer's readiness: /readyz names both.
    let metrics = tracer.metrics_addr();
    let ready = ns.within(|| http_get(metrics, "/readyz"));
    let why = ready.expect_err("not ready while its outputs cannot deliver");
    assert!(
        why.contains("503") && why.contains("tcp:127.0.0.1:9") && why.contains("4318"),
        "/readyz names the outputs that cannot deliver: {why}"
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
