//! Socket-state capacity (`SOCKS`, `--max-sockets`) and its accounting: the capacity is global,
//! not a per-CPU share; beyond it every connect not tracked is counted in `insert_errors`; and
//! `evicted` never moves for connects that were never tracked.
//!
//! Connections die fast and for real: the listener aborts each accepted one with a RST after a
//! delay long enough that all of them are alive at once, and each client socket then closes
//! with ECONNRESET, a failure record of its own.
use std::time::Duration;

use serde_json::Value;
use tracer_tests::{
    Netns, Tracer, client_bin, process::field, require_kernel, scenario, wait_until,
};

/// Opens `count` connections to `port` from a client pinned to `cpu` (if any), all alive at
/// once; they are reset by the listener 4 s after each accept. Returns how many were opened.
fn open_and_reset(
    ns: &Netns,
    port: &str,
    count: usize,
    cpu: Option<usize>,
) -> (tracer_tests::Proc, u64) {
    let addr = format!("127.0.0.1:{port}");
    let count = count.to_string();
    let client = match cpu {
        Some(cpu) => {
            let bin = client_bin();
            let cpu = cpu.to_string();
            let bin = bin.to_str().expect("a UTF-8 path");
            ns.spawn(
                std::path::Path::new("/usr/bin/taskset"),
                &["-c", &cpu, bin, "hold", "--addr", &addr, "--count", &count],
            )
        }
        None => ns.client(&["hold", "--addr", &addr, "--count", &count]),
    };
    let line = client.wait_line("held", Duration::from_secs(30));
    let ok = field(&line, "ok")
        .and_then(|n| n.parse().ok())
        .expect("held ok=N");
    assert_eq!(field(&line, "failed"), Some("0"), "{line}");
    (client, ok)
}

fn resets_to(port: &str) -> impl Fn(&Value) -> bool + '_ {
    let port: u64 = port.parse().expect("a port");
    move |r: &Value| r["dst"]["port"] == port
}

/// The many-CPU case of issue 26: 800 live connections made from one CPU, more than one CPU's
/// share (512) of `--max-sockets 1024` on two CPUs: every one of their deaths is reported.
#[test]
fn connections_from_one_cpu_beyond_its_share_are_all_reported() {
    require_kernel();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "needs two CPUs (has {cpus})");
    let ns = Netns::new("cap-cpu");
    let (_server, port) =
        scenario::listener(&ns, &["--reset-after-ms", "4000", "--backlog", "1024"]);
    let tracer = Tracer::start(&ns, &["--max-sockets", "1024"]);
    let (_client, opened) = open_and_reset(&ns, &port, 800, Some(0));
    assert_eq!(opened, 800);
    tracer.wait_failures(800, Duration::from_secs(30), resets_to(&port));
    let stopped = tracer.finish();
    let mine = stopped
        .failures
        .iter()
        .filter(|r| resets_to(&port)(r))
        .count();
    assert_eq!(mine, 800, "stats {}", stopped.stats);
    assert_eq!(stopped.stats["insert_errors"], 0, "{}", stopped.stats);
    assert_eq!(stopped.stats["evicted"], 0, "{}", stopped.stats);
}

/// More live connections than `--max-sockets`: those tracked are reported, every other one is
/// counted in `insert_errors` at its connect, and the two add up to what was caused, exactly.
#[test]
fn beyond_max_sockets_records_plus_insert_errors_equal_the_connections() {
    require_kernel();
    let ns = Netns::new("cap-over");
    let (_server, port) =
        scenario::listener(&ns, &["--reset-after-ms", "4000", "--backlog", "2048"]);
    let tracer = Tracer::start(&ns, &["--max-sockets", "1024"]);
    let (_client, opened) = open_and_reset(&ns, &port, 1500, None);
    assert_eq!(opened, 1500);
    // Every death reported or not tracked: the records settle at 1500 − insert_errors.
    wait_until(
        "records + insert errors = 1500",
        Duration::from_secs(30),
        || {
            let n = tracer
                .failures()
                .iter()
                .filter(|r| resets_to(&port)(r))
                .count();
            (n >= 1024).then_some(())
        },
    );
    let stopped = tracer.finish();
    let records = stopped
        .failures
        .iter()
        .filter(|r| resets_to(&port)(r))
        .count() as u64;
    let insert_errors = stopped.stats["insert_errors"]
        .as_u64()
        .expect("insert_errors");
    assert!(insert_errors > 0, "the map never filled: {}", stopped.stats);
    assert_eq!(records + insert_errors, 1500, "stats {}", stopped.stats);
    assert_eq!(
        records, 1024,
        "the capacity is --max-sockets: stats {}",
        stopped.stats
    );
    assert_eq!(stopped.stats["evicted"], 0, "{}", stopped.stats);
}

/// Connects the filters skip are never tracked, so they never count as evicted (issue 26,
/// item 7: `--port 47199` and 20 refusals on another port gave `"evicted":20`).
#[test]
fn filtered_connects_never_move_evicted() {
    require_kernel();
    let ns = Netns::new("cap-evict");
    let tracer = Tracer::start(&ns, &["--port", "47199"]);
    scenario::client_run(
        &ns,
        &[
            "connect",
            "--addr",
            &format!("127.0.0.1:{}", scenario::CLOSED_PORT),
            "--count",
            "20",
        ],
        Duration::from_secs(20),
    );
    let stopped = tracer.finish_with(0);
    assert_eq!(stopped.stats["evicted"], 0, "{}", stopped.stats);
    assert_eq!(stopped.stats["tracked_sockets"], 0, "{}", stopped.stats);
}
