//! SIGKILL mid-load leaves nothing attached: every program and link belongs to the process's
//! file descriptors, so the kernel detaches them when it dies. (Its own test binary: no other
//! tracer runs meanwhile, so the counts are the tracer's alone.)
use std::{process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{Netns, Tracer, require_kernel, wait_until};

/// Our programs (bpftool shows the BTF name; the kernel's own is truncated to 15 bytes), the
/// raw tracepoint variants included (attached instead of the classic ones where BTF allows).
const PROGRAMS: [&str; 19] = [
    "inet_sock_set_state",
    "inet_sock_set_state_raw",
    "tcp_retransmit_skb",
    "tcp_receive_reset",
    "tcp_receive_reset_raw",
    "tcp_send_reset",
    "tcp_send_reset_raw",
    "inet_sk_error_report",
    "inet_sk_error_report_raw",
    "tcp_destroy_sock",
    "tcp_destroy_sock_raw",
    "sys_enter_connect",
    "sys_exit_connect",
    "kfree_skb",
    "net_dev_queue",
    "net_dev_queue_raw",
    "dns_egress",
    "dns_ingress",
    // Test-run once at start-up and unloaded: never among the loaded ones.
    "whoami",
];

/// How many a tracer attaches at most: one per hook, raw or classic (connect()'s entry only
/// where its exit cannot read a failed call's arguments alone).
const HOOKS: usize = 12;

fn bpftool(what: &str) -> Vec<Value> {
    let o = Command::new("bpftool")
        .args([what, "show", "-j"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        o.status.success(),
        "bpftool {what} show: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

/// (our programs loaded, links of any kind)
fn counts() -> (usize, usize) {
    let ours = bpftool("prog")
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && PROGRAMS.iter().any(|ours| ours.starts_with(n)))
        })
        .count();
    (ours, bpftool("link").len())
}

#[test]
fn sigkill_twenty_times_mid_load_leaves_nothing_attached() {
    require_kernel();
    let ns = Netns::new("sigkill");
    let baseline = counts();
    // Relative to what is loaded now: another tracer on the host keeps its own programs.
    for round in 0..20 {
        // --nat: every program, the opt-in per-packet hook too.
        let tracer = Tracer::start(&ns, &["--nat"]);
        // "attached N programs (…)": one fewer where connect()'s exit reads failed calls alone.
        let attached: usize = tracer
            .startup_log()
            .split("attached ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("the tracer says how many programs it attached");
        assert!(
            (HOOKS - 1..=HOOKS).contains(&attached),
            "round {round}: {attached} programs attached"
        );
        let loaded = counts();
        assert_eq!(
            loaded.0,
            baseline.0 + attached,
            "round {round}: all programs loaded"
        );
        assert!(
            loaded.1 >= baseline.1 + attached,
            "round {round}: links attached"
        );
        let load = ns.client(&["connect", "--addr", "127.0.0.1:47", "--count", "300"]);
        tracer.wait_failures(1, Duration::from_secs(10), |_| true);
        tracer.kill9();
        wait_until(
            &format!("round {round}: programs and links back to the baseline"),
            Duration::from_secs(10),
            || (counts() == baseline).then_some(()),
        );
        load.wait(Duration::from_secs(10));
    }
}
