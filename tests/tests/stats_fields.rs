//! Every `stats` field means what the README and the schema say it means. For each field there
//! is a test that makes it move and a test that keeps it still in a near miss: traffic a wrong
//! count would take in (a connect the filters skip, a refusal that is no cancel, a DNS answer
//! given again at the cache's cap, …).
//!
//! The scenarios below are table-driven: each runs in a namespace of its own and lists the
//! fields it moves (`Moves`: exactly that much) and the fields its near misses must leave
//! where they are (`Still`: exactly that value, 0 unless the scenario's own traffic counts);
//! every other field must be 0. `COVERED_ELSEWHERE` names the tests in other files (and the
//! unit tests of userspace counters) that move or keep a field still. The guard test
//! `every_stats_field_is_moved_and_kept_still_by_a_named_test` fails when a field of the
//! schema's `stats` record has no test of either kind, or when a named test does not exist.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    scenario::{CLOSED_PORT, client_run, http_get, listener, table},
};

const WAIT: Duration = Duration::from_secs(10);

/// What a scenario says of one field of the final `stats` record.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The scenario's traffic moves it to exactly this (not 0).
    Moves(u64),
    /// It moves, by an amount the test asserts itself (`dns_lost`: how much a full ring holds).
    MovesSome,
    /// A near miss in the scenario must not move it: exactly this (what the rest of the
    /// scenario's traffic counts, usually 0).
    Still(u64),
}
use Expect::*;

struct Scenario {
    /// The `#[test]` function that runs it.
    name: &'static str,
    expect: &'static [(&'static str, Expect)],
}

/// Fields another helper owns (the socket map's redesign, `tests/tests/capacity.rs`): not
/// asserted here, since their meaning is changing (`evicted`: only lost tracked state).
const OWNED_BY_CAPACITY: &[&str] = &["evicted", "insert_errors", "tracked_sockets"];

impl Scenario {
    /// Waits (polling the `--stats-interval 1` records) until every moving field has reached
    /// its value, then stops the tracer and checks the final `stats` record: each listed field
    /// exactly, every other field 0, and `produced = events + decode_errors`.
    fn check(&self, tracer: Tracer) -> Value {
        let moved = |s: &Value| {
            self.expect.iter().all(|(f, e)| match e {
                Moves(n) => s[f].as_u64() >= Some(*n),
                MovesSome => s[f].as_u64() >= Some(1),
                Still(_) => true,
            })
        };
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tracer.wait_records("stats", 1, WAIT, moved);
        }));
        if waited.is_err() {
            let last = tracer.records_of("stats").pop();
            panic!(
                "{}: the moving fields never got there; last stats: {last:?}",
                self.name
            );
        }
        let stats = tracer.finish().stats;
        let mut wrong = Vec::new();
        for (field, value) in stats.as_object().expect("stats is an object") {
            if matches!(field.as_str(), "type" | "time")
                || OWNED_BY_CAPACITY.contains(&field.as_str())
            {
                continue;
            }
            let got = value.as_u64().expect("a count");
            let want = match self.expect.iter().find(|(f, _)| f == field) {
                Some((_, Moves(n) | Still(n))) => Some(*n),
                Some((_, MovesSome)) => None,
                // Not this scenario's fields: nothing else may move. `produced` and `events`
                // move with every record; the relation below checks them.
                None if matches!(field.as_str(), "produced" | "events") => None,
                None => Some(0),
            };
            if want.is_some_and(|w| w != got) {
                wrong.push(format!("{field}: {got}, expected {}", want.unwrap()));
            }
        }
        assert!(
            wrong.is_empty(),
            "{}: {}\nfinal stats: {stats}",
            self.name,
            wrong.join("; ")
        );
        assert_eq!(
            stats["produced"].as_u64(),
            Some(stats["events"].as_u64().unwrap() + stats["decode_errors"].as_u64().unwrap()),
            "{}: produced = events + decode_errors once read: {stats}",
            self.name
        );
        stats
    }
}

/// The tracer on `ns`, with a `stats` record every second for `Scenario::check` to wait on.
fn tracer(ns: &Netns, extra: &[&str]) -> Tracer {
    let mut args = vec!["--stats-interval", "1"];
    args.extend_from_slice(extra);
    Tracer::start(ns, &args)
}

fn connect(ns: &Netns, addr: &str, extra: &[&str]) -> String {
    let mut args = vec!["connect", "--addr", addr];
    args.extend_from_slice(extra);
    let (_, lines) = client_run(ns, &args, WAIT);
    tracer_tests::process::field(&lines[0], "result")
        .expect("the client says its result")
        .to_string()
}

/// Two namespaces joined by a veth: `a` 10.`net`.0.1, `b` 10.`net`.0.2.
fn pair(tag: &str, net: u8) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}-a"));
    let b = Netns::new(&format!("{tag}-b"));
    a.veth(
        &b,
        &format!("10.{net}.0.1/24"),
        Some(&format!("10.{net}.0.2/24")),
    );
    (a, b)
}

// ---------------------------------------------------------------------------------------------
// Connections: connects, clean closes, failures, cancels, filters.

const CLEAN: Scenario = Scenario {
    name: "clean_connects_are_connects_and_clean_closes_and_nothing_else",
    expect: &[
        // Each connect is one record, and the client's cgroup is announced once (its first
        // connect); the clean closes are counted in the kernel, not submitted.
        ("produced", Moves(4)),
        ("events", Moves(4)),
        ("connects", Moves(3)),
        ("clean_closes", Moves(3)),
        // A clean close is no failure, no cancel, no unclassified error; nothing was skipped,
        // unreadable or undecodable.
        ("failures", Still(0)),
        ("cancelled", Still(0)),
        ("unclassified", Still(0)),
        ("kernel_skipped", Still(0)),
        ("read_errors", Still(0)),
        ("decode_errors", Still(0)),
        ("lost", Still(0)),
        ("workloads_evicted", Still(0)),
    ],
};

#[test]
fn clean_connects_are_connects_and_clean_closes_and_nothing_else() {
    let ns = Netns::new("sf-clean");
    let (_server, port) = listener(&ns, &[]);
    let t = tracer(&ns, &[]);
    for _ in 0..3 {
        assert_eq!(connect(&ns, &format!("127.0.0.1:{port}"), &[]), "ok");
    }
    CLEAN.check(t);
}

const FILTERED: Scenario = Scenario {
    name: "connects_the_port_filter_skips_move_no_counter",
    expect: &[
        // Only the sentinel refusal to the filtered port counts: its close, its cgroup's
        // announcement, and its own socket-less RST over loopback (the refusal to port 48
        // sent one too, not counted: its connect was skipped).
        ("failures", Moves(1)),
        ("produced", Still(2)),
        ("events", Still(2)),
        ("inbound_ignored", Still(1)),
        // Skipped: two connects that succeed and close cleanly, a refusal to another port, a
        // connect closed in SYN_SENT.
        ("connects", Still(0)),
        ("clean_closes", Still(0)),
        ("cancelled", Still(0)),
        ("local_drops", Still(0)),
    ],
};

#[test]
fn connects_the_port_filter_skips_move_no_counter() {
    let ns = Netns::new("sf-filtered");
    let (_server, port) = listener(&ns, &[]);
    ns.nft(&table("tcp dport 49 drop"));
    let t = tracer(&ns, &["--port", CLOSED_PORT]);
    for _ in 0..2 {
        assert_eq!(connect(&ns, &format!("127.0.0.1:{port}"), &[]), "ok");
    }
    assert_eq!(connect(&ns, "127.0.0.1:48", &[]), "ECONNREFUSED");
    assert_eq!(
        connect(&ns, "127.0.0.1:49", &["--give-up-ms", "50"]),
        "gave_up"
    );
    assert_eq!(
        connect(&ns, &format!("127.0.0.1:{CLOSED_PORT}"), &[]),
        "ECONNREFUSED"
    );
    FILTERED.check(t);
}

const LOOPBACK_REFUSAL: Scenario = Scenario {
    name: "a_refusal_over_loopback_is_one_failure_and_one_ignored_rst",
    expect: &[
        ("failures", Moves(1)),
        // The host refusing its own connect: the RST is counted, the outbound record says it.
        ("inbound_ignored", Moves(1)),
        // The connect's close and its cgroup's announcement.
        ("produced", Moves(2)),
        ("events", Moves(2)),
        // A refused connect is no cancel, no connect, no clean close; its listeners were
        // looked up in time (none).
        ("cancelled", Still(0)),
        ("connects", Still(0)),
        ("clean_closes", Still(0)),
        ("unclassified", Still(0)),
        ("listeners_unanswered", Still(0)),
        ("forwarded_evicted", Still(0)),
    ],
};

#[test]
fn a_refusal_over_loopback_is_one_failure_and_one_ignored_rst() {
    let ns = Netns::new("sf-loop");
    let t = tracer(&ns, &[]);
    assert_eq!(
        connect(&ns, &format!("127.0.0.1:{CLOSED_PORT}"), &[]),
        "ECONNREFUSED"
    );
    LOOPBACK_REFUSAL.check(t);
}

const REMOTE_REFUSAL: Scenario = Scenario {
    name: "an_outbound_refusal_by_another_namespace_ignores_no_rst",
    expect: &[
        ("failures", Moves(1)),
        // The RST came from the peer namespace: nothing of this host's was socket-less.
        ("inbound_ignored", Still(0)),
        ("cancelled", Still(0)),
        ("connects", Still(0)),
    ],
};

#[test]
fn an_outbound_refusal_by_another_namespace_ignores_no_rst() {
    let (client, _server) = pair("sf-remote", 205);
    let t = tracer(&client, &[]);
    assert_eq!(connect(&client, "10.205.0.2:47", &[]), "ECONNREFUSED");
    REMOTE_REFUSAL.check(t);
}

/// A bare ACK (no connection behind it) from 10.206.0.1:40000 to 10.206.0.2:48, sent on a raw
/// socket: the receiver answers it with a socket-less RST that answers no SYN.
const PYTHON_STRAY_ACK: &str = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
src, dst = "10.206.0.1", "10.206.0.2"
tcp = struct.pack("!HHIIBBHHH", 40000, 48, 1000, 2000, 5 << 4, 0x10, 1024, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.sendto(tcp, (dst, 0))
print("sent", flush=True)
"#;

const INBOUND: Scenario = Scenario {
    name: "a_refused_syn_is_an_inbound_failure_and_a_stray_ack_an_ignored_rst",
    expect: &[
        // The remote client's SYN to a closed port: an inbound refusal, reported.
        ("failures", Moves(1)),
        // The RST answering the stray ACK: socket-less, answering no SYN.
        ("inbound_ignored", Moves(1)),
        ("connects", Still(0)),
        ("cancelled", Still(0)),
    ],
};

#[test]
fn a_refused_syn_is_an_inbound_failure_and_a_stray_ack_an_ignored_rst() {
    let (client, server) = pair("sf-inbound", 206);
    let t = tracer(&server, &[]);
    assert_eq!(connect(&client, "10.206.0.2:47", &[]), "ECONNREFUSED");
    let (status, lines) = client
        .spawn(Path::new("/usr/bin/python3"), &["-c", PYTHON_STRAY_ACK])
        .wait(WAIT);
    assert!(status.success(), "python3: {status} {lines:?}");
    INBOUND.check(t);
}

const CANCELLED: Scenario = Scenario {
    name: "a_connect_given_up_before_any_retransmission_is_cancelled_after_one_a_syn_timeout",
    expect: &[
        // Closed 50 ms into SYN_SENT: cancelled.
        ("cancelled", Moves(1)),
        // Closed 1.5 s in, after the SYN's first retransmission: a syn_timeout, not a cancel.
        ("failures", Moves(1)),
        ("connects", Still(0)),
        ("clean_closes", Still(0)),
        // The SYNs were dropped by the peer namespace, not this host.
        ("local_drops", Still(0)),
    ],
};

#[test]
fn a_connect_given_up_before_any_retransmission_is_cancelled_after_one_a_syn_timeout() {
    let (client, server) = pair("sf-cancel", 207);
    server.nft(
        "table inet tt {\n  chain in {\n    type filter hook input priority 0; policy accept;\n    tcp dport 47 drop\n  }\n}\n",
    );
    client.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
    let t = tracer(&client, &[]);
    assert_eq!(
        connect(&client, "10.207.0.2:47", &["--give-up-ms", "50"]),
        "gave_up"
    );
    assert_eq!(
        connect(&client, "10.207.0.2:47", &["--give-up-ms", "1500"]),
        "gave_up"
    );
    CANCELLED.check(t);
}

const RESET: Scenario = Scenario {
    name: "an_established_connection_reset_by_its_server_is_no_clean_close",
    expect: &[
        ("connects", Moves(1)),
        ("failures", Moves(1)),
        ("clean_closes", Still(0)),
        ("unclassified", Still(0)),
    ],
};

#[test]
fn an_established_connection_reset_by_its_server_is_no_clean_close() {
    let ns = Netns::new("sf-reset");
    let (_server, port) = listener(&ns, &["--reset-after-ms", "100"]);
    let t = tracer(&ns, &[]);
    let (_, lines) = client_run(&ns, &["recv", "--addr", &format!("127.0.0.1:{port}")], WAIT);
    assert!(lines.iter().any(|l| l.contains("ECONNRESET")), "{lines:?}");
    RESET.check(t);
}

// ---------------------------------------------------------------------------------------------
// Summaries: the destination cap.

const AT_THE_DESTINATION_CAP: Scenario = Scenario {
    name: "destinations_seen_again_at_the_cap_are_not_evicted",
    expect: &[
        ("failures", Moves(4)),
        ("inbound_ignored", Moves(4)),
        ("destinations_evicted", Still(0)),
    ],
};

#[test]
fn destinations_seen_again_at_the_cap_are_not_evicted() {
    let ns = Netns::new("sf-dstcap");
    let t = tracer(&ns, &["--max-destinations", "2"]);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"] {
        assert_eq!(connect(&ns, &format!("{ip}:47"), &[]), "ECONNREFUSED");
    }
    AT_THE_DESTINATION_CAP.check(t);
}

const PAST_THE_DESTINATION_CAP: Scenario = Scenario {
    name: "a_third_destination_past_a_cap_of_two_evicts_one",
    expect: &[
        ("failures", Moves(3)),
        ("inbound_ignored", Moves(3)),
        ("destinations_evicted", Moves(1)),
    ],
};

#[test]
fn a_third_destination_past_a_cap_of_two_evicts_one() {
    let ns = Netns::new("sf-dstevict");
    let t = tracer(&ns, &["--max-destinations", "2"]);
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert_eq!(connect(&ns, &format!("{ip}:47"), &[]), "ECONNREFUSED");
    }
    PAST_THE_DESTINATION_CAP.check(t);
}

// ---------------------------------------------------------------------------------------------
// DNS: a responder and its clients in one Python process, on the namespace's loopback.

/// `ask(id, name, reply)`: a new client socket sends the query, the responder on
/// 127.0.0.1:53 answers it with `reply(id)` (bytes), the client reads it; returns the client.
const PYTHON_DNS: &str = r#"
import socket, struct
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
srv.bind(("127.0.0.1", 53))
srv.settimeout(5)
def qname(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"
def question(n):
    return qname(n) + struct.pack(">HH", 1, 1)
def query(i, n):
    return struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + question(n)
def answer(n, addrs):
    def reply(i):
        rr = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(a) for a in addrs)
        return struct.pack(">HHHHHH", i, 0x8180, 1, len(addrs), 0, 0) + question(n) + rr
    return reply
def garbage(i):
    return struct.pack(">H", i) + b"\xbe\xef garbage"
def ask(i, n, reply):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(5)
    c.sendto(query(i, n), ("127.0.0.1", 53))
    _, peer = srv.recvfrom(4096)
    srv.sendto(reply(i), peer)
    c.recv(4096)
    return c
def addrs(n):
    return ["10.9.%d.%d" % (k // 250, 1 + k % 250) for k in range(n)]
"#;

fn run_python(ns: &Netns, script: &str) {
    let code = format!("{PYTHON_DNS}{script}\nprint(\"done\", flush=True)\n");
    let (status, lines) = ns
        .spawn(Path::new("/usr/bin/python3"), &["-c", &code])
        .wait(WAIT);
    assert!(
        status.success() && lines.iter().any(|l| l == "done"),
        "python3: {status} {lines:?}"
    );
}

const NO_DNS_AT_ALL: Scenario = Scenario {
    name: "a_tcp_refusal_from_port_53_and_udp_to_port_5353_are_no_dns",
    expect: &[
        ("failures", Moves(1)),
        ("inbound_ignored", Moves(1)),
        // A SYN to TCP port 53 carries no query; the RST from port 53 answers none; a
        // datagram to port 5353 (mDNS) is not to port 53.
        ("dns_queries", Still(0)),
        ("dns_responses", Still(0)),
        ("dns_parse_errors", Still(0)),
        ("dns_unsolicited", Still(0)),
        ("dns_lost", Still(0)),
    ],
};

#[test]
fn a_tcp_refusal_from_port_53_and_udp_to_port_5353_are_no_dns() {
    let ns = Netns::new("sf-nodns");
    let t = tracer(&ns, &[]);
    run_python(
        &ns,
        "c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         c.sendto(query(7, 'mdns.local'), ('127.0.0.1', 5353))",
    );
    assert_eq!(connect(&ns, "127.0.0.1:53", &[]), "ECONNREFUSED");
    NO_DNS_AT_ALL.check(t);
}

const DNS_AT_THE_CACHE_CAP: Scenario = Scenario {
    name: "dns_answers_given_again_at_the_cache_cap_evict_nothing",
    expect: &[
        ("dns_queries", Moves(2)),
        ("dns_responses", Moves(2)),
        // The same 16 addresses again, with a cap of 16: replaced, not evicted.
        ("dns_evicted", Still(0)),
        // Well-formed answers to the questions asked, within 512 bytes.
        ("dns_unmatched", Still(0)),
        ("dns_truncated", Still(0)),
        ("dns_parse_errors", Still(0)),
        ("dns_unsolicited", Still(0)),
        ("dns_lost", Still(0)),
        // DNS records are not the connection records of the main ring.
        ("decode_errors", Still(0)),
    ],
};

#[test]
fn dns_answers_given_again_at_the_cache_cap_evict_nothing() {
    let ns = Netns::new("sf-dnscap");
    let t = tracer(&ns, &["--dns-cache", "16"]);
    run_python(
        &ns,
        "ask(1, 'a.test', answer('a.test', addrs(16)))\nask(2, 'a.test', answer('a.test', addrs(16)))",
    );
    DNS_AT_THE_CACHE_CAP.check(t);
}

const DNS_ODD_ANSWERS: Scenario = Scenario {
    name: "odd_dns_answers_are_each_counted_once_where_they_belong",
    expect: &[
        ("dns_queries", Moves(4)),
        // Answers to queries seen leaving: the four below, whatever became of them.
        ("dns_responses", Moves(4)),
        // b.test answered about other.test.
        ("dns_unmatched", Moves(1)),
        // c.test answered with 40 addresses (664 bytes).
        ("dns_truncated", Moves(1)),
        // d.test answered with bytes that are no DNS message.
        ("dns_parse_errors", Moves(1)),
        // e.test answered with 17 addresses, a cap of 16.
        ("dns_evicted", Moves(1)),
        // An answer from port 53 with an id nobody asked.
        ("dns_unsolicited", Moves(1)),
        ("dns_lost", Still(0)),
    ],
};

#[test]
fn odd_dns_answers_are_each_counted_once_where_they_belong() {
    let ns = Netns::new("sf-dnsodd");
    let t = tracer(&ns, &["--dns-cache", "16"]);
    run_python(
        &ns,
        "ask(3, 'b.test', answer('other.test', addrs(1)))\n\
         ask(4, 'c.test', answer('c.test', addrs(40)))\n\
         ask(5, 'd.test', garbage)\n\
         c = ask(6, 'e.test', answer('e.test', addrs(17)))\n\
         srv.sendto(answer('e.test', addrs(1))(0x7777), c.getsockname())\n\
         c.recv(4096)",
    );
    DNS_ODD_ANSWERS.check(t);
}

const DNS_RING_FULL: Scenario = Scenario {
    name: "dns_queries_past_a_full_dns_ring_are_dns_lost_not_lost",
    expect: &[
        ("dns_lost", MovesSome),
        ("dns_queries", MovesSome),
        // The DNS ring is not the connection records' ring: nothing of those was lost.
        ("lost", Still(0)),
        ("lost_connections", Still(0)),
        ("dns_responses", Still(0)),
    ],
};

/// Queries the client sends while the tracer is stopped: more than the 512 KiB DNS ring holds.
const DNS_FLOOD: u64 = 3000;

#[test]
fn dns_queries_past_a_full_dns_ring_are_dns_lost_not_lost() {
    let ns = Netns::new("sf-dnslost");
    let t = tracer(&ns, &[]);
    t.pause();
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_python(
            &ns,
            &format!(
                "c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 for i in range({DNS_FLOOD}):\n    c.sendto(query(i, 'flood.test'), ('127.0.0.1', 53))"
            ),
        )
    }));
    t.resume();
    if let Err(e) = sent {
        std::panic::resume_unwind(e);
    }
    let stats = DNS_RING_FULL.check(t);
    assert_eq!(
        stats["dns_queries"].as_u64().unwrap() + stats["dns_lost"].as_u64().unwrap(),
        DNS_FLOOD,
        "every query either read or counted lost: {stats}"
    );
}

// ---------------------------------------------------------------------------------------------
// The metrics listener.

const METRICS_QUIET: Scenario = Scenario {
    name: "ordinary_metrics_clients_are_refused_timed_out_or_evicted_never",
    expect: &[
        // A kept-alive connection the listener closes after 5 s idle.
        ("metrics_listener_timeouts", Still(0)),
        // A request head of 15 KiB, under the 16 KiB limit.
        ("metrics_listener_refused", Still(0)),
        // 16 connections open at once, well under the cap.
        ("metrics_listener_evicted", Still(0)),
        ("metrics_listener_accept_errors", Still(0)),
    ],
};

#[test]
fn ordinary_metrics_clients_are_refused_timed_out_or_evicted_never() {
    use std::io::{Read, Write};
    let ns = Netns::new("sf-metrics");
    let t = tracer(&ns, &["--metrics-addr", "127.0.0.1:0"]);
    let addr = t.metrics_addr();
    // Kept alive, then idle: the listener closes it after 5 s.
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    // 16 at once, each answered.
    let held: Vec<_> = (0..16)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let padding = "x".repeat(15 << 10);
    for mut c in held {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            c,
            "GET /healthz HTTP/1.0\r\nHost: {addr}\r\nX-Padding: {padding}\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        c.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response:.80}");
    }
    // The idle one: its answer, then the listener's close (a read of 0 bytes), 5 s on.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        match idle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the idle connection was not closed within 10 s: {e}"),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "closed idle too early"
    );
    http_get(addr, "/healthz").expect("still answering");
    METRICS_QUIET.check(t);
}

// ---------------------------------------------------------------------------------------------
// The coverage table and its guard.

const SCENARIOS: &[&Scenario] = &[
    &CLEAN,
    &FILTERED,
    &LOOPBACK_REFUSAL,
    &REMOTE_REFUSAL,
    &INBOUND,
    &CANCELLED,
    &RESET,
    &AT_THE_DESTINATION_CAP,
    &PAST_THE_DESTINATION_CAP,
    &NO_DNS_AT_ALL,
    &DNS_AT_THE_CACHE_CAP,
    &DNS_ODD_ANSWERS,
    &DNS_RING_FULL,
    &METRICS_QUIET,
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Moves,
    Still,
}

/// Tests elsewhere that move a field or keep it still in a near miss: `(field, kind, test)`,
/// the test as `PATH::fn` from the workspace root.
const COVERED_ELSEWHERE: &[(&str, Kind, &str)] = &[
    // Translations and forwarded drops (issue 27): the client's and the backend's namespaces.
    (
        "nat_records",
        Kind::Moves,
        "tests/tests/nat_kernel.rs::an_untracked_sockets_translation_is_one_nat_record_whatever_the_retransmits",
    ),
    (
        "nat_records",
        Kind::Still,
        "tests/tests/nat_kernel.rs::a_tracked_connect_to_a_dnat_vip_holds_its_backend",
    ),
    (
        "forward_drops",
        Kind::Moves,
        "tests/tests/nat_kernel.rs::a_syn_netfilter_drops_with_no_socket_is_one_forward_drop_whatever_the_retransmits",
    ),
    (
        "forward_drops",
        Kind::Still,
        "tests/tests/nat_kernel.rs::an_untracked_sockets_translation_is_one_nat_record_whatever_the_retransmits",
    ),
    (
        "forward_drops_limited",
        Kind::Moves,
        "tests/tests/nat_kernel.rs::a_syn_flood_through_a_dropping_firewall_is_cut_at_the_rate_limit",
    ),
    (
        "forward_drops_limited",
        Kind::Still,
        "tests/tests/nat_kernel.rs::a_syn_netfilter_drops_with_no_socket_is_one_forward_drop_whatever_the_retransmits",
    ),
    (
        "forwarded_evicted",
        Kind::Moves,
        "tracer/src/enrich/service/tests.rs::a_forwarded_note_expires_and_the_table_is_bounded",
    ),
    (
        "lost",
        Kind::Moves,
        "tests/tests/overload.rs::every_refusal_is_either_delivered_or_counted_lost_and_the_tracer_recovers",
    ),
    (
        "lost_connections",
        Kind::Moves,
        "tests/tests/overload.rs::every_refusal_is_either_delivered_or_counted_lost_and_the_tracer_recovers",
    ),
    // A DNS flood: DNS names lost, no connection record.
    (
        "lost_connections",
        Kind::Still,
        "tests/tests/dns_hostile.rs::a_dns_flood_stalls_nothing_and_costs_no_failure",
    ),
    (
        "kernel_skipped",
        Kind::Moves,
        "tests/tests/nesting.rs::a_death_whose_close_the_kernel_did_not_trace_is_reported_when_the_socket_is_freed",
    ),
    (
        "late_closes",
        Kind::Moves,
        "tests/tests/nesting.rs::a_death_whose_close_the_kernel_did_not_trace_is_reported_when_the_socket_is_freed",
    ),
    // The same CPU held, with raw tracepoints: every close traced.
    (
        "late_closes",
        Kind::Still,
        "tests/tests/nesting.rs::with_raw_tracepoints_a_death_on_a_held_cpu_has_its_close_traced",
    ),
    // The kernel only writes records of the shape userspace reads: moved on garbage bytes.
    (
        "decode_errors",
        Kind::Moves,
        "tracer/src/pipeline.rs::an_undecodable_record_is_counted_and_yields_nothing",
    ),
    // A failed bpf_probe_read_kernel of a socket's field cannot be provoked on a working
    // kernel: the unit test shows the field reports the kernel's counter.
    (
        "read_errors",
        Kind::Moves,
        "tracer/src/export/record.rs::stats_fields_read_their_counts",
    ),
    (
        "cancelled",
        Kind::Moves,
        "tests/tests/kernel.rs::cancelled_connect_is_counted_not_reported",
    ),
    // connect() undoing a connect that found no local port: no_local_port, not cancelled.
    (
        "cancelled",
        Kind::Still,
        "tests/tests/connect_call.rs::exhausted_local_ports_are_no_local_port_not_cancelled",
    ),
    (
        "connects",
        Kind::Moves,
        "tests/tests/taxonomy.rs::success_after_a_lost_syn_is_a_connect_record",
    ),
    (
        "unclassified",
        Kind::Moves,
        "tracer/src/analysis/classify/tests.rs::connect_call_failures_are_labelled_by_errno_and_route",
    ),
    // A call failure its socket already reported is not unclassified.
    (
        "unclassified",
        Kind::Still,
        "tracer/src/analysis/classify/tests.rs::a_call_failure_its_socket_already_reported_is_one_failure",
    ),
    (
        "unclassified",
        Kind::Still,
        "tests/tests/taxonomy.rs::unreachable_when_no_host_answers_arp",
    ),
    (
        "inbound_ignored",
        Kind::Moves,
        "tests/tests/taxonomy.rs::loopback_refusal_is_reported_once_as_outbound",
    ),
    (
        "destinations_evicted",
        Kind::Moves,
        "tracer/src/analysis/aggregate/tests.rs::the_cap_evicts_the_least_recently_active_and_counts_it",
    ),
    // Workload identities need cgroups of their own: moved and kept still (announced again:
    // replaced, not evicted) on the cache itself.
    (
        "workloads_evicted",
        Kind::Moves,
        "tracer/src/enrich/workload/tests.rs::the_cache_is_bounded_and_counts_evictions_and_unresolved_cgroups",
    ),
    (
        "workloads_evicted",
        Kind::Still,
        "tracer/src/enrich/workload/tests.rs::the_cache_is_bounded_and_counts_evictions_and_unresolved_cgroups",
    ),
    (
        "workloads_unresolved",
        Kind::Moves,
        "tracer/src/enrich/workload/tests.rs::the_cache_is_bounded_and_counts_evictions_and_unresolved_cgroups",
    ),
    // The client's cgroup gone before its record was read: still resolved.
    (
        "workloads_unresolved",
        Kind::Still,
        "tests/tests/workload.rs::the_workload_survives_the_client_and_its_cgroup_being_gone",
    ),
    (
        "output_dropped",
        Kind::Moves,
        "tests/tests/hardening.rs::a_vanished_output_directory_is_reported_counted_and_survived",
    ),
    (
        "output_dropped",
        Kind::Moves,
        "tests/tests/otlp.rs::an_outage_loses_no_record_uncounted",
    ),
    // A TCP shipper away for 2 s: buffered, then delivered, nothing dropped.
    (
        "output_dropped",
        Kind::Still,
        "tests/tests/outputs.rs::tcp_sink_survives_the_shipper_going_away_for_two_seconds",
    ),
    // A Collector answering 503 with Retry-After until it takes the record: not dropped.
    (
        "output_dropped",
        Kind::Still,
        "tests/tests/otlp.rs::retry_after_zero_or_a_date_past_cannot_make_the_exporter_spin",
    ),
    (
        "listeners_unanswered",
        Kind::Moves,
        "tracer/src/enrich/listeners/causes.rs::held_refusals_go_out_in_order_at_their_deadline",
    ),
    (
        "listeners_unanswered",
        Kind::Moves,
        "tracer/src/enrich/listeners/causes.rs::a_full_hold_or_a_busy_worker_sends_refusals_out_at_once_counted",
    ),
    (
        "listeners_unanswered",
        Kind::Still,
        "tracer/src/enrich/listeners/causes.rs::a_refusal_waits_for_its_answer_without_blocking",
    ),
    (
        "local_drops",
        Kind::Moves,
        "tests/tests/root_cause.rs::syn_acks_dropped_by_the_clients_own_firewall_are_the_evidence",
    ),
    // The same SYN-ACKs dropped in the server's namespace: no drop of this host's.
    (
        "local_drops",
        Kind::Still,
        "tests/tests/root_cause.rs::syn_acks_dropped_in_the_servers_namespace_are_no_local_drop",
    ),
    (
        "clean_closes",
        Kind::Moves,
        "tests/tests/kernel.rs::successes_are_silent",
    ),
    (
        "dns_evicted",
        Kind::Moves,
        "tests/tests/dns_hostile.rs::maximal_answers_stay_within_the_memory_budget_and_name_briefly",
    ),
    (
        "dns_unsolicited",
        Kind::Moves,
        "tests/tests/dns_hostile.rs::an_unsolicited_forged_answer_names_nothing",
    ),
    (
        "dns_parse_errors",
        Kind::Moves,
        "tests/tests/dns.rs::garbage_answers_are_counted_and_name_nothing",
    ),
    (
        "metrics_listener_evicted",
        Kind::Moves,
        "tests/tests/metrics_port.rs::slow_oversized_request_heads_leave_memory_bounded_and_healthz_answering",
    ),
    (
        "metrics_listener_timeouts",
        Kind::Moves,
        "tests/tests/metrics_port.rs::slow_oversized_request_heads_leave_memory_bounded_and_healthz_answering",
    ),
    (
        "metrics_listener_refused",
        Kind::Moves,
        "tests/tests/metrics_port.rs::slow_oversized_request_heads_leave_memory_bounded_and_healthz_answering",
    ),
    (
        "metrics_listener_accept_errors",
        Kind::Moves,
        "tests/tests/metrics_port.rs::emfile_at_accept_backs_off_and_makes_room",
    ),
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `file` (from the workspace root) defines `fn name(`.
fn defines(file: &str, name: &str) -> bool {
    std::fs::read_to_string(workspace().join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .contains(&format!("fn {name}("))
}

/// No kernel needed: the table against the schema and the test sources.
#[test]
fn every_stats_field_is_moved_and_kept_still_by_a_named_test() {
    let schema: Value = serde_json::from_str(tracer_tests::schema::SCHEMA).unwrap();
    let stats = &schema["$defs"]["stats"];
    let fields: Vec<&str> = stats["properties"]
        .as_object()
        .expect("the stats record's properties")
        .keys()
        .map(String::as_str)
        .filter(|f| !matches!(*f, "type" | "time"))
        .collect();
    let required: Vec<&str> = stats["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|f| !matches!(*f, "type" | "time"))
        .collect();
    assert_eq!(
        {
            let mut f = fields.clone();
            f.sort();
            f
        },
        {
            let mut r = required.clone();
            r.sort();
            r
        },
        "every stats field is required"
    );
    let mut tests: Vec<(&str, Kind, String)> = COVERED_ELSEWHERE
        .iter()
        .map(|(f, k, t)| (*f, *k, t.to_string()))
        .collect();
    for s in SCENARIOS {
        assert!(
            defines("tests/tests/stats_fields.rs", s.name),
            "scenario {} has no #[test] fn of that name",
            s.name
        );
        for (f, e) in s.expect {
            let kind = match e {
                Moves(0) => panic!("{}: {f} Moves(0) is no move: Still(0)", s.name),
                Moves(_) | MovesSome => Kind::Moves,
                Still(_) => Kind::Still,
            };
            tests.push((f, kind, format!("tests/tests/stats_fields.rs::{}", s.name)));
        }
    }
    for (f, _, t) in &tests {
        assert!(fields.contains(f), "{t} names {f}, not a stats field");
        let (file, name) = t.rsplit_once("::").expect("PATH::fn");
        assert!(defines(file, name), "{t}: no such test");
    }
    let mut missing = Vec::new();
    for f in &fields {
        if OWNED_BY_CAPACITY.contains(f) {
            continue;
        }
        for kind in [Kind::Moves, Kind::Still] {
            if !tests.iter().any(|(g, k, _)| g == f && *k == kind) {
                missing.push(format!("{f}: no test that {kind:?}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The README points at this table where it defines the fields.
#[test]
fn the_readme_points_at_this_table() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    assert!(
        readme.contains("tests/tests/stats_fields.rs"),
        "README.md's stats definitions name tests/tests/stats_fields.rs"
    );
}
