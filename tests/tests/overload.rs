//! Overload: with a tiny ring buffer and the tracer stopped (SIGSTOP) while 20,000 connects are
//! refused, the kernel drops what does not fit and counts it. Every refusal is accounted for:
//! delivered failure records + lost connections = 20,000 exactly, and after it resumes the
//! tracer reports new failures as before.
use std::{process::Command, time::Duration};

use tracer_tests::{Netns, Tracer, load_bin, require_kernel, wait_until};

const REFUSALS: u64 = 20_000;

/// Runs `tt-load` in `ns` and returns how many connects were refused.
fn refuse(ns: &Netns, port: u16, count: u64) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(load_bin())
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--count",
            &count.to_string(),
        ])
        .output()
        .expect("run tt-load");
    assert!(
        out.status.success(),
        "tt-load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tt-load's JSON");
    v["refused"].as_u64().expect("refused count")
}

#[test]
fn every_refusal_is_either_delivered_or_counted_lost_and_the_tracer_recovers() {
    require_kernel();
    let ns = Netns::new("overload");
    let tracer = Tracer::start(
        &ns,
        &[
            "--ring-buffer-kib",
            "64",
            "--summary-interval",
            "0",
            "--stats-interval",
            "0",
        ],
    );
    tracer.pause();
    let refused = refuse(&ns, 47, REFUSALS);
    tracer.resume();
    assert_eq!(refused, REFUSALS, "the load generator's refusals");

    // The loss is checked once a second, after the tracer has read what the buffer held.
    let warned = wait_until("a warning about the loss", Duration::from_secs(5), || {
        let log = tracer.stderr();
        log.contains("losing data").then_some(log)
    });
    // Still working: new refusals on another port arrive.
    assert_eq!(refuse(&ns, 48, 5), 5);
    tracer.wait_failures(5, Duration::from_secs(10), |r| r["dst"]["port"] == 48);

    let stopped = tracer.finish();
    let on_47 = stopped
        .failures
        .iter()
        .filter(|r| r["dst"]["port"] == 47 && r["label"] == "refused")
        .count() as u64;
    let stats = &stopped.stats;
    let lost = stats["lost"].as_u64().unwrap();
    let lost_connections = stats["lost_connections"].as_u64().unwrap();
    assert!(
        lost > 0,
        "the 64 KiB ring buffer should have overflowed while the tracer was stopped: {stats}"
    );
    assert_eq!(
        on_47 + lost_connections,
        REFUSALS,
        "delivered {on_47} + lost {lost_connections} must be every refusal; stats: {stats}"
    );
    // Every lost connection is a lost record. Other lost records can only be error reports of
    // other namespaces' connections (the error-report tracepoint names no socket, so no netns
    // filter applies to it); this namespace's refusals submit none when `sk_err` is readable.
    assert!(lost >= lost_connections, "{stats}");
    assert_eq!(
        stats["produced"].as_u64().unwrap(),
        stats["events"].as_u64().unwrap() + stats["decode_errors"].as_u64().unwrap(),
        "every record produced was read: {stats}"
    );
    assert!(
        warned.contains("losing data") && warned.contains("--ring-buffer-kib (now 64)"),
        "a warning names the loss and the remedy:\n{warned}"
    );
}
