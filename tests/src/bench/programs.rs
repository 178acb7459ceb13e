//! Per-program kernel statistics (run count, run time, skipped runs) of the BPF programs a
//! process owns, from `bpftool prog show --json` (its `pids` field names the owners).
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

impl ProgramCost {
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.run_time_ns as f64 / self.runs as f64
        }
    }
}

/// The programs owned by `pid`.
pub fn owned_by(pid: u32) -> Result<Vec<ProgramCost>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("cannot run bpftool (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(all
        .iter()
        .filter(|p| {
            p["pids"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["pid"].as_u64() == Some(pid.into())))
        })
        .map(|p| ProgramCost {
            name: p["name"].as_str().unwrap_or("?").to_string(),
            runs: p["run_cnt"].as_u64().unwrap_or(0),
            run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
            recursion_misses: p["recursion_misses"].as_u64().unwrap_or(0),
        })
        .collect())
}

/// Total run time over total runs: the mean cost of one program run.
pub fn mean_ns(programs: &[ProgramCost]) -> f64 {
    let runs: u64 = programs.iter().map(|p| p.runs).sum();
    let time: u64 = programs.iter().map(|p| p.run_time_ns).sum();
    if runs == 0 {
        0.0
    } else {
        time as f64 / runs as f64
    }
}

pub fn json(programs: &[ProgramCost]) -> Value {
    json!({
        "mean_ns_per_run": mean_ns(programs),
        "programs": programs.iter().map(|p| json!({
            "name": p.name, "runs": p.runs, "run_time_ns": p.run_time_ns,
            "ns_per_run": p.ns_per_run(), "recursion_misses": p.recursion_misses,
        })).collect::<Vec<_>>(),
    })
}

/// Sets `kernel.bpf_stats_enabled` to 1 and back to what it was when dropped.
pub struct StatsEnabled {
    before: String,
}

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl StatsEnabled {
    pub fn new() -> Result<Self> {
        let before = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("cannot read {STATS_SYSCTL}"))?;
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write {STATS_SYSCTL}"))?;
        Ok(Self { before })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, self.before.trim());
    }
}
