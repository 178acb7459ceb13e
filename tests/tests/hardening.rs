//! The guarantees an agent that runs for months as root must keep: clean exit on signals,
//! quiet exit when the reader goes away, degraded but working without BTF, a failing output
//! that does not stop it, hostile process names that cannot break a line, two tracers at once.
use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    process::field,
    require_kernel,
    scenario::{client_run, for_port, sport_of},
    tracer_bin, wait_until,
};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn sigterm_flushes_summaries_and_stats_within_two_seconds() {
    let ns = Netns::new("sigterm");
    let tracer = Tracer::start(&ns, &["--summary-interval", "3600"]);
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "3"],
        WAIT,
    );
    tracer.wait_failures(3, WAIT, for_port(47));
    let t0 = Instant::now();
    let records = tracer.stop(); // SIGTERM, exit 0, final stats last
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    let summary = records
        .iter()
        .find(|r| r["type"] == "summary")
        .expect("the open window's summary");
    assert_eq!(summary["failures"]["refused"], 3);
}

/// The readiness contract: the first record is a `stats` record, written once every program is
/// attached, so a refusal made the moment it appears is reported; with `--stats-interval 0` the
/// only other `stats` record is the final one.
#[test]
fn the_first_stats_record_means_ready() {
    let ns = Netns::new("ready");
    // Returns as soon as the first stats record has arrived, without any other wait.
    let tracer = Tracer::start(&ns, &["--stats-interval", "0"]);
    let first = tracer.records();
    assert_eq!(first[0]["type"], "stats", "the first record: {first:?}");
    assert_eq!(first[0]["failures"], 0);
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "1"],
        WAIT,
    );
    tracer.wait_failures(1, WAIT, for_port(47));
    let records = tracer.stop();
    let stats: Vec<&Value> = records.iter().filter(|r| r["type"] == "stats").collect();
    assert_eq!(stats.len(), 2, "ready and final: {stats:?}");
    assert_eq!(stats[1]["failures"], 1, "{:?}", stats[1]);
}

#[test]
fn a_closed_downstream_pipe_ends_the_tracer_quietly() {
    require_kernel();
    let ns = Netns::new("pipe");
    let script = format!(
        "{} run --netns {} --stats-interval 1 2>/dev/stderr | head -1 > /dev/null; echo \"status=${{PIPESTATUS[0]}}\"",
        tracer_bin().unwrap().display(),
        ns.inode
    );
    let t0 = Instant::now();
    let out = Command::new("bash")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("status=0"),
        "tracer exit status: {stdout}\n{stderr}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("tracer: error"),
        "quiet: {stderr}"
    );
}

#[test]
fn without_btf_it_says_what_degrades_and_still_reports() {
    let ns = Netns::new("nobtf");
    // --netns needs BTF, so this tracer watches the whole host; the test picks its own record.
    let tracer = Tracer::start_unfiltered(&["--btf", "/nonexistent/vmlinux"]);
    let log = tracer.startup_log();
    assert!(
        log.contains("/nonexistent/vmlinux") && log.contains("degraded"),
        "{log}"
    );
    let (_, lines) = client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    let sport = sport_of(&lines[0]);
    // (Without BTF the loopback device is not recognised, so this host's own RST also shows as
    // an inbound refusal: the outbound record is the one to check.)
    let mine = |r: &Value| r["src"]["port"] == sport && r["direction"] == "outbound";
    let r = tracer.wait_failures(1, WAIT, mine).remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(
        r["errno"], "ECONNREFUSED",
        "from the error report, joined by 4-tuple: {r}"
    );
    assert_eq!(r["netns"], Value::Null);
    tracer.stop();
}

#[test]
fn a_vanished_output_directory_is_reported_counted_and_survived() {
    let ns = Netns::new("vanish");
    let dir = std::env::temp_dir().join(format!("tt-vanish-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("out.ndjson");
    let tracer = Tracer::start(&ns, &["--output", file.to_str().unwrap(), "--output", "-"]);
    std::fs::remove_dir_all(&dir).unwrap();
    tracer.signal(Signal::SIGHUP); // logrotate's reopen, into a directory that is gone
    wait_until("the reopen error", WAIT, || {
        tracer.stderr().contains("out.ndjson").then_some(())
    });
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    tracer.wait_failures(1, WAIT, for_port(47));
    let log = tracer.stderr();
    assert!(
        log.contains("No such file or directory"),
        "the cause is named: {log}"
    );
    let stopped = tracer.finish_with(1);
    assert!(
        stopped.stats["output_dropped"].as_u64().unwrap() >= 1,
        "{}",
        stopped.stats
    );
}

#[test]
fn hostile_process_names_cannot_break_a_line() {
    let ns = Netns::new("hostile");
    let tracer = Tracer::start(&ns, &[]);
    // 15 bytes: quote, backslash, newline, tab, control bytes, invalid UTF-8, a brace.
    let name: &[u8] = b"\"\\\n\t\x01\x1b[2J\xff\xfe}{x";
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--comm-hex", &hex],
        WAIT,
    );
    let r = tracer.wait_failures(1, WAIT, for_port(47)).remove(0);
    let comm = r["process"]["comm"].as_str().unwrap().to_string();
    assert_eq!(
        comm,
        String::from_utf8_lossy(name),
        "bytes kept, invalid UTF-8 replaced"
    );
    // Every line the tracer printed parsed as one JSON object (Tracer checks each line) and
    // matches the schema (checked at stop).
    tracer.finish_with(1);
}

#[test]
fn two_tracers_at_once_both_see_every_failure() {
    let ns = Netns::new("two");
    let a = Tracer::start(&ns, &[]);
    let b = Tracer::start(&ns, &["--successes"]);
    let (_, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "20"],
        WAIT,
    );
    assert_eq!(lines.len(), 20);
    a.wait_failures(20, WAIT, for_port(47));
    b.wait_failures(20, WAIT, for_port(47));
    let (sa, sb) = (a.finish_with(20), b.finish_with(20));
    let ports = |f: &[Value]| -> Vec<u64> {
        let mut v: Vec<u64> = f
            .iter()
            .map(|r| r["src"]["port"].as_u64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(ports(&sa.failures), ports(&sb.failures));
    let mut client: Vec<u64> = lines
        .iter()
        .map(|l| field(l, "sport").unwrap().parse().unwrap())
        .collect();
    client.sort_unstable();
    assert_eq!(ports(&sa.failures), client);
}

/// A tracer started on its own; killed (by its pid) if still running when dropped.
struct Running(std::process::Child);
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The reader of stdout is alive but reads nothing (a stopped pager; a reader that died while
/// another process keeps the pipe open): the pipe fills, and neither the event loop (the file
/// output beside it gets every record) nor the exit waits for it.
#[test]
fn a_reader_that_stops_reading_holds_neither_the_loop_nor_the_exit() {
    let ns = Netns::new("stuckout");
    let dir = std::env::temp_dir().join(format!("tt-stuckout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let (file, log) = (dir.join("records.ndjson"), dir.join("stderr"));
    let (mut reader, writer) = std::io::pipe().unwrap();
    let netns = ns.inode.to_string();
    let mut cmd = Tracer::command(&[
        "run",
        "--netns",
        &netns,
        "--output",
        file.to_str().unwrap(),
        "--output",
        "-",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(writer)
        .stderr(std::fs::File::create(&log).unwrap());
    let mut tracer = Running(cmd.spawn().unwrap());
    drop(cmd); // its copy of the pipe's write end: the pipe ends when the tracer does
    let records = || -> Vec<Value> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until("the tracer to be ready", Duration::from_secs(30), || {
        (!records().is_empty()).then_some(())
    });
    // About 500 KiB of lines, for a pipe of 64 KiB.
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "700"],
        WAIT,
    );
    wait_until("every failure in the file", WAIT, || {
        (records().iter().filter(|r| r["type"] == "failure").count() == 700).then_some(())
    });
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.0.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = wait_until("the tracer to exit after SIGINT", WAIT, || {
        tracer.0.try_wait().unwrap()
    });
    let took = t0.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        took < Duration::from_secs(2),
        "SIGINT to exit took {took:?}"
    );
    let all = records();
    assert_eq!(
        all.last().unwrap()["type"],
        "stats",
        "the final stats in the file"
    );
    // What the pipe holds, whole lines, and what the tracer counted as undelivered.
    let mut piped = String::new();
    reader.read_to_string(&mut piped).unwrap();
    let whole = piped
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .count();
    let undelivered: usize = stderr
        .lines()
        .find_map(|l| {
            let (n, _) = l
                .split_once("output stdout: ")?
                .1
                .split_once(" lines not delivered at exit")?;
            n.parse().ok()
        })
        .unwrap_or_else(|| panic!("no count of undelivered stdout lines: {stderr}"));
    assert_eq!(
        whole + undelivered,
        all.len(),
        "delivered + counted = written"
    );
}

struct RemoveDir(std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
