//! The kernel does not run a classic tracepoint program that would nest in another BPF program
//! on the same CPU: a timer softirq that kills a connection while a BPF program runs in process
//! context has its CLOSE transition (and its error report) untraced. These tests make that happen
//! on purpose: a bpftrace program holds one CPU for ~20 µs on every getppid() of a spinning
//! process, and a connection pinned to that CPU dies of retransmission timeouts. With classic
//! tracepoints the tracer must still report every death (from `tcp:tcp_destroy_sock`, when the
//! socket is freed), say that the close was not traced, and count the skips; with the raw
//! tracepoint programs the close itself is traced.
use std::{path::Path, time::Duration};

use serde_json::Value;
use tracer_tests::{
    Netns, Proc, Tracer, client_bin,
    process::field,
    scenario::{blackhole_port, sport_of, table},
};

const WAIT: Duration = Duration::from_secs(15);
/// Deaths to cause at most, until one of them had its close untraced.
const ATTEMPTS: usize = 5;

/// ~20 µs of arithmetic on every getppid() of process $1: while it runs the CPU is inside a BPF
/// program, and softirqs that interrupt it cannot run the tracer's programs.
const HOLD_CPU: &str = r#"
tracepoint:syscalls:sys_enter_getppid /pid == $1/ {
  $x = (uint64)1;
  $i = 0;
  while ($i < 20000) { $x = $x * 6364136223846793005 + (uint64)$i; $i++; }
  @x = $x;
  if (@held == 0) { @held = 1; printf("holding\n"); }
}
"#;

/// The CPU every process of the scenario is pinned to.
fn cpu() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n - 1).to_string()
}

/// `args` of the test client, run in `ns` on `cpu()` (taskset execs it: the pid is the client's).
fn pinned_client(ns: &Netns, args: &[&str]) -> Proc {
    let (cpu, client) = (cpu(), client_bin());
    let mut argv = vec!["-c", cpu.as_str(), client.to_str().unwrap()];
    argv.extend_from_slice(args);
    ns.spawn(Path::new("taskset"), &argv)
}

fn by_src_port(port: u64) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["src"]["port"] == port
}

/// A CPU held by a BPF program (bpftrace's, on every getppid() of a spinning process pinned
/// there), with a listener pinned there too; dropped at the end.
struct HeldCpu {
    // Dropped in this order: the holding program, the spinner, the listener, the namespace.
    hold: Option<(Proc, Proc)>,
    _server: Proc,
    port: String,
    ns: Netns,
}

impl HeldCpu {
    fn new(ns: Netns) -> Self {
        ns.nft(&table(""));
        let server = pinned_client(&ns, &["listen", "--addr", "127.0.0.1:0"]);
        let port = field(&server.wait_line("listening", WAIT), "port")
            .unwrap()
            .to_string();
        let spinner = pinned_client(&ns, &["spin"]);
        spinner.wait_line("spinning", WAIT);
        let mut hold = std::process::Command::new("bpftrace");
        hold.args(["-B", "line", "-e", HOLD_CPU, &spinner.pid().to_string()]);
        let hold = Proc::spawn_with_stderr(hold, std::process::Stdio::null());
        hold.wait_line("holding", Duration::from_secs(60));
        Self {
            hold: Some((hold, spinner)),
            _server: server,
            port,
            ns,
        }
    }

    /// Ends the holding program, then the spinner.
    fn release(&mut self) {
        self.hold = None;
    }

    /// Two ways a sender dies: its data leaves and is never acknowledged (retransmissions), or
    /// a firewall on this host drops it on output (the transmit fails locally; the kernel
    /// probes).
    fn ways(&self) -> [(&'static str, String); 2] {
        let port = &self.port;
        [
            ("retransmitting", blackhole_port(port)),
            (
                "probing",
                format!(
                    "add rule inet tt out tcp dport {port} tcp flags & (syn | ack) == ack drop\n"
                ),
            ),
        ]
    }
}

/// With classic tracepoints (`--classic-tracepoints`) the kernel skips the CLOSE program while
/// the CPU is inside another BPF program: every such death is still reported, at the free.
#[test]
fn a_death_whose_close_the_kernel_did_not_trace_is_reported_when_the_socket_is_freed() {
    tracer_tests::require_kernel();
    let mut held = HeldCpu::new(Netns::new("nesting"));
    let tracer = Tracer::start(&held.ns, &["--classic-tracepoints"]);
    let mut recovered = Vec::new();
    for (way, rule) in &held.ways() {
        let untraced = (1..=ATTEMPTS).find_map(|attempt| {
            let r = rto_death(&held.ns, &tracer, &held.port, rule);
            assert_eq!(r["label"], "rto_timeout", "{way}, attempt {attempt}: {r}");
            assert_eq!(r["evidence"]["unacked_bytes"], 8192, "{r}");
            (r["evidence"]["close_traced"] == false).then_some(r)
        });
        let r = untraced.unwrap_or_else(|| {
            panic!("{way}: in {ATTEMPTS} deaths on a CPU held by a BPF program, the kernel never skipped the tracer at the close")
        });
        // The application took ETIMEDOUT from the socket before it was freed, and the error
        // report was skipped with the close: the errno is unknown, not invented.
        assert!(r["errno"].is_null() || r["errno"] == "ETIMEDOUT", "{r}");
        recovered.push(r);
    }
    assert!(
        recovered[0]["evidence"]["data_retransmits"]
            .as_u64()
            .unwrap()
            >= 1,
        "traced or not, the socket counted its retransmissions: {}",
        recovered[0]
    );
    assert!(
        recovered[1]["evidence"]["probes_sent"].as_u64().unwrap() >= 1,
        "{}",
        recovered[1]
    );
    held.release();
    let stopped = tracer.finish();
    let stats = &stopped.stats;
    eprintln!("reported at the free: {recovered:#?}\nfinal stats: {stats}");
    assert!(stats["late_closes"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["kernel_skipped"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["lost"], 0, "{stats}");
}

/// With the raw tracepoint programs (the default where BTF allows) the same deaths have their
/// CLOSE traced: a raw program is skipped only when it would nest in itself, not in any BPF
/// program, so the close carries its own `sk_err` (ETIMEDOUT) and nothing is left for the free.
#[test]
fn with_raw_tracepoints_a_death_on_a_held_cpu_has_its_close_traced() {
    tracer_tests::require_kernel();
    let mut held = HeldCpu::new(Netns::new("nestraw"));
    let tracer = Tracer::start(&held.ns, &[]);
    assert!(
        tracer.startup_log().contains("inet_sock_set_state_raw"),
        "{}",
        tracer.stderr()
    );
    for (way, rule) in &held.ways() {
        for attempt in 1..=ATTEMPTS {
            let r = rto_death(&held.ns, &tracer, &held.port, rule);
            assert_eq!(r["label"], "rto_timeout", "{way}, attempt {attempt}: {r}");
            assert!(r["evidence"]["close_traced"].is_null(), "{way}: {r}");
            assert_eq!(r["errno"], "ETIMEDOUT", "{way}: {r}");
        }
    }
    held.release();
    let stopped = tracer.finish();
    let stats = &stopped.stats;
    assert_eq!(stats["late_closes"], 0, "{stats}");
    assert_eq!(stats["lost"], 0, "{stats}");
}

/// Connects a sender pinned to the held CPU, applies `rule`, sends 8 KiB and waits until the
/// kernel gives up (TCP_USER_TIMEOUT 1 s); returns the tracer's record of that death.
fn rto_death(ns: &Netns, tracer: &Tracer, port: &str, rule: &str) -> Value {
    ns.nft("flush chain inet tt in\nflush chain inet tt out\n");
    let mut client = pinned_client(
        ns,
        &[
            "send",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--user-timeout-ms",
            "1000",
        ],
    );
    let sport = sport_of(&client.wait_line("connected", WAIT));
    ns.nft(rule);
    client.send_line("go");
    let (_, lines) = client.wait(WAIT);
    assert!(
        lines.iter().any(|l| l.starts_with("result=ETIMEDOUT")),
        "{lines:?}"
    );
    tracer.wait_failures(1, WAIT, by_src_port(sport)).remove(0)
}
