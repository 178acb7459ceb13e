//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target under fuzz/, N seconds each, with a
//! memory cap so that unbounded growth fails the run like a crash does.
use std::process::Command;

use anyhow::{Context, Result};

/// The targets in fuzz/fuzz_targets.
pub const TARGETS: [&str; 3] = ["decode", "pipeline", "dns"];
/// Seconds per target in `cargo xtask test`.
pub const SHORT_RUN_SECONDS: u64 = 15;
/// libFuzzer's RSS limit (with AddressSanitizer's own overhead): a target growing past it fails.
const RSS_LIMIT_MB: u32 = 2048;

/// Runs each target for `seconds`; returns (target, passed).
pub fn run(seconds: u64) -> Result<Vec<(&'static str, bool)>> {
    let root = crate::workspace_root();
    let path = crate::setup::path_with_cargo_bin();
    let build = Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "--release"])
        .current_dir(&root)
        .env("PATH", &path)
        .status()
        .context("cannot run cargo fuzz (cargo xtask setup installs it)")?;
    anyhow::ensure!(build.success(), "cargo fuzz build failed ({build})");
    let mut results = Vec::new();
    for target in TARGETS {
        eprintln!("fuzz: {target} for {seconds} s");
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "--release", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
            .arg("-max_len=8192")
            .arg("-print_final_stats=1")
            .current_dir(&root)
            .env("PATH", &path)
            .status()
            .with_context(|| format!("cannot run cargo fuzz run {target}"))?;
        results.push((target, status.success()));
    }
    Ok(results)
}
