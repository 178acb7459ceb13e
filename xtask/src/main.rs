//! `cargo xtask setup | run | test | bench | soak | fuzz | image`: the project's whole developer
//! workflow.
//!
//! `setup` installs every prerequisite idempotently (and says what it does); `run`, `test` and
//! `image` call it first, so a fresh Debian machine needs nothing but the README's commands.
mod fuzz;
mod image;
mod setup;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
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
    /// Run the unit tests, the real-kernel scenario tests (needs root) and a short fuzz run.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::run(),
        Task::Run { args } => run(&args),
        Task::Test { args } => test(&args),
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

/// `cargo xtask test`: setup, the release tracer and its container image, every test with
/// `TRACER_BIN`, `TRACER_IMAGE` and `KUBERNETES_VALIDATE` set, the short fuzz run and the short
/// benchmark; one closing result line.
fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    let bin = build_release()?;
    // The deployment tests run this image (tests/tests/deploy.rs): built once, here.
    let image = image::build()?;
    let mut cmd = vec![
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
    ];
    cmd.extend(args.iter().map(String::as_str));
    let mut child = Command::new(env!("CARGO"))
        .args(&cmd)
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .env("TRACER_BIN", &bin)
        .env("TRACER_IMAGE", &image.id)
        .env("KUBERNETES_VALIDATE", setup::kubernetes_validate())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    // Pass the output through and add up the per-binary results into one closing line.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some((p, f)) = parse_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    // A short fuzz run of every target, each counted as a test.
    let fuzzed = if status.success() {
        fuzz::run(fuzz::SHORT_RUN_SECONDS)?
    } else {
        Vec::new()
    };
    for (target, ok) in &fuzzed {
        println!(
            "fuzz target {target} ... {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    passed += fuzzed.iter().filter(|(_, ok)| *ok).count() as u64;
    failed += fuzzed.iter().filter(|(_, ok)| !*ok).count() as u64;
    // The benchmark in its short mode, counted as one test: its sanity checks, not its timings.
    let bench = status.success() && {
        let ok = tool("tt-bench", &["--short".into()]);
        if let Err(e) = &ok {
            eprintln!("xtask: {e:#}");
        }
        ok.is_ok()
    };
    if status.success() {
        println!(
            "benchmark (short) ... {}",
            if bench { "ok" } else { "FAILED" }
        );
        if bench {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("tests failed ({status})");
    }
    if failed > 0 {
        bail!("a fuzz target or the short benchmark failed (see above)");
    }
    Ok(())
}

/// `test result: ok. 11 passed; 0 failed; …` → (11, 0).
fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn parses_cargo_test_result_lines() {
        let line = "test result: ok. 11 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 17.09s";
        assert_eq!(parse_result(line), Some((11, 2)));
        assert_eq!(parse_result("running 3 tests"), None);
    }
}
