//! Where records go: one or more NDJSON sinks (`--output`), each record serialized once.
//!
//! stdout and files are written in the event loop (buffered, flushed after each batch); socket
//! sinks hand lines to their own task through a bounded queue and never block the loop: what
//! they cannot hold is dropped and counted.
pub mod file;
pub mod socket;
pub mod stdout;
pub mod target;

use std::io;

use serde::Serialize;

pub use target::Target;

/// One destination for NDJSON lines.
pub trait Sink {
    /// Queues or writes one line (with its newline). An error is fatal only for stdout.
    fn send(&mut self, line: &[u8]) -> io::Result<()>;
    /// Pushes out what is buffered.
    fn flush(&mut self) -> io::Result<()>;
    /// Reopens the target (SIGHUP: a rotated log file).
    fn reopen(&mut self) {}
    /// Lines this sink could not deliver so far.
    fn dropped(&self) -> u64 {
        0
    }
    /// What it writes to, for messages.
    fn describe(&self) -> String;
}

/// All sinks, fed the same lines.
pub struct Output {
    line: Vec<u8>,
    sinks: Vec<Box<dyn Sink>>,
}

impl Output {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self {
            line: Vec::with_capacity(1024),
            sinks,
        }
    }

    /// Opens every target (at least stdout when none is given).
    pub fn open(targets: &[Target]) -> io::Result<Self> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        for t in targets {
            sinks.push(t.open()?);
        }
        if sinks.is_empty() {
            sinks.push(Target::Stdout.open()?);
        }
        Ok(Self::new(sinks))
    }

    /// Serializes `record` once and hands the line to every sink.
    pub fn write<R: Serialize>(&mut self, record: &R) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).map_err(io::Error::from)?;
        self.line.push(b'\n');
        for s in &mut self.sinks {
            s.send(&self.line)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        Ok(())
    }

    pub fn reopen(&mut self) {
        for s in &mut self.sinks {
            s.reopen();
        }
    }

    /// Lines dropped by all sinks together.
    pub fn dropped(&self) -> u64 {
        self.sinks.iter().map(|s| s.dropped()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cell::RefCell, rc::Rc};

    struct Capture(Rc<RefCell<Vec<u8>>>);
    impl Sink for Capture {
        fn send(&mut self, line: &[u8]) -> io::Result<()> {
            self.0.borrow_mut().extend_from_slice(line);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "capture".into()
        }
    }

    #[test]
    fn every_sink_gets_one_line_per_record_even_with_newlines_inside() {
        let (a, b) = (
            Rc::new(RefCell::new(Vec::new())),
            Rc::new(RefCell::new(Vec::new())),
        );
        let mut out = Output::new(vec![
            Box::new(Capture(a.clone())),
            Box::new(Capture(b.clone())),
        ]);
        out.write(&serde_json::json!({"comm": "a\nb"})).unwrap();
        out.write(&serde_json::json!({"n": 1})).unwrap();
        let want = "{\"comm\":\"a\\nb\"}\n{\"n\":1}\n";
        assert_eq!(String::from_utf8(a.borrow().clone()).unwrap(), want);
        assert_eq!(String::from_utf8(b.borrow().clone()).unwrap(), want);
    }
}
