//! Where records go: one or more NDJSON sinks (`--output`) and the OTLP exporter
//! (`--otlp-endpoint`, `crate::export::otlp`), each record serialized once.
//!
//! Files are written in the event loop (buffered, written after each batch). stdout, socket
//! sinks and the OTLP exporter hand what they get to a thread or task of their own through a
//! bounded queue and never block the loop: a reader or peer that stops reading costs lines, not
//! the loop. What a sink cannot hold, write or deliver is dropped and counted
//! (`Output::dropped`, `stats.output_dropped`); at exit each gets until a deadline, and what it
//! still holds then is counted too (`Output::close`). A write error of stdout sticks: `Output`
//! writes nothing after it and keeps it for the caller to end on (`Output::error`).
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

/// `Sink::close` of a sink whose task delivers what it holds and then ends: waits for `task`
/// until `deadline`; past it, aborts it (on this single-threaded runtime it does not run again)
/// and calls `held`, which counts what the task still held as dropped.
pub fn closing(
    mut task: tokio::task::JoinHandle<()>,
    deadline: tokio::time::Instant,
    held: impl FnOnce() + 'static,
) -> Closing {
    Box::pin(async move {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            held();
        }
    })
}

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
    /// Whether it cannot deliver right now (its peer is down, its writes fail): records wait in
    /// its queue or are dropped and counted. Said on stderr by the sink; `/readyz` names it.
    fn failing(&self) -> bool {
        false
    }
    /// Whether the `stats` records go to this sink. One that takes none (OTLP) is closed before
    /// the final `stats` is written, so that it counts what that sink could not deliver.
    fn takes_stats(&self) -> bool {
        true
    }
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

    /// The sinks that cannot deliver right now, named (`Sink::failing`).
    pub fn failing(&self) -> Vec<String> {
        self.sinks
            .iter()
            .filter(|s| s.failing())
            .map(|s| s.describe())
            .collect()
    }

    /// Lines (OTLP: log records) dropped by all sinks together.
    pub fn dropped(&self) -> u64 {
        self.sinks.iter().map(|s| s.dropped()).sum()
    }

    /// At exit, after the last record and before the final `stats`: flushes, then waits until
    /// every sink that takes no `stats` (OTLP) has delivered what it holds, or `deadline`. What
    /// is still undelivered then is counted in `dropped`, and so in the final `stats`.
    pub async fn close_records(&mut self, deadline: tokio::time::Instant) {
        self.flush();
        close(self.sinks.iter_mut().filter(|s| !s.takes_stats()), deadline).await;
    }

    /// At exit, after the final `stats`: flushes, then waits until every other sink has
    /// delivered what it holds, or `deadline`. What one could not deliver from then on is
    /// counted in `dropped` and, since the final `stats` is already written, said on stderr
    /// with its count.
    pub async fn close(&mut self, deadline: tokio::time::Instant) {
        let counted: Vec<u64> = self.sinks.iter().map(|s| s.dropped()).collect();
        self.flush();
        close(self.sinks.iter_mut().filter(|s| s.takes_stats()), deadline).await;
        // After a stdout error the output has ended, and the caller says why.
        let ended = self.error.is_some();
        for (s, before) in self.sinks.iter().zip(counted).filter(|_| !ended) {
            let late = s.dropped().saturating_sub(before);
            if late > 0 {
                log::warn!(
                    "output {}: {late} lines not delivered at exit (the final stats record, \
                     written before, does not count them)",
                    s.describe()
                );
            }
        }
    }
}

/// Closes `sinks`, all against the one `deadline`.
async fn close<'a>(
    sinks: impl Iterator<Item = &'a mut Box<dyn Sink>>,
    deadline: tokio::time::Instant,
) {
    let closing: Vec<Closing> = sinks.filter_map(|s| s.close(deadline)).collect();
    for c in closing {
        c.await;
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
