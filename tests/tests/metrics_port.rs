//! The metrics and health listener (`--metrics-addr`) under hostile connections (issue 25):
//! any pod can reach the DaemonSet's port, so a slow or idle client must cost it bounded memory,
//! bounded file descriptors and no CPU, and `/healthz` must keep answering.
//!
//! The tracer runs as the DaemonSet runs it, in a 256 MiB memory cgroup, watching only a test
//! namespace of its own (nothing there happens); it serves metrics on the host's loopback, where
//! the attacks come from: this test process, or a client running as uid 65534 (anyone).
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::{
    Netns, Proc, Tracer,
    cgroup::MemoryCgroup,
    client_bin,
    process::{cpu_time, status_kib},
    wait_until,
};

const MIB: u64 = 1 << 20;
/// The DaemonSet's memory limit.
const DAEMONSET_MEMORY: u64 = 256 * MIB;
/// How long a probe may take (the DaemonSet's probes time out after 1 s; this is looser).
const PROBE: Duration = Duration::from_secs(2);
/// uid and gid 65534 (`nobody`): an unprivileged attacker.
const NOBODY: u32 = 65534;

/// A tracer watching only `ns`, in a 256 MiB memory cgroup, at an open-file limit of `nofile`
/// if given; with the address it serves metrics at (127.0.0.1, a free port).
fn confined(ns: &Netns, memory: &MemoryCgroup, nofile: Option<u64>) -> (Tracer, SocketAddr) {
    let inode = ns.inode.to_string();
    let mut cmd = Tracer::command(&["run", "--netns", &inode, "--metrics-addr", "127.0.0.1:0"]);
    memory.join_at_exec(&mut cmd);
    if let Some(n) = nofile {
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2),
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                use nix::sys::resource::{Resource, setrlimit};
                setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(std::io::Error::from)
            });
        }
    }
    let tracer = Tracer::start_command(cmd);
    let addr = tracer.metrics_addr();
    (tracer, addr)
}

/// `GET /healthz` on a new connection: how long the answer took, or why there was none within
/// `PROBE`.
fn healthz(addr: SocketAddr) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, PROBE).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(PROBE)).unwrap();
    conn.set_write_timeout(Some(PROBE)).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: tracer\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(|e| format!("read after {:?}: {e} ({answer:?})", t0.elapsed()))?;
    let took = t0.elapsed();
    if !answer.starts_with("HTTP/1.1 200") || !answer.ends_with("\r\n\r\nok\n") {
        return Err(format!("not an ok: {answer:?}"));
    }
    if took > PROBE {
        return Err(format!("answered after {took:?}"));
    }
    Ok(took)
}

/// `/healthz` probes: when (seconds into the attack), and how long the answer took or why
/// there was none.
type Probes = Vec<(f64, Result<Duration, String>)>;

/// Probes that did not answer, with when (seconds into the attack).
fn failed(probes: &Probes) -> Vec<String> {
    probes
        .iter()
        .filter_map(|(at, r)| r.as_ref().err().map(|e| format!("at {at:.1} s: {e}")))
        .collect()
}

/// For 4 s: `/healthz` answers every probe, and the tracer uses under 5% of a core.
fn answers_while_idle(pid: u32, addr: SocketAddr) {
    let (cpu, probes) = watch(pid, addr, Duration::from_secs(4));
    eprintln!(
        "tracer CPU {:.1}% of a core; probes: {probes:?}",
        cpu * 100.0
    );
    assert!(
        failed(&probes).is_empty(),
        "/healthz did not answer: {:#?}",
        failed(&probes)
    );
    assert!(cpu < 0.05, "the tracer used {:.1}% of a core", cpu * 100.0);
}

/// The tracer's RSS in KiB, or a panic that says it is gone (OOM-killed in its cgroup) and how
/// far its RSS got (`peak`, KiB).
fn rss_kib(pid: u32, peak: u64) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or_else(|| {
        panic!(
            "the tracer (pid {pid}) is gone, OOM-killed in 256 MiB? Its RSS had reached {peak} KiB"
        )
    })
}

/// For `window`: a `/healthz` probe every 500 ms, and the tracer's CPU use over the window, as a
/// fraction of one core.
fn watch(pid: u32, addr: SocketAddr, window: Duration) -> (f64, Probes) {
    let (t0, cpu0) = (Instant::now(), cpu_time(pid));
    let mut probes = Vec::new();
    while t0.elapsed() < window {
        let at = Instant::now();
        probes.push((t0.elapsed().as_secs_f64(), healthz(addr)));
        std::thread::sleep(Duration::from_millis(500).saturating_sub(at.elapsed()));
    }
    let share = (cpu_time(pid) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    (share, probes)
}

/// A client as uid 65534 holding `count` idle connections to `addr`, once it has made them.
fn hold_idle(addr: SocketAddr, count: usize) -> Proc {
    let mut cmd = Command::new(client_bin());
    cmd.args([
        "hold",
        "--addr",
        &addr.to_string(),
        "--count",
        &count.to_string(),
    ])
    .uid(NOBODY)
    .gid(NOBODY);
    let holder = Proc::spawn(cmd);
    let line = holder.wait_line("held", Duration::from_secs(60));
    assert_eq!(
        line,
        format!("held ok={count} failed=0"),
        "every connect made"
    );
    holder
}

/// A `stats` counter of the final record.
fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// 500 connections each send a request head of 400 KB that never ends, 4 KiB per connection
/// every 100 ms (20 MB/s in all). Before: each connection's buffer grew to the head's size and
/// stayed, RSS 25 → 227 MB. Now a head is read into 16 KiB at most (431 past it) within 5 s,
/// at most 256 connections are kept, and the tracer stays under 64 MiB and answers `/healthz`.
#[test]
fn slow_oversized_request_heads_leave_memory_bounded_and_healthz_answering() {
    const CONNECTIONS: usize = 500;
    const HEAD: usize = 400_000;
    let ns = Netns::new("slowhead");
    let memory = MemoryCgroup::new("slowhead", DAEMONSET_MEMORY);
    let (tracer, addr) = confined(&ns, &memory, None);
    let pid = tracer.pid();
    let before = rss_kib(pid, 0);
    let mut conns: Vec<Option<(TcpStream, usize)>> = (0..CONNECTIONS)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            s.set_nonblocking(true).unwrap();
            let start = b"GET /metrics HTTP/1.1\r\nHost: tracer\r\nX-Padding: ";
            let sent = s.write(start).unwrap_or(0);
            Some((s, sent))
        })
        .collect();
    let chunk = vec![b'a'; 4096];
    let (mut peak, mut probes, mut closed) = (before, Vec::new(), 0);
    let t0 = Instant::now();
    let mut next_probe = t0;
    // 10 s to send the heads, then 3 s more holding what is still open.
    while t0.elapsed() < Duration::from_secs(13) {
        let round = Instant::now();
        for slot in conns.iter_mut() {
            let Some((s, sent)) = slot else { continue };
            if *sent >= HEAD {
                continue;
            }
            match s.write(&chunk[..chunk.len().min(HEAD - *sent)]) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    *slot = None;
                    closed += 1;
                }
            }
        }
        peak = peak.max(rss_kib(pid, peak));
        if Instant::now() >= next_probe {
            probes.push((t0.elapsed().as_secs_f64(), healthz(addr)));
            next_probe += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(round.elapsed()));
    }
    let open = conns.iter().filter(|c| c.is_some()).count();
    eprintln!(
        "RSS {before} KiB before, peak {peak} KiB during the attack; {closed} connections closed \
         by the tracer, {open} open; probes: {probes:?}"
    );
    assert!(
        failed(&probes).is_empty(),
        "/healthz did not answer: {:#?}",
        failed(&probes)
    );
    assert!(
        peak < 64 * 1024,
        "RSS peaked at {peak} KiB (from {before} KiB) under {CONNECTIONS} slow heads"
    );
    drop(conns);
    let stats = tracer.finish().stats;
    eprintln!("{stats}");
    let refused = counter(&stats, "metrics_listener_refused");
    let shed = counter(&stats, "metrics_listener_evicted")
        + refused
        + counter(&stats, "metrics_listener_timeouts");
    assert!(refused > 0, "heads past the bound answered 431: {stats}");
    assert!(
        shed >= CONNECTIONS as u64,
        "every connection shed and counted: {stats}"
    );
}

/// 1,100 idle connections from uid 65534 with the tracer at an open-file limit of 1,024 (what it
/// gets without the unit's `LimitNOFILE=`). Before: accept() failed with EMFILE and was retried at
/// once, 100% of a core, and `/healthz` got no answer. Now the connection cap (a quarter of the
/// limit, at most 256) closes the oldest connection for each new one past it, so the fds never run
/// out: `/healthz` answers and the tracer stays under 5% of a core.
#[test]
fn idle_connections_past_the_fd_limit_leave_healthz_answering_and_the_cpu_idle() {
    const CONNECTIONS: usize = 1100;
    let ns = Netns::new("idleconns");
    let memory = MemoryCgroup::new("idleconns", DAEMONSET_MEMORY);
    let (tracer, addr) = confined(&ns, &memory, Some(1024));
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", tracer.pid()))
            .unwrap()
            .count()
    };
    let idle_fds = fds();
    let holder = hold_idle(addr, CONNECTIONS);
    answers_while_idle(tracer.pid(), addr);
    // The connections it kept, idle, are closed by the head timeout (5 s) while still held.
    wait_until(
        "the idle connections to be closed",
        Duration::from_secs(10),
        || (fds() <= idle_fds + 2).then_some(()),
    );
    drop(holder);
    let stats = tracer.finish().stats;
    eprintln!("{stats}");
    assert!(
        counter(&stats, "metrics_listener_evicted") >= (CONNECTIONS - 256) as u64,
        "the connections past the cap were closed and counted: {stats}"
    );
    assert!(
        counter(&stats, "metrics_listener_timeouts") >= 200,
        "the idle ones it kept timed out: {stats}"
    );
}

/// accept() failing with EMFILE all the same (the limit lowered under the running tracer, so
/// that its connection cap is above what is left): it logs once, closes its oldest connection
/// to make room, lowers its cap and backs off instead of retrying at once. Before: 100% of a
/// core and no `/healthz` answer.
#[test]
fn emfile_at_accept_backs_off_and_makes_room() {
    let ns = Netns::new("emfile");
    let memory = MemoryCgroup::new("emfile", DAEMONSET_MEMORY);
    let (tracer, addr) = confined(&ns, &memory, None);
    let pid = tracer.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = (open + 40).to_string();
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit: {status}");
    // 40 accepted before the fds run out, the rest waiting in the accept queue (128 here, the
    // kernel's somaxconn), so that every connect completes also before the fix.
    let holder = hold_idle(addr, 150);
    answers_while_idle(pid, addr);
    drop(holder);
    let log = tracer.stderr();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("metrics listener: accept() failed"))
        .collect();
    assert!(
        !warnings.is_empty() && warnings.len() <= 3,
        "once per episode: {log}"
    );
    assert!(warnings[0].contains("Too many open files"), "{log}");
    let stats = tracer.finish().stats;
    eprintln!("{stats}");
    assert!(
        counter(&stats, "metrics_listener_accept_errors") >= 1,
        "{stats}"
    );
}
