//! Per-program kernel statistics (run count, run time, skipped runs) of the BPF programs a
//! process loaded, from `bpftool prog show --json`.
use std::{collections::BTreeSet, process::Command};

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

fn bpftool_programs() -> Result<Vec<Value>> {
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
    serde_json::from_slice(&out.stdout).context("bpftool's JSON")
}

/// The program types an observer loads (bpftool's names): the tracepoint programs, the raw
/// floor's raw tracepoint programs (`floor_raw`), and the cgroup_skb ingress programs of the
/// tracer (`dns_ingress`) and the floors (`floor_skb`).
const TYPES: [&str; 3] = ["tracepoint", "raw_tracepoint", "cgroup_skb"];

fn counted(p: &Value) -> bool {
    TYPES.iter().any(|t| p["type"] == *t)
}

/// Ids of the programs of `TYPES` loaded now.
pub fn loaded_ids() -> Result<BTreeSet<u64>> {
    Ok(bpftool_programs()?
        .iter()
        .filter(|p| counted(p))
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// The programs of `TYPES` loaded since `before` was taken: those of the one
/// observer started in between (bpftool here cannot name a program's owner process).
pub fn loaded_since(before: &BTreeSet<u64>) -> Result<Vec<ProgramCost>> {
    Ok(bpftool_programs()?
        .iter()
        .filter(|p| counted(p))
        .filter(|p| p["id"].as_u64().is_some_and(|id| !before.contains(&id)))
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
