//! Tests of the listeners module. The namespace tests need root (they create a network
//! namespace with `ip netns add`); their traffic stays on the loopback of that namespace.
use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener},
    os::unix::fs::MetadataExt,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;

fn listener(ip: IpAddr, v6only: bool) -> Listener {
    Listener {
        ip,
        port: 8080,
        inode: 1,
        uid: 0,
        backlog: 128,
        queued: 0,
        pid: Some(4242),
        comm: Some("python3".to_string()),
        v6only,
    }
}

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

#[test]
fn accepts_by_address_and_wildcard() {
    assert!(listener(LO, false).accepts(LO));
    assert!(!listener(LO, false).accepts(OTHER));
    let any4 = listener(IpAddr::V4(Ipv4Addr::UNSPECIFIED), false);
    assert!(any4.accepts(OTHER));
    assert!(!any4.accepts(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let any6 = listener(IpAddr::V6(Ipv6Addr::UNSPECIFIED), false);
    assert!(any6.accepts(OTHER));
    assert!(any6.accepts(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let any6_only = listener(IpAddr::V6(Ipv6Addr::UNSPECIFIED), true);
    assert!(!any6_only.accepts(OTHER));
    // An IPv4-mapped destination is its IPv4 address.
    assert!(listener(LO, false).accepts(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())));
}

#[test]
fn describes_a_refusal() {
    let none = PortListeners {
        listeners: vec![],
        dst_is_local: true,
    };
    assert_eq!(none.describe(8080, OTHER), "nothing listens on port 8080");
    let lo_only = PortListeners {
        listeners: vec![listener(LO, false)],
        dst_is_local: true,
    };
    assert_eq!(
        lo_only.describe(8080, OTHER),
        "port 8080 is listened on 127.0.0.1 (python3, pid 4242) only; the connect went to 10.0.0.5"
    );
    let remote = PortListeners {
        dst_is_local: false,
        ..lo_only.clone()
    };
    assert!(
        remote
            .describe(8080, OTHER)
            .ends_with("not an address of that network namespace")
    );
}

#[test]
fn overflows_merge_per_listener() {
    let shared = Shared::default();
    let o = |inode, dropped| Overflow {
        netns: 7,
        listener: Listener {
            inode,
            ..listener(LO, false)
        },
        dropped,
    };
    shared.push_overflows(vec![o(1, 3), o(2, 1)]);
    shared.push_overflows(vec![o(1, 4)]);
    let pending = shared.pending.lock().unwrap().clone();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].dropped, 7);
    assert_eq!(pending[1].dropped, 1);
}

/// Calls `f` until it gives Some, for at most `limit`.
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

/// A network namespace this test made; deleted on drop.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ns = Netns(name);
        let ok = Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(ok.success(), "ip -n {} link set lo up", ns.0);
        ns
    }

    /// `cmd` run in the namespace (`ip netns exec` execs it: same pid).
    fn exec(&self, args: &[&str], stdout: Stdio) -> Killed {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(stdout)
            .spawn()
            .unwrap();
        Killed(child)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process this test started; killed (by its pid) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// Times `n` dumps of namespace `netns` from a fresh worker on a thread of its own.
fn time_dumps(netns: u32, with_addrs: bool, n: u32) -> (Duration, usize) {
    std::thread::spawn(move || {
        let mut w = Worker::new(Arc::new(Shared::default()));
        let first = w.fetch(netns, with_addrs).expect("a dump");
        let t = Instant::now();
        for _ in 0..n {
            w.fetch(netns, with_addrs).expect("a dump");
        }
        (t.elapsed() / n, first.listeners.len())
    })
    .join()
    .unwrap()
}

#[test]
fn other_namespace_and_overflow() {
    let ns = Netns::add(format!("tt-lst-{}", std::process::id()));
    let mut server = ns.exec(&["python3", "-c", SERVER], Stdio::piped());
    let server_pid = server.0.id();
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the server's port");
    let netns = ns_inode(&format!("/run/netns/{}", ns.0));
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

    let (cost, n) = time_dumps(netns, false, 50);
    println!("dump of the test namespace ({n} listeners, setns in and out): {cost:?}");
    let (cost, _) = time_dumps(netns, true, 50);
    println!("same with getifaddrs: {cost:?}");
    let own = ns_inode("/proc/self/ns/net");
    let (cost, n) = time_dumps(own, false, 50);
    println!("dump of the own namespace ({n} listeners, no setns): {cost:?}");

    // The listener's first poll is its baseline: let two polls pass before the drops start.
    let polls = listeners.polls();
    until(Duration::from_secs(5), || {
        (listeners.polls() >= polls + 2).then_some(())
    })
    .expect("two polls");
    assert!(listeners.take_overflows().is_empty());

    let mut client = ns.exec(&["python3", "-c", CLIENT, &port.to_string()], Stdio::null());
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
        let client_done = client.0.try_wait().unwrap().is_some();
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
    let ns = Netns::add(format!("tt-lst-cap-{}", std::process::id()));
    let netns = ns_inode(&format!("/run/netns/{}", ns.0));
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
    let mut server = Killed(
        Command::new("unshare")
            .args(["-n", "python3", "-c", SERVER])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let server_pid = server.0.id();
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the server's port");
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
    drop(server);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(listeners.on_port(netns, port, LO), None);
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
