//! `cargo xtask setup | run | test | bench | soak | fuzz | image`: the project's whole developer
//! workflow.
//!
//! `setup` installs every prerequisite idempotently (and says what it does); `run`, `test` and
//! `image` call it first, so a fresh Debian machine needs nothing but the README's commands.
mod fuzz;
mod image;
mod setup;
mod tiers;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test tracer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the prerequisites: nightly rust-src, LLVM 22, bpf-linker, nftables, iproute2; mount tracefs.
    Setup,
    /// Build in release mode and run the tracer (through sudo when not root): `cargo xtask run -- ARGS`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a steady mixed fault load against the tracer and report RSS, loss and exact counts
    /// (needs root).
    Soak {
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
    },
    /// Measure tracer side by side with no tracer and with the bpftrace peer script; print a
    /// table and write target/bench/results.json (needs root).
    Bench {
        /// A run of seconds, not minutes, with sanity checks only (what `test` runs).
        #[arg(long)]
        short: bool,
        /// Interleaved rounds per figure.
        #[arg(long)]
        rounds: Option<usize>,
        /// Seconds per throughput run.
        #[arg(long)]
        seconds: Option<f64>,
        /// Run only these parts (comma-separated): connect, refused, dns, programs, userspace,
        /// capacity, overload, memory.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Run the fuzz targets (cargo fuzz, nightly) for a while each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build the container image localhost/tracer:<version> (and :latest) from
    /// deploy/Containerfile, from scratch (nothing is pulled); print its id and size.
    Image {
        /// Then run it here as the DaemonSet runs it (podman, needs root):
        /// `cargo xtask image --run -- run --failures-only`.
        #[arg(long)]
        run: bool,
        /// OCI runtime for --run (crun refuses hosts with cgroup v1 and v2 side by side).
        #[arg(long, default_value = "runc", requires = "run")]
        runtime: String,
        /// Seccomp profile for --run: `unconfined` or a profile file (podman's default
        /// profile allows bpf() only with CAP_SYS_ADMIN; see README).
        #[arg(long, default_value = "unconfined", requires = "run")]
        seccomp: String,
        /// Arguments for the tracer in the container (default: `run`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, requires = "run")]
        args: Vec<String>,
    },
    /// Run everything CI runs: fmt and clippy (the lint gate), the unit tests, the real-kernel
    /// tests (needs root), a short fuzz run and the short benchmark, and print one closing line
    /// `tests: N passed, N failed`. `--unit` and `--kernel` run one tier alone. Tests run under
    /// cargo-nextest (`.config/nextest.toml`), or `cargo test` where it is missing.
    Test {
        /// Only the unit tests (of tracer, tracer-common, xtask and the tests' library): no
        /// setup, no privilege, no image, no fuzz, no bench (debug build).
        #[arg(long, conflicts_with = "kernel")]
        unit: bool,
        /// Only the real-kernel tests, tests/tests/*.rs (setup first; needs root):
        /// `--kernel FILTER` runs the test files and tests whose name contains FILTER.
        #[arg(long)]
        kernel: bool,
        /// A test name filter (`cargo xtask test -- NAME`, `--unit NAME`, `--kernel FILTER`),
        /// and further arguments for `cargo nextest run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::run(),
        Task::Run { args } => run(&args),
        Task::Test { unit, kernel, args } => match (unit, kernel) {
            // No setup: it installs and mounts (root); the unit tier needs neither.
            (true, _) => tiers::alone("unit", tiers::unit(&args, false, false)),
            (_, true) => tiers::alone(
                "kernel",
                setup::run().and_then(|()| tiers::kernel(&args, false)),
            ),
            _ => test(&args),
        },
        Task::Soak { minutes } => {
            setup::run().and_then(|()| tool("tt-soak", &["--minutes".into(), minutes.to_string()]))
        }
        Task::Bench {
            short,
            rounds,
            seconds,
            only,
        } => {
            let mut args = Vec::new();
            if short {
                args.push("--short".to_string());
            }
            if let Some(r) = rounds {
                args.extend(["--rounds".to_string(), r.to_string()]);
            }
            if let Some(s) = seconds {
                args.extend(["--seconds".to_string(), s.to_string()]);
            }
            if !only.is_empty() {
                args.extend(["--only".to_string(), only.join(",")]);
            }
            setup::run().and_then(|()| tool("tt-bench", &args))
        }
        Task::Fuzz { seconds } => setup::run().and_then(|()| fuzz::run(seconds).map(|_| ())),
        Task::Image {
            run,
            runtime,
            seccomp,
            args,
        } => setup::run()
            .and_then(|()| image::build())
            .and_then(|built| {
                if run {
                    image::run(
                        &built,
                        &image::RunOptions {
                            runtime,
                            seccomp,
                            args,
                        },
                    )
                } else {
                    Ok(())
                }
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace's root directory (where Cargo.toml and deploy/ are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cargo ARGS` in the workspace with the tools setup installed on PATH.
pub fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root when
/// relative), else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Builds the release tracer (`cargo build --release -p tracer`); returns the binary's path.
pub fn build_release() -> Result<PathBuf> {
    cargo(&["build", "--release", "--package", "tracer"])?;
    Ok(target_dir().join("release/tracer"))
}

/// `cargo xtask run -- ARGS`: setup, build, then exec the release tracer (through sudo when not
/// root).
fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    let bin = build_release()?;
    let err = if setup::is_root() {
        Command::new(&bin).args(args).exec()
    } else {
        eprintln!("xtask: not root: running the tracer through sudo");
        Command::new("sudo").arg(&bin).args(args).exec()
    };
    Err(err).with_context(|| format!("cannot start {}", bin.display()))
}

/// Builds the tracer and the test programs, then runs `name` (tt-soak, tt-bench) from the
/// workspace root against the release tracer.
fn tool(name: &str, args: &[String]) -> Result<()> {
    let bin = build_release()?;
    cargo(&["build", "--release", "--package", "tracer-tests", "--bins"])?;
    let status = Command::new(target_dir().join("release").join(name))
        .args(args)
        .current_dir(workspace_root())
        .env("TRACER_BIN", &bin)
        .status()
        .with_context(|| format!("cannot run {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// `cargo xtask test`: setup; the lint gate (fmt, clippy of the workspace and of the eBPF crate
/// for its target); the unit tier and the kernel tier (nextest, release); the short fuzz run and
/// the short benchmark; one closing result line that adds them all up. Every part after setup
/// runs even when an earlier one failed, so one run shows every failure; a failed setup ends the
/// run (counted as one failure).
fn test(args: &[String]) -> Result<()> {
    if let Err(e) = setup::run() {
        eprintln!("xtask: setup: {e:#}");
        println!("setup ... FAILED");
        return tiers::check(tiers::Count::one(false));
    }
    let total = std::cell::Cell::new(tiers::Count::default());
    let add = |c: tiers::Count| {
        let mut t = total.get();
        t.add(c);
        total.set(t);
    };
    let part = |name: &str, ok: bool| {
        println!("{name} ... {}", if ok { "ok" } else { "FAILED" });
        add(tiers::Count::one(ok));
    };
    let fmt = cargo(&["fmt", "--all", "--check"]);
    if let Err(e) = &fmt {
        eprintln!("xtask: {e:#}: run `cargo fmt --all`");
    }
    part("lint: cargo fmt --check", fmt.is_ok());
    let clippy = cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    if let Err(e) = &clippy {
        eprintln!("xtask: {e:#}");
    }
    part("lint: cargo clippy", clippy.is_ok());
    let ebpf = tiers::clippy_ebpf();
    if let Err(e) = &ebpf {
        eprintln!("xtask: {e:#}");
    }
    part("lint: cargo clippy (tracer-ebpf, bpfel)", ebpf.is_ok());
    // A name filter applies to both tiers; matching nothing in one of them is no failure.
    let filtered = !args.is_empty();
    let unit = tiers::unit(args, true, filtered);
    let kernel = tiers::kernel(args, filtered);
    for (tier, result) in [("unit", unit), ("kernel", kernel)] {
        match result {
            Ok(c) => add(c),
            Err(e) => {
                eprintln!("xtask: the {tier} tier: {e:#}");
                add(tiers::Count::one(false));
            }
        }
    }
    // A short fuzz run of every target, each counted as a test.
    match fuzz::run(fuzz::SHORT_RUN_SECONDS) {
        Ok(fuzzed) => {
            for (target, ok) in fuzzed {
                part(&format!("fuzz target {target}"), ok);
            }
        }
        Err(e) => {
            eprintln!("xtask: fuzz: {e:#}");
            part("fuzz", false);
        }
    }
    // The benchmark in its short mode, counted as one test: its sanity checks, not its timings.
    let bench = tool("tt-bench", &["--short".into()]);
    if let Err(e) = &bench {
        eprintln!("xtask: {e:#}");
    }
    part("benchmark (short)", bench.is_ok());
    tiers::check(total.get())
}
