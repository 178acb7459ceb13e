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
    let tracer = Tracer::start(&client, &["--stats-interval", "1", "--nat"]);
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
    let tracer = Tracer::start(&client, &["--stats-interval", "1", "--port", "9", "--nat"]);
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

/// A cgroup v2 child with a `cgroup/connect4` program that sends every IPv4 connect to `to`
/// (socket-level load balancing, as Cilium's socket-LB does), linked by `BPF_LINK_CREATE`:
/// dropping it kills what runs inside (the test's processes only: it made the cgroup), closes
/// the link (which detaches the program) and removes the cgroup.
struct RewriteCgroup {
    path: std::path::PathBuf,
    _link: std::os::fd::OwnedFd,
    _prog: std::os::fd::OwnedFd,
}

/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`, `BPF_CGROUP_INET4_CONNECT`.
const SOCK_ADDR: u32 = 18;
const INET4_CONNECT: u32 = 10;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `attr` is a bpf_attr of 128 bytes alive across the call; the pointers in it
    // point at buffers the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: BPF_PROG_LOAD and BPF_LINK_CREATE return a new fd nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}

impl RewriteCgroup {
    fn new(tag: &str, to: std::net::SocketAddrV4) -> Self {
        use std::os::fd::AsRawFd;
        let path =
            tracer_tests::cgroup::cgroup2_mount().join(format!("tt-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path).expect("create the cgroup");
        let ip = i32::from_ne_bytes(to.ip().octets());
        let port = i32::from(to.port().to_be());
        // r2 = ip; ctx->user_ip4 = r2; r2 = port; ctx->user_port = r2; r0 = 1; exit.
        let insn = |code: u8, regs: u8, off: i16, imm: i32| {
            let mut b = [0u8; 8];
            b[0] = code;
            b[1] = regs;
            b[2..4].copy_from_slice(&off.to_ne_bytes());
            b[4..8].copy_from_slice(&imm.to_ne_bytes());
            b
        };
        let insns: Vec<u8> = [
            insn(0xb4, 0x02, 0, ip),
            insn(0x63, 0x21, 4, 0),
            insn(0xb4, 0x02, 0, port),
            insn(0x63, 0x21, 24, 0),
            insn(0xb7, 0x00, 0, 1),
            insn(0x95, 0x00, 0, 0),
        ]
        .concat();
        let license = b"GPL\0";
        let name = b"tt_lb_connect4\0";
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&SOCK_ADDR.to_ne_bytes());
        attr[4..8].copy_from_slice(&((insns.len() / 8) as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..48 + name.len()].copy_from_slice(name);
        attr[68..72].copy_from_slice(&INET4_CONNECT.to_ne_bytes());
        let prog = match bpf(5, &mut attr) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                panic!("BPF_PROG_LOAD of the connect4 rewrite: {e}");
            }
        };
        let dir = std::fs::File::open(&path).expect("open the cgroup");
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&INET4_CONNECT.to_ne_bytes());
        let link = match bpf(28, &mut attr) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                panic!("BPF_LINK_CREATE of the connect4 rewrite: {e}");
            }
        };
        Self {
            path,
            _link: link,
            _prog: prog,
        }
    }

    fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path)
            .expect("stat the cgroup")
            .ino()
    }
}

impl Drop for RewriteCgroup {
    fn drop(&mut self) {
        let procs = self.path.join("cgroup.procs");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<i32> = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[test]
fn a_connect_a_cgroup_program_rewrote_holds_what_the_application_asked_for() {
    require_kernel();
    // The backend drops SYNs (no conntrack, no DNAT in the client): the connect stays in
    // SYN_SENT while its state is read.
    let (client, _backend) = setup("natk-socklb", &drop_rules(false));
    client.exec(&["nft", "flush", "ruleset"]);
    let lb = RewriteCgroup::new("socklb", "10.244.1.5:8080".parse().unwrap());
    let tracer = Tracer::start(&client, &["--stats-interval", "1"]);
    let app = tracer_tests::cgroup::spawn_in_cgroup(
        &lb.path,
        &client,
        &tracer_tests::client_bin(),
        &["connect", "--addr", "10.96.0.20:80", "--give-up-ms", "3000"],
    );
    let entry = tracer_tests::wait_until("the rewritten connect's SOCKS entry", WAIT, || {
        socks_of(tracer.pid()).into_iter().find(|b| {
            let (daddr, dport, ..) = nat_of(b);
            daddr == BACKEND && dport == 8080
        })
    });
    let ev: tracer_common::RawEvent =
        bytemuck::pod_read_unaligned(&entry[..tracer_common::RAW_EVENT_SIZE]);
    assert!(ev.has(tracer_common::VALID_REQUESTED), "VALID_REQUESTED");
    assert_eq!(
        (&ev.requested_be[..4], ev.requested_port),
        (&[10u8, 96, 0, 20][..], 80)
    );
    // No conntrack translation here: the socket holds the backend itself.
    assert!(!ev.has(tracer_common::VALID_NAT));
    // The program that did it, by name, for the application's cgroup.
    assert_eq!(
        tracer::enrich::socklb::connect_programs(lb.id()).expect("query the cgroup"),
        ["tt_lb_connect4"]
    );
    app.wait(WAIT);
    drop(tracer);
}
