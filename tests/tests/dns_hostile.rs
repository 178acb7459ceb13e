//! DNS as an attacker sends it (every packet on loopback inside the test's namespaces): forged
//! answers nobody asked for, a flood of them, and a resolver whose answers are as large as a
//! UDP answer can be. The tracer runs in a 256 MiB memory cgroup, as the DaemonSet gives it.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{Netns, Proc, Tracer, cgroup::MemoryCgroup, process::status_kib, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const DAEMONSET_MEMORY: u64 = 256 << 20;

fn attack(ns: &Netns, args: &[&str]) -> Proc {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/dns/attack.py");
    let mut argv = vec![script.to_str().unwrap()];
    argv.extend_from_slice(args);
    ns.spawn(Path::new("/usr/bin/python3"), &argv)
}

/// `count` refused connects from `ns` to 127.0.0.1:`port` (nothing listens there).
fn refusals(ns: &Netns, port: u16, count: usize) -> Proc {
    let code = format!(
        "import socket\nfor i in range({count}):\n  s=socket.socket()\n  try: s.connect(('127.0.0.1',{port}))\n  except OSError: pass\n  s.close()\nprint('done',flush=True)"
    );
    ns.spawn(Path::new("/usr/bin/python3"), &["-c", &code])
}

/// The tracer for the whole host (so that other namespaces are seen), in a 256 MiB memory
/// cgroup, with `extra` flags.
fn tracer_in(limit: &MemoryCgroup, extra: &[&str]) -> Tracer {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    let mut cmd = Tracer::command(&args);
    limit.join_at_exec(&mut cmd);
    Tracer::start_command(cmd)
}

/// The tracer's resident set, KiB (a panic if it is gone: OOM-killed in its cgroup?).
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or_else(|| panic!("the tracer (pid {pid}) is gone"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /healthz; how long the answer took, or None if none came within 1 s.
fn healthz(port: u16) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    (buf.starts_with(b"HTTP/1.") && t0.elapsed() < Duration::from_secs(1)).then(|| t0.elapsed())
}

fn failures_to(t: &Tracer, netns: u32, port: u16) -> usize {
    t.failures()
        .iter()
        .filter(|f| f["netns"] == netns && f["dst"]["port"] == port)
        .count()
}

#[test]
fn an_unsolicited_forged_answer_names_nothing() {
    let ns = Netns::new("dns-forge");
    for a in ["10.53.0.1/32", "10.53.0.2/32", "10.64.0.0/10"] {
        ns.exec(&["ip", "addr", "add", a, "dev", "lo"]);
    }
    let limit = MemoryCgroup::new("dns-forge", DAEMONSET_MEMORY);
    let netns = ns.inode.to_string();
    let tracer = tracer_in(&limit, &["--netns", &netns]);
    let victim = attack(&ns, &["victim", "10.53.0.2", "5300"]);
    victim.wait_line("listening", WAIT);
    // 64 answers for payments.bank.example, TTL 4294967295, to a socket that asked nothing.
    let forger = attack(&ns, &["forge", "10.53.0.1", "10.53.0.2", "5300", "0"]);
    let (status, _) = forger.wait(WAIT);
    assert!(status.success());
    // Another process's connection to one of the forged addresses.
    refusals_to(&ns, "10.64.0.1", 8080);
    let f = tracer
        .wait_failures(1, WAIT, |f| f["dst"]["port"] == 8080)
        .remove(0);
    assert_eq!(f["dst"]["ip"], "10.64.0.1", "{f}");
    assert!(
        f["dst"].get("name").is_none(),
        "a forged answer named it: {f}"
    );
    assert!(f["evidence"].get("dns").is_none(), "{f}");
    let stopped = tracer.finish();
    let s = &stopped.stats;
    assert!(s["dns_unsolicited"].as_u64().unwrap() >= 64, "{s}");
    assert_eq!(s["dns_responses"], 0, "{s}");
    assert_eq!(limit.oom_kills(), 0);
}

fn refusals_to(ns: &Netns, ip: &str, port: u16) {
    let code = format!(
        "import socket\ns=socket.socket()\ntry: s.connect(('{ip}',{port}))\nexcept OSError: pass"
    );
    ns.exec(&["python3", "-c", &code]);
}

#[test]
fn a_dns_flood_stalls_nothing_and_costs_no_failure() {
    let flooded = Netns::new("dns-flood");
    let other = Netns::new("dns-other");
    for a in ["10.53.0.1/32", "10.53.0.2/32", "10.53.0.3/32"] {
        flooded.exec(&["ip", "addr", "add", a, "dev", "lo"]);
    }
    let limit = MemoryCgroup::new("dns-flood", DAEMONSET_MEMORY);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tracer = tracer_in(&limit, &["--metrics-addr", &addr, "--stats-interval", "1"]);
    let victim = attack(&flooded, &["victim", "10.53.0.2", "5300"]);
    victim.wait_line("listening", WAIT);
    let server = attack(&flooded, &["serve", "10.53.0.3"]);
    server.wait_line("listening", WAIT);
    // Forged 503-byte answers as fast as Python sends them, and a storm of real queries
    // answered with maximal answers, for 10 s; failures in both namespaces meanwhile.
    let flood_start = Instant::now();
    let forger = attack(&flooded, &["forge", "10.53.0.1", "10.53.0.2", "5300", "10"]);
    let asker = attack(&flooded, &["ask", "10.53.0.3", "20000"]);
    std::thread::sleep(Duration::from_millis(500)); // the flood under way
    let (a, b) = (refusals(&flooded, 9, 500), refusals(&other, 9, 500));
    let mut slowest = Duration::ZERO;
    while flood_start.elapsed() < Duration::from_secs(8) {
        let took = healthz(port).unwrap_or_else(|| {
            panic!(
                "/healthz did not answer within 1 s during the flood:\n{}",
                tracer.stderr()
            )
        });
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(200));
    }
    a.wait_line("done", WAIT);
    b.wait_line("done", WAIT);
    let (fa, fb) = (flooded.inode, other.inode);
    wait_until("1,000 failures during the flood", WAIT, || {
        (failures_to(&tracer, fa, 9) == 500 && failures_to(&tracer, fb, 9) == 500).then_some(())
    });
    // Stats beats kept coming during the flood: one a second.
    let stats = tracer.records_of("stats");
    assert!(
        stats.len() >= 7,
        "{} stats records in 8 s of flood",
        stats.len()
    );
    // SIGTERM while it still floods: out within 2 s.
    assert!(
        flood_start.elapsed() < Duration::from_secs(10),
        "the flood is still on"
    );
    let pid = tracer.pid();
    let t0 = Instant::now();
    let stopped = tracer.finish();
    let exit = t0.elapsed();
    assert!(exit < Duration::from_secs(2), "SIGTERM took {exit:?}");
    let s: &Value = &stopped.stats;
    assert_eq!(s["lost"], 0, "{s}");
    assert_eq!(s["lost_connections"], 0, "{s}");
    assert!(s["dns_unsolicited"].as_u64().unwrap() > 10_000, "{s}");
    let (_, sent) = forger.wait(WAIT);
    eprintln!(
        "flood: {sent:?}; slowest /healthz {slowest:?}; SIGTERM {exit:?}; {} stats records; \
         dns_responses {} dns_lost {} dns_unsolicited {}; pid {pid}",
        stats.len(),
        s["dns_responses"],
        s["dns_lost"],
        s["dns_unsolicited"]
    );
    drop(asker);
    assert_eq!(limit.oom_kills(), 0);
}

#[test]
fn maximal_answers_stay_within_the_memory_budget_and_name_briefly() {
    let ns = Netns::new("dns-big");
    for a in ["10.53.0.3/32", "10.64.0.0/10"] {
        ns.exec(&["ip", "addr", "add", a, "dev", "lo"]);
    }
    let limit = MemoryCgroup::new("dns-big", DAEMONSET_MEMORY);
    let netns = ns.inode.to_string();
    let tracer = tracer_in(&limit, &["--netns", &netns]);
    let before = rss_kib(tracer.pid());
    let server = attack(&ns, &["serve", "10.53.0.3"]);
    server.wait_line("listening", WAIT);
    // 8,192 answers of 503 bytes: a CNAME chain of 4 long names and 18 addresses each.
    let asker = attack(&ns, &["ask", "10.53.0.3", "8192"]);
    let (_, lines) = asker.wait(Duration::from_secs(120));
    assert!(
        lines.iter().any(|l| l.starts_with("answered 8")),
        "{lines:?}"
    );
    wait_until("the tracer to take every answer", WAIT, || {
        let s = tracer.records_of("stats");
        s.last()
            .is_some_and(|s| s["dns_responses"].as_u64() >= Some(8000))
            .then_some(())
    });
    // The last answer's first address (answer 8191: 10.67.255.224), refused.
    refusals_to(&ns, "10.67.255.224", 8080);
    let f = tracer
        .wait_failures(1, WAIT, |f| f["dst"]["port"] == 8080)
        .remove(0);
    assert_eq!(f["dst"]["name"], "n8191.big.test", "{f}");
    assert_eq!(
        f["evidence"]["dns"]["ttl_s"], 86_400,
        "the TTL clamped to a day: {f}"
    );
    let line = serde_json::to_string(&f).unwrap();
    assert!(line.len() < 4096, "{} bytes: {line}", line.len());
    let rss = rss_kib(tracer.pid());
    assert!(rss < 64 * 1024, "RSS {before} KiB → {rss} KiB");
    eprintln!("RSS {before} KiB → {rss} KiB; record {} bytes", line.len());
    let stopped = tracer.finish();
    assert!(
        stopped.stats["dns_evicted"].as_u64().unwrap() > 0,
        "{}",
        stopped.stats
    );
    assert_eq!(limit.oom_kills(), 0);
}
