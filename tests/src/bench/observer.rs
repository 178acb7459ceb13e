//! What watches the benchmark's connections: nothing, `tracer`, the bpftrace peer script, or
//! a floor: near-empty programs on the same hooks, the socket and skb tracepoints attached as
//! classic tracepoints (bpftrace) or as raw tracepoints (the harness, `floor_progs`), and an
//! empty cgroup_skb ingress program on the cgroup v2 root (the harness) in both.
//! Each writes its output to a file (as a log shipper would read it), never to a pipe this
//! process parses while the load runs.
use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::{
    Netns,
    bench::{
        floor_progs::{FloorRaw, FloorSkb},
        load,
    },
    tracer_bin,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observer {
    None,
    Tracer,
    /// The bpftrace peer script: what a user would write instead.
    Bpftrace,
    /// Near-empty bpftrace programs on the same tracepoints, plus an empty cgroup_skb ingress
    /// program on the cgroup v2 root (where the tracer's `dns_ingress` runs), attached by this
    /// harness: the cost of attaching at all.
    Floor,
    /// The floor with the socket and skb tracepoints attached as raw tracepoints (empty
    /// programs loaded by this harness) instead of classic ones.
    FloorRaw,
}

impl Observer {
    pub const ALL: [Observer; 5] = [
        Observer::None,
        Observer::Tracer,
        Observer::Bpftrace,
        Observer::Floor,
        Observer::FloorRaw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Observer::None => "no tracer",
            Observer::Tracer => "tracer",
            Observer::Bpftrace => "bpftrace",
            Observer::Floor => "empty programs",
            Observer::FloorRaw => "empty programs (raw tracepoints)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Observer::None => "none",
            Observer::Tracer => "tracer",
            Observer::Bpftrace => "bpftrace",
            Observer::Floor => "floor",
            Observer::FloorRaw => "floor_raw",
        }
    }
}

/// The bpftrace peer script, kept in the repository.
pub fn peer_script() -> PathBuf {
    bench_dir().join("peer.bt")
}

/// The near-empty tracepoint programs of the floor measurement (its cgroup_skb program is
/// `FloorSkb`'s).
pub fn floor_script() -> PathBuf {
    bench_dir().join("floor.bt")
}

/// The raw floor's classic part: the connect() syscall tracepoints (its raw tracepoint and
/// cgroup_skb programs are `FloorRaw`'s and `FloorSkb`'s).
pub fn floor_raw_script() -> PathBuf {
    bench_dir().join("floor_raw.bt")
}

/// The benchmark's own folder: the harness and the scripts it compares against.
fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/bench")
}

/// A running observer process; ended (SIGINT, then SIGKILL) when dropped.
pub struct Running {
    kind: Observer,
    child: Option<Child>,
    /// The floors' empty cgroup_skb program: attached for as long as this lives.
    floor_skb: Option<FloorSkb>,
    /// The raw floor's empty raw tracepoint programs: attached for as long as this lives.
    floor_raw: Option<FloorRaw>,
    out: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// Starts `kind` writing to `out`, and waits until it observes connections in `ns`.
pub fn start(kind: Observer, ns: &Netns, out: &Path, tracer_args: &[&str]) -> Result<Running> {
    let mut cmd = match kind {
        Observer::None => {
            return Ok(Running {
                kind,
                child: None,
                floor_skb: None,
                floor_raw: None,
                out: out.to_path_buf(),
                stderr: Default::default(),
            });
        }
        Observer::Tracer => {
            let mut c = Command::new(tracer_bin().map_err(anyhow::Error::msg)?);
            c.arg("run").args(tracer_args);
            c
        }
        Observer::Bpftrace | Observer::Floor | Observer::FloorRaw => {
            let mut c = Command::new("bpftrace");
            c.arg(match kind {
                Observer::Floor => floor_script(),
                Observer::FloorRaw => floor_raw_script(),
                _ => peer_script(),
            });
            c
        }
    };
    let floor_skb = match kind {
        Observer::Floor | Observer::FloorRaw => Some(FloorSkb::attach()?),
        _ => None,
    };
    // Attached before bpftrace starts: its ready line (BEGIN) then means every program is.
    let floor_raw = match kind {
        Observer::FloorRaw => Some(FloorRaw::attach()?),
        _ => None,
    };
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut child = cmd
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", kind.name()))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let err = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut running = Running {
        kind,
        child: Some(child),
        floor_skb,
        floor_raw,
        out: out.to_path_buf(),
        stderr,
    };
    running.wait_ready(ns)?;
    Ok(running)
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kind(&self) -> Observer {
        self.kind
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Ready when a refused connect to port 9 in `ns` shows up in the output (bpftrace says
    /// "Attaching" before it has attached; the raw floor's script prints the same line from
    /// BEGIN, which bpftrace runs once its probes are attached) or, for tracer, when its first
    /// `stats` record is written.
    fn wait_ready(&mut self, ns: &Netns) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.kind.name(),
                    self.stderr()
                );
            }
            let ready = match self.kind {
                Observer::None => true,
                // Its first `stats` record says every program is attached.
                Observer::Tracer => {
                    let mut s = String::new();
                    File::open(&self.out)?.read_to_string(&mut s)?;
                    s.contains(r#""type":"stats""#)
                }
                Observer::Bpftrace | Observer::Floor | Observer::FloorRaw => {
                    let marker = ["--addr", "127.0.0.1:9", "--count", "1"].map(String::from);
                    load::run(ns, &marker)?;
                    let mut s = String::new();
                    File::open(&self.out)?.read_to_string(&mut s)?;
                    s.contains("> 127.0.0.1:9 ")
                }
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after 60 s:\n{}",
                    self.kind.name(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP and wait until stopped: nothing reads the ring buffer meanwhile.
    pub fn pause(&self) -> Result<()> {
        let pid = self.pid().context("nothing to pause")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            if stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the tracer did not stop");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn resume(&self) -> Result<()> {
        let pid = self.pid().context("nothing to resume")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGCONT)?;
        Ok(())
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pid().map_or(0, |pid| status_kib(pid, "VmRSS:"))
    }

    /// Anonymous resident memory (the heap; not the ring buffer's mapping), in KiB.
    pub fn anon_rss_kib(&self) -> u64 {
        self.pid().map_or(0, |pid| status_kib(pid, "RssAnon:"))
    }

    /// Peak resident memory, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.pid().map_or(0, |pid| status_kib(pid, "VmHWM:"))
    }

    /// Waits until the process has used no CPU for 300 ms (it has caught up), at most `timeout`.
    pub fn wait_idle(&self, timeout: Duration) {
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + timeout;
        let mut last = cpu_ticks(pid);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            let now = cpu_ticks(pid);
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// SIGINT, waits for the exit, and returns what it wrote. tracer must exit within 10 s;
    /// bpftrace, which may still be printing a backlog, gets 30 s and is then killed (its
    /// output so far is what it delivered).
    pub fn stop(mut self) -> Result<Output> {
        if let Some(mut child) = self.child.take() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
            let patience = match self.kind {
                Observer::Bpftrace | Observer::Floor | Observer::FloorRaw => 30,
                _ => 10,
            };
            let deadline = Instant::now() + Duration::from_secs(patience);
            loop {
                if let Some(status) = child.try_wait()? {
                    if self.kind == Observer::Tracer && !status.success() {
                        bail!("tracer exited with {status}:\n{}", self.stderr());
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    if self.kind == Observer::Tracer {
                        bail!("tracer did not exit within {patience} s of SIGINT");
                    }
                    eprintln!(
                        "bench: {} still busy {patience} s after SIGINT: killed",
                        self.kind.name()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The floor's cgroup_skb program goes with its bpftrace programs (closing the link
        // detaches it).
        drop(self.floor_skb.take());
        drop(self.floor_raw.take());
        Ok(Output {
            path: self.out.clone(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields after the name start at 3 (state); utime and stime are fields 14 and 15.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// What an observer wrote.
pub struct Output {
    path: PathBuf,
}

/// From tracer's output: the final stats and the failure records in one namespace.
#[derive(Debug, Default)]
pub struct TracerCounts {
    pub stats: Value,
    /// Failure records with this netns, by destination port.
    pub failures_by_port: std::collections::BTreeMap<u64, u64>,
}

impl TracerCounts {
    /// Failure records delivered for destination port `port`.
    pub fn delivered(&self, port: u16) -> u64 {
        self.failures_by_port
            .get(&u64::from(port))
            .copied()
            .unwrap_or(0)
    }

    /// DNS responses the tracer captured (`stats.dns_responses`).
    pub fn dns_responses(&self) -> u64 {
        self.stats["dns_responses"].as_u64().unwrap_or(0)
    }

    /// Connections whose outcome the kernel could not hand over (`stats.lost_connections`).
    pub fn lost_connections(&self) -> u64 {
        self.stats["lost_connections"].as_u64().unwrap_or(0)
    }
}

impl Output {
    /// Lines written.
    pub fn lines(&self) -> Result<u64> {
        let f = File::open(&self.path)?;
        Ok(BufReader::new(f).lines().count() as u64)
    }

    /// Parses tracer's NDJSON output.
    pub fn tracer_counts(&self, netns: u32) -> Result<TracerCounts> {
        let f = File::open(&self.path)?;
        let mut counts = TracerCounts::default();
        for line in BufReader::new(f).lines() {
            let line = line?;
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("tracer printed a line that is not JSON: {line:?}"))?;
            match v["type"].as_str() {
                Some("failure") if v["netns"].as_u64() == Some(netns.into()) => {
                    let port = v["dst"]["port"].as_u64().unwrap_or(0);
                    *counts.failures_by_port.entry(port).or_default() += 1;
                }
                Some("stats") => counts.stats = v,
                _ => {}
            }
        }
        if counts.stats.is_null() {
            bail!(
                "tracer wrote no final stats record to {}",
                self.path.display()
            );
        }
        Ok(counts)
    }
}
