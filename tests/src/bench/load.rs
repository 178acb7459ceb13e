//! Runs the load generator (`tt-load`) inside the benchmark's namespace.
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Netns, load_bin};

/// What `tt-load` reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadResult {
    pub attempts: u64,
    pub connected: u64,
    pub refused: u64,
    pub other: u64,
    pub seconds: f64,
    pub per_second: f64,
}

/// Runs `tt-load` in `ns` with `args` and parses its summary.
pub fn run(ns: &Netns, args: &[String]) -> Result<LoadResult> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(load_bin())
        .args(args)
        .output()
        .context("cannot run tt-load")?;
    if !out.status.success() {
        bail!("tt-load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("tt-load printed no JSON")?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(LoadResult {
        attempts: n("attempts"),
        connected: n("connected"),
        refused: n("refused"),
        other: n("other"),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        per_second: v["per_second"].as_f64().unwrap_or(0.0),
    })
}

/// What each attempt of `tt-load` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A connect nobody listens for: refused.
    Refused,
    /// A connect to a listener of `tt-load`'s own (`--serve`), then a close.
    Serve,
    /// A DNS query over UDP, answered by a responder of `tt-load`'s own (`--dns`).
    Dns,
}

/// `tt-load` arguments: `mode` attempts to `addr` for `seconds` with `threads` threads,
/// optionally pinned to `cpu`.
pub fn args(
    addr: &str,
    seconds: f64,
    threads: usize,
    mode: Mode,
    cpu: Option<usize>,
) -> Vec<String> {
    let mut a = vec![
        "--addr".to_string(),
        addr.to_string(),
        "--seconds".into(),
        seconds.to_string(),
        "--threads".into(),
        threads.to_string(),
    ];
    match mode {
        Mode::Refused => {}
        Mode::Serve => a.push("--serve".into()),
        Mode::Dns => a.push("--dns".into()),
    }
    if let Some(cpu) = cpu {
        a.push("--cpu".into());
        a.push(cpu.to_string());
    }
    a
}
