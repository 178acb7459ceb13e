//! A running tracer (the release binary), filtered to one test namespace.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::{Netns, schema, wait_until};

pub struct Tracer {
    child: Child,
    records: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Tracer {
    /// Starts `tracer run --netns <ns>` plus `extra` flags and waits until it is ready.
    pub fn start(ns: &Netns, extra: &[&str]) -> Self {
        let netns = ns.inode.to_string();
        let mut args = vec!["run", "--netns", netns.as_str()];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// Starts `tracer run` for the whole host (tests must pick their own records).
    pub fn start_unfiltered(extra: &[&str]) -> Self {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// Starts `tracer run` with no flags, configured by these environment variables only.
    pub fn start_from_env(env: &[(&str, &str)]) -> Self {
        Self::spawn_with(&["run"], env)
    }

    fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, &[])
    }

    fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Self::command(args);
        cmd.envs(env.iter().copied());
        Self::start_command(cmd)
    }

    /// `tracer ARGS` as a command, for a test that sets more on it (a cgroup to join, a limit)
    /// before `start_command`.
    pub fn command(args: &[&str]) -> Command {
        crate::require_kernel();
        let mut cmd = Command::new(crate::tracer_bin().unwrap());
        cmd.args(args);
        cmd
    }

    /// Where `--metrics-addr` listens, from the start-up log (`serving metrics at
    /// http://ADDR/metrics`): the port `127.0.0.1:0` was given.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.startup_log()
            .lines()
            .find_map(|l| {
                l.split("http://")
                    .nth(1)?
                    .strip_suffix("/metrics")?
                    .parse()
                    .ok()
            })
            .expect("the tracer says where it serves metrics")
    }

    /// Starts `cmd`, a command whose stdout and stderr are the tracer's (the binary, or an
    /// attached `podman run` of its image), and waits until it is ready. SIGTERM and SIGKILL go
    /// to `cmd`'s process (podman passes them on to the container).
    pub fn start_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the tracer ({cmd:?}): {e}"));
        let records = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let sink = records.clone();
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("stdout line is not one JSON object ({e}): {line:?}")
                });
                sink.lock().unwrap().push(v);
            }
        });
        let log = stderr.clone();
        let r2 = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut t = Tracer {
            child,
            records,
            stderr,
            readers: vec![r1, r2],
        };
        // Ready: the first `stats` record is written once every program is attached.
        wait_until("the tracer to be ready", Duration::from_secs(30), || {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!(
                    "tracer exited ({status}) before it was ready:\n{}",
                    t.stderr()
                );
            }
            // The contract: the first `stats` record. A test that reads the start-up log waits
            // for it itself (`startup_log`).
            t.records()
                .iter()
                .any(|r| r["type"] == "stats")
                .then_some(())
        });
        t
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill9(mut self) {
        self.signal(Signal::SIGKILL);
        wait_until("the killed tracer to exit", Duration::from_secs(5), || {
            self.child.try_wait().expect("try_wait")
        });
    }

    /// Sends `sig` to the tracer.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal tracer");
    }

    /// SIGSTOP, then waits until the kernel shows the process stopped: from then on nothing
    /// reads the ring buffer, while the kernel side keeps producing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.pid());
        wait_until("the tracer to stop", Duration::from_secs(5), || {
            let s = std::fs::read_to_string(&stat).ok()?;
            // The state follows the parenthesised command name.
            let state = s.rsplit_once(") ")?.1.chars().next()?;
            (state == 'T').then_some(())
        });
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The start-up log, once its last line ("attached N programs (…)") has been read: stderr
    /// has its own reader thread, which may trail the first `stats` record.
    pub fn startup_log(&self) -> String {
        wait_until("the start-up log", Duration::from_secs(10), || {
            let log = self.stderr();
            log.contains("attached ").then_some(log)
        })
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn records(&self) -> Vec<Value> {
        self.records.lock().unwrap().clone()
    }

    /// Failure records so far.
    pub fn failures(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["type"] == "failure")
            .collect()
    }

    /// Waits until at least `n` failure records satisfy `pred`; returns them. On timeout the
    /// panic lists what did arrive.
    pub fn wait_failures(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.wait_records("failure", n, timeout, pred)
    }

    /// Records of this `type` so far.
    pub fn records_of(&self, kind: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["type"] == kind)
            .collect()
    }

    /// Waits until at least `n` records of this `type` satisfy `pred`; returns them. On
    /// timeout the panic lists the records of that type that did arrive.
    pub fn wait_records(
        &self,
        kind: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let hits: Vec<Value> = self
                .records_of(kind)
                .into_iter()
                .filter(|r| pred(r))
                .collect();
            if hits.len() >= n {
                return hits;
            }
            if std::time::Instant::now() >= deadline {
                let seen: Vec<String> = self
                    .records_of(kind)
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} {}->{}",
                            r["label"], r["direction"], r["src"], r["dst"]
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {n} matching {kind} records, {} matched; all of them:\n{}\nstderr:\n{}",
                    hits.len(),
                    seen.join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; expects exit 0 within 5 s with a final `stats` record. Returns every record,
    /// each validated against the shipped JSON Schema.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with_log().0
    }

    /// `stop`, with everything the tracer wrote on stderr, its exit included.
    pub fn stop_with_log(mut self) -> (Vec<Value>, String) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("signal tracer");
        let status = wait_until(
            "the tracer to exit after SIGTERM",
            Duration::from_secs(5),
            || self.child.try_wait().expect("try_wait"),
        );
        for r in self.readers.drain(..) {
            r.join().expect("reader thread");
        }
        assert!(
            status.success(),
            "tracer exited with {status}:\n{}",
            self.stderr()
        );
        let records = self.records();
        let last = records.last().expect("at least the final stats record");
        assert_eq!(last["type"], "stats", "the last record is the final stats");
        schema::validate(&records);
        (records, self.stderr())
    }
}

/// What a stopped tracer printed: its failure records and its final `stats` record.
pub struct Stopped {
    pub failures: Vec<Value>,
    pub stats: Value,
}

impl Tracer {
    /// `stop`, then splits the records into failures and the final stats.
    pub fn finish(self) -> Stopped {
        let records = self.stop();
        let stats = records.last().cloned().expect("final stats");
        let failures = records
            .into_iter()
            .filter(|r| r["type"] == "failure")
            .collect();
        Stopped { failures, stats }
    }

    /// `finish`, asserting that exactly `n` failure records were printed.
    pub fn finish_with(self, n: usize) -> Stopped {
        let stopped = self.finish();
        assert_eq!(
            stopped.failures.len(),
            n,
            "failure records: {:#?}",
            stopped.failures
        );
        stopped
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
