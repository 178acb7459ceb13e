//! Every failure kind at once: each round runs all the scenarios concurrently in one traced
//! namespace (plus a remote namespace for inbound refusals), and after
//! ten rounds the tracer's counts per label are exact, with nothing lost.
use std::{collections::BTreeMap, time::Duration};

use tracer_tests::{
    Netns, Proc, Tracer,
    process::field,
    scenario::{blackhole_port, table},
};

const ROUNDS: usize = 10;
const WAIT: Duration = Duration::from_secs(20);

fn port_of(server: &Proc) -> String {
    field(&server.wait_line("listening", WAIT), "port")
        .unwrap()
        .to_string()
}

#[test]
fn mixed_failures_are_counted_exactly() {
    let ns = Netns::new("mixed");
    let remote = Netns::new("mixed-remote");
    ns.veth(&remote, "10.200.0.1/24", Some("10.200.0.2/24"));
    ns.sysctl("net.ipv4.tcp_syn_retries", "1");
    ns.sysctl("net.ipv4.tcp_syn_linear_timeouts", "0");
    ns.nft(&table(
        "tcp dport 48 reject with icmpx type port-unreachable\n    \
         tcp dport 49 drop\n    \
         tcp dport 50 reject with icmpx type host-unreachable",
    ));
    let tracer = Tracer::start(&ns, &["--successes"]);
    let idle_server = ns.client(&["listen", "--addr", "127.0.0.1:0"]);
    let idle_port = port_of(&idle_server);
    let reset_server = ns.client(&["listen", "--addr", "127.0.0.1:0", "--reset-after-ms", "300"]);
    let reset_port = port_of(&reset_server);
    let ok_server = ns.client(&["listen", "--addr", "127.0.0.1:0"]);
    let ok_port = port_of(&ok_server);

    for round in 0..ROUNDS {
        // Connections that must be established before their flow is blackholed.
        let idle = format!("127.0.0.1:{idle_port}");
        let keepalive = ns.client(&[
            "keepalive",
            "--addr",
            &idle,
            "--idle",
            "1",
            "--intvl",
            "1",
            "--cnt",
            "1",
        ]);
        let mut rto = ns.client(&["send", "--addr", &idle, "--user-timeout-ms", "1500"]);
        keepalive.wait_line("connected", WAIT);
        rto.wait_line("connected", WAIT);
        let clients = vec![
            ns.client(&["connect", "--addr", "127.0.0.1:47"]),
            ns.client(&["connect", "--addr", "127.0.0.1:48"]),
            ns.client(&["connect", "--addr", "127.0.0.1:49"]),
            ns.client(&["connect", "--addr", "127.0.0.1:49", "--give-up-ms", "2000"]),
            ns.client(&["connect", "--addr", "127.0.0.1:49", "--give-up-ms", "50"]),
            ns.client(&["connect", "--addr", "127.0.0.1:50"]),
            ns.client(&["recv", "--addr", &format!("127.0.0.1:{reset_port}")]),
            ns.client(&["connect", "--addr", &format!("127.0.0.1:{ok_port}")]),
            remote.client(&["connect", "--addr", "10.200.0.1:47"]),
        ];
        ns.nft(&blackhole_port(&idle_port));
        rto.send_line("go");
        for c in clients.into_iter().chain([keepalive, rto]) {
            let (status, lines) = c.wait(WAIT);
            assert!(status.success(), "round {round}: client failed: {lines:?}");
        }
        ns.nft("flush chain inet tt in\n");
    }

    let expected_failures = 9 * ROUNDS;
    tracer.wait_failures(expected_failures, WAIT, |_| true);
    let stopped = tracer.finish_with(expected_failures);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &stopped.failures {
        *counts
            .entry(format!(
                "{}/{}",
                r["label"].as_str().unwrap(),
                r["direction"].as_str().unwrap()
            ))
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("dropped_keepalive/outbound", ROUNDS),
        ("refused/inbound", ROUNDS),
        ("refused/outbound", 2 * ROUNDS),
        ("reset/outbound", ROUNDS),
        ("rto_timeout/outbound", ROUNDS),
        ("syn_timeout/outbound", 2 * ROUNDS),
        ("unreachable/outbound", ROUNDS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(counts, expected);
    let stats = &stopped.stats;
    assert_eq!(stats["lost"], 0, "{stats}");
    assert_eq!(stats["decode_errors"], 0, "{stats}");
    assert_eq!(stats["cancelled"], ROUNDS, "{stats}");
    // Established: the successful, the reset, the keepalive and the RTO connection of each round.
    assert_eq!(stats["connects"], 4 * ROUNDS, "{stats}");
    assert_eq!(stats["evicted"], 0, "{stats}");
}
