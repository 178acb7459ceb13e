//! Real-kernel scenarios for the causes beyond the socket: packets this host dropped, joined to
//! the connection they belonged to (`skb:kfree_skb`); the router that answered with ICMP; the
//! early warning for a stalled established connection. Each test owns its namespaces, joined by
//! veth pairs with no route out; the tracer is filtered to the client's namespace by inode.
use std::time::Duration;

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    process::field,
    scenario::{assert_process, client_run, for_port, sport_of},
    wait_until,
};

const WAIT: Duration = Duration::from_secs(15);

/// A client namespace and a server namespace joined by a veth pair (10.210.N.1 ↔ .2), with a
/// listener on the server's address. The client gives up after 2 SYN retransmissions, at
/// 1 s and 3 s (no linear timeouts).
struct Pair {
    client: Netns,
    server: Netns,
    _listener: tracer_tests::Proc,
    dst: String,
}

impl Pair {
    fn new(tag: &str, subnet: u8) -> Self {
        let client = Netns::new(&format!("{tag}-c"));
        let server = Netns::new(&format!("{tag}-s"));
        client.veth(
            &server,
            &format!("10.210.{subnet}.1/24"),
            Some(&format!("10.210.{subnet}.2/24")),
        );
        client.sysctl("net.ipv4.tcp_syn_retries", "2");
        client.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
        let listener = server.client(&["listen", "--addr", &format!("10.210.{subnet}.2:0")]);
        let port = field(&listener.wait_line("listening", WAIT), "port")
            .unwrap()
            .to_string();
        Pair {
            client,
            server,
            _listener: listener,
            dst: format!("10.210.{subnet}.2:{port}"),
        }
    }

    fn port(&self) -> u64 {
        self.dst.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// One blocking connect from the client namespace: it times out.
    fn connect_times_out(&self) -> u32 {
        let (pid, lines) = client_run(
            &self.client,
            &["connect", "--addr", &self.dst, "--blocking"],
            WAIT,
        );
        assert_eq!(field(&lines[0], "result"), Some("ETIMEDOUT"), "{lines:?}");
        pid
    }
}

/// An nftables table `inet tt` with one base chain on `hook` holding `rule`.
fn chain(hook: &str, rule: &str) -> String {
    format!(
        "table inet tt {{\n  chain c {{\n    type filter hook {hook} priority 0; policy accept;\n    {rule}\n  }}\n}}\n"
    )
}

fn drops(r: &Value) -> &Vec<Value> {
    r["evidence"]["local_drops"]
        .as_array()
        .unwrap_or_else(|| panic!("no local_drops: {r}"))
}

fn hint(r: &Value) -> &str {
    r["hint"].as_str().unwrap()
}

#[test]
fn syn_acks_dropped_by_the_clients_own_firewall_are_the_evidence() {
    let p = Pair::new("dropin", 1);
    p.client
        .nft(&chain("input", &format!("tcp sport {} drop", p.port())));
    let tracer = Tracer::start(&p.client, &[]);
    let pid = p.connect_times_out();
    let r = tracer.wait_failures(1, WAIT, for_port(p.port())).remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_process(&r, pid);
    let d = drops(&r);
    assert_eq!(d.len(), 1, "{r}");
    assert_eq!(d[0]["direction"], "received", "{r}");
    assert_eq!(d[0]["reason"], "NETFILTER_DROP", "{r}");
    assert_eq!(d[0]["tcp_flags"], "SA", "{r}");
    // Three SYNs answered; the server also retransmits its SYN-ACKs.
    assert!(d[0]["packets"].as_u64().unwrap() >= 3, "{r}");
    let (first, last) = (
        d[0]["first_ms"].as_f64().unwrap(),
        d[0]["last_ms"].as_f64().unwrap(),
    );
    assert!(first < 500.0 && last > 2500.0 && last < 4000.0, "{r}");
    assert!(
        hint(&r).contains("this host dropped") && hint(&r).contains("(NETFILTER_DROP)"),
        "{r}"
    );
    let stopped = tracer.finish_with(1);
    assert!(stopped.stats["local_drops"].as_u64().unwrap() >= 3);
}

#[test]
fn syn_acks_dropped_in_the_servers_namespace_are_no_local_drop() {
    let p = Pair::new("dropsrv", 2);
    p.server
        .nft(&chain("output", &format!("tcp sport {} drop", p.port())));
    let tracer = Tracer::start(&p.client, &[]);
    p.connect_times_out();
    let r = tracer.wait_failures(1, WAIT, for_port(p.port())).remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert!(r["evidence"].get("local_drops").is_none(), "{r}");
    assert!(hint(&r).starts_with("no SYN-ACK from"), "{r}");
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.stats["local_drops"], 0, "{}", stopped.stats);
}

#[test]
fn a_syn_dropped_on_output_never_left_this_host() {
    let p = Pair::new("dropout", 3);
    p.client
        .nft(&chain("output", &format!("tcp dport {} drop", p.port())));
    let tracer = Tracer::start(&p.client, &[]);
    p.connect_times_out();
    let r = tracer.wait_failures(1, WAIT, for_port(p.port())).remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    let d = drops(&r);
    assert_eq!(d.len(), 1, "{r}");
    assert_eq!(d[0]["direction"], "sent", "{r}");
    assert_eq!(d[0]["reason"], "NETFILTER_DROP", "{r}");
    assert_eq!(d[0]["tcp_flags"], "S", "{r}");
    // The SYN and its retransmissions, each refused on output (a retransmission that failed to
    // go out is not a traced retransmit, and the kernel backs off more).
    let packets = d[0]["packets"].as_u64().unwrap();
    assert!((2..=3).contains(&packets), "{r}");
    assert!(hint(&r).contains("never left this host"), "{r}");
    tracer.finish_with(1);
}

#[test]
fn a_router_rejecting_with_host_unreachable_is_named_as_the_icmp_sender() {
    let client = Netns::new("icmp-c");
    let router = Netns::new("icmp-r");
    let server = Netns::new("icmp-s");
    client.veth(&router, "10.211.1.2/24", Some("10.211.1.1/24"));
    router.veth(&server, "10.211.2.1/24", Some("10.211.2.2/24"));
    client.exec(&["ip", "route", "add", "10.211.2.0/24", "via", "10.211.1.1"]);
    server.exec(&["ip", "route", "add", "10.211.1.0/24", "via", "10.211.2.1"]);
    router.sysctl("net.ipv4.ip_forward", "1");
    router.nft(&chain(
        "forward",
        "tcp dport 8080 reject with icmp type host-unreachable",
    ));
    let tracer = Tracer::start(&client, &[]);
    let (pid, lines) = client_run(&client, &["connect", "--addr", "10.211.2.2:8080"], WAIT);
    assert_eq!(
        field(&lines[0], "result"),
        Some("EHOSTUNREACH"),
        "{lines:?}"
    );
    let r = tracer.wait_failures(1, WAIT, for_port(8080)).remove(0);
    assert_eq!(r["label"], "unreachable", "{r}");
    assert_process(&r, pid);
    let icmp = &r["evidence"]["icmp"];
    assert_eq!(
        (&icmp["type"], &icmp["code"]),
        (&3.into(), &1.into()),
        "{r}"
    );
    assert_eq!(icmp["from"], "10.211.1.1", "{r}");
    assert!(
        hint(&r).starts_with(
            "10.211.1.1 rejected the connection to 10.211.2.2:8080 with host-unreachable: a \
             router or firewall on the path, not the destination"
        ),
        "{r}"
    );
    tracer.finish_with(1);
}

/// With the kernel's default `tcp_retries2` a blackholed sender would retransmit for about 15
/// minutes; the warning comes seconds in. A busy connection beside it, to the same server, is
/// never warned about. A second blackholed sender that gives up by TCP_USER_TIMEOUT dies with
/// the warning in its record, and the destination's summary says `degrading` before that.
#[test]
fn a_stalled_sender_is_warned_about_long_before_it_dies() {
    let p = Pair::new("atrisk", 4);
    p.server.nft(&chain("input", ""));
    let server = p
        .server
        .client(&["listen", "--addr", "10.210.4.2:0", "--drain"]);
    let port = field(&server.wait_line("listening", WAIT), "port")
        .unwrap()
        .to_string();
    let dst = format!("10.210.4.2:{port}");
    let tracer = Tracer::start(&p.client, &["--summary-interval", "1"]);
    let busy = p.client.client(&["stream", "--addr", &dst]);
    let busy_sport = sport_of(&busy.wait_line("connected", WAIT));
    let mut stalled = p
        .client
        .client(&["send", "--addr", &dst, "--user-timeout-ms", "0"]);
    let stalled_sport = sport_of(&stalled.wait_line("connected", WAIT));
    let mut dying = p
        .client
        .client(&["send", "--addr", &dst, "--user-timeout-ms", "6000"]);
    let dying_sport = sport_of(&dying.wait_line("connected", WAIT));
    // Blackhole the two senders' flows only, on the server's side: their segments leave the
    // client (TCP retransmits them) and never arrive.
    p.server.nft(&format!(
        "add rule inet tt c tcp sport {{ {stalled_sport}, {dying_sport} }} drop\n"
    ));
    let started = std::time::Instant::now();
    stalled.send_line("go");
    dying.send_line("go");
    let by_sport = |sport: u64| move |r: &Value| r["src"]["port"] == sport;
    let w = tracer
        .wait_records(
            "warning",
            1,
            Duration::from_secs(10),
            by_sport(stalled_sport),
        )
        .remove(0);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(w["label"], "at_risk", "{w}");
    assert_process(&w, stalled.pid());
    let e = &w["evidence"];
    assert_eq!(e["timeouts_in_a_row"], 3, "{w}");
    assert_eq!(e["unacked_bytes"], 8192, "{w}");
    assert!(e["data_retransmits"].as_u64().unwrap() >= 3, "{w}");
    assert!(e["srtt_ms"].as_f64().is_some(), "{w}");
    assert!(
        hint(&w).contains("3 retransmission timeouts in a row"),
        "{w}"
    );

    // The one with a 6 s user timeout dies, and says it had been warned.
    let r = tracer
        .wait_failures(1, WAIT, |r| r["src"]["port"] == dying_sport)
        .remove(0);
    assert_eq!(r["label"], "rto_timeout", "{r}");
    let before = r["evidence"]["warned_ms_before"].as_f64().expect("warned");
    assert!((1000.0..6000.0).contains(&before), "{r}");
    let summary = tracer.wait_records("summary", 1, WAIT, |s| {
        s["dst"]["port"].as_u64() == port.parse().ok() && s["at_risk"].as_u64() > Some(0)
    });
    assert!(
        summary.iter().any(|s| s["verdict"] == "degrading"),
        "{summary:?}"
    );
    drop(stalled);
    drop(busy);
    let records = tracer.stop();
    let warnings: Vec<&Value> = records.iter().filter(|r| r["type"] == "warning").collect();
    assert!(
        warnings.iter().all(|w| w["src"]["port"] != busy_sport),
        "the busy connection was warned about: {warnings:?}"
    );
    assert_eq!(warnings.len(), 2, "one per stalled sender: {warnings:?}");
}

/// `TcpExtListenOverflows` of a namespace, from its `/proc/net/netstat`.
fn listen_overflows(ns: &Netns) -> u64 {
    let netstat = ns.exec(&["cat", "/proc/net/netstat"]);
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")
        .expect("ListenOverflows");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A listener with backlog 1 that never accepts and 8 clients connecting at once: one
/// `listen_overflow` record per window for that listener, whose drops add up to the kernel's
/// `TcpExtListenOverflows` delta in its namespace; the clients' SYN timeouts point at it.
#[test]
fn a_full_accept_queue_is_reported_per_listener_and_window() {
    let client = Netns::new("lo-c");
    let server = Netns::new("lo-s");
    client.veth(&server, "10.210.5.1/24", Some("10.210.5.2/24"));
    let listener = server.client(&[
        "listen",
        "--addr",
        "10.210.5.2:0",
        "--backlog",
        "1",
        "--no-accept",
    ]);
    let port: u64 = field(&listener.wait_line("listening", WAIT), "port")
        .unwrap()
        .parse()
        .unwrap();
    let tracer =
        Tracer::start_unfiltered(&["--port", &port.to_string(), "--summary-interval", "1"]);
    let before = listen_overflows(&server);
    let (_, lines) = client_run(
        &client,
        &[
            "connect",
            "--addr",
            &format!("10.210.5.2:{port}"),
            "--count",
            "8",
            "--give-up-ms",
            "4000",
        ],
        WAIT,
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("result=ok")).count(),
        2,
        "{lines:?}"
    );
    let delta = listen_overflows(&server) - before;
    assert!(delta >= 6, "the kernel counted {delta} overflows");
    // Every drop the kernel counted is reported, once, in records of that listener.
    let deadline = std::time::Instant::now() + WAIT;
    let records = loop {
        let records: Vec<Value> = tracer
            .failures()
            .into_iter()
            .filter(|r| r["label"] == "listen_overflow")
            .collect();
        let sum: u64 = records
            .iter()
            .map(|r| r["evidence"]["listen"]["dropped"].as_u64().unwrap())
            .sum();
        if sum >= delta || std::time::Instant::now() >= deadline {
            assert_eq!(sum, delta, "{records:#?}");
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for r in &records {
        assert_eq!(r["direction"], "inbound", "{r}");
        assert_eq!(r["dst"]["ip"], "10.210.5.2", "{r}");
        assert_eq!(r["dst"]["port"], port, "{r}");
        assert_eq!(r["netns"], server.inode, "{r}");
        assert_eq!(r["process"]["pid"], listener.pid(), "{r}");
        assert_eq!(r["process"]["comm"], "tt-client", "{r}");
        let q = &r["evidence"]["listen"];
        assert_eq!(q["backlog"], 1, "{r}");
        assert!(
            hint(r).contains("its accept queue (backlog 1) was full"),
            "{r}"
        );
    }
    // The clients that gave up name the listener that dropped their SYNs (their records may
    // still be on their way when the overflow records are all in).
    let timeouts: Vec<Value> = wait_until("6 syn_timeout records", WAIT, || {
        let t: Vec<Value> = tracer
            .failures()
            .into_iter()
            .filter(|r| r["label"] == "syn_timeout")
            .collect();
        (t.len() >= 6).then_some(t)
    });
    assert_eq!(timeouts.len(), 6, "{timeouts:#?}");
    for r in &timeouts {
        assert_eq!(r["evidence"]["overflowed_listener"]["port"], port, "{r}");
        assert_eq!(
            r["evidence"]["overflowed_listener"]["pid"],
            listener.pid(),
            "{r}"
        );
        assert!(hint(r).contains("overflowed its accept queue"), "{r}");
    }
    // Nothing reported twice: the whole output, the records written at exit included.
    let all = tracer.stop();
    let of = |label: &'static str| {
        all.iter()
            .filter(move |r| r["type"] == "failure" && r["label"] == label)
    };
    assert_eq!(of("syn_timeout").count(), 6);
    let dropped: u64 = of("listen_overflow")
        .map(|r| r["evidence"]["listen"]["dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(dropped, delta);
}

/// Refusals of a port this host listens on elsewhere name the listener (inbound from a peer
/// namespace to the veth address; outbound to a second address of the namespace itself), and
/// refusals of a port nobody listens on say so.
#[test]
fn a_refusal_here_names_who_listens_on_that_port() {
    let server = Netns::new("lst-s");
    let peer = Netns::new("lst-p");
    peer.veth(&server, "10.210.6.1/24", Some("10.210.6.2/24"));
    server.exec(&["ip", "addr", "add", "10.210.7.7/32", "dev", "lo"]);
    let listener = server.client(&["listen", "--addr", "127.0.0.1:0"]);
    let port = field(&listener.wait_line("listening", WAIT), "port")
        .unwrap()
        .to_string();
    let tracer = Tracer::start_unfiltered(&["--port", &format!("{port},47")]);
    let refused = |ns: &Netns, addr: &str| {
        let (pid, lines) = client_run(ns, &["connect", "--addr", addr], WAIT);
        assert_eq!(
            field(&lines[0], "result"),
            Some("ECONNREFUSED"),
            "{lines:?}"
        );
        pid
    };
    refused(&peer, &format!("10.210.6.2:{port}"));
    let pid = refused(&server, &format!("10.210.7.7:{port}"));
    refused(&server, "10.210.7.7:47");
    let listed = serde_json::json!([{
        "ip": "127.0.0.1",
        "port": port.parse::<u64>().unwrap(),
        "pid": listener.pid(),
        "comm": "tt-client",
    }]);

    let inbound = tracer
        .wait_failures(1, WAIT, |r| {
            r["direction"] == "inbound" && r["dst"]["ip"] == "10.210.6.2"
        })
        .remove(0);
    assert_eq!(inbound["label"], "refused", "{inbound}");
    assert_eq!(inbound["netns"], server.inode, "{inbound}");
    assert_eq!(inbound["evidence"]["listeners"], listed, "{inbound}");
    assert!(
        hint(&inbound).starts_with(&format!(
            "10.210.6.1 tried to connect to 10.210.6.2:{port}, but port {port} is listened on \
             127.0.0.1 (tt-client, pid {}) only",
            listener.pid()
        )),
        "{inbound}"
    );

    let local = tracer
        .wait_failures(1, WAIT, |r| {
            r["direction"] == "outbound" && r["dst"]["ip"] == "10.210.7.7" && r["dst"]["port"] != 47
        })
        .remove(0);
    assert_process(&local, pid);
    assert_eq!(local["evidence"]["listeners"], listed, "{local}");

    let nobody = tracer
        .wait_failures(1, WAIT, |r| r["dst"]["port"] == 47)
        .remove(0);
    assert_eq!(
        nobody["evidence"]["listeners"],
        serde_json::json!([]),
        "{nobody}"
    );
    assert!(
        hint(&nobody)
            .starts_with("nothing listens on port 47 on any address of this network namespace"),
        "{nobody}"
    );

    // From the peer's side the destination is not its own: no listeners on its record.
    let outbound = tracer
        .wait_failures(1, WAIT, |r| {
            r["direction"] == "outbound" && r["dst"]["ip"] == "10.210.6.2"
        })
        .remove(0);
    assert!(
        outbound["evidence"].get("listeners").is_none(),
        "{outbound}"
    );
    tracer.stop();
}
