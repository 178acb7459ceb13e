//! The soak: a steady mixed fault load (every label) against a running tracer for N minutes.
//! Reports the tracer's RSS over time, lost records, and per-label counts against what the
//! load generator caused; exits non-zero if a count differs, anything was lost, or RSS drifted
//! more than 5% after warm-up. Run it with `cargo xtask soak --minutes N` (root).
use std::{
    collections::BTreeMap,
    io::Write,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tracer_tests::{Netns, Tracer, client_bin, scenario::table};

#[derive(Parser)]
struct Args {
    /// How long to run the load.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/soak/report.json")]
    report: std::path::PathBuf,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// Starts a client inside `ns` (stdout discarded); `stdin_line` is written to its stdin.
fn client(ns: &Netns, args: &[&str], stdin_line: Option<&str>) -> Result<Child> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(client_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start tt-client")?;
    if let Some(line) = stdin_line {
        writeln!(child.stdin.as_mut().unwrap(), "{line}")?;
    }
    Ok(child)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ns = Netns::new("soak");
    let remote = Netns::new("soak-remote");
    ns.veth(&remote, "10.200.0.1/24", Some("10.200.0.2/24"));
    // 48: REJECT (ICMP port-unreachable); 49: DROP; 50: REJECT host-unreachable; 51: a server
    // whose handshake completes for the client but whose later segments are all dropped (the
    // client's keepalive probes and data die unanswered).
    ns.nft(&table(
        "tcp dport 48 reject with icmpx type port-unreachable\n    tcp dport 49 drop\n    \
         tcp dport 50 reject with icmpx type host-unreachable\n    \
         tcp dport 51 tcp flags & (syn | ack) == ack drop",
    ));
    let tracer = Tracer::start(
        &ns,
        &[
            "--stats-interval",
            "10",
            "--summary-interval",
            "0",
            "--successes",
        ],
    );
    let mut servers = vec![
        ns.client(&["listen", "--addr", "127.0.0.1:51"]),
        ns.client(&[
            "listen",
            "--addr",
            "127.0.0.1:52",
            "--reset-after-ms",
            "100",
        ]),
        ns.client(&["listen", "--addr", "127.0.0.1:53"]),
    ];
    for s in &servers {
        s.wait_line("listening", Duration::from_secs(5));
    }

    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut add = |k: &'static str, n: u64| *expected.entry(k).or_default() += n;
    let mut running: Vec<Child> = Vec::new();
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let start = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut cycle = 0u64;
    while start.elapsed() < total {
        let beat = Instant::now();
        running.push(client(
            &ns,
            &["connect", "--addr", "127.0.0.1:47", "--count", "10"],
            None,
        )?);
        add("refused/outbound", 10);
        running.push(client(
            &ns,
            &["connect", "--addr", "127.0.0.1:48", "--count", "2"],
            None,
        )?);
        add("refused/outbound", 2);
        running.push(client(
            &ns,
            &["connect", "--addr", "127.0.0.1:49", "--give-up-ms", "1500"],
            None,
        )?);
        add("syn_timeout/outbound", 1);
        running.push(client(&ns, &["connect", "--addr", "127.0.0.1:50"], None)?);
        add("unreachable/outbound", 1);
        running.push(client(&ns, &["recv", "--addr", "127.0.0.1:52"], None)?);
        add("reset/outbound", 1);
        running.push(client(&ns, &["connect", "--addr", "127.0.0.1:53"], None)?);
        running.push(client(
            &remote,
            &["connect", "--addr", "10.200.0.1:47"],
            None,
        )?);
        add("refused/inbound", 1);
        if cycle.is_multiple_of(5) {
            running.push(client(
                &ns,
                &[
                    "keepalive",
                    "--addr",
                    "127.0.0.1:51",
                    "--idle",
                    "1",
                    "--intvl",
                    "1",
                    "--cnt",
                    "1",
                ],
                None,
            )?);
            add("dropped_keepalive/outbound", 1);
            running.push(client(
                &ns,
                &[
                    "send",
                    "--addr",
                    "127.0.0.1:51",
                    "--user-timeout-ms",
                    "1000",
                ],
                Some("go"),
            )?);
            add("rto_timeout/outbound", 1);
        }
        running.retain_mut(|c| c.try_wait().ok().flatten().is_none());
        if cycle.is_multiple_of(10) {
            let sample = (start.elapsed().as_secs_f64(), rss_kib(tracer.pid()));
            eprintln!(
                "soak: {:>6.0} s  tracer RSS {} KiB  in flight {}",
                sample.0,
                sample.1,
                running.len()
            );
            rss.push(sample);
        }
        cycle += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(beat.elapsed()));
    }
    // Let the last clients finish (the slowest, a SYN timeout, takes 1.5 s).
    // Keepalive and RTO clients live until their connection dies, which the server's SYN-ACK
    // retransmissions can delay by tens of seconds.
    let drain = Instant::now() + Duration::from_secs(90);
    while !running.is_empty() && Instant::now() < drain {
        running.retain_mut(|c| c.try_wait().ok().flatten().is_none());
        std::thread::sleep(Duration::from_millis(100));
    }
    let want: u64 = expected.values().sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracer.failures().len() < want as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !running.is_empty() {
        eprintln!(
            "soak: {} clients still waiting for their connection to die",
            running.len()
        );
    }
    rss.push((start.elapsed().as_secs_f64(), rss_kib(tracer.pid())));
    servers.clear();
    let stopped = tracer.finish();
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for r in &stopped.failures {
        *got.entry(format!(
            "{}/{}",
            r["label"].as_str().unwrap_or("?"),
            r["direction"].as_str().unwrap_or("?")
        ))
        .or_default() += 1;
    }
    let lost = stopped.stats["lost"].as_u64().unwrap_or(u64::MAX);
    // RSS drift: from the sample at 10% of the run (warm-up done) to the end.
    let warm = rss
        .iter()
        .find(|(t, _)| *t >= total.as_secs_f64() * 0.1)
        .or(rss.first())
        .copied()
        .unwrap_or((0.0, 0));
    let end = rss.last().copied().unwrap_or((0.0, 0));
    let drift = if warm.1 > 0 {
        (end.1 as f64 - warm.1 as f64) / warm.1 as f64
    } else {
        0.0
    };

    println!("soak: {:.1} min, {} cycles", args.minutes, cycle);
    println!(
        "{:<28} {:>10} {:>10}",
        "label/direction", "caused", "reported"
    );
    let mut mismatch = false;
    for (k, n) in &expected {
        let g = got.get(*k).copied().unwrap_or(0);
        mismatch |= g != *n;
        println!(
            "{k:<28} {n:>10} {g:>10}{}",
            if g == *n { "" } else { "  MISMATCH" }
        );
    }
    for (k, g) in got
        .iter()
        .filter(|(k, _)| !expected.contains_key(k.as_str()))
    {
        mismatch = true;
        println!("{k:<28} {:>10} {g:>10}  UNEXPECTED", 0);
    }
    // The load causes no cancelled connects: one would be a failure the tracer missed.
    let cancelled = stopped.stats["cancelled"].as_u64().unwrap_or(u64::MAX);
    mismatch |= cancelled != 0;
    println!(
        "{:<28} {:>10} {cancelled:>10}{}",
        "cancelled (not failures)",
        0,
        if cancelled == 0 { "" } else { "  UNEXPECTED" }
    );
    println!("lost records: {lost}");
    println!(
        "tracepoint hits the kernel skipped (nested BPF programs): {}",
        stopped.stats["kernel_skipped"]
    );
    println!(
        "of those, connection closes reported when the socket was freed: {}",
        stopped.stats["late_closes"]
    );
    println!(
        "tracer RSS: {} KiB after warm-up ({:.0} s), {} KiB at the end: drift {:+.1}%",
        warm.1,
        warm.0,
        end.1,
        drift * 100.0
    );
    let report = serde_json::json!({
        "minutes": args.minutes, "cycles": cycle, "expected": expected, "reported": got,
        "lost": lost, "rss_kib": rss, "rss_drift": drift, "final_stats": stopped.stats,
    });
    if let Some(dir) = args.report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", args.report.display());
    // Every failure record, to find the one behind a count that differs.
    let records = args.report.with_extension("failures.ndjson");
    let lines: String = stopped.failures.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&records, lines)?;
    println!("failure records: {}", records.display());
    if mismatch || lost != 0 || drift > 0.05 {
        bail!(
            "soak failed: counts {}, lost {lost}, RSS drift {:+.1}%",
            if mismatch { "differ" } else { "exact" },
            drift * 100.0
        );
    }
    Ok(())
}
