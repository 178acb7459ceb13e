//! stdout, buffered; a closed pipe ends the tracer quietly (the caller sees BrokenPipe).
use std::io::{self, BufWriter, Stdout, Write};

use super::Sink;

pub struct StdoutSink {
    out: BufWriter<Stdout>,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn send(&mut self, line: &bytes::Bytes) -> io::Result<()> {
        self.out.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn describe(&self) -> String {
        "stdout".into()
    }
}
