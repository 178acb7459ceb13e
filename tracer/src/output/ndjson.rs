//! NDJSON: one JSON object per line, buffered, flushed by the caller after each batch.
use std::io::{self, BufWriter, Write};

use serde::Serialize;

pub struct NdjsonWriter<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> NdjsonWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(64 * 1024, out),
        }
    }

    pub fn write<R: Serialize>(&mut self, record: &R) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record).map_err(io::Error::from)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_record_even_with_newlines_inside() {
        let mut w = NdjsonWriter::new(Vec::new());
        w.write(&serde_json::json!({"comm": "a\nb"})).unwrap();
        w.write(&serde_json::json!({"n": 1})).unwrap();
        w.flush().unwrap();
        let text = String::from_utf8(w.out.into_inner().unwrap()).unwrap();
        assert_eq!(text, "{\"comm\":\"a\\nb\"}\n{\"n\":1}\n");
    }
}
