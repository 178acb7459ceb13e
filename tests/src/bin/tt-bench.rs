//! `cargo xtask bench`: what tracer costs and how much it can take, measured side by side with
//! no tracer, with the bpftrace peer script (tests/src/bench/peer.bt) and with two floors (empty
//! programs on the same hooks: the tracepoints of tests/src/bench/floor.bt as classic
//! tracepoints, or the socket and skb ones as raw tracepoints that this harness attaches with
//! the connect() syscall ones of tests/src/bench/floor_raw.bt; both with an empty cgroup_skb
//! ingress program on the cgroup v2 root that this harness attaches, where the tracer's
//! `dns_ingress` runs), in one run. Prints a table and
//! writes target/bench/results.json. Fails only when its own sanity checks fail (no throughput,
//! a peer that never attached, counts that do not add up), never on a timing threshold.
//!
//! Traffic stays on loopback inside a namespace this program creates (and removes).
use std::{
    alloc::{GlobalAlloc, Layout, System},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use tracer_tests::{
    Netns,
    bench::{
        load,
        observer::{self, Observer},
        programs,
        spread::Spread,
        synthetic::{self, Stream},
    },
};

/// Counts heap allocations, for the allocations-per-record figure of the synthetic pass.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the new size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[derive(Parser)]
struct Args {
    /// Seconds, not minutes: one round, short runs (what CI runs). Sanity checks only.
    #[arg(long)]
    short: bool,
    /// Interleaved rounds per figure (default 5, or 1 with --short).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per throughput run (default 5, or 1 with --short).
    #[arg(long)]
    seconds: Option<f64>,
    /// Run only these parts (comma-separated): connect, refused, dns, programs, populated,
    /// userspace, capacity, overload, memory.
    #[arg(long, value_delimiter = ',', value_parser = PARTS)]
    only: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

const PARTS: [&str; 9] = [
    "connect",
    "refused",
    "dns",
    "programs",
    "populated",
    "userspace",
    "capacity",
    "overload",
    "memory",
];

/// The CPU the load generator is pinned to; the other is left to the observer.
const LOAD_CPU: usize = 1;
/// Connecting threads of the load generator.
const LOAD_THREADS: usize = 2;
/// Refusals in the overload check.
const OVERLOAD: u64 = 20_000;
/// Idle established connections held open (tracked) during the populated-map part.
const HELD: u64 = 20_000;
/// Where the DNS load's responder listens (port 53: the tracer captures answers from it).
const DNS_ADDR: &str = "127.0.0.1:53";

/// A throughput row of the table: one kind of load, under each observer in turn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Connects to a listener, then closes.
    Connect,
    /// Connects nobody listens for.
    Refused,
    /// DNS queries over UDP, answered on loopback (a resolver-heavy host).
    Dns,
}

impl Row {
    const ALL: [Row; 3] = [Row::Connect, Row::Refused, Row::Dns];

    /// Its name for `--only`.
    fn part(self) -> &'static str {
        match self {
            Row::Connect => "connect",
            Row::Refused => "refused",
            Row::Dns => "dns",
        }
    }

    /// Its key in the JSON results.
    fn key(self) -> &'static str {
        match self {
            Row::Connect => "connect_close_per_s",
            Row::Refused => "refused_per_s",
            Row::Dns => "dns_queries_per_s",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Row::Connect => "connect+close /s",
            Row::Refused => "refused connects /s",
            Row::Dns => "DNS queries /s",
        }
    }

    fn addr(self) -> &'static str {
        match self {
            Row::Connect => "127.0.0.1:5001",
            Row::Refused => "127.0.0.1:5002",
            Row::Dns => DNS_ADDR,
        }
    }

    fn mode(self) -> load::Mode {
        match self {
            Row::Connect => load::Mode::Serve,
            Row::Refused => load::Mode::Refused,
            Row::Dns => load::Mode::Dns,
        }
    }

    /// Every attempt ended as this load expects: accepted, refused, or answered.
    fn as_expected(self, r: &load::LoadResult) -> bool {
        r.other == 0
            && match self {
                Row::Connect | Row::Dns => r.connected == r.attempts,
                Row::Refused => r.refused == r.attempts,
            }
    }
}

struct Bench {
    ns: Netns,
    dir: PathBuf,
    rounds: usize,
    seconds: f64,
    short: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    preflight()?;
    let short = args.short;
    let dir = args
        .out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir)?;
    let b = Bench {
        ns: Netns::new("bench"),
        dir,
        rounds: args.rounds.unwrap_or(if short { 1 } else { 5 }),
        seconds: args.seconds.unwrap_or(if short { 1.0 } else { 5.0 }),
        short,
    };
    let machine = machine();
    println!(
        "tracer benchmark: {} CPUs, kernel {}; load generator pinned to CPU {LOAD_CPU} ({LOAD_THREADS} threads); {} interleaved round(s) of {} s; peer: bpftrace {}",
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?"),
        b.rounds,
        b.seconds,
        machine["bpftrace"].as_str().unwrap_or("?"),
    );
    println!(
        "{:<22} {:>24} {:>24} {:>24} {:>24} {:>24}",
        "median [± half-spread]",
        "no tracer",
        "tracer",
        "bpftrace tests/src/bench/peer.bt",
        "floor: classic tp",
        "floor: raw tp"
    );
    let want = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    let mut results = serde_json::Map::new();
    let mut record = |key: &str, value: Result<Value>| -> Result<()> {
        results.insert(key.into(), value?);
        Ok(())
    };
    for row in Row::ALL {
        if want(row.part()) {
            record(row.key(), b.throughput(row))?;
        }
    }
    if want("programs") {
        record("program_cost", b.program_costs())?;
    }
    if want("populated") {
        record("populated_map", b.populated())?;
    }
    if want("userspace") {
        record("userspace", b.userspace())?;
    }
    if want("capacity") {
        record("kernel_to_output", b.capacity())?;
    }
    if want("overload") {
        record("overload", b.overload())?;
    }
    if want("memory") {
        record("memory", b.memory())?;
    }
    results.insert("mode".into(), json!(if short { "short" } else { "full" }));
    results.insert("machine".into(), machine);
    results.insert("rounds".into(), json!(b.rounds));
    results.insert("seconds_per_run".into(), json!(b.seconds));
    let results = Value::Object(results);
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("results: {}", args.out.display());
    Ok(())
}

/// Root, the tracer binary, bpftrace and bpftool: what the benchmark cannot run without.
fn preflight() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the benchmark loads eBPF programs and creates a network namespace: run it as root (`cargo xtask bench` does)"
    );
    tracer_tests::tracer_bin().map_err(anyhow::Error::msg)?;
    for (tool, package) in [("bpftrace", "bpftrace"), ("bpftool", "bpftool")] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(
            found,
            "{tool} is missing (the peer baseline needs it): `cargo xtask setup` installs Debian's {package}"
        );
    }
    for script in [
        observer::peer_script(),
        observer::floor_script(),
        observer::floor_raw_script(),
    ] {
        ensure!(
            script.is_file(),
            "the bpftrace script {} is missing",
            script.display()
        );
    }
    Ok(())
}

fn machine() -> Value {
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": cmd("uname", &["-r"]),
        "bpftrace": cmd("bpftrace", &["--version"]).trim_start_matches("bpftrace ").to_string(),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines()
            .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))),
    })
}

fn pct(value: f64, base: f64) -> f64 {
    if base == 0.0 {
        0.0
    } else {
        (value - base) / base * 100.0
    }
}

fn human(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Bench {
    fn out_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn inode(&self) -> u32 {
        self.ns.inode
    }

    /// The throughput of `row`'s load: interleaved rounds of the five observers, rotating their
    /// order each round.
    fn throughput(&self, row: Row) -> Result<Value> {
        let what = row.part();
        let addr = row.addr();
        let port: u16 = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .context("a port")?;
        let mut spreads: [Spread; 5] = Default::default();
        let mut tracer_seen = 0u64;
        let mut peer_lines = 0u64;
        for round in 0..self.rounds {
            for k in 0..Observer::ALL.len() {
                let i = (k + round) % Observer::ALL.len();
                let kind = Observer::ALL[i];
                let out = self.out_file(&format!("{}-{what}.out", kind.key()));
                let running = observer::start(kind, &self.ns, &out, &[])?;
                let r = load::run(
                    &self.ns,
                    &load::args(addr, self.seconds, LOAD_THREADS, row.mode(), Some(LOAD_CPU)),
                )?;
                let output = running.stop()?;
                ensure!(
                    r.per_second > 0.0,
                    "{what} load with {}: no throughput: {r:?}",
                    kind.name()
                );
                ensure!(
                    row.as_expected(&r),
                    "{what} load with {}: not every attempt ended as expected: {r:?}",
                    kind.name()
                );
                spreads[i].push(r.per_second);
                match (kind, row) {
                    (Observer::Tracer, Row::Refused) => {
                        tracer_seen += output.tracer_counts(self.inode())?.delivered(port);
                    }
                    (Observer::Tracer, Row::Dns) => {
                        let counts = output.tracer_counts(self.inode())?;
                        ensure!(
                            counts.dns_responses() > 0,
                            "tracer captured no DNS responses during a dns run (stats {})",
                            counts.stats
                        );
                        tracer_seen += counts.dns_responses();
                    }
                    (Observer::Bpftrace, _) => peer_lines += output.lines()?,
                    _ => {}
                }
            }
        }
        ensure!(
            peer_lines > 0,
            "bpftrace printed nothing during the {what} runs"
        );
        if row == Row::Refused {
            ensure!(
                tracer_seen > 0,
                "tracer reported no refusals during the refused runs"
            );
        }
        let base = spreads[0].median();
        println!(
            "{:<22} {:>24} {:>24} {:>24} {:>24} {:>24}",
            row.label(),
            fmt_spread(&spreads[0], None),
            fmt_spread(&spreads[1], Some(base)),
            fmt_spread(&spreads[2], Some(base)),
            fmt_spread(&spreads[3], Some(base)),
            fmt_spread(&spreads[4], Some(base)),
        );
        let change = |i: usize| pct(spreads[i].median(), base);
        // The tracer's own cost: its loss minus a floor's, in percentage points of throughput,
        // paired within each round (the floor's run minus the tracer's, over that round's run
        // without a tracer: the three ran within seconds of each other), then the median over
        // rounds. Drift of the machine between rounds, which moves all three alike, cancels.
        let paired = |floor: usize| {
            let mut points = Spread::default();
            for r in 0..spreads[0].runs.len() {
                let (none, tracer, f) = (
                    spreads[0].runs[r],
                    spreads[1].runs[r],
                    spreads[floor].runs[r],
                );
                points.push((f - tracer) / none * 100.0);
            }
            points
        };
        let (above, above_raw) = (paired(3), paired(4));
        println!(
            "{:<22} {:>24} {:>24}",
            "",
            "",
            format!(
                "{:+.1} [{:+.1}..{:+.1}] / {:+.1} [{:+.1}..{:+.1}] pts vs floors (paired per round)",
                above.median(),
                above.min(),
                above.max(),
                above_raw.median(),
                above_raw.min(),
                above_raw.max()
            )
        );
        let mut result = json!({
            "none": spreads[0].json(),
            "tracer": spreads[1].json(),
            "bpftrace": spreads[2].json(),
            "floor": spreads[3].json(),
            "floor_raw": spreads[4].json(),
            "tracer_change_pct": change(1),
            "bpftrace_change_pct": change(2),
            "floor_change_pct": change(3),
            "floor_raw_change_pct": change(4),
            "tracer_points_above_floor": above.median(),
            "tracer_points_above_floor_raw": above_raw.median(),
            "tracer_points_above_floor_rounds": above.json(),
            "tracer_points_above_floor_raw_rounds": above_raw.json(),
        });
        if row == Row::Dns {
            result["tracer_dns_responses"] = json!(tracer_seen);
        }
        Ok(result)
    }

    /// Mean kernel time per program run, with `kernel.bpf_stats_enabled` on only here.
    fn program_costs(&self) -> Result<Value> {
        let _stats = programs::StatsEnabled::new()?;
        let mut result = serde_json::Map::new();
        let mut line = String::new();
        let mut ns_per_op = Vec::new();
        for kind in [
            Observer::Tracer,
            Observer::Bpftrace,
            Observer::Floor,
            Observer::FloorRaw,
        ] {
            let out = self.out_file(&format!("{}-cost.out", kind.key()));
            let before = programs::loaded_ids()?;
            // Every program of the tracer, the opt-in per-packet hook too (`--nat`): its row
            // below is measured here, and the per-operation costs are the most a user pays.
            let running = observer::start(kind, &self.ns, &out, &["--nat"])?;
            // TCP successes and refusals, then DNS queries (which `dns_ingress` parses); the
            // kernel time each operation costs, all programs together, phase by phase.
            let mut spent = 0u64;
            let mut egress_spent = (0u64, 0u64);
            let mut queue_spent = (0u64, 0u64);
            let mut per_op = serde_json::Map::new();
            for (addr, mode, seconds, phase) in [
                ("127.0.0.1:5003", load::Mode::Serve, 2.0, "connect_close"),
                ("127.0.0.1:5004", load::Mode::Refused, 2.0, "refused"),
                (DNS_ADDR, load::Mode::Dns, 1.0, "dns"),
            ] {
                let r = load::run(
                    &self.ns,
                    &load::args(
                        addr,
                        self.seconds.min(seconds),
                        LOAD_THREADS,
                        mode,
                        Some(LOAD_CPU),
                    ),
                )?;
                let costs = programs::loaded_since(&before)?;
                let now: u64 = costs.iter().map(|c| c.run_time_ns).sum();
                let ns = (now - spent) as f64 / r.attempts.max(1) as f64;
                spent = now;
                per_op.insert(phase.into(), json!(ns));
                // The egress hook alone (the DNS capture's, or the floors' empty one): its runs
                // and time in this phase, one run per packet sent.
                let egress = costs
                    .iter()
                    .filter(|c| c.name == "dns_egress" || c.name == "floor_skb_out")
                    .fold((0, 0), |(runs, ns), c| (runs + c.runs, ns + c.run_time_ns));
                let (runs, time) = (egress.0 - egress_spent.0, egress.1 - egress_spent.1);
                egress_spent = egress;
                per_op.insert(format!("{phase}_egress_runs"), json!(runs));
                per_op.insert(format!("{phase}_egress_ns"), json!(time));
                // `net:net_dev_queue` alone (the tracer's conntrack reader, raw or classic, or
                // the floors' empty program): one run per packet transmitted.
                let queue = costs
                    .iter()
                    .filter(|c| c.name.starts_with("net_dev_queue"))
                    .fold((0, 0), |(runs, ns), c| (runs + c.runs, ns + c.run_time_ns));
                let (runs, time) = (queue.0 - queue_spent.0, queue.1 - queue_spent.1);
                queue_spent = queue;
                per_op.insert(format!("{phase}_queue_runs"), json!(runs));
                per_op.insert(format!("{phase}_queue_ns"), json!(time));
            }
            ns_per_op.push((kind, per_op.clone()));
            let costs = programs::loaded_since(&before)?;
            running.stop()?;
            let runs: u64 = costs.iter().map(|c| c.runs).sum();
            ensure!(
                runs > 0,
                "no program runs counted for {} (kernel.bpf_stats_enabled not honoured?)",
                kind.name()
            );
            line.push_str(&format!(
                " {:>24}",
                format!("{:.0} ns/run", programs::mean_ns(&costs))
            ));
            let mut costs = programs::json(&costs);
            costs["ns_per_operation"] = Value::Object(per_op);
            result.insert(kind.key().into(), costs);
        }
        println!("{:<22} {:>24}{line}", "kernel time per run", "-");
        // Kernel time per operation: what each load's operation costs in all programs together
        // (a connect + close fires about a dozen hooks). Unlike throughput on a noisy machine,
        // this is steady; the tracer's distance to the floors is its own work.
        for (phase, label) in [
            ("connect_close", "kernel ns / connect"),
            ("refused", "kernel ns / refusal"),
            ("dns", "kernel ns / DNS query"),
        ] {
            let mut row = String::new();
            for (_, per_op) in &ns_per_op {
                row.push_str(&format!(
                    " {:>24}",
                    format!("{:.0}", per_op[phase].as_f64().unwrap_or(0.0))
                ));
            }
            println!("{label:<22} {:>24}{row}", "-");
        }
        // The DNS capture's egress hook per packet sent: the tracer's `dns_egress` against the
        // floors' empty program on the same hook (`floor_skb_out`). Under the TCP loads every
        // packet is one that is not DNS (a port check and out); under the DNS load half are
        // queries (captured whole) and half the responder's answers.
        // `net:net_dev_queue` per packet transmitted: the tracer's program (an untranslated
        // packet: no conntrack entry, or not a new connection's) against the floors' empty one
        // on the same hook (`floor.bt`'s classic one, `floor_raw`'s raw one).
        for (phases, hook, label) in [
            (
                &["connect_close", "refused"][..],
                "egress",
                "egress ns / TCP packet",
            ),
            (&["dns"][..], "egress", "egress ns / DNS packet"),
            (
                &["connect_close", "refused", "dns"][..],
                "queue",
                "dev_queue ns / packet",
            ),
        ] {
            let mut row = String::new();
            for (_, per_op) in &ns_per_op {
                let sum = |what: &str| -> u64 {
                    phases
                        .iter()
                        .filter_map(|p| per_op.get(&format!("{p}_{hook}_{what}"))?.as_u64())
                        .sum()
                };
                let (runs, ns) = (sum("runs"), sum("ns"));
                let cell = if runs == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", ns as f64 / runs as f64)
                };
                row.push_str(&format!(" {cell:>24}"));
            }
            println!("{label:<22} {:>24}{row}", "-");
        }
        for kind in ["tracer", "bpftrace", "floor", "floor_raw"] {
            let detail: Vec<String> = result[kind]["programs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{} {:.0} ns × {}",
                        p["name"].as_str().unwrap_or("?"),
                        p["ns_per_run"].as_f64().unwrap_or(0.0),
                        human(p["runs"].as_f64().unwrap_or(0.0))
                    )
                })
                .collect();
            println!("    {kind}: {}", detail.join(", "));
        }
        Ok(Value::Object(result))
    }

    /// The connect and refused loads while 20,000 idle connections are held open, so that
    /// the tracer's socket map (`SOCKS`) is populated, not empty, while it inserts and removes:
    /// throughput without and with tracer (interleaved rounds), then the kernel time per
    /// operation of tracer's programs (`kernel.bpf_stats_enabled` on for that run only).
    fn populated(&self) -> Result<Value> {
        let loads = [
            ("127.0.0.1:5011", load::Mode::Serve, "connect_close"),
            ("127.0.0.1:5012", load::Mode::Refused, "refused"),
        ];
        let held_addr = "127.0.0.1:5010";
        let observers = [Observer::None, Observer::Tracer];
        let mut spreads: [[Spread; 2]; 2] = Default::default();
        let mut stats = Value::Null;
        for round in 0..self.rounds {
            for k in 0..observers.len() {
                let i = (k + round) % observers.len();
                let out = self.out_file(&format!("{}-populated.out", observers[i].key()));
                let running = observer::start(observers[i], &self.ns, &out, &[])?;
                let held = load::Held::open(&self.ns, held_addr, HELD, None)?;
                for (l, (addr, mode, what)) in loads.iter().enumerate() {
                    let r = load::run(
                        &self.ns,
                        &load::args(addr, self.seconds, LOAD_THREADS, *mode, Some(LOAD_CPU)),
                    )?;
                    ensure!(
                        r.per_second > 0.0 && r.other == 0,
                        "populated {what} load with {}: {r:?}",
                        observers[i].name()
                    );
                    spreads[l][i].push(r.per_second);
                }
                drop(held);
                let output = running.stop()?;
                if observers[i] == Observer::Tracer {
                    stats = output.tracer_counts(self.inode())?.stats;
                }
            }
        }
        // Kernel time per operation, tracer only, map populated likewise.
        let _stats = programs::StatsEnabled::new()?;
        let before = programs::loaded_ids()?;
        let out = self.out_file("tracer-populated-cost.out");
        let running = observer::start(Observer::Tracer, &self.ns, &out, &[])?;
        let held = load::Held::open(&self.ns, held_addr, HELD, None)?;
        let mut ns_per_op = serde_json::Map::new();
        let mut spent = programs::loaded_since(&before)?
            .iter()
            .map(|c| c.run_time_ns)
            .sum::<u64>();
        for (addr, mode, what) in loads {
            let r = load::run(
                &self.ns,
                &load::args(
                    addr,
                    self.seconds.min(2.0),
                    LOAD_THREADS,
                    mode,
                    Some(LOAD_CPU),
                ),
            )?;
            let now: u64 = programs::loaded_since(&before)?
                .iter()
                .map(|c| c.run_time_ns)
                .sum();
            ns_per_op.insert(
                what.into(),
                json!((now - spent) as f64 / r.attempts.max(1) as f64),
            );
            spent = now;
        }
        let costs = programs::loaded_since(&before)?;
        drop(held);
        running.stop()?;
        let detail: Vec<String> = costs
            .iter()
            .filter(|c| c.runs > 0)
            .map(|c| {
                format!(
                    "{} {:.0} ns × {}",
                    c.name,
                    c.ns_per_run(),
                    human(c.runs as f64)
                )
            })
            .collect();
        for (l, label) in ["connect+close /s", "refused /s"].into_iter().enumerate() {
            let base = spreads[l][0].median();
            println!(
                "{:<22} {:>24} {:>24}",
                format!("{label}, {}k held", HELD / 1000),
                fmt_spread(&spreads[l][0], None),
                fmt_spread(&spreads[l][1], Some(base)),
            );
        }
        for (what, label) in [
            ("connect_close", "kernel ns / connect"),
            ("refused", "kernel ns / refusal"),
        ] {
            println!(
                "{:<22} {:>24} {:>24}",
                format!("{label}, {}k held", HELD / 1000),
                "-",
                format!("{:.0}", ns_per_op[what].as_f64().unwrap_or(0.0))
            );
        }
        println!("    tracer, {}k held: {}", HELD / 1000, detail.join(", "));
        Ok(json!({
            "held": HELD,
            "tracer_programs": programs::json(&costs),
            "connect_close_per_s": { "none": spreads[0][0].json(), "tracer": spreads[0][1].json(),
                "tracer_change_pct": pct(spreads[0][1].median(), spreads[0][0].median()) },
            "refused_per_s": { "none": spreads[1][0].json(), "tracer": spreads[1][1].json(),
                "tracer_change_pct": pct(spreads[1][1].median(), spreads[1][0].median()) },
            "tracer_kernel_ns_per_operation": ns_per_op,
            "tracer_stats": stats,
        }))
    }

    /// Synthetic records through the pipeline on one core.
    fn userspace(&self) -> Result<Value> {
        let mut cpu = nix::sched::CpuSet::new();
        cpu.set(LOAD_CPU)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu)?;
        let min_time = Duration::from_secs_f64(if self.short { 0.3 } else { 1.0 });
        let mut result = serde_json::Map::new();
        for (key, stream, what) in [
            (
                "refusals",
                Stream::Refusals,
                "userspace: refusal records (each a failure line)",
            ),
            (
                "successes",
                Stream::Successes,
                "userspace: success records (aggregated)",
            ),
        ] {
            let records = synthetic::records(stream, 100_000);
            let mut rate = Spread::default();
            let mut last = None;
            for _ in 0..self.rounds {
                let p = synthetic::pass(&records, min_time, allocations);
                rate.push(p.per_second);
                last = Some(p);
            }
            let p = last.context("no pass")?;
            ensure!(rate.median() > 0.0, "the synthetic pass processed nothing");
            println!(
                "{what}: {} /s on one core [{}–{}], {:.2} allocations and {:.0} output bytes per record",
                human(rate.median()),
                human(rate.min()),
                human(rate.max()),
                p.allocations_per_record,
                p.bytes_per_record
            );
            result.insert(
                key.into(),
                json!({
                    "records_per_s": rate.json(),
                    "allocations_per_record": p.allocations_per_record,
                    "output_bytes_per_record": p.bytes_per_record,
                }),
            );
        }
        let all = nix::sched::CpuSet::new();
        let mut every = all;
        for c in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
            every.set(c)?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &every)?;
        Ok(Value::Object(result))
    }

    /// Refusals as fast as the load generator can make them, with tracer at its defaults: how
    /// many were caused, delivered and lost. Once pinned to one CPU, once on every CPU.
    fn capacity(&self) -> Result<Value> {
        let seconds = if self.short { 2.0 } else { 10.0 };
        let mut result = Vec::new();
        for (port, threads, cpu, how) in [
            (5005u16, LOAD_THREADS, Some(LOAD_CPU), "load on one CPU"),
            (5006, 4, None, "load on every CPU"),
        ] {
            let out = self.out_file(&format!("tracer-capacity-{port}.out"));
            // Scoped to the benchmark's namespace, so that the host's other connections cannot
            // enter the accounting.
            let netns = self.inode().to_string();
            let running = observer::start(Observer::Tracer, &self.ns, &out, &["--netns", &netns])?;
            let r = load::run(
                &self.ns,
                &load::args(
                    &format!("127.0.0.1:{port}"),
                    seconds,
                    threads,
                    load::Mode::Refused,
                    cpu,
                ),
            )?;
            running.wait_idle(Duration::from_secs(10));
            let counts = running.stop()?.tracer_counts(self.inode())?;
            let (delivered, lost) = (counts.delivered(port), counts.lost_connections());
            ensure!(
                delivered + lost == r.refused,
                "kernel-to-output ({how}): caused {} but delivered {delivered} + lost {lost}",
                r.refused
            );
            println!(
                "kernel→output, {how}: {} refusals/s for {seconds} s: caused {} = delivered {} + lost {}",
                human(r.per_second),
                human(r.refused as f64),
                human(delivered as f64),
                human(lost as f64)
            );
            result.push(json!({
                "load": how, "threads": threads, "seconds": r.seconds,
                "refusals_per_s": r.per_second, "caused": r.refused,
                "delivered": delivered, "lost": lost,
                "kernel_skipped": counts.stats["kernel_skipped"],
            }));
        }
        Ok(Value::Array(result))
    }

    /// A 64 KiB ring buffer and a stopped reader while 20,000 connects are refused: every one
    /// is delivered or counted lost.
    fn overload(&self) -> Result<Value> {
        let port = 5007u16;
        let out = self.out_file("tracer-overload.out");
        // Scoped to the benchmark's namespace: the accounting must not count the host's other
        // connections.
        let netns = self.inode().to_string();
        let running = observer::start(
            Observer::Tracer,
            &self.ns,
            &out,
            &["--ring-buffer-kib", "64", "--netns", &netns],
        )?;
        running.pause()?;
        let r = load::run(
            &self.ns,
            &[
                "--addr".to_string(),
                format!("127.0.0.1:{port}"),
                "--count".into(),
                OVERLOAD.to_string(),
                "--cpu".into(),
                LOAD_CPU.to_string(),
            ],
        )?;
        running.resume()?;
        running.wait_idle(Duration::from_secs(10));
        let counts = running.stop()?.tracer_counts(self.inode())?;
        let (delivered, lost) = (counts.delivered(port), counts.lost_connections());
        let exact = r.refused == OVERLOAD && delivered + lost == OVERLOAD;
        println!(
            "overload (64 KiB ring, reader stopped): caused {} = delivered {} + lost {}: {}",
            human(r.refused as f64),
            human(delivered as f64),
            human(lost as f64),
            if exact { "exact" } else { "MISMATCH" }
        );
        if !exact || lost == 0 {
            bail!(
                "overload accounting: caused {}, delivered {delivered}, lost {lost} (stats {})",
                r.refused,
                counts.stats
            );
        }
        Ok(json!({
            "ring_buffer_kib": 64, "caused": r.refused, "delivered": delivered, "lost": lost,
            "exact": exact, "stats": counts.stats,
        }))
    }

    /// tracer's RSS after refusals to ever more distinct destinations (127.x.y.z).
    fn memory(&self) -> Result<Value> {
        let checkpoints: &[u64] = if self.short {
            &[10_000]
        } else {
            &[10_000, 100_000, 1_000_000]
        };
        let out = self.out_file("tracer-memory.out");
        let cap = 100_000u64;
        let running = observer::start(
            Observer::Tracer,
            &self.ns,
            &out,
            &["--max-destinations", &cap.to_string()],
        )?;
        let start_kib = running.rss_kib();
        let mut samples = vec![
            json!({"destinations": 0, "rss_kib": start_kib, "anon_rss_kib": running.anon_rss_kib()}),
        ];
        let mut done = 0u64;
        let base = u32::from(std::net::Ipv4Addr::new(127, 1, 0, 0));
        for &n in checkpoints {
            let more = n - done;
            let first = std::net::Ipv4Addr::from(base + done as u32);
            let r = load::run(
                &self.ns,
                &[
                    "--addr".to_string(),
                    format!("{first}:5008"),
                    "--count".into(),
                    more.to_string(),
                    "--destinations".into(),
                    more.to_string(),
                    "--threads".into(),
                    LOAD_THREADS.to_string(),
                ],
            )?;
            ensure!(r.refused == more, "memory load: {r:?}");
            done = n;
            running.wait_idle(Duration::from_secs(30));
            samples.push(json!({
                "destinations": n, "rss_kib": running.rss_kib(), "anon_rss_kib": running.anon_rss_kib(),
            }));
        }
        let peak = running.peak_rss_kib();
        let counts = running.stop()?.tracer_counts(self.inode())?;
        let rows: Vec<String> = samples
            .iter()
            .map(|s| {
                format!(
                    "{} dests {:.1} MiB ({:.1} heap)",
                    human(s["destinations"].as_f64().unwrap_or(0.0)),
                    s["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    s["anon_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
                )
            })
            .collect();
        println!(
            "memory (tracer RSS, destination cap {}): {}; peak {:.1} MiB; {} destinations evicted",
            human(cap as f64),
            rows.join(", "),
            peak as f64 / 1024.0,
            human(counts.stats["destinations_evicted"].as_f64().unwrap_or(0.0))
        );
        ensure!(start_kib > 0 && peak > 0, "could not read tracer's RSS");
        Ok(json!({
            "destination_cap": cap, "samples": samples, "peak_rss_kib": peak,
            "destinations_evicted": counts.stats["destinations_evicted"],
        }))
    }
}

fn fmt_spread(s: &Spread, base: Option<f64>) -> String {
    let change = base
        .map(|b| format!(" {:+.1}%", pct(s.median(), b)))
        .unwrap_or_default();
    format!(
        "{}{change} [±{:.1}%]",
        human(s.median()),
        s.relative_spread() * 50.0
    )
}
