//! The test tiers of `cargo xtask test`, run with cargo-nextest (`.config/nextest.toml`), or
//! with `cargo test` where `cargo nextest` is missing (said on stderr):
//! - the unit tier: the library and binary unit tests of `tracer`, `tracer-common`, `xtask` and
//!   `tracer-tests` (its library's own); no privilege, no image, no system change;
//! - the kernel tier: the real-kernel tests of `tests/tests/*.rs` (root), against the release
//!   tracer and its image;
//! - the eBPF crate's clippy, for its own target.
use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, IsTerminal},
    process::{Command, Stdio},
    sync::OnceLock,
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

/// One tier run alone (`--unit`, `--kernel`): its closing line also when it could not run
/// (a build failure: one failure).
pub fn alone(tier: &str, result: Result<Count>) -> Result<()> {
    let count = result.unwrap_or_else(|e| {
        eprintln!("xtask: the {tier} tier: {e:#}");
        Count::one(false)
    });
    check(count)
}

/// How a tier runs its tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    /// `cargo nextest run`: a process per test, `.config/nextest.toml`'s groups and timeouts.
    Nextest,
    /// `cargo test`, where cargo-nextest is missing.
    CargoTest,
}

/// cargo-nextest if `cargo nextest --version` works, else `cargo test` (said once, on stderr).
pub fn runner() -> Runner {
    static RUNNER: OnceLock<Runner> = OnceLock::new();
    *RUNNER.get_or_init(|| {
        let works = Command::new(env!("CARGO"))
            .args(["nextest", "--version"])
            .env("PATH", setup::path_with_cargo_bin())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            Runner::Nextest
        } else {
            eprintln!(
                "xtask: `cargo nextest --version` failed: cargo-nextest is missing (`cargo xtask \
                 setup` installs it); falling back to `cargo test` (no process per test, none of \
                 .config/nextest.toml's test groups and timeouts)"
            );
            Runner::CargoTest
        }
    })
}

impl Runner {
    /// `nextest run` or `test`, before the tier's own arguments. `filtered`: a filter that
    /// matches nothing here is not a failure (nextest's default is to fail).
    fn command(self, filtered: bool) -> Vec<String> {
        match self {
            Runner::Nextest => {
                let mut cmd = vec!["nextest".to_string(), "run".to_string()];
                if filtered {
                    cmd.push("--no-tests=warn".into());
                }
                // nextest's output goes through a pipe here: keep its colors for a terminal.
                if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                    cmd.push("--color=always".into());
                }
                cmd
            }
            Runner::CargoTest => vec!["test".to_string()],
        }
    }
}

/// The unit tier: `release` builds with the release profile (shared with the kernel tier's
/// build); `filtered` (the full run with a name filter) lets the filter match no unit test.
pub fn unit(args: &[String], release: bool, filtered: bool) -> Result<Count> {
    let runner = runner();
    let mut cmd = runner.command(filtered);
    if release {
        cmd.push("--release".into());
    }
    for package in ["tracer", "tracer-common", "xtask", "tracer-tests"] {
        cmd.extend(["--package".into(), package.into()]);
    }
    cmd.extend(["--lib".into(), "--bins".into()]);
    cmd.extend(args.iter().cloned());
    run_counted(runner, &cmd, &[]).context(
        "the unit tier (the eBPF object is built too: `cargo xtask setup` installs its toolchain)",
    )
}

/// The kernel tier: the release tracer and its image built, then `tests/tests/*.rs`. A first
/// argument that is a plain word selects the test binaries and tests whose name contains it
/// (under `cargo test`: the tests whose name contains it). `filtered` as for [`unit`].
pub fn kernel(args: &[String], filtered: bool) -> Result<Count> {
    let bin = crate::build_release()?;
    // The deployment tests run this image (tests/tests/deploy.rs): built once, here.
    let image = image::build()?;
    let runner = runner();
    let mut cmd = runner.command(filtered);
    cmd.extend(
        ["--release", "--package", "tracer-tests", "--tests"]
            .iter()
            .map(|a| a.to_string()),
    );
    match runner {
        Runner::Nextest => cmd.extend(kernel_filter(args, &kernel_binaries())),
        Runner::CargoTest => cmd.extend(args.iter().cloned()),
    }
    let validate = setup::kubernetes_validate();
    let env = [
        ("TRACER_BIN", bin.as_os_str()),
        ("TRACER_IMAGE", image.id.as_ref()),
        ("KUBERNETES_VALIDATE", validate.as_os_str()),
    ];
    run_counted(runner, &cmd, &env)
}

/// `connect_call` → `-E 'binary(~connect_call) | test(~connect_call)'`; anything else as given.
fn kernel_filter(args: &[String], binaries: &[String]) -> Vec<String> {
    match args.split_first() {
        Some((word, rest))
            if !word.starts_with('-')
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') =>
        {
            // nextest refuses a `binary()` that names no test binary: only when one matches.
            let expr = if binaries.iter().any(|b| b.contains(word.as_str())) {
                format!("binary(~{word}) | test(~{word})")
            } else {
                format!("test(~{word})")
            };
            let mut out = vec!["-E".to_string(), expr];
            out.extend(rest.iter().cloned());
            out
        }
        _ => args.to_vec(),
    }
}

/// The kernel tier's test binaries: the files of `tests/tests`.
fn kernel_binaries() -> Vec<String> {
    std::fs::read_dir(workspace_root().join("tests/tests"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".rs").map(String::from)
                })
                .collect()
        })
        .unwrap_or_default()
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

/// Runs `cargo ARGS` (a nextest run or a cargo test run) with `env`, passing its output
/// through, and counts the tests: from nextest's summary line (on stderr) or from cargo test's
/// `test result:` lines (on stdout). A run that fails with no failure counted (a build failure,
/// nextest's "no tests to run") counts as one failure.
fn run_counted(runner: Runner, args: &[String], env: &[(&str, &OsStr)]) -> Result<Count> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin());
    match runner {
        Runner::Nextest => cmd.stderr(Stdio::piped()),
        Runner::CargoTest => cmd.stdout(Stdio::piped()),
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    let mut count = None::<Count>;
    match runner {
        // nextest writes its progress and summary on stderr: pass it through, keep the summary.
        Runner::Nextest => {
            for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
                let line = line.context("reading nextest's output")?;
                eprintln!("{line}");
                if let Some(c) = parse_summary(&line) {
                    count = Some(c);
                }
            }
        }
        // cargo test prints one `test result:` line per test binary on stdout: add them up.
        Runner::CargoTest => {
            for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
                let line = line.context("reading cargo test's output")?;
                println!("{line}");
                if let Some(c) = parse_result(&line) {
                    count.get_or_insert_default().add(c);
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    match count {
        Some(c) if c.failed > 0 || status.success() => Ok(c),
        Some(c) => Ok(Count {
            failed: c.failed.max(1),
            ..c
        }),
        None if status.success() => bail!("no test ran (cargo {})", args.join(" ")),
        None => Ok(Count::one(false)),
    }
}

/// `line` without its terminal color sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// nextest's closing line, `Summary [  1.234s] 12 tests run: 10 passed, 1 failed, 1 timed
/// out, 3 skipped` → passed 10, failed 2 (a timeout is a failure, and so is a test binary that
/// could not be run: `1 exec failed`), with or without colors.
pub fn parse_summary(line: &str) -> Option<Count> {
    let line = strip_ansi(line);
    let rest = line.trim_start().strip_prefix("Summary")?;
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
            Some("failed" | "timed" | "exec") => {
                count.failed += n;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(count)
}

/// cargo test's `test result: ok. 11 passed; 0 failed; …` → passed 11, failed 0.
pub fn parse_result(line: &str) -> Option<Count> {
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
    Some(Count {
        passed: count(" passed")?,
        failed: count(" failed")?,
    })
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
        assert_eq!(
            parse_summary("     Summary [   0.000s] 0 tests run: 0 passed, 6 skipped"),
            Some(Count::default())
        );
        assert_eq!(
            parse_summary("     Summary [   0.007s] 1 test run: 1 passed, 5 skipped"),
            Some(Count::one(true))
        );
        assert_eq!(
            parse_summary(
                "     Summary [   2.500s] 4/9 tests run: 2 passed, 1 failed, 1 exec failed, 5 skipped"
            ),
            Some(Count {
                passed: 2,
                failed: 2
            })
        );
    }

    #[test]
    fn parses_a_colored_nextest_summary() {
        let line = "\u{1b}[31;1m     Summary\u{1b}[0m [   0.157s] \u{1b}[1m2\u{1b}[0m tests run: \
                    \u{1b}[1m1\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m1\u{1b}[0m \
                    \u{1b}[31;1mfailed\u{1b}[0m, \u{1b}[1m4\u{1b}[0m \u{1b}[33;1mskipped\u{1b}[0m";
        assert_eq!(
            parse_summary(line),
            Some(Count {
                passed: 1,
                failed: 1
            })
        );
    }

    #[test]
    fn parses_cargo_test_result_lines() {
        let line = "test result: ok. 11 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; \
                    finished in 17.09s";
        assert_eq!(
            parse_result(line),
            Some(Count {
                passed: 11,
                failed: 2
            })
        );
        assert_eq!(parse_result("running 3 tests"), None);
    }

    #[test]
    fn a_plain_word_selects_binaries_and_tests() {
        let bins = ["connect_call".to_string(), "kernel".to_string()];
        assert_eq!(
            kernel_filter(&["connect_call".into()], &bins),
            ["-E", "binary(~connect_call) | test(~connect_call)"]
        );
        assert_eq!(
            kernel_filter(&["unreachable_when".into()], &bins),
            ["-E", "test(~unreachable_when)"],
            "a word no binary has selects tests only (nextest refuses an empty binary())"
        );
        assert_eq!(
            kernel_filter(&["-E".into(), "test(=x)".into()], &bins),
            ["-E", "test(=x)"]
        );
        assert!(kernel_filter(&[], &bins).is_empty());
    }
}
