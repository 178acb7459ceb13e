//! The kernel facts behind a translated connection (issue 27), at the lowest level: a client
//! namespace whose nftables DNAT (kube-proxy's shape: nat output, priority -100) sends
//! 10.96.0.10:80 to a backend 10.244.1.5:8080 in a namespace of its own.
//!
//! - A tracked connect's `SOCKS` entry gets the backend (`VALID_NAT`, read from the tracer's own
//!   map while the SYN is unanswered); its records carry it — what userspace makes of it is the
//!   integrator's tests'.
//! - The same translation for a socket the tracer does not track is one `KIND_NAT`, however
//!   often the SYN is retransmitted (`stats.nat_records`).
//! - A SYN no socket of the namespace sent, dropped by netfilter, is one `KIND_FORWARD_DROP`
//!   across its retransmissions (`stats.forward_drops`), and a flood of them without conntrack is cut at
//!   1,000 a second per CPU (`stats.forward_drops_limited`).
use std::{process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{Netns, Tracer, require_kernel};

const VIP: &str = "10.96.0.10:80";
const BACKEND: &str = "10.244.1.5";
const WAIT: Duration = Duration::from_secs(15);

/// Client (10.244.0.2) and backend (10.244.1.5) joined by a veth, the client's DNAT loaded,
/// the VIP routed to the veth; `backend_rules` in the backend's namespace.
fn setup(tag: &str, backend_rules: &str) -> (Netns, Netns) {
    let client = Netns::new(&format!("{tag}-c"));
    let backend = Netns::new(&format!("{tag}-b"));
    let dev = client.veth(&backend, "10.244.0.2/16", Some("10.244.1.5/16"));
    client.exec(&["ip", "route", "add", "10.96.0.0/12", "dev", &dev]);
    client.nft(
        "table ip t {\n chain out {\n  type nat hook output priority -100;\n  ip daddr 10.96.0.10 \
         tcp dport 80 dnat to 10.244.1.5:8080\n }\n}\n",
    );
    if !backend_rules.is_empty() {
        backend.nft(backend_rules);
    }
    (client, backend)
}

/// The backend drops SYNs to 8080 at INPUT; with `ct`, through a rule that makes conntrack run
/// in its namespace.
fn drop_rules(ct: bool) -> String {
    format!(
        "table ip f {{\n chain in {{\n  type filter hook input priority 0;\n  {}tcp dport 8080 \
         drop\n }}\n}}\n",
        if ct { "ct state new " } else { "" }
    )
}

/// The final `stats` record's `field`.
fn stat(stats: &Value, field: &str) -> u64 {
    stats[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {stats}"))
}

/// The `SOCKS` entries of the tracer `pid` (its own map, found through its fds), raw.
fn socks_of(pid: u32) -> Vec<Vec<u8>> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    for id in ids {
        let show = Command::new("bpftool")
            .args(["map", "show", "id", &id.to_string(), "-j"])
            .output()
            .expect("bpftool");
        let show: Value = serde_json::from_slice(&show.stdout).unwrap_or_default();
        if show["name"] != "SOCKS" {
            continue;
        }
        let dump = Command::new("bpftool")
            .args(["map", "dump", "id", &id.to_string(), "-j"])
            .output()
            .expect("bpftool");
        let dump: Value = serde_json::from_slice(&dump.stdout).unwrap_or_default();
        return dump
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                e["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .unwrap()
            })
            .collect();
    }
    panic!("the tracer {pid} has no SOCKS map");
}

/// `(daddr, dport, VALID_NAT, nat_daddr, nat_dport, nat_status)` of a raw `RawEvent`.
fn nat_of(b: &[u8]) -> (String, u16, bool, String, u16, u8) {
    use tracer_common::{RawEvent, VALID_NAT};
    let ev: RawEvent = bytemuck::pod_read_unaligned(&b[..tracer_common::RAW_EVENT_SIZE]);
    let v4 = |a: &[u8; 16]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
    (
        v4(&ev.daddr_be),
        ev.dport,
        ev.has(VALID_NAT),
        v4(&ev.nat_daddr_be),
        ev.nat_dport,
        ev.nat_status,
    )
}

#[test]
fn a_tracked_connect_to_a_dnat_vip_holds_its_backend() {
    require_kernel();
    let (client, _backend) = setup("natk-tracked", &drop_rules(false));
    let tracer = Tracer::start(&client, &["--stats-interval", "1"]);
    // Unanswered for 3 s (SYNs at 0 and 1 s): its state is read meanwhile.
    let load = client.client(&["connect", "--addr", VIP, "--give-up-ms", "3000"]);
    let entry = tracer_tests::wait_until("the connect's SOCKS entry", WAIT, || {
        socks_of(tracer.pid()).into_iter().find(|b| {
            let (daddr, dport, ..) = nat_of(b);
            daddr == "10.96.0.10" && dport == 80
        })
    });
    let (_, _, valid, nat_daddr, nat_dport, status) = nat_of(&entry);
    assert!(valid, "VALID_NAT on the tracked connect's state");
    assert_eq!(
        (nat_daddr.as_str(), nat_dport, status),
        (BACKEND, 8080, tracer_common::NAT_DST)
    );
    load.wait(WAIT);
    let stats = tracer.finish().stats;
    // A tracked socket's translation is in its own records: no KIND_NAT.
    assert_eq!(stat(&stats, "nat_records"), 0, "{stats}");
    assert_eq!(stat(&stats, "forward_drops"), 0, "{stats}");
    assert_eq!(stat(&stats, "forward_drops_limited"), 0, "{stats}");
}

#[test]
fn an_untracked_sockets_translation_is_one_nat_record_whatever_the_retransmits() {
    require_kernel();
    let (client, _backend) = setup("natk-untracked", &drop_rules(false));
    // --port 9: the connect to the VIP is not tracked.
    let tracer = Tracer::start(&client, &["--stats-interval", "1", "--port", "9"]);
    // SYNs at 0, 1 and 3 s: one conntrack entry.
    let load = client.client(&["connect", "--addr", VIP, "--give-up-ms", "3500"]);
    load.wait(WAIT);
    tracer.wait_records("stats", 1, WAIT, |s| s["nat_records"].as_u64() >= Some(1));
    let stats = tracer.finish().stats;
    assert_eq!(stat(&stats, "nat_records"), 1, "{stats}");
    assert_eq!(stat(&stats, "forward_drops"), 0, "{stats}");
    // The record reached userspace as what it is.
    assert_eq!(stat(&stats, "decode_errors"), 0, "{stats}");
}

#[test]
fn a_syn_netfilter_drops_with_no_socket_is_one_forward_drop_whatever_the_retransmits() {
    require_kernel();
    let (client, backend) = setup("natk-fwd", &drop_rules(true));
    // In the backend's namespace, where the SYNs arrive without a socket.
    let tracer = Tracer::start(&backend, &["--stats-interval", "1"]);
    let load = client.client(&["connect", "--addr", VIP, "--give-up-ms", "3500"]);
    load.wait(WAIT);
    tracer.wait_records("stats", 1, WAIT, |s| s["forward_drops"].as_u64() >= Some(1));
    let stats = tracer.finish().stats;
    assert_eq!(stat(&stats, "forward_drops"), 1, "{stats}");
    assert_eq!(stat(&stats, "forward_drops_limited"), 0, "{stats}");
    assert_eq!(stat(&stats, "decode_errors"), 0, "{stats}");
    // The backend translated nothing.
    assert_eq!(stat(&stats, "nat_records"), 0, "{stats}");
}

#[test]
fn a_syn_flood_through_a_dropping_firewall_is_cut_at_the_rate_limit() {
    require_kernel();
    // No conntrack in the backend's namespace: every SYN is its own record, up to the limit.
    let (client, backend) = setup("natk-flood", &drop_rules(false));
    let tracer = Tracer::start(&backend, &["--stats-interval", "1"]);
    let load = client.client(&[
        "connect",
        "--addr",
        VIP,
        "--count",
        "3000",
        "--give-up-ms",
        "500",
    ]);
    load.wait(Duration::from_secs(60));
    tracer.wait_records("stats", 1, WAIT, |s| {
        s["forward_drops_limited"].as_u64() >= Some(1)
    });
    let stats = tracer.finish().stats;
    let (sent, cut) = (
        stat(&stats, "forward_drops"),
        stat(&stats, "forward_drops_limited"),
    );
    assert!(cut >= 1, "{stats}");
    assert_eq!(sent + cut, 3000, "every SYN submitted or counted: {stats}");
}
