//! `cargo xtask setup`: every prerequisite, installed only if missing, each step printed.
use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Debian packages: LLVM 22 for bpf-linker (matching the nightly's LLVM), and the tools the
/// real-kernel tests drive (nftables, iptables for kube-proxy's iptables-nft rules, iproute2 for
/// namespaces, util-linux for setpriv, a
/// Prometheus server that scrapes the metrics endpoint, tmux to drive `tracer top`, bpftool to
/// check that nothing stays attached, python3 for a non-blocking client the tests run, podman
/// with buildah and runc to build the image and run containers, python3-venv for the venv of
/// kubernetes-validate, systemd for `systemd-analyze verify` of the unit, logrotate to check its
/// rotation config).
const PACKAGES: [&str; 16] = [
    "llvm-22-dev",
    "nftables",
    "iptables",
    "iproute2",
    "util-linux",
    "prometheus",
    "tmux",
    "bpftool",
    "bpftrace",
    "python3",
    "podman",
    "buildah",
    "runc",
    "python3-venv",
    "systemd",
    "logrotate",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const TRACEFS: &str = "/sys/kernel/tracing";
/// kubernetes-validate (PyPI), pinned: its newest schemas are for this Kubernetes version, which
/// the manifest tests pass as `-k` (`tests/tests/deploy.rs`).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// The Python venv that holds kubernetes-validate: `tools/venv` in the target directory.
fn tools_venv() -> PathBuf {
    crate::target_dir().join("tools/venv")
}

/// The kubernetes-validate executable that `setup` installs (in [`tools_venv`]).
pub fn kubernetes_validate() -> PathBuf {
    tools_venv().join("bin/kubernetes-validate")
}

fn say(msg: &str) {
    eprintln!("setup: {msg}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// PATH with `~/.cargo/bin` in front, where `cargo install` puts bpf-linker.
pub fn path_with_cargo_bin() -> String {
    let path = env::var("PATH").unwrap_or_default();
    match cargo_bin() {
        Some(bin) if !path.split(':').any(|p| Path::new(p) == bin) => {
            format!("{}:{path}", bin.display())
        }
        _ => path,
    }
}

fn cargo_bin() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"))
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    say(&format!("{what}: running {cmd:?}"));
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{what}: {cmd:?} failed ({status})");
    }
    Ok(())
}

/// `cargo xtask setup`: installs what is missing, step by step; fails listing what it could not
/// install (not root, not Debian).
pub fn run() -> Result<()> {
    let root = is_root();
    let mut missing: Vec<String> = Vec::new();

    // 1. The nightly toolchain with rust-src (the eBPF crate is built with -Z build-std=core).
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup not found: install Rust with rustup (https://rustup.rs)")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run_step(
            "nightly toolchain",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        say("ok: rust-src for the nightly toolchain");
    } else {
        run_step(
            "rust-src",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }

    // 2. Debian packages.
    let has_apt =
        Path::new("/usr/bin/apt-get").exists() && Path::new("/usr/bin/dpkg-query").exists();
    let absent: Vec<&str> = PACKAGES.into_iter().filter(|p| !deb_installed(p)).collect();
    if absent.is_empty() {
        say(&format!("ok: Debian packages {}", PACKAGES.join(", ")));
    } else if !has_apt {
        missing.push(format!(
            "packages {} (this is not Debian: install LLVM 22 development files, nftables, iproute2 \
             and util-linux with your package manager)",
            absent.join(", ")
        ));
    } else if !root {
        missing.push(format!(
            "Debian packages {}: run `sudo apt-get install -y {}` or re-run as root",
            absent.join(", "),
            absent.join(" ")
        ));
    } else {
        run_step("apt index", Command::new("apt-get").args(["update", "-q"]))?;
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&absent);
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        run_step("Debian packages", &mut cmd)?;
    }

    // 3. bpf-linker, built against Debian's LLVM 22.
    let linker = cargo_bin().map(|b| b.join("bpf-linker"));
    let linker_ok = linker.as_ref().is_some_and(|l| {
        output(Command::new(l).arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    });
    if linker_ok {
        say(&format!("ok: bpf-linker {BPF_LINKER_VERSION}"));
    } else if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        missing.push(format!(
            "bpf-linker {BPF_LINKER_VERSION} (needs LLVM 22 at {LLVM_PREFIX} first)"
        ));
    } else {
        run_step(
            "bpf-linker",
            Command::new(env!("CARGO"))
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }

    // 4. cargo-fuzz, for the fuzz targets.
    let fuzz_ok = cargo_bin().is_some_and(|b| b.join("cargo-fuzz").exists());
    if fuzz_ok {
        say("ok: cargo-fuzz");
    } else {
        run_step(
            "cargo-fuzz",
            Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }

    // 4b. cargo-nextest, the test runner (`cargo xtask test`); machines of this kind ship it.
    if output(Command::new(env!("CARGO")).args(["nextest", "--version"])).is_some() {
        say("ok: cargo-nextest");
    } else {
        run_step(
            "cargo-nextest",
            Command::new(env!("CARGO")).args(["install", "cargo-nextest", "--locked"]),
        )?;
    }

    // 5. tracefs, where the tracepoints are.
    if Path::new(TRACEFS).join("events").is_dir() {
        say(&format!("ok: tracefs at {TRACEFS}"));
    } else if root {
        run_step(
            "tracefs",
            Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]),
        )?;
    } else {
        missing.push(format!(
            "tracefs at {TRACEFS}: run `sudo mount -t tracefs nodev {TRACEFS}`"
        ));
    }

    // 6. kubernetes-validate in a venv of its own (no system Python packages touched), for the
    //    Kubernetes manifest tests.
    let validator = kubernetes_validate();
    let installed = output(Command::new(&validator).arg("--version"))
        .is_some_and(|v| v.trim() == KUBERNETES_VALIDATE_VERSION);
    if installed {
        say(&format!(
            "ok: kubernetes-validate {KUBERNETES_VALIDATE_VERSION} in {}",
            tools_venv().display()
        ));
    } else if let Err(e) = install_kubernetes_validate() {
        missing.push(format!(
            "kubernetes-validate {KUBERNETES_VALIDATE_VERSION} ({e:#}); needs python3 with venv \
             and pip (Debian: python3-venv) and access to PyPI"
        ));
    }

    if !missing.is_empty() {
        for m in &missing {
            eprintln!("setup: missing: {m}");
        }
        bail!(
            "{} prerequisite(s) missing and not installable here{}",
            missing.len(),
            if root { "" } else { " (not root)" }
        );
    }
    say("all prerequisites present");
    Ok(())
}

/// Creates [`tools_venv`] if needed and installs the pinned kubernetes-validate into it.
fn install_kubernetes_validate() -> Result<()> {
    let venv = tools_venv();
    let pip = venv.join("bin/pip");
    if !pip.exists() {
        run_step(
            "Python venv for kubernetes-validate",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
    }
    run_step(
        "kubernetes-validate",
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
}

/// Whether the Debian package `pkg` is installed (util-linux: whether setpriv runs).
fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
        || (pkg == "util-linux" && succeeds(Command::new("setpriv").arg("--version")))
}
