//! Real-kernel scenarios: each test makes its own network namespace, injects one fault with
//! nftables, runs a real client process, and asserts the tracer's JSON records (filtered to that
//! namespace by inode). Without the tracer attached no record appears, so every test would fail.
use std::time::Duration;

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer,
    process::field,
    scenario::{
        CLOSED_PORT, assert_process, blackhole_port, client_run, for_port, listener, sport_of,
        table,
    },
    tracer::Stopped,
};

#[test]
fn refused_by_rst_names_the_client_process() {
    let ns = Netns::new("refused");
    let tracer = Tracer::start(&ns, &[]);
    let (pid, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47"],
        Duration::from_secs(5),
    );
    assert_eq!(field(&lines[0], "result"), Some("ECONNREFUSED"));
    tracer.wait_failures(1, Duration::from_secs(5), for_port(47));
    let stopped = tracer.finish_with(1);
    let r = &stopped.failures[0];
    assert_eq!(r["label"], "refused");
    assert_eq!(r["evidence"]["via"], "rst");
    assert_eq!(r["errno"], "ECONNREFUSED");
    assert_eq!(r["dst"]["ip"], "127.0.0.1");
    assert_eq!(r["dst"]["port"], 47);
    assert_eq!(r["src"]["port"], sport_of(&lines[0]));
    assert_eq!(r["netns"], ns.inode);
    assert_eq!(r["evidence"]["syn_retransmits"], 0);
    assert_process(r, pid);
}

/// A REJECT rule answers the SYN with ICMP port-unreachable instead of a RST.
fn refused_by_icmp(tag: &str, client: &[&str]) -> Value {
    let ns = Netns::new(tag);
    ns.nft(&table(&format!(
        "tcp dport {CLOSED_PORT} reject with icmpx type port-unreachable"
    )));
    let tracer = Tracer::start(&ns, &[]);
    let (pid, lines) = client_run(&ns, client, Duration::from_secs(10));
    assert_eq!(field(&lines[0], "result"), Some("ECONNREFUSED"));
    let r = tracer
        .wait_failures(1, Duration::from_secs(5), for_port(47))
        .remove(0);
    assert_eq!(r["label"], "refused");
    assert_eq!(r["evidence"]["via"], "icmp", "{r}");
    assert_eq!(r["evidence"]["rst_received"], false);
    // The REJECT rule is this host's own (OUTPUT): the SYN never left, and the ICMP came from
    // this host.
    let drop = &r["evidence"]["local_drops"][0];
    assert_eq!(
        (&drop["direction"], &drop["reason"], &drop["tcp_flags"]),
        (&"sent".into(), &"NETFILTER_DROP".into(), &"S".into()),
        "{r}"
    );
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .starts_with("the SYN to 127.0.0.1:47 never left this host"),
        "{r}"
    );
    assert!(r["evidence"].get("listeners").is_none(), "{r}");
    assert_eq!(r["errno"], "ECONNREFUSED");
    assert_process(&r, pid);
    tracer.finish_with(1);
    r
}

#[test]
fn refused_by_firewall_icmp_reject_nonblocking_connect() {
    // The ICMP lands while connect() holds the socket: the kernel keeps it as a soft error,
    // which the client's getsockopt(SO_ERROR) consumes, and in the socket's error queue.
    let r = refused_by_icmp("icmp-nb", &["connect", "--addr", "127.0.0.1:47"]);
    // ICMP destination unreachable (3), port unreachable (3).
    assert_eq!(
        r["evidence"]["icmp"],
        serde_json::json!({"type": 3, "code": 3, "from": "127.0.0.1"}),
        "{r}"
    );
}

#[test]
fn refused_by_firewall_icmp_reject_blocking_connect() {
    // A blocking connect() sleeps; the ICMP answering the first SYN retransmission is a hard
    // error (sk_err), about 1 s late.
    refused_by_icmp(
        "icmp-b",
        &["connect", "--addr", "127.0.0.1:47", "--blocking"],
    );
}

fn blackhole(ns: &Netns, syn_retries: &str) {
    ns.sysctl("net.ipv4.tcp_syn_retries", syn_retries);
    ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
    ns.nft(&table(&format!("tcp dport {CLOSED_PORT} drop")));
}

fn syn_timeout_kernel(ip: &str, tag: &str) {
    let ns = Netns::new(tag);
    blackhole(&ns, "2");
    let tracer = Tracer::start(&ns, &[]);
    let addr = if ip.contains(':') {
        format!("[{ip}]:47")
    } else {
        format!("{ip}:47")
    };
    let (pid, lines) = client_run(&ns, &["connect", "--addr", &addr], Duration::from_secs(20));
    assert_eq!(field(&lines[0], "result"), Some("ETIMEDOUT"));
    let r = tracer
        .wait_failures(1, Duration::from_secs(5), for_port(47))
        .remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_eq!(r["evidence"]["gave_up"], "kernel");
    assert_eq!(r["evidence"]["syn_retransmits"], 2);
    assert_eq!(
        r["evidence"]["syn_retransmit_ms"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(r["errno"], "ETIMEDOUT");
    assert_eq!(r["dst"]["ip"], ip);
    assert!(
        r["evidence"]["elapsed_ms"].as_f64().unwrap() >= 6000.0,
        "{r}"
    );
    assert_process(&r, pid);
    tracer.finish_with(1);
}

#[test]
fn syn_timeout_kernel_gives_up() {
    syn_timeout_kernel("127.0.0.1", "syn4");
}

#[test]
fn ipv6_syn_timeout_kernel_gives_up() {
    syn_timeout_kernel("::1", "syn6");
}

#[test]
fn syn_timeout_application_gives_up() {
    let ns = Netns::new("synapp");
    blackhole(&ns, "6");
    let tracer = Tracer::start(&ns, &[]);
    let (pid, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--give-up-ms", "1500"],
        Duration::from_secs(10),
    );
    assert_eq!(field(&lines[0], "result"), Some("gave_up"));
    let r = tracer
        .wait_failures(1, Duration::from_secs(5), for_port(47))
        .remove(0);
    assert_eq!(r["label"], "syn_timeout", "{r}");
    assert_eq!(r["evidence"]["gave_up"], "application");
    assert!(
        r["evidence"]["syn_retransmits"].as_u64().unwrap() >= 1,
        "{r}"
    );
    assert_eq!(r["errno"], Value::Null);
    assert_process(&r, pid);
    tracer.stop();
}

#[test]
fn dropped_keepalive_when_the_idle_flow_is_blackholed() {
    let ns = Netns::new("keepalive");
    ns.nft(&table(""));
    let tracer = Tracer::start(&ns, &[]);
    let (server, port) = listener(&ns, &[]);
    let client = ns.client(&[
        "keepalive",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--idle",
        "1",
        "--intvl",
        "1",
        "--cnt",
        "2",
    ]);
    let sport = sport_of(&client.wait_line("connected", Duration::from_secs(5)));
    // Silently drop the idle flow, as a NAT or firewall that forgot it would.
    ns.nft(&blackhole_port(&port));
    let pid = client.pid();
    let r = tracer
        .wait_failures(1, Duration::from_secs(6), |r| r["src"]["port"] == sport)
        .remove(0);
    let (_, lines) = client.wait(Duration::from_secs(5));
    assert!(
        lines.iter().any(|l| l.starts_with("result=ETIMEDOUT")),
        "{lines:?}"
    );
    assert_eq!(r["label"], "dropped_keepalive", "{r}");
    assert_eq!(r["errno"], "ETIMEDOUT");
    assert_eq!(r["evidence"]["probes_sent"], 2);
    assert_eq!(r["evidence"]["keepalive_enabled"], true);
    assert_eq!(r["evidence"]["data_retransmits"], 0);
    assert_eq!(
        r["evidence"]["unacked_bytes"], 0,
        "idle: nothing outstanding"
    );
    // The socket's own settings: idle 1 s before the first probe, 1 s between, 2 probes.
    assert_eq!(r["evidence"]["keepalive_idle_ms"], 1000.0, "{r}");
    assert_eq!(r["evidence"]["keepalive_interval_ms"], 1000.0, "{r}");
    assert_eq!(r["evidence"]["keepalive_probes"], 2, "{r}");
    assert!(r["evidence"]["idle_ms"].as_f64().unwrap() >= 2000.0, "{r}");
    assert!(r["hint"].as_str().unwrap().contains("idle timeout"), "{r}");
    assert!(
        r["evidence"]["connection_age_ms"].as_f64().unwrap() >= 2000.0,
        "{r}"
    );
    assert_process(&r, pid);
    drop(server);
    tracer.finish_with(1);
}

#[test]
fn successes_are_silent() {
    let ns = Netns::new("success");
    let tracer = Tracer::start(&ns, &[]);
    let (server, port) = listener(&ns, &[]);
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        let (_, lines) = client_run(&ns, &["connect", "--addr", &addr], Duration::from_secs(5));
        assert_eq!(field(&lines[0], "result"), Some("ok"));
    }
    // A sentinel failure proves the tracer was watching all along.
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47"],
        Duration::from_secs(5),
    );
    tracer.wait_failures(1, Duration::from_secs(5), for_port(47));
    drop(server);
    let stats = tracer.finish_with(1).stats;
    assert!(
        stats["events"].as_u64().unwrap() >= 101,
        "connects were seen: {stats}"
    );
    // Their clean closes ended in the kernel: nothing to report, no record.
    assert!(
        stats["clean_closes"].as_u64().unwrap() >= 100,
        "clean closes not submitted: {stats}"
    );
}

/// The socket-state, RST-received and socket-freed hooks run as raw tracepoints where the
/// kernel's BTF declares their arguments (this kernel does), and `--classic-tracepoints` puts
/// the classic programs back: either way a refusal by RST (`tcp_receive_reset`), a success with
/// its latency and 4-tuple, and its clean close are seen alike.
#[test]
fn raw_and_classic_tracepoints_see_the_same() {
    for (flags, programs) in [
        (
            &[][..],
            [
                "inet_sock_set_state_raw",
                "tcp_receive_reset_raw",
                "tcp_send_reset_raw",
                "tcp_destroy_sock_raw",
            ],
        ),
        (
            &["--classic-tracepoints"][..],
            [
                "inet_sock_set_state",
                "tcp_receive_reset",
                "tcp_send_reset",
                "tcp_destroy_sock",
            ],
        ),
    ] {
        let ns = Netns::new("rawtp");
        let mut args = vec!["--successes"];
        args.extend_from_slice(flags);
        let tracer = Tracer::start(&ns, &args);
        let log = tracer.startup_log();
        let attached: Vec<&str> = log
            .lines()
            .find(|l| l.contains("attached "))
            .expect("the attached programs")
            .split([' ', ',', '(', ')'])
            .collect();
        for p in programs {
            assert!(attached.contains(&p), "{flags:?}: {p} not in {attached:?}");
        }
        let (server, port) = listener(&ns, &[]);
        let (_, ok) = client_run(
            &ns,
            &["connect", "--addr", &format!("127.0.0.1:{port}")],
            Duration::from_secs(5),
        );
        assert_eq!(field(&ok[0], "result"), Some("ok"));
        let (pid, refused) = client_run(
            &ns,
            &["connect", "--addr", "127.0.0.1:47"],
            Duration::from_secs(5),
        );
        assert_eq!(field(&refused[0], "result"), Some("ECONNREFUSED"));
        tracer.wait_failures(1, Duration::from_secs(5), for_port(47));
        let connects = tracer.wait_records("connect", 1, Duration::from_secs(5), |_| true);
        let c = &connects[0];
        assert_eq!(c["dst"]["port"].to_string(), port, "{flags:?}: {c}");
        assert_eq!(c["src"]["port"], sport_of(&ok[0]), "{flags:?}: {c}");
        assert!(c["latency_ms"].as_f64().is_some(), "{flags:?}: {c}");
        drop(server);
        // The clean close is the client socket's CLOSE once the server's FIN came (it is then
        // in TIME_WAIT): wait for it, not race the tracer's exit against it.
        let sport = sport_of(&ok[0]).to_string();
        tracer_tests::wait_until(
            "the successful connection's clean close",
            Duration::from_secs(5),
            || {
                // Done once the client's socket (local port `sport`) is gone or in TIME_WAIT.
                let local = format!("127.0.0.1:{sport}");
                let all = ns.exec(&["ss", "-Htan"]);
                let open = all.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.get(3) == Some(&local.as_str()) && cols.first() != Some(&"TIME-WAIT")
                });
                (!open).then_some(())
            },
        );
        let stopped = tracer.finish_with(1);
        let r = &stopped.failures[0];
        assert_eq!(r["label"], "refused", "{flags:?}: {r}");
        assert_eq!(r["evidence"]["via"], "rst", "{flags:?}: {r}");
        assert_eq!(r["src"]["port"], sport_of(&refused[0]), "{flags:?}: {r}");
        assert_process(r, pid);
        assert!(
            stopped.stats["clean_closes"].as_u64().unwrap() >= 1,
            "{flags:?}: {}",
            stopped.stats
        );
    }
}

#[test]
fn five_hundred_parallel_refusals_are_each_reported_once() {
    let ns = Netns::new("burst");
    let tracer = Tracer::start(&ns, &[]);
    let (_, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--count", "500"],
        Duration::from_secs(30),
    );
    assert_eq!(lines.len(), 500);
    assert!(
        lines
            .iter()
            .all(|l| field(l, "result") == Some("ECONNREFUSED")),
        "{lines:?}"
    );
    tracer.wait_failures(500, Duration::from_secs(10), for_port(47));
    let Stopped { failures, stats } = tracer.finish_with(500);
    assert!(
        failures
            .iter()
            .all(|r| r["label"] == "refused" && r["evidence"]["via"] == "rst")
    );
    let mut sports: Vec<u64> = failures
        .iter()
        .map(|r| r["src"]["port"].as_u64().unwrap())
        .collect();
    sports.sort_unstable();
    sports.dedup();
    assert_eq!(sports.len(), 500, "no connection reported twice");
    let mut client_sports: Vec<u64> = lines.iter().map(|l| sport_of(l)).collect();
    client_sports.sort_unstable();
    assert_eq!(
        sports, client_sports,
        "the records are the client's connections"
    );
    assert_eq!(stats["lost"], 0, "{stats}");
    assert_eq!(stats["decode_errors"], 0, "{stats}");
}

#[test]
fn ipv6_refused() {
    let ns = Netns::new("refused6");
    let tracer = Tracer::start(&ns, &[]);
    let (pid, lines) = client_run(
        &ns,
        &["connect", "--addr", "[::1]:47"],
        Duration::from_secs(5),
    );
    assert_eq!(field(&lines[0], "result"), Some("ECONNREFUSED"));
    let r = tracer
        .wait_failures(1, Duration::from_secs(5), for_port(47))
        .remove(0);
    assert_eq!(r["label"], "refused");
    assert_eq!(r["evidence"]["via"], "rst");
    assert_eq!(r["dst"]["ip"], "::1");
    assert_eq!(r["src"]["ip"], "::1");
    assert_process(&r, pid);
    tracer.stop();
}

#[test]
fn cancelled_connect_is_counted_not_reported() {
    let ns = Netns::new("cancel");
    blackhole(&ns, "6");
    let tracer = Tracer::start(&ns, &[]);
    let (_, lines) = client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47", "--give-up-ms", "50"],
        Duration::from_secs(5),
    );
    assert_eq!(field(&lines[0], "result"), Some("gave_up"));
    // A sentinel refusal after it: once it is reported, the cancelled close was processed.
    ns.nft("flush ruleset\n");
    client_run(
        &ns,
        &["connect", "--addr", "127.0.0.1:47"],
        Duration::from_secs(5),
    );
    tracer.wait_failures(1, Duration::from_secs(5), for_port(47));
    let Stopped { failures, stats } = tracer.finish_with(1);
    assert_eq!(failures[0]["label"], "refused", "only the sentinel");
    assert_eq!(stats["cancelled"], 1);
}
