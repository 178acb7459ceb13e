//! Where records go: one or more NDJSON sinks (`--output`) and the OTLP exporter
//! (`--otlp-endpoint`, `crate::export::otlp`), each record serialized once.
//!
//! stdout and files are written in the event loop (buffered, flushed after each batch); socket
//! sinks and the OTLP exporter hand what they get to their own task through a bounded queue and
//! never block the loop: what they cannot hold or deliver is dropped and counted
//! (`Output::dropped`, `stats.output_dropped`). A write error of stdout or a file sticks:
//! `Output` writes nothing after it and keeps it for the caller to end on (`Output::error`).
pub mod file;
pub mod socket;
pub mod stdout;
pub mod target;

use std::{future::Future, io, pin::Pin};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

pub use target::Target;

use crate::export::record::Record;

/// What a sink's `close` returns: it completes when the sink has delivered what it held, or
/// gave up at the deadline (counting the rest as dropped).
pub type Closing = Pin<Box<dyn Future<Output = ()>>>;

/// One destination for records: NDJSON lines, or (OTLP) the records themselves.
pub trait Sink {
    /// Queues or writes one line (with its newline). The line is shared, not copied: a sink
    /// that queues it keeps a reference. An error is fatal only for stdout.
    fn send(&mut self, line: &Bytes) -> io::Result<()>;
    /// Queues or writes `record`, whose JSON line (with its newline) is `line`. Sinks of lines
    /// send the line; a sink that needs the record's fields (OTLP) overrides this.
    fn send_record(&mut self, _record: &Record<'_>, line: &Bytes) -> io::Result<()> {
        self.send(line)
    }
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
    /// At exit: stop taking records and deliver those held until `deadline` at the latest
    /// (what is not delivered by then is counted in `dropped`). `None`: nothing to wait for.
    fn close(&mut self, _deadline: tokio::time::Instant) -> Option<Closing> {
        None
    }
}

/// All sinks, fed the same lines.
pub struct Output {
    /// Where each line is serialized; its buffer is reused once every sink let go of the last.
    line: BytesMut,
    sinks: Vec<Box<dyn Sink>>,
    /// The first write error; nothing is written after it.
    error: Option<io::Error>,
}

impl Output {
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self {
            line: BytesMut::with_capacity(1024),
            sinks,
            error: None,
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

    /// Adds a sink (the OTLP exporter's).
    pub fn add(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// Serializes `record` once and hands it, with its line, to every sink (nothing after an
    /// error).
    pub fn write(&mut self, record: &Record<'_>) {
        self.write_value(record, Some(record));
    }

    /// Serializes `value` once; sinks get the line, and `record` if it is one.
    fn write_value<R: Serialize>(&mut self, value: &R, record: Option<&Record<'_>>) {
        if self.error.is_some() {
            return;
        }
        self.line.clear();
        let sent = serde_json::to_writer((&mut self.line).writer(), value)
            .map_err(io::Error::from)
            .and_then(|()| {
                self.line.put_u8(b'\n');
                let line = self.line.split().freeze();
                self.sinks.iter_mut().try_for_each(|s| match record {
                    Some(r) => s.send_record(r, &line),
                    None => s.send(&line),
                })
            });
        self.error = sent.err();
    }

    /// Pushes out what the sinks buffer (nothing after an error).
    pub fn flush(&mut self) {
        if self.error.is_none() {
            self.error = self.sinks.iter_mut().try_for_each(|s| s.flush()).err();
        }
    }

    /// The first write or flush error: the output has ended.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    pub fn reopen(&mut self) {
        for s in &mut self.sinks {
            s.reopen();
        }
    }

    /// Lines (OTLP: log records) dropped by all sinks together.
    pub fn dropped(&self) -> u64 {
        self.sinks.iter().map(|s| s.dropped()).sum()
    }

    /// At exit, after the last record: flushes, then waits until every sink that delivers on
    /// its own (OTLP) has delivered what it holds, or `deadline`. What is still undelivered
    /// then is counted in `dropped`.
    pub async fn close(&mut self, deadline: tokio::time::Instant) {
        self.flush();
        let closing: Vec<Closing> = self
            .sinks
            .iter_mut()
            .filter_map(|s| s.close(deadline))
            .collect();
        for c in closing {
            c.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cell::RefCell, rc::Rc};

    struct Capture(Rc<RefCell<Vec<u8>>>);
    impl Sink for Capture {
        fn send(&mut self, line: &Bytes) -> io::Result<()> {
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

    /// Fails every send after `ok` lines.
    struct Failing {
        ok: usize,
        sent: Rc<RefCell<usize>>,
    }
    impl Sink for Failing {
        fn send(&mut self, _line: &Bytes) -> io::Result<()> {
            if *self.sent.borrow() >= self.ok {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            *self.sent.borrow_mut() += 1;
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "failing".into()
        }
    }

    /// Keeps every line it is handed, as a queueing sink does.
    struct Keep(Rc<RefCell<Vec<Bytes>>>);
    impl Sink for Keep {
        fn send(&mut self, line: &Bytes) -> io::Result<()> {
            self.0.borrow_mut().push(line.clone());
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "keep".into()
        }
    }

    #[test]
    fn queueing_sinks_share_one_serialized_line_and_later_lines_are_their_own() {
        let (a, b) = (
            Rc::new(RefCell::new(Vec::new())),
            Rc::new(RefCell::new(Vec::new())),
        );
        let mut out = Output::new(vec![Box::new(Keep(a.clone())), Box::new(Keep(b.clone()))]);
        out.write_value(&serde_json::json!({"n": 1}), None);
        out.write_value(&serde_json::json!({"n": 22}), None);
        let (a, b) = (a.borrow(), b.borrow());
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(
                x.as_ptr(),
                y.as_ptr(),
                "one copy of the line for both sinks"
            );
        }
        assert_eq!(&a[0][..], b"{\"n\":1}\n");
        assert_eq!(
            &a[1][..],
            b"{\"n\":22}\n",
            "the next line did not overwrite a held one"
        );
    }

    #[test]
    fn the_first_error_sticks_and_nothing_is_written_after_it() {
        let (sent, after) = (Rc::new(RefCell::new(0)), Rc::new(RefCell::new(Vec::new())));
        let mut out = Output::new(vec![
            Box::new(Failing {
                ok: 1,
                sent: sent.clone(),
            }),
            Box::new(Capture(after.clone())),
        ]);
        out.write_value(&1, None);
        assert!(out.error().is_none());
        out.write_value(&2, None);
        out.write_value(&3, None);
        out.flush();
        assert_eq!(
            out.error().map(io::Error::kind),
            Some(io::ErrorKind::BrokenPipe)
        );
        assert_eq!(*sent.borrow(), 1);
        assert_eq!(
            String::from_utf8(after.borrow().clone()).unwrap(),
            "1\n",
            "the second sink got nothing after the first one failed"
        );
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
        out.write_value(&serde_json::json!({"comm": "a\nb"}), None);
        out.write_value(&serde_json::json!({"n": 1}), None);
        assert!(out.error().is_none());
        let want = "{\"comm\":\"a\\nb\"}\n{\"n\":1}\n";
        assert_eq!(String::from_utf8(a.borrow().clone()).unwrap(), want);
        assert_eq!(String::from_utf8(b.borrow().clone()).unwrap(), want);
    }
}
