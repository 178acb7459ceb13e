//! Harness for real-kernel scenario tests: network namespaces with nftables faults, the test
//! client, and a running tracer whose JSON records the tests assert on.
//!
//! Everything a test creates is removed by a `Drop` guard, also when the test fails: the
//! namespace (and with it its nftables rules and sysctls), and every process it started (by pid).
//! Traffic stays on loopback inside the test's own namespace.
pub mod bench;
pub mod cgroup;
pub mod deploy;
pub mod kube;
pub mod kubelet;
pub mod netns;
pub mod otlp;
pub mod podman;
pub mod process;
pub mod scenario;
pub mod schema;
pub mod tracer;

pub use netns::Netns;
pub use process::Proc;
pub use tracer::Tracer;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// Fails the test (never skips it) unless it can run against the real kernel: root, BTF,
/// tracefs, and the tracer binary built.
pub fn require_kernel() {
    let mut why = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        why.push("not root: real-kernel tests load eBPF programs and create network namespaces (run `sudo cargo xtask test`)".to_string());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        why.push(
            "no BTF at /sys/kernel/btf/vmlinux: the kernel needs CONFIG_DEBUG_INFO_BTF".into(),
        );
    }
    if !std::path::Path::new("/sys/kernel/tracing/events").is_dir()
        && !std::path::Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        why.push("tracefs not mounted: `mount -t tracefs nodev /sys/kernel/tracing` (cargo xtask setup does it)".into());
    }
    if let Err(e) = tracer_bin() {
        why.push(e);
    }
    assert!(
        why.is_empty(),
        "cannot run real-kernel test: {}",
        why.join("; ")
    );
}

/// The release tracer binary: `$TRACER_BIN` (set by `cargo xtask test`), else target/release.
pub fn tracer_bin() -> Result<PathBuf, String> {
    let path = std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer")
        });
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "tracer binary not found at {}: run the tests with `cargo xtask test`",
            path.display()
        ))
    }
}

/// The test client binary: beside this executable (a bin such as tt-soak) or beside the
/// `deps/` folder a test executable runs from.
pub fn client_bin() -> PathBuf {
    sibling_bin("tt-client")
}

/// The load generator (`tt-load`), found like `client_bin`.
pub fn load_bin() -> PathBuf {
    sibling_bin("tt-load")
}

/// The sandbox runner (`tt-sandbox`), found like `client_bin`.
pub fn sandbox_bin() -> PathBuf {
    sibling_bin("tt-sandbox")
}

fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let here = exe.parent().expect("an executable's folder");
    [here.join(name), here.parent().unwrap_or(here).join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("test program {name} not built next to {}", exe.display()))
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
