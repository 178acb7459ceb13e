//! A memory limit for the tracer under test, as the DaemonSet gives it (256 MiB): a memory
//! cgroup — v2 where the memory controller is there, else the v1 `memory` hierarchy (hybrid
//! hosts) — that a command joins before it execs. Removed on drop (its processes must be gone).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// A memory cgroup `tt-<pid>-<tag>` with `bytes` as its hard limit.
pub struct MemoryLimit {
    path: PathBuf,
}

impl MemoryLimit {
    pub fn new(tag: &str, bytes: u64) -> Self {
        let v2 = crate::cgroup::find_cgroup2_mount().filter(|m| {
            std::fs::read_to_string(m.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        });
        let (parent, limit_file) = match v2 {
            Some(m) => (m, "memory.max"),
            None => (v1_memory_mount(), "memory.limit_in_bytes"),
        };
        let path = parent.join(format!("tt-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let limit = MemoryLimit { path };
        std::fs::write(limit.path.join(limit_file), bytes.to_string())
            .unwrap_or_else(|e| panic!("cannot set {limit_file}: {e}"));
        // No swap to hide in (v1: the memsw limit, where the kernel accounts it).
        let _ = std::fs::write(limit.path.join("memory.swap.max"), "0");
        limit
    }

    /// `cmd` (a program and its arguments) wrapped so that it joins this cgroup, then execs.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.path.join("cgroup.procs"))
            .arg(program)
            .args(args);
        cmd
    }

    /// Times the kernel's OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let events = std::fs::read_to_string(self.path.join("memory.events"))
            .or_else(|_| std::fs::read_to_string(self.path.join("memory.oom_control")))
            .unwrap_or_default();
        events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn v1_memory_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
                .then(|| PathBuf::from(f[1]))
        })
        .expect("no memory cgroup (v2 controller or v1 hierarchy): the test needs one")
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        // The processes in it were the test's and have exited; their memory may be accounted
        // for a moment longer.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The resident set of process `pid`, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
