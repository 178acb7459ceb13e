//! Real-kernel scenarios for connects that fail inside connect(), before any SYN (issue 12): no
//! route, `unreachable`/`prohibit`/`blackhole` routes, exhausted ephemeral ports, a cgroup BPF
//! program or Landlock denying the connect. The socket never reaches SYN_SENT (or is undone
//! before sending), so only the syscall hooks (`sys_enter_connect`/`sys_exit_connect`) can
//! report them, with `"phase":"connect_call"`. And the other side of it: a connect the socket
//! path reports (refused, timed out) is still one record, and a UDP connect is none.
//!
//! Every destination stays inside the test's namespace: the 10.x addresses have no route there,
//! or a route that rejects locally, so nothing is ever sent.
use std::{collections::HashMap, path::Path, time::Duration};

use serde_json::{Value, json};
use tracer_tests::{
    Netns, Proc, Tracer,
    cgroup::ConnectCgroup,
    client_bin,
    process::field,
    scenario::{assert_process, client_run, for_port, sport_of, table},
    tracer::Stopped,
};

const WAIT: Duration = Duration::from_secs(10);

fn for_dst(ip: &'static str, port: u64) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["dst"]["ip"] == ip && r["dst"]["port"] == port
}

fn phase(r: &Value) -> &Value {
    &r["evidence"]["phase"]
}

/// What every record of a failed connect() call carries.
fn assert_connect_call(r: &Value, ns: &Netns, ip: &str, port: u64, errno: &str) {
    assert_eq!(r["errno"], errno, "{r}");
    assert_eq!(phase(r), "connect_call", "{r}");
    assert_eq!(r["direction"], "outbound", "{r}");
    assert_eq!(r["dst"], json!({"ip": ip, "port": port}), "{r}");
    assert_eq!(r["netns"], ns.inode, "{r}");
}

/// A route failure: labelled `unreachable`, with the route lookup to run as the hint.
fn assert_route_failure(r: &Value, ns: &Netns, ip: &str, port: u64, errno: &str) {
    assert_eq!(r["label"], "unreachable", "{r}");
    assert_connect_call(r, ns, ip, port, errno);
    assert_eq!(
        r["evidence"]["syn_retransmits"], 0,
        "no SYN was ever sent: {r}"
    );
    let hint = r["hint"].as_str().unwrap_or_default();
    assert!(hint.contains(&format!("ip route get {ip}")), "{r}");
}

/// A connect to `addr` by the test client in `ns` whose connect() returns `errno`; its pid.
fn client_fails(ns: &Netns, args: &[&str], errno: &str) -> u32 {
    let (pid, lines) = client_run(ns, args, WAIT);
    assert_eq!(field(&lines[0], "result"), Some(errno), "{lines:?}");
    pid
}

/// The compatibility mode (`--classic-tracepoints`): each connect() call kept from its entry to
/// its exit, what kernels without `bpf_task_pt_regs` run. By default the exit reads a failed
/// call's arguments alone.
const ENTRY_TO_EXIT: &[&str] = &["--classic-tracepoints"];

#[test]
fn no_route_is_unreachable_from_the_connect_call() {
    no_route(&[]);
}

#[test]
fn no_route_is_unreachable_from_the_connect_call_kept_from_entry_to_exit() {
    no_route(ENTRY_TO_EXIT);
}

fn no_route(mode: &[&str]) {
    // A fresh namespace has only lo: nothing routes 10.1.2.3.
    let ns = Netns::new("noroute");
    let tracer = Tracer::start(&ns, mode);
    // The mode is the one asked for: the entry program only when calls are kept from entry.
    let log = tracer.startup_log();
    assert!(log.contains("sys_exit_connect"), "{log}");
    assert_eq!(log.contains("sys_enter_connect"), !mode.is_empty(), "{log}");
    let blocking = client_fails(
        &ns,
        &["connect", "--addr", "10.1.2.3:80", "--blocking"],
        "ENETUNREACH",
    );
    let nonblocking = client_fails(&ns, &["connect", "--addr", "10.1.2.3:81"], "ENETUNREACH");
    for (port, pid) in [(80, blocking), (81, nonblocking)] {
        let r = tracer
            .wait_failures(1, WAIT, for_dst("10.1.2.3", port))
            .remove(0);
        assert_route_failure(&r, &ns, "10.1.2.3", port, "ENETUNREACH");
        assert_process(&r, pid);
    }
    tracer.finish_with(2);
}

/// `--no-connect-calls` leaves the syscall tracepoints off: the connect without a route goes
/// unseen, the refusal after it (the socket path) is still reported.
#[test]
fn without_connect_calls_only_the_socket_path_reports() {
    let ns = Netns::new("nocalls");
    let tracer = Tracer::start(&ns, &["--no-connect-calls"]);
    assert!(
        // The six socket tracepoints, kfree_skb and the DNS capture (egress and ingress);
        // net_dev_queue only with --nat.
        tracer.startup_log().contains("attached 9 programs"),
        "{}",
        tracer.stderr()
    );
    client_fails(
        &ns,
        &["connect", "--addr", "10.1.2.3:80", "--blocking"],
        "ENETUNREACH",
    );
    client_fails(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--blocking"],
        "ECONNREFUSED",
    );
    tracer.wait_failures(1, WAIT, for_dst("127.0.0.1", 47));
    let Stopped { failures, .. } = tracer.finish_with(1);
    assert_eq!(failures[0]["label"], "refused", "{:?}", failures[0]);
}

#[test]
fn unreachable_prohibit_and_blackhole_routes() {
    let ns = Netns::new("routes");
    ns.exec(&["ip", "route", "add", "unreachable", "10.71.0.0/16"]);
    ns.exec(&["ip", "route", "add", "prohibit", "10.72.0.0/16"]);
    ns.exec(&["ip", "route", "add", "blackhole", "10.73.0.0/16"]);
    ns.exec(&["ip", "-6", "route", "add", "unreachable", "fd71::/16"]);
    let tracer = Tracer::start(&ns, &[]);
    let cases: [(&str, &str, &str); 4] = [
        ("10.71.0.1", "10.71.0.1:80", "EHOSTUNREACH"),
        ("10.72.0.1", "10.72.0.1:80", "EACCES"),
        ("10.73.0.1", "10.73.0.1:80", "EINVAL"),
        ("fd71::1", "[fd71::1]:80", "EHOSTUNREACH"),
    ];
    for (ip, addr, errno) in cases {
        let pid = client_fails(&ns, &["connect", "--addr", addr, "--blocking"], errno);
        let r = tracer
            .wait_failures(1, WAIT, move |r| r["dst"]["ip"] == ip)
            .remove(0);
        assert_route_failure(&r, &ns, ip, 80, errno);
        assert_process(&r, pid);
    }
    tracer.finish_with(4);
}

#[test]
fn exhausted_local_ports_are_no_local_port_not_cancelled() {
    exhausted_local_ports(&[]);
}

#[test]
fn exhausted_local_ports_are_no_local_port_kept_from_entry_to_exit() {
    exhausted_local_ports(ENTRY_TO_EXIT);
}

fn exhausted_local_ports(mode: &[&str]) {
    let ns = Netns::new("portexh");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    let tracer = Tracer::start(&ns, mode);
    // The listener's port is outside the range: a bound port is never an ephemeral one.
    let server = ns.client(&["listen", "--addr", "127.0.0.1:8080"]);
    server.wait_line("listening", WAIT);
    let held: Vec<Proc> = (0..2)
        .map(|_| ns.client(&["recv", "--addr", "127.0.0.1:8080"]))
        .collect();
    let mut sports: Vec<u64> = held
        .iter()
        .map(|c| sport_of(&c.wait_line("connected", WAIT)))
        .collect();
    sports.sort_unstable();
    assert_eq!(sports, [40000, 40001], "both ephemeral ports are taken");
    // The third connect to the same destination finds no free local port, blocking or not.
    let blocking = client_fails(
        &ns,
        &["connect", "--addr", "127.0.0.1:8080", "--blocking"],
        "EADDRNOTAVAIL",
    );
    let nonblocking = client_fails(
        &ns,
        &["connect", "--addr", "127.0.0.1:8080"],
        "EADDRNOTAVAIL",
    );
    let records = tracer.wait_failures(2, WAIT, for_port(8080));
    for pid in [blocking, nonblocking] {
        let r = records
            .iter()
            .find(|r| r["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no record for pid {pid}: {records:#?}"));
        assert_eq!(r["label"], "no_local_port", "{r}");
        assert_connect_call(r, &ns, "127.0.0.1", 8080, "EADDRNOTAVAIL");
        assert_eq!(
            r["evidence"]["local_port_range"],
            json!({"low": 40000, "high": 40001}),
            "{r}"
        );
        let hint = r["hint"].as_str().unwrap_or_default();
        assert!(hint.contains("ip_local_port_range"), "{r}");
        assert!(hint.to_lowercase().contains("time-wait"), "{r}");
        assert_process(r, pid);
    }
    let Stopped { stats, .. } = tracer.finish_with(2);
    assert_eq!(
        stats["cancelled"], 0,
        "an undone connect is not a cancel: {stats}"
    );
    drop((held, server));
}

/// A non-blocking connect by a program that is not the test client.
const PYTHON_NONBLOCKING: &str = r#"
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
r = s.connect_ex(("10.4.0.1", 80))
print("result=" + errno.errorcode.get(r, str(r)), flush=True)
"#;

#[test]
fn nonblocking_python_connect_without_route() {
    let ns = Netns::new("pynb");
    let tracer = Tracer::start(&ns, &[]);
    let python3 = Path::new("/usr/bin/python3");
    assert!(
        python3.is_file(),
        "this test runs /usr/bin/python3 (Debian's python3)"
    );
    let python = ns.spawn(python3, &["-c", PYTHON_NONBLOCKING]);
    let pid = python.pid();
    let (status, lines) = python.wait(WAIT);
    assert!(status.success(), "python3 failed: {status}");
    assert_eq!(
        lines.first().and_then(|l| field(l, "result")),
        Some("ENETUNREACH"),
        "{lines:?}"
    );
    let r = tracer
        .wait_failures(1, WAIT, for_dst("10.4.0.1", 80))
        .remove(0);
    assert_route_failure(&r, &ns, "10.4.0.1", 80, "ENETUNREACH");
    assert_eq!(r["process"]["pid"], pid, "{r}");
    assert_eq!(r["process"]["comm"], "python3", "{r}");
    tracer.finish_with(1);
}

#[test]
fn five_hundred_parallel_unroutable_connects_are_each_reported_once() {
    const PROCESSES: usize = 50;
    const EACH: usize = 10;
    let ns = Netns::new("burst-noroute");
    let tracer = Tracer::start(&ns, &[]);
    let each = EACH.to_string();
    let clients: Vec<Proc> = (0..PROCESSES)
        .map(|_| ns.client(&["connect", "--addr", "10.5.0.1:80", "--count", &each]))
        .collect();
    let mut pids = Vec::new();
    for c in clients {
        pids.push(c.pid());
        let (status, lines) = c.wait(Duration::from_secs(30));
        assert!(status.success(), "client failed: {status}");
        assert_eq!(lines.len(), EACH, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| field(l, "result") == Some("ENETUNREACH")),
            "{lines:?}"
        );
    }
    let total = PROCESSES * EACH;
    tracer.wait_failures(total, Duration::from_secs(20), for_dst("10.5.0.1", 80));
    let Stopped { failures, stats } = tracer.finish_with(total);
    let mut per_pid: HashMap<u64, usize> = HashMap::new();
    for r in &failures {
        assert_eq!(r["label"], "unreachable", "{r}");
        assert_eq!(r["errno"], "ENETUNREACH", "{r}");
        assert_eq!(phase(r), "connect_call", "{r}");
        assert_eq!(r["dst"], json!({"ip": "10.5.0.1", "port": 80}), "{r}");
        *per_pid
            .entry(r["process"]["pid"].as_u64().unwrap_or_default())
            .or_default() += 1;
    }
    let expected: HashMap<u64, usize> = pids.iter().map(|&p| (u64::from(p), EACH)).collect();
    assert_eq!(per_pid, expected, "{EACH} records for each client process");
    assert_eq!(stats["lost"], 0, "{stats}");
    assert_eq!(stats["decode_errors"], 0, "{stats}");
}

/// A blocking connect() returns how its SYN ended — refused, timed out, or an ICMP error — and
/// the socket path reports that: one record each, none from the call. For the ICMP error the
/// call's own exit sees a failure it cannot tell apart (EHOSTUNREACH is also a route failure
/// inside the call): userspace joins it to the CLOSE that already reported it.
#[test]
fn refused_timed_out_and_unreachable_blocking_connects_are_one_record_each() {
    one_record_each(&[]);
}

#[test]
fn blocking_connects_are_one_record_each_kept_from_entry_to_exit() {
    one_record_each(ENTRY_TO_EXIT);
}

fn one_record_each(mode: &[&str]) {
    let ns = Netns::new("onerecord");
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    if Path::new("/proc/sys/net/ipv4/tcp_syn_linear_timeouts").exists() {
        ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
    }
    ns.nft(&table(
        "tcp dport 48 drop\n    tcp dport 49 reject with icmpx type host-unreachable",
    ));
    let tracer = Tracer::start(&ns, mode);
    // Nothing listens on 47: a RST, with connect() still asleep in the syscall.
    let refused = client_fails(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--blocking"],
        "ECONNREFUSED",
    );
    // Every SYN to 48 is dropped: connect() returns ETIMEDOUT after the retransmission.
    let (timed_out, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:48", "--blocking"],
        Duration::from_secs(20),
    );
    assert_eq!(field(&lines[0], "result"), Some("ETIMEDOUT"), "{lines:?}");
    // Every SYN to 49 is answered with host-unreachable: connect() returns EHOSTUNREACH.
    let (unreachable, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:49", "--blocking"],
        Duration::from_secs(20),
    );
    assert_eq!(
        field(&lines[0], "result"),
        Some("EHOSTUNREACH"),
        "{lines:?}"
    );
    for port in [47, 48, 49] {
        tracer.wait_failures(1, WAIT, for_port(port));
    }
    let Stopped { failures, stats } = tracer.finish_with(3);
    // The syscall's view of these is not even counted: the socket path reports them.
    assert_eq!(stats["unclassified"], 0, "{stats}");
    for r in &failures {
        assert_ne!(
            phase(r),
            "connect_call",
            "the socket path reports these: {r}"
        );
    }
    let r = failures.iter().find(|r| for_port(47)(r)).unwrap();
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(r["errno"], "ECONNREFUSED", "{r}");
    assert_process(r, refused);
    let r = failures.iter().find(|r| for_port(48)(r)).unwrap();
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_eq!(r["errno"], "ETIMEDOUT", "{r}");
    assert_eq!(r["evidence"]["gave_up"], "kernel", "{r}");
    assert_eq!(r["evidence"]["syn_retransmits"], 1, "{r}");
    assert_process(r, timed_out);
    let r = failures.iter().find(|r| for_port(49)(r)).unwrap();
    assert_eq!(r["label"], "unreachable", "{r}");
    assert_eq!(r["errno"], "EHOSTUNREACH", "{r}");
    assert_eq!(r["evidence"]["icmp"]["code"], 1, "{r}");
    assert_process(r, unreachable);
}

#[test]
fn udp_connect_without_route_is_not_reported() {
    let ns = Netns::new("udp");
    let tracer = Tracer::start(&ns, &[]);
    client_fails(
        &ns,
        &["connect", "--addr", "10.99.0.1:53", "--udp"],
        "ENETUNREACH",
    );
    // A TCP marker after it: once its record is out, the UDP call's exit has been processed.
    client_fails(
        &ns,
        &["connect", "--addr", "10.98.0.1:80", "--blocking"],
        "ENETUNREACH",
    );
    tracer.wait_failures(1, WAIT, for_dst("10.98.0.1", 80));
    let Stopped { failures, .. } = tracer.finish();
    assert!(
        failures.iter().all(|r| r["dst"]["ip"] != "10.99.0.1"),
        "a UDP connect is not a TCP failure: {failures:#?}"
    );
    assert_eq!(failures.len(), 1, "only the marker: {failures:#?}");
}

#[test]
fn cgroup_bpf_denial_is_blocked_locally() {
    let ns = Netns::new("cgdeny");
    // Declared before the clients: dropped after them, then detached and removed.
    let cgroup = ConnectCgroup::deny("deny");
    let tracer = Tracer::start(&ns, &[]);
    // Without the program these would be refused by a RST (nothing listens on 47).
    for (ip, addr) in [("127.0.0.1", "127.0.0.1:47"), ("::1", "[::1]:47")] {
        let client = cgroup.spawn_in(
            &ns,
            &client_bin(),
            &["connect", "--addr", addr, "--blocking"],
        );
        let pid = client.pid();
        let (status, lines) = client.wait(WAIT);
        assert!(status.success(), "client failed: {status}");
        assert_eq!(field(&lines[0], "result"), Some("EPERM"), "{lines:?}");
        let r = tracer
            .wait_failures(1, WAIT, move |r| r["dst"]["ip"] == ip)
            .remove(0);
        assert_eq!(r["label"], "blocked_locally", "{r}");
        assert_connect_call(&r, &ns, ip, 47, "EPERM");
        assert_eq!(r["cgroup_id"], cgroup.id(), "the denying cgroup: {r}");
        assert!(
            r["hint"]
                .as_str()
                .unwrap_or_default()
                .contains("bpftool cgroup tree"),
            "{r}"
        );
        assert_process(&r, pid);
    }
    tracer.finish_with(2);
}

#[test]
fn landlock_denial_is_blocked_locally_not_a_prohibit_route() {
    // Landlock and a `prohibit` route both make connect() return EACCES: only the second
    // looked the route up.
    let ns = Netns::new("landlock");
    ns.exec(&["ip", "route", "add", "prohibit", "10.72.0.0/16"]);
    let tracer = Tracer::start(&ns, &[]);
    let denied = client_fails(
        &ns,
        &[
            "connect",
            "--addr",
            "127.0.0.1:47",
            "--blocking",
            "--landlock",
        ],
        "EACCES",
    );
    let prohibited = client_fails(
        &ns,
        &["connect", "--addr", "10.72.0.1:80", "--blocking"],
        "EACCES",
    );
    let r = tracer
        .wait_failures(1, WAIT, for_dst("127.0.0.1", 47))
        .remove(0);
    assert_eq!(r["label"], "blocked_locally", "{r}");
    assert_connect_call(&r, &ns, "127.0.0.1", 47, "EACCES");
    assert_process(&r, denied);
    let r = tracer
        .wait_failures(1, WAIT, for_dst("10.72.0.1", 80))
        .remove(0);
    assert_route_failure(&r, &ns, "10.72.0.1", 80, "EACCES");
    assert_process(&r, prohibited);
    tracer.finish_with(2);
}
