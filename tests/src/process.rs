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
