//! A child process whose stdout lines are collected; killed (by its pid) on drop.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_with_stderr(cmd, Stdio::inherit())
    }

    /// Like `spawn`, with stderr going to `stderr` (e.g. `Stdio::null()` for a chatty server).
    pub fn spawn_with_stderr(mut cmd: Command, stderr: Stdio) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the process's stdin.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        crate::wait_until(
            &format!("a line `{prefix}…` from pid {}", self.pid()),
            timeout,
            || self.lines().into_iter().find(|l| l.starts_with(prefix)),
        )
    }

    /// Whether the process has exited (by itself or not).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit by itself; returns its status and every stdout line.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let pid = self.pid();
        let status = crate::wait_until(&format!("pid {pid} to exit"), timeout, || {
            self.child.try_wait().expect("try_wait")
        });
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.lines())
    }
}

/// CPU time `pid` has used so far (user + system, from `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").expect("a stat line").1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().expect("a tick count"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((f[0] + f[1]) * 1000 / hz)
}

/// A `/proc/PID/status` size field in KiB (`VmRSS`, `VmHWM`: the peak RSS); `None` once the
/// process is gone (a zombie has no sizes).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// `key=value` out of a client line such as `result=ECONNREFUSED sport=41234`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
