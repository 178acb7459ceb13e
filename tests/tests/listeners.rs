//! The listeners worker against real network namespaces (needs root: `ip netns add`, `setns`):
//! the owner of a listener in this namespace, in another one, in one known only by a process,
//! accept-queue overflows reconciled with `TcpExtListenOverflows`, and what happens without
//! CAP_SYS_ADMIN. Traffic stays on the loopback of the namespaces the tests create.
use std::{
    net::{IpAddr, Ipv4Addr, TcpListener},
    os::unix::fs::MetadataExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use tracer::enrich::listeners::{Listeners, PortListeners};
use tracer_tests::{netns::Netns, process::Proc};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

/// The port the SERVER script prints on its first line.
fn server_port(server: &Proc) -> u16 {
    let line = server.wait_line("", Duration::from_secs(10));
    line.trim().parse().expect("the server's port")
}

fn until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ns_inode(path: &str) -> u32 {
    let ino = std::fs::metadata(path).unwrap().ino();
    u32::try_from(ino).unwrap()
}

#[test]
fn own_namespace() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let netns = ns_inode("/proc/self/ns/net");
    let listeners = Listeners::start(None);
    assert_eq!(listeners.own_netns(), Some(netns));

    let found = answer_with_owner(&listeners, netns, port, "own namespace");
    let me = &found.listeners[0];
    assert_eq!(me.ip, LO);
    assert_eq!(me.port, port);
    assert_eq!(me.pid, Some(std::process::id()));
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(me.comm.as_deref(), Some(comm.trim_end()));

    let t = Instant::now();
    let nobody = listeners.on_port(netns, free, LO).expect("an answer");
    println!("own namespace: a cached answer in {:?}", t.elapsed());
    assert!(nobody.listeners.is_empty(), "{nobody:?}");
    assert_eq!(
        nobody.describe(free, LO),
        format!("nothing listens on port {free}")
    );
    assert_eq!(listeners.capability_note(), None);
    drop(l);
}

/// A listener with backlog 1 on 127.0.0.1 that never accepts (its port on the first line of
/// stdout), and three more listeners beside it.
const SERVER: &str = r#"
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
more = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    try:
        e = socket.socket(fam)
        e.bind((addr, 0))
        e.listen(16)
        more.append(e)
    except OSError:
        pass
print(s.getsockname()[1], flush=True)
time.sleep(120)
"#;

/// Eight non-blocking connects to 127.0.0.1:argv[1], held for 4 s.
const CLIENT: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
held = []
for _ in range(8):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(4)
"#;

/// `TcpExtListenOverflows` of the namespace of process `pid`.
fn listen_overflows(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/netstat")).unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

#[test]
fn other_namespace_and_overflow() {
    let ns = Netns::new("lst");
    let server = ns.spawn(Path::new("python3"), &["-c", SERVER]);
    let server_pid = server.pid();
    let port = server_port(&server);
    let netns = ns.inode;
    assert_eq!(netns, ns_inode(&format!("/proc/{server_pid}/ns/net")));

    let listeners = Listeners::start(Some(Duration::from_millis(200)));
    let found = answer_with_owner(&listeners, netns, port, "other namespace");
    let server_sock = found.listeners[0].clone();
    assert_eq!(server_sock.ip, LO);
    assert_eq!(server_sock.backlog, 1);
    assert_eq!(server_sock.pid, Some(server_pid));
    assert_eq!(server_sock.comm.as_deref(), Some("python3"));
    let elsewhere = listeners.on_port(netns, port, OTHER).expect("an answer");
    assert!(!elsewhere.dst_is_local);
    println!("refusal: {}", elsewhere.describe(port, OTHER));

    // The listener's first poll is its baseline: let two polls pass before the drops start.
    let polls = listeners.polls();
    until(Duration::from_secs(5), || {
        (listeners.polls() >= polls + 2).then_some(())
    })
    .expect("two polls");
    assert!(listeners.take_overflows().is_empty());

    let mut client = ns.spawn(Path::new("python3"), &["-c", CLIENT, &port.to_string()]);
    let mut total = 0u64;
    let mut changed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for o in listeners.take_overflows() {
            assert_eq!(o.netns, netns, "{o:?}");
            assert_eq!(o.listener.inode, server_sock.inode, "{o:?}");
            assert_eq!(o.listener.pid, Some(server_pid));
            assert!(o.dropped > 0);
            total += o.dropped;
            changed = Instant::now();
        }
        let client_done = client.exited();
        if client_done && total > 0 && changed.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(Instant::now() < deadline, "drops still growing: {total}");
    }
    let kernel = listen_overflows(server_pid);
    println!("drops reported {total}, TcpExtListenOverflows {kernel}");
    assert_eq!(total, kernel);
}

#[test]
fn without_cap_sys_admin_other_namespaces_are_unknown() {
    let ns = Netns::new("lst-cap");
    let netns = ns.inode;
    let own = ns_inode("/proc/self/ns/net");
    // Capabilities are per thread, and the worker inherits its starter's.
    std::thread::spawn(move || {
        use caps::{CapSet, Capability};
        caps::drop(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap();
        let listeners = Listeners::start(None);
        assert_eq!(listeners.on_port(netns, 80, LO), None);
        let note = listeners.capability_note().expect("a note");
        assert!(note.contains("CAP_SYS_ADMIN"), "{note}");
        // Not retried: answered at once; the own namespace still answers.
        let t = Instant::now();
        assert_eq!(listeners.on_port(netns, 80, LO), None);
        assert!(t.elapsed() < Listeners::ANSWER_TIMEOUT);
        assert!(listeners.on_port(own, 1, LO).is_some());
    })
    .join()
    .unwrap();
}

#[test]
fn namespace_known_only_by_a_process() {
    // `unshare -n` execs the server in a new network namespace with no bind mount.
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "python3", "-c", SERVER]);
    let server = Proc::spawn(cmd);
    let server_pid = server.pid();
    let port = server_port(&server);
    let netns = ns_inode(&format!("/proc/{server_pid}/ns/net"));
    assert_ne!(netns, ns_inode("/proc/self/ns/net"));

    let listeners = Listeners::start(None);
    let found = until(Duration::from_secs(10), || {
        listeners
            .on_port(netns, port, LO)
            .filter(|a| a.listeners.iter().any(|l| l.pid.is_some()))
    })
    .expect("an answer with the owner");
    assert_eq!(found.listeners.len(), 1, "{found:?}");
    assert_eq!(found.listeners[0].pid, Some(server_pid));
    // The process gone, so is its namespace: unknown, not an error.
    // (The worker's answer about a namespace is cached for a second.)
    drop(server);
    until(Duration::from_secs(5), || {
        listeners.on_port(netns, port, LO).is_none().then_some(())
    })
    .expect("the namespace unknown once its process is gone");
}

/// The first answer about `port` in `netns` that names the listener's owner (the owner scan may
/// come after the socket), checked to be the one listener, local; its latency printed.
fn answer_with_owner(listeners: &Listeners, netns: u32, port: u16, what: &str) -> PortListeners {
    let t = Instant::now();
    let found = until(Duration::from_secs(10), || {
        listeners
            .on_port(netns, port, LO)
            .filter(|a| a.listeners.iter().any(|l| l.pid.is_some()))
    })
    .expect("an answer with the owner");
    println!(
        "{what}: first answer with its owner after {:?}",
        t.elapsed()
    );
    assert!(found.dst_is_local);
    assert_eq!(found.listeners.len(), 1, "{found:?}");
    found
}
