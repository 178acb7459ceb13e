//! Real-kernel scenarios for the labels beyond the headline three (unreachable, reset,
//! rto_timeout), successes, inbound refusals, and several failure kinds side by side. Each test
//! owns its namespaces; the tracer is filtered to the traced one by inode.
use std::time::Duration;

use serde_json::{Value, json};
use tracer_tests::{
    Netns, Tracer,
    process::field,
    scenario::{
        CLOSED_PORT, assert_process, blackhole_port, client_run, for_port, listener, sport_of,
        table,
    },
};

const WAIT: Duration = Duration::from_secs(10);

fn by_src_port(port: u64) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["src"]["port"] == port
}

#[test]
fn unreachable_by_icmp_host_unreachable() {
    let ns = Netns::new("hostunreach");
    ns.nft(&table(&format!(
        "tcp dport {CLOSED_PORT} reject with icmpx type host-unreachable"
    )));
    let tracer = Tracer::start(&ns, &[]);
    let (pid, lines) = client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    assert_eq!(field(&lines[0], "result"), Some("EHOSTUNREACH"));
    let r = tracer.wait_failures(1, WAIT, for_port(47)).remove(0);
    assert_eq!(r["label"], "unreachable", "{r}");
    assert_eq!(r["errno"], "EHOSTUNREACH");
    assert_eq!(
        r["evidence"]["icmp"],
        json!({"type": 3, "code": 1, "from": "127.0.0.1"}),
        "{r}"
    );
    // The REJECT is this host's own OUTPUT rule: the SYN never left.
    assert_eq!(r["evidence"]["local_drops"][0]["direction"], "sent", "{r}");
    // The rule that rejected it, read from the namespace's ruleset, and named by the hint.
    let rule = &r["evidence"]["netfilter_drop"]["rule"];
    assert_eq!(
        (
            &rule["family"],
            &rule["table"],
            &rule["chain"],
            &rule["verdict"]
        ),
        (
            &json!("inet"),
            &json!("tt"),
            &json!("out"),
            &json!("reject")
        ),
        "{r}"
    );
    assert!(
        r["hint"].as_str().unwrap().starts_with(
            "the SYN to 127.0.0.1:47 never left this host: rejected by its own firewall, rule \
             inet tt out handle"
        ) && r["hint"]
            .as_str()
            .unwrap()
            .contains("answered with host-unreachable"),
        "{r}"
    );
    assert_process(&r, pid);
    tracer.finish_with(1);
}

#[test]
fn unreachable_when_no_host_answers_arp() {
    let ns = Netns::new("arp");
    let silent = Netns::new("arp-peer");
    // The peer end has no address: nobody answers ARP for 10.201.0.2.
    let dev = ns.veth(&silent, "10.201.0.1/24", None);
    ns.sysctl(&format!("net.ipv4.neigh.{dev}.mcast_solicit"), "1");
    ns.sysctl(&format!("net.ipv4.neigh.{dev}.retrans_time_ms"), "200");
    let tracer = Tracer::start(&ns, &[]);
    let (pid, lines) = client_run(
        &ns,
        &["connect", "--addr", "10.201.0.2:80", "--blocking"],
        Duration::from_secs(20),
    );
    assert_eq!(field(&lines[0], "result"), Some("EHOSTUNREACH"));
    let r = tracer.wait_failures(1, WAIT, for_port(80)).remove(0);
    assert_eq!(r["label"], "unreachable", "{r}");
    assert_eq!(r["errno"], "EHOSTUNREACH");
    assert_eq!(r["dst"]["ip"], "10.201.0.2");
    assert_eq!(r["src"]["ip"], "10.201.0.1");
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .contains("ip neigh show 10.201.0.2"),
        "{r}"
    );
    assert_process(&r, pid);
    // One record: the SYN waited for ARP, so the socket path reports it, not connect()'s exit
    // (a failed blocking connect() zeroes the socket's counters before returning).
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.stats["unclassified"], 0, "{}", stopped.stats);
}

#[test]
fn reset_when_the_server_aborts_an_established_connection() {
    let ns = Netns::new("reset");
    let tracer = Tracer::start(&ns, &[]);
    let (_server, port) = listener(&ns, &["--reset-after-ms", "300"]);
    let client = ns.client(&["recv", "--addr", &format!("127.0.0.1:{port}")]);
    let pid = client.pid();
    let sport = sport_of(&client.wait_line("connected", WAIT));
    let (_, lines) = client.wait(WAIT);
    assert!(
        lines.iter().any(|l| l.starts_with("result=ECONNRESET")),
        "{lines:?}"
    );
    let r = tracer.wait_failures(1, WAIT, by_src_port(sport)).remove(0);
    assert_eq!(r["label"], "reset", "{r}");
    assert_eq!(r["errno"], "ECONNRESET");
    assert_eq!(r["evidence"]["rst_received"], true);
    let age = r["evidence"]["connection_age_ms"].as_f64().unwrap();
    assert!((250.0..5000.0).contains(&age), "{r}");
    assert!(r["evidence"]["srtt_ms"].as_f64().is_some(), "{r}");
    assert_process(&r, pid);
    tracer.finish_with(1);
}

/// A client whose data is blackholed after it connected: it gives up by TCP_USER_TIMEOUT.
fn blackholed_sender(ns: &Netns, port: &str) -> (tracer_tests::Proc, u64) {
    let client = ns.client(&[
        "send",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--user-timeout-ms",
        "2000",
    ]);
    let sport = sport_of(&client.wait_line("connected", WAIT));
    (client, sport)
}

/// An ICMP host-unreachable for data of an established connection whose socket has IP_RECVERR:
/// the kernel reports the error while the connection is open, the application takes it from a
/// failing recv and aborts the connection, whose close then carries no error of its own. The
/// outcome is still `unreachable` — with the raw error-report program (the error noted in the
/// connection's state) and with the classic one (the report joined by 4-tuple) — and the close
/// is not mistaken for a clean one.
#[test]
fn an_error_the_application_took_before_closing_is_the_outcome() {
    for flags in [&[][..], &["--classic-tracepoints"][..]] {
        let ns = Netns::new("tookerr");
        ns.nft(&table(""));
        let tracer = Tracer::start(&ns, flags);
        let (_server, port) = listener(&ns, &[]);
        let mut client = ns.client(&[
            "send",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--user-timeout-ms",
            "0",
            "--recverr",
        ]);
        let sport = sport_of(&client.wait_line("connected", WAIT));
        let pid = client.pid();
        // Data segments (not the handshake's bare ACK) are answered with host-unreachable.
        ns.nft(&format!(
            "add rule inet tt in tcp dport {port} meta length > 100 reject with icmp type \
             host-unreachable\n"
        ));
        client.send_line("go");
        let (_, lines) = client.wait(WAIT);
        assert!(
            lines.iter().any(|l| l.starts_with("result=EHOSTUNREACH")),
            "{flags:?}: {lines:?}"
        );
        let r = tracer.wait_failures(1, WAIT, by_src_port(sport)).remove(0);
        assert_eq!(r["label"], "unreachable", "{flags:?}: {r}");
        assert_eq!(r["errno"], "EHOSTUNREACH", "{flags:?}: {r}");
        assert_process(&r, pid);
        tracer.finish_with(1);
    }
}

#[test]
fn rto_timeout_when_data_is_blackholed() {
    let ns = Netns::new("rto");
    ns.nft(&table(""));
    let tracer = Tracer::start(&ns, &[]);
    let (_server, port) = listener(&ns, &[]);
    let (mut client, sport) = blackholed_sender(&ns, &port);
    let pid = client.pid();
    ns.nft(&blackhole_port(&port));
    client.send_line("go");
    let r = tracer.wait_failures(1, WAIT, by_src_port(sport)).remove(0);
    let (_, lines) = client.wait(WAIT);
    assert!(
        lines.iter().any(|l| l.starts_with("result=ETIMEDOUT")),
        "{lines:?}"
    );
    assert_eq!(r["label"], "rto_timeout", "{r}");
    assert_eq!(r["errno"], "ETIMEDOUT");
    assert!(
        r["evidence"]["data_retransmits"].as_u64().unwrap() >= 1,
        "{r}"
    );
    assert_eq!(
        r["evidence"]["unacked_bytes"], 8192,
        "none of the data was acknowledged: {r}"
    );
    assert!(r["evidence"]["bytes_sent"].as_u64().unwrap() >= 8192, "{r}");
    assert_process(&r, pid);
    tracer.finish_with(1);
}

#[test]
fn keepalive_rto_and_syn_timeout_side_by_side() {
    let ns = Netns::new("sidebyside");
    ns.sysctl("net.ipv4.tcp_syn_retries", "2");
    ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
    ns.nft(&table(&format!("tcp dport {CLOSED_PORT} drop")));
    let tracer = Tracer::start(&ns, &[]);
    let (_server, port) = listener(&ns, &[]);
    let addr = format!("127.0.0.1:{port}");
    let keepalive = ns.client(&[
        "keepalive",
        "--addr",
        &addr,
        "--idle",
        "1",
        "--intvl",
        "1",
        "--cnt",
        "2",
    ]);
    let ka_sport = sport_of(&keepalive.wait_line("connected", WAIT));
    let (mut rto, rto_sport) = blackholed_sender(&ns, &port);
    let syn = ns.client(&["connect", "--addr", "127.0.0.1:47"]);
    ns.nft(&blackhole_port(&port));
    rto.send_line("go");
    let failures = tracer.wait_failures(3, Duration::from_secs(15), |_| true);
    let label_of = |pred: &dyn Fn(&Value) -> bool| {
        failures
            .iter()
            .find(|r| pred(r))
            .map(|r| r["label"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        label_of(&by_src_port(ka_sport)),
        "dropped_keepalive",
        "{failures:#?}"
    );
    assert_eq!(
        label_of(&by_src_port(rto_sport)),
        "rto_timeout",
        "{failures:#?}"
    );
    assert_eq!(label_of(&for_port(47)), "syn_timeout", "{failures:#?}");
    for p in [keepalive, rto, syn] {
        p.wait(WAIT);
    }
    tracer.finish_with(3);
}

#[test]
fn success_after_a_lost_syn_is_a_connect_record() {
    let ns = Netns::new("lostsyn");
    let (_server, port) = listener(&ns, &[]);
    // Drops every other SYN to the port: the first of a connect, not its retransmission.
    ns.nft(&table(&format!(
        "tcp dport {port} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop"
    )));
    let tracer = Tracer::start(&ns, &["--successes"]);
    let (pid, lines) = client_run(
        &ns,
        &["connect", "--addr", &format!("127.0.0.1:{port}")],
        WAIT,
    );
    assert_eq!(field(&lines[0], "result"), Some("ok"));
    let sport = sport_of(&lines[0]);
    let r = tracer_tests::wait_until("the connect record", WAIT, || {
        tracer
            .records()
            .into_iter()
            .find(|r| r["type"] == "connect" && r["src"]["port"] == sport)
    });
    assert_eq!(r["syn_retransmits"], 1, "{r}");
    assert!(r["latency_ms"].as_f64().unwrap() >= 900.0, "{r}");
    assert_eq!(r["dst"]["port"].to_string(), port);
    assert_eq!(r["process"]["pid"], pid);
    let stopped = tracer.finish_with(0);
    assert_eq!(stopped.stats["connects"], 1, "{}", stopped.stats);
}

/// A socket bound to a port that connects to that same address and port meets its own SYN: a
/// TCP simultaneous open (SYN_SENT → SYN_RECV → ESTABLISHED). It is a success, and its close is
/// clean: the SYN_RECV step counts as established (the tracer skips every SYN_RECV →
/// ESTABLISHED lookup, the way in of every accepted connection).
const PYTHON_SELF_CONNECT: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.connect(("127.0.0.1", port))
print("result=ok port=%d" % port, flush=True)
s.close()
"#;

#[test]
fn a_simultaneous_open_is_a_success() {
    let ns = Netns::new("selfconnect");
    let tracer = Tracer::start(&ns, &["--successes"]);
    let python = ns.spawn(
        std::path::Path::new("/usr/bin/python3"),
        &["-c", PYTHON_SELF_CONNECT],
    );
    let pid = python.pid();
    let (status, lines) = python.wait(WAIT);
    assert!(status.success(), "python3 failed: {status} {lines:?}");
    assert_eq!(
        lines.first().and_then(|l| field(l, "result")),
        Some("ok"),
        "{lines:?}"
    );
    let port: u64 = field(&lines[0], "port").unwrap().parse().unwrap();
    let r = tracer.wait_records("connect", 1, WAIT, |_| true).remove(0);
    assert_eq!(r["src"]["port"], port, "{r}");
    assert_eq!(r["dst"]["port"], port, "{r}");
    assert_eq!(r["process"]["pid"], pid, "{r}");
    let stopped = tracer.finish_with(0);
    assert_eq!(stopped.stats["connects"], 1, "{}", stopped.stats);
    assert_eq!(stopped.stats["cancelled"], 0, "{}", stopped.stats);
}

#[test]
fn inbound_refusal_names_the_remote_client() {
    inbound_refusal(&[], "tcp_send_reset_raw");
}

/// The classic program reads the two ends from the tracepoint's record, the raw one from the
/// segment's headers: the same record either way.
#[test]
fn inbound_refusal_names_the_remote_client_with_classic_tracepoints() {
    inbound_refusal(&["--classic-tracepoints"], "tcp_send_reset,");
}

fn inbound_refusal(mode: &[&str], program: &str) {
    let server = Netns::new("inbound");
    let remote = Netns::new("inbound-peer");
    server.veth(&remote, "10.200.0.1/24", Some("10.200.0.2/24"));
    let tracer = Tracer::start(&server, mode);
    let log = tracer.startup_log();
    assert!(log.contains(program), "{program} not attached: {log}");
    let (_, lines) = client_run(&remote, &["connect", "--addr", "10.200.0.1:47"], WAIT);
    assert_eq!(field(&lines[0], "result"), Some("ECONNREFUSED"));
    let r = tracer.wait_failures(1, WAIT, for_port(47)).remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(r["direction"], "inbound");
    assert_eq!(
        r["src"],
        json!({"ip": "10.200.0.2", "port": sport_of(&lines[0])})
    );
    assert_eq!(r["dst"], json!({"ip": "10.200.0.1", "port": 47}));
    assert_eq!(r["process"], Value::Null);
    assert_eq!(r["netns"], server.inode);
    assert_eq!(r["evidence"]["tcp_flags"], "S");
    assert_eq!(r["evidence"]["rst_sent"], true);
    assert_eq!(r["evidence"]["rst_sent_reason"], "no_socket");
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .starts_with("10.200.0.2 tried to connect to port 47"),
        "{r}"
    );
    tracer.finish_with(1);
}

#[test]
fn loopback_refusal_is_reported_once_as_outbound() {
    // Over loopback this host both connects and refuses: the outbound record says it all, the
    // socket-less RST is counted, not printed.
    let ns = Netns::new("loopback");
    let tracer = Tracer::start(&ns, &[]);
    client_run(&ns, &["connect", "--addr", "127.0.0.1:47"], WAIT);
    let r = tracer.wait_failures(1, WAIT, for_port(47)).remove(0);
    assert_eq!(r["direction"], "outbound");
    let stopped = tracer.finish_with(1);
    assert_eq!(stopped.stats["inbound_ignored"], 1, "{}", stopped.stats);
}
