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

/// Idle connections held open by `tt-load --hold` inside a namespace, for as long as this
/// lives: a populated socket map under the benchmark's load. Two processes of half each (a
/// process's descriptor limit may be 20,000); the first also parks the listener they connect to
/// (never accepted: no descriptor on that side).
pub struct Held {
    children: Vec<std::process::Child>,
    pub count: u64,
}

impl Held {
    /// `count` connections to `addr` (a port nobody else uses), from `cpu` if given.
    pub fn open(ns: &Netns, addr: &str, count: u64, cpu: Option<usize>) -> Result<Held> {
        use std::io::{BufRead, BufReader};
        // The accept queue holds them all.
        ns.sysctl("net.core.somaxconn", "65535");
        let mut held = Held {
            children: Vec::new(),
            count: 0,
        };
        let half = count / 2;
        for (i, n) in [half, count - half].into_iter().enumerate() {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.name]).arg(load_bin()).args([
                "--addr",
                addr,
                "--hold",
                &n.to_string(),
            ]);
            if i == 0 {
                cmd.arg("--park");
            }
            if let Some(cpu) = cpu {
                cmd.args(["--cpu", &cpu.to_string()]);
            }
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("cannot run tt-load --hold")?;
            let mut line = String::new();
            let out = child.stdout.take().context("piped")?;
            held.children.push(child);
            BufReader::new(out).read_line(&mut line)?;
            let v: Value = serde_json::from_str(line.trim())
                .with_context(|| format!("tt-load --hold printed {line:?}"))?;
            held.count += v["held"].as_u64().unwrap_or(0);
        }
        if held.count != count {
            bail!("held {} of {count} connections", held.count);
        }
        Ok(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The listener's holder last: closing stdin ends each one.
        for mut c in self.children.drain(..).rev() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}
