//! Real-kernel DNS scenarios: a namespace with its own resolver
//! (`/etc/netns/NAME/resolv.conf`, which `ip netns exec` mounts over /etc/resolv.conf) answering
//! from a Python responder; real clients (curl, Python's resolver).
use std::{path::PathBuf, time::Duration};

use tracer_tests::{Netns, Tracer, scenario::for_port};

const WAIT: Duration = Duration::from_secs(10);

/// A namespace whose resolver (10.53.0.1 on its lo) answers every name with `addr` (put on its
/// lo too, nothing listening) and `ttl`; the resolv.conf is removed on drop.
struct Resolved {
    ns: Netns,
    _server: tracer_tests::Proc,
    conf: PathBuf,
}

impl Resolved {
    fn new(tag: &str, addr: &str, ttl: u32, mode: &str) -> Self {
        Self::with_v6(tag, addr, ttl, mode, "fd53::9")
    }

    fn with_v6(tag: &str, addr: &str, ttl: u32, mode: &str, addr6: &str) -> Self {
        let ns = Netns::new(tag);
        ns.exec(&["ip", "addr", "add", "10.53.0.1/32", "dev", "lo"]);
        ns.exec(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{addr6}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 10.53.0.1\n").unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/dns/dnsd.py");
        let ttl = ttl.to_string();
        let server = ns.spawn(
            std::path::Path::new("/usr/bin/python3"),
            &[
                script.to_str().unwrap(),
                addr,
                &ttl,
                "10.53.0.1",
                mode,
                addr6,
            ],
        );
        server.wait_line("listening", WAIT);
        Resolved {
            ns,
            _server: server,
            conf: dir,
        }
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.conf);
    }
}

#[test]
fn a_refused_connect_names_the_dns_answer_it_came_from() {
    let r = Resolved::new("dns-a", "10.53.9.9", 30, "answer");
    let tracer = Tracer::start(&r.ns, &[]);
    assert_eq!(curl(&r.ns, &["-4", "http://api.test:8080/"]), Some(7));
    let f = tracer.wait_failures(1, WAIT, for_port(8080)).remove(0);
    assert_eq!(f["label"], "refused", "{f}");
    assert_eq!(f["dst"]["ip"], "10.53.9.9", "{f}");
    assert_eq!(f["dst"]["name"], "api.test", "{f}");
    let dns = &f["evidence"]["dns"];
    assert_eq!(dns["name"], "api.test", "{f}");
    assert_eq!(dns["server"], "10.53.0.1", "{f}");
    assert_eq!(dns["ttl_s"], 30, "{f}");
    assert_eq!(dns["expired"], false, "{f}");
    let hint = f["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("`api.test` resolved to 10.53.9.9 (")
            && hint.contains("where nothing listens on port 8080")
            && hint.contains("`dig api.test`"),
        "{f}"
    );
    let stopped = tracer.finish_with(1);
    assert!(stopped.stats["dns_responses"].as_u64().unwrap() >= 1);
}

/// TTL 1 s; the client connects 3 s after resolving, with the address it kept.
#[test]
fn a_connect_past_the_answers_ttl_is_called_stale() {
    let r = Resolved::new("dns-stale", "10.53.9.9", 1, "answer");
    let tracer = Tracer::start(&r.ns, &[]);
    let client = r.ns.spawn(
        std::path::Path::new("/usr/bin/python3"),
        &[
            "-c",
            "import socket,time\n\
             a=socket.getaddrinfo('stale.test',8080,socket.AF_INET,socket.SOCK_STREAM)[0][4]\n\
             time.sleep(3)\n\
             s=socket.socket()\n\
             try: s.connect(a)\n\
             except OSError as e: print('result', e.errno, flush=True)",
        ],
    );
    client.wait_line("result", WAIT);
    let f = tracer.wait_failures(1, WAIT, for_port(8080)).remove(0);
    let dns = &f["evidence"]["dns"];
    assert_eq!(dns["name"], "stale.test", "{f}");
    assert_eq!(dns["expired"], true, "{f}");
    assert!(dns["resolved_ms_ago"].as_f64().unwrap() >= 2900.0, "{f}");
    let hint = f["hint"].as_str().unwrap();
    assert!(
        hint.starts_with("stale DNS? `stale.test` resolved to 10.53.9.9 ")
            && hint.contains("with a TTL of 1 s"),
        "{f}"
    );
    tracer.finish_with(1);
}

/// A server answering garbage: counted, no crash, no name.
#[test]
fn garbage_answers_are_counted_and_name_nothing() {
    let r = Resolved::new("dns-garbage", "10.53.9.9", 30, "garbage");
    let tracer = Tracer::start(&r.ns, &[]);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &r.ns.name, "python3", "-c",
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\n\
             s.sendto(b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x01x\\x00\\x00\\x01\\x00\\x01',('10.53.0.1',53))\n\
             print(s.recv(512))\n\
             c=socket.socket()\n\
             try: c.connect(('10.53.9.9',8080))\n\
             except OSError: pass"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let f = tracer.wait_failures(1, WAIT, for_port(8080)).remove(0);
    assert!(f["evidence"].get("dns").is_none(), "{f}");
    assert!(f["dst"].get("name").is_none(), "{f}");
    let stopped = tracer.finish_with(1);
    assert!(
        stopped.stats["dns_parse_errors"].as_u64().unwrap() >= 1,
        "{}",
        stopped.stats
    );
}

/// curl in a namespace: its exit code (7: connection refused).
fn curl(ns: &Netns, args: &[&str]) -> Option<i32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-s", "-m", "3"])
        .args(args)
        .output()
        .unwrap();
    out.status.code()
}

#[test]
fn an_aaaa_answer_and_a_cname_chain_name_the_destination() {
    let r = Resolved::new("dns-6", "10.53.9.9", 30, "answer");
    let tracer = Tracer::start(&r.ns, &[]);
    assert_eq!(curl(&r.ns, &["-6", "http://api6.test:8080/"]), Some(7));
    let f = tracer
        .wait_failures(1, WAIT, |f| f["dst"]["ip"] == "fd53::9")
        .remove(0);
    assert_eq!(f["evidence"]["dns"]["name"], "api6.test", "{f}");
    assert_eq!(curl(&r.ns, &["-4", "http://alias.test:8081/"]), Some(7));
    let f = tracer.wait_failures(1, WAIT, for_port(8081)).remove(0);
    let dns = &f["evidence"]["dns"];
    assert_eq!(dns["name"], "alias.test", "{f}");
    assert_eq!(dns["cname_chain"], serde_json::json!(["real.test"]), "{f}");
    tracer.finish_with(2);
}

/// The same name resolves to different addresses in two namespaces: each record carries its own
/// namespace's answer.
#[test]
fn each_namespace_gets_its_own_answer() {
    let a = Resolved::new("dns-ns-a", "10.53.9.1", 30, "answer");
    let b = Resolved::new("dns-ns-b", "10.53.9.2", 30, "answer");
    let tracer = Tracer::start_unfiltered(&["--port", "8082"]);
    assert_eq!(curl(&a.ns, &["-4", "http://same.test:8082/"]), Some(7));
    assert_eq!(curl(&b.ns, &["-4", "http://same.test:8082/"]), Some(7));
    let got = tracer.wait_failures(2, WAIT, for_port(8082));
    for (ns, addr) in [(&a.ns, "10.53.9.1"), (&b.ns, "10.53.9.2")] {
        let f = got
            .iter()
            .find(|f| f["netns"] == ns.inode)
            .unwrap_or_else(|| panic!("no record from {}: {got:?}", ns.name));
        assert_eq!(f["dst"]["ip"], addr, "{f}");
        assert_eq!(f["evidence"]["dns"]["name"], "same.test", "{f}");
    }
    tracer.stop();
}

/// DNS over TCP (a resolver told to use it: `options use-vc`).
#[test]
fn an_answer_over_tcp_names_the_destination() {
    let r = Resolved::new("dns-tcp", "10.53.9.9", 30, "answer");
    std::fs::write(
        r.conf.join("resolv.conf"),
        "nameserver 10.53.0.1\noptions use-vc\n",
    )
    .unwrap();
    let tracer = Tracer::start(&r.ns, &[]);
    assert_eq!(curl(&r.ns, &["-4", "http://tcp.test:8083/"]), Some(7));
    let f = tracer.wait_failures(1, WAIT, for_port(8083)).remove(0);
    assert_eq!(f["evidence"]["dns"]["name"], "tcp.test", "{f}");
    tracer.finish_with(1);
}

/// `--dst NAME` keeps the connects to the addresses that name resolved to (and no others);
/// `connect` and `summary` records carry the name too.
#[test]
fn a_dst_name_selects_its_connects_and_every_record_kind_carries_the_name() {
    let r = Resolved::new("dns-filter", "10.53.9.9", 30, "answer");
    r.ns.exec(&["ip", "addr", "add", "10.53.9.8/32", "dev", "lo"]);
    let server = r.ns.client(&["listen", "--addr", "10.53.9.9:8085"]);
    server.wait_line("listening", WAIT);
    let tracer = Tracer::start(
        &r.ns,
        &["--dst", "*.test", "--successes", "--summary-interval", "1"],
    );
    // Named: refused on 8084, connected on 8085. Not named: the same refusal by address.
    assert_eq!(curl(&r.ns, &["-4", "http://api.test:8084/"]), Some(7));
    assert_ne!(curl(&r.ns, &["-4", "http://api.test:8085/"]), Some(7));
    assert_eq!(curl(&r.ns, &["-4", "http://10.53.9.8:8084/"]), Some(7));
    let f = tracer.wait_failures(1, WAIT, for_port(8084)).remove(0);
    assert_eq!(f["dst"]["name"], "api.test", "{f}");
    let c = tracer
        .wait_records("connect", 1, WAIT, |c| c["dst"]["port"] == 8085)
        .remove(0);
    assert_eq!(c["dst"]["name"], "api.test", "{c}");
    assert_eq!(c["dns"]["server"], "10.53.0.1", "{c}");
    let s = tracer
        .wait_records("summary", 1, WAIT, |s| s["dst"]["port"] == 8084)
        .remove(0);
    assert_eq!(s["dst"]["name"], "api.test", "{s}");
    assert_eq!(s["dns"]["name"], "api.test", "{s}");
    let records = tracer.stop();
    let unnamed: Vec<_> = records
        .iter()
        .filter(|r| r["dst"]["ip"] == "10.53.9.8")
        .collect();
    assert!(
        unnamed.is_empty(),
        "not selected by --dst *.test: {unnamed:?}"
    );
}

/// `--no-dns`: no answer captured (the same resolution counts one with the capture), no names,
/// and a name filter is refused.
#[test]
fn no_dns_captures_nothing_and_refuses_a_name_filter() {
    let r = Resolved::new("dns-off", "10.53.9.9", 30, "answer");
    let tracer = Tracer::start(&r.ns, &["--no-dns"]);
    assert_eq!(curl(&r.ns, &["-4", "http://api.test:8086/"]), Some(7));
    let f = tracer.wait_failures(1, WAIT, for_port(8086)).remove(0);
    assert!(f["dst"].get("name").is_none(), "{f}");
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.stats["dns_responses"], 0, "{}", stopped.stats);
    let out = std::process::Command::new(tracer_tests::tracer_bin().unwrap())
        .args(["run", "--no-dns", "--dst", "api.test"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--dst api.test") && err.contains("--no-dns"),
        "{err}"
    );
}

/// A Kubernetes pod's resolver shape: `search` domains and `ndots:5`, so the name the application
/// gave is asked with a search domain appended. The record names what was asked on the wire, and
/// `--dst` with the application's name still selects it.
#[test]
fn a_name_completed_by_a_search_domain_is_named_and_selected() {
    let r = Resolved::new("dns-search", "10.53.9.9", 30, "answer");
    std::fs::write(
        r.conf.join("resolv.conf"),
        "nameserver 10.53.0.1\nsearch prod.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    let tracer = Tracer::start(&r.ns, &["--dst", "orders-db"]);
    assert_eq!(curl(&r.ns, &["-4", "http://orders-db:8087/"]), Some(7));
    let f = tracer.wait_failures(1, WAIT, for_port(8087)).remove(0);
    assert_eq!(f["dst"]["name"], "orders-db.prod.svc.cluster.local", "{f}");
    tracer.finish_with(1);
}
