//! The test tiers of `cargo xtask test`, run with cargo-nextest (`.config/nextest.toml`):
//! - the unit tier: the library and binary unit tests of `tracer`, `tracer-common` and `xtask`;
//!   no privilege, no image, no system change;
//! - the kernel tier: the real-kernel tests of `tests/tests/*.rs` (root), against the release
//!   tracer and its image;
//! - the eBPF crate's clippy, for its own target.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{image, setup, target_dir, workspace_root};

/// Tests passed and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub passed: u64,
    pub failed: u64,
}

impl Count {
    /// One test, passed or not.
    pub fn one(ok: bool) -> Self {
        Count {
            passed: u64::from(ok),
            failed: u64::from(!ok),
        }
    }

    pub fn add(&mut self, other: Count) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// A tier run alone: its closing line, and an error if anything failed.
pub fn check(count: Count) -> Result<()> {
    println!("tests: {} passed, {} failed", count.passed, count.failed);
    if count.failed > 0 {
        bail!("{} failed (see above)", count.failed);
    }
    Ok(())
}

/// The unit tier (`release`: the release profile, shared with the kernel tier's build).
pub fn unit(args: &[String], release: bool) -> Result<Count> {
    let mut cmd = vec!["nextest", "run"];
    if release {
        cmd.push("--release");
    }
    cmd.extend([
        "--package",
        "tracer",
        "--package",
        "tracer-common",
        "--package",
        "xtask",
        "--lib",
        "--bins",
    ]);
    cmd.extend(args.iter().map(String::as_str));
    nextest(&cmd, &[]).context(
        "the unit tier (the eBPF object is built too: `cargo xtask setup` installs its toolchain)",
    )
}

/// The kernel tier: the release tracer and its image built, then `tests/tests/*.rs`. A first
/// argument that is a plain word selects the test binaries and tests whose name contains it.
pub fn kernel(args: &[String]) -> Result<Count> {
    let bin = crate::build_release()?;
    // The deployment tests run this image (tests/tests/deploy.rs): built once, here.
    let image = image::build()?;
    let filter = kernel_filter(args);
    let mut cmd: Vec<&str> = vec![
        "nextest",
        "run",
        "--release",
        "--package",
        "tracer-tests",
        "--tests",
    ];
    cmd.extend(filter.iter().map(String::as_str));
    let validate = setup::kubernetes_validate();
    let env = [
        ("TRACER_BIN", bin.as_os_str()),
        ("TRACER_IMAGE", image.id.as_ref()),
        ("KUBERNETES_VALIDATE", validate.as_os_str()),
    ];
    nextest(&cmd, &env)
}

/// `connect_call` → `-E 'binary(~connect_call) | test(~connect_call)'`; anything else as given.
fn kernel_filter(args: &[String]) -> Vec<String> {
    match args.split_first() {
        Some((word, rest))
            if !word.starts_with('-')
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') =>
        {
            let mut out = vec!["-E".to_string(), format!("binary(~{word}) | test(~{word})")];
            out.extend(rest.iter().cloned());
            out
        }
        _ => args.to_vec(),
    }
}

/// Clippy of the eBPF crate for its target (the workspace's clippy leaves it out: it builds
/// only for BPF), in a target directory of its own.
pub fn clippy_ebpf() -> Result<()> {
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(workspace_root().join("tracer-ebpf"))
        .env("PATH", setup::path_with_cargo_bin())
        .env("CARGO_TARGET_DIR", target_dir().join("ebpf-clippy"))
        // The outer cargo's variables would pin the stable toolchain.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .status()
        .context("cannot run cargo +nightly clippy for tracer-ebpf")?;
    if !status.success() {
        bail!("cargo clippy of tracer-ebpf failed ({status})");
    }
    Ok(())
}

/// Runs `cargo ARGS` (a nextest run) with `env`, passing its output through, and counts the
/// tests from nextest's summary line; a run that ends without one (a build failure) counts as
/// one failure.
fn nextest(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<Count> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    // nextest writes its progress and summary on stderr: pass it through, keep the summary.
    let mut count = None;
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line.context("reading nextest's output")?;
        eprintln!("{line}");
        if let Some(c) = parse_summary(&line) {
            count = Some(c);
        }
    }
    let status = child.wait().context("waiting for nextest")?;
    match count {
        Some(c) if c.failed > 0 || status.success() => Ok(c),
        Some(c) => Ok(Count {
            failed: c.failed.max(1),
            ..c
        }),
        None if status.success() => bail!("nextest ran no test (cargo {})", args.join(" ")),
        None => Ok(Count::one(false)),
    }
}

/// nextest's closing line, `Summary [  1.234s] 12 tests run: 10 passed, 1 failed, 1 timed
/// out, 3 skipped` → passed 10, failed 2 (a timeout is a failure).
pub fn parse_summary(line: &str) -> Option<Count> {
    let line = line.trim_start();
    let rest = line.strip_prefix("Summary")?;
    let (_, results) = rest.split_once("run: ")?;
    let mut count = Count::default();
    let mut seen = false;
    for part in results.split(',') {
        let mut words = part.split_whitespace();
        let Some(n) = words.next().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        match words.next() {
            Some("passed") => {
                count.passed += n;
                seen = true;
            }
            Some("failed" | "timed") => {
                count.failed += n;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nextest_summaries() {
        assert_eq!(
            parse_summary("     Summary [  12.345s] 120 tests run: 120 passed, 2 skipped"),
            Some(Count {
                passed: 120,
                failed: 0
            })
        );
        assert_eq!(
            parse_summary(
                "     Summary [  1.000s] 12 tests run: 9 passed (1 slow), 2 failed, 1 timed out, 3 skipped"
            ),
            Some(Count {
                passed: 9,
                failed: 3
            })
        );
        assert_eq!(
            parse_summary("        PASS [   0.004s] tracer tests::x"),
            None
        );
        assert_eq!(parse_summary("Summary of nothing"), None);
    }

    #[test]
    fn a_plain_word_selects_binaries_and_tests() {
        assert_eq!(
            kernel_filter(&["connect_call".into()]),
            ["-E", "binary(~connect_call) | test(~connect_call)"]
        );
        assert_eq!(
            kernel_filter(&["-E".into(), "test(=x)".into()]),
            ["-E", "test(=x)"]
        );
        assert!(kernel_filter(&[]).is_empty());
    }
}
