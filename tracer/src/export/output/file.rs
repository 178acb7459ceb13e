//! A file, appended to and reopened on SIGHUP (logrotate).
//!
//! Lines are gathered over a loop step and written after it (or at 64 KiB). A write error (a
//! full disk, an I/O error) never stops the tracer and never leaves a partial line: it is said
//! once on stderr, every line not written whole is counted as dropped, and the part of a line
//! the kernel took before failing is cut off again (the file is truncated back to its last
//! whole line), so the next write starts on a line boundary. While writing fails, lines are
//! dropped (counted) and writing is tried again once a second, and at SIGHUP (with the file
//! opened again: a directory that vanished, logrotate's rename).
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use super::Sink;

/// Lines are written when this much is gathered, else after each loop step.
const BUF_BYTES: usize = 64 * 1024;
/// How long after a failed write lines are dropped before writing is tried again.
const RETRY: Duration = Duration::from_secs(1);

pub struct FileSink {
    path: PathBuf,
    /// `None` after the file could not be opened again.
    file: Option<File>,
    /// Whole lines not written yet, and how many.
    buf: Vec<u8>,
    lines: usize,
    dropped: u64,
    /// When writing last failed, while it fails.
    failing: Option<Instant>,
    /// Bytes of a line written in part at the end of `file`, still to be cut off.
    torn: u64,
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl FileSink {
    /// Opens (creates) `path` for appending; fails if it cannot, so a typo is caught at start.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let file = open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("--output {}: {e}", path.display())))?;
        Ok(Self {
            path,
            file: Some(file),
            buf: Vec::with_capacity(BUF_BYTES),
            lines: 0,
            dropped: 0,
            failing: None,
            torn: 0,
        })
    }

    /// Writes the gathered lines; on an error counts those not written whole and cuts off the
    /// part of one that was.
    fn write_out(&mut self) {
        if self.lines == 0 {
            return;
        }
        if self.file.is_none() {
            match open(&self.path) {
                Ok(f) => {
                    self.file = Some(f);
                    self.torn = 0;
                }
                Err(e) => return self.fail("opening", e),
            }
        }
        if self.torn > 0 {
            self.cut();
            if self.torn > 0 {
                let e = io::Error::other("a partial line at its end could not be cut off");
                return self.fail("writing to", e);
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let (written, result) = write_some(file, &self.buf);
        if let Err(e) = result {
            // Each line ends in its only newline (JSON escapes the others).
            let whole = self.buf[..written].iter().filter(|&&b| b == b'\n').count();
            let boundary = self.buf[..written]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            self.lines -= whole;
            self.torn = (written - boundary) as u64;
            self.cut();
            return self.fail("writing to", e);
        }
        self.buf.clear();
        self.lines = 0;
        if self.failing.take().is_some() {
            log::info!("writing to {} again", self.path.display());
        }
    }

    /// Truncates the file back to its last whole line.
    fn cut(&mut self) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        match cut_tail(file, self.torn) {
            Ok(()) => self.torn = 0,
            Err(e) => log::debug!(
                "{}: cutting off a partial line failed ({e}); tried again before the next write",
                self.path.display()
            ),
        }
    }

    /// Drops (counts) the gathered lines; says so when writing starts failing.
    fn fail(&mut self, doing: &str, e: io::Error) {
        self.dropped += self.lines as u64;
        self.buf.clear();
        self.lines = 0;
        if self.failing.is_none() {
            log::error!(
                "{doing} {} failed: {e}; dropping records (counted in stats.output_dropped), \
                 trying again every second and at SIGHUP",
                self.path.display()
            );
        }
        self.failing = Some(Instant::now());
    }
}

/// Writes as much of `buf` as it can: the bytes written, and the error that stopped it.
fn write_some(out: &mut impl Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match out.write(&buf[written..]) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// Cuts `torn` bytes off the end of a regular file (a pipe or a device keeps what it got).
fn cut_tail(file: &File, torn: u64) -> io::Result<()> {
    let meta = file.metadata()?;
    // Shorter than the torn part: truncated meanwhile (logrotate's copytruncate); it is gone.
    if meta.is_file() && meta.len() >= torn {
        file.set_len(meta.len() - torn)?;
    }
    Ok(())
}

impl Sink for FileSink {
    fn send(&mut self, line: &bytes::Bytes) -> io::Result<()> {
        if self.failing.is_some_and(|t| t.elapsed() < RETRY) {
            self.dropped += 1;
            return Ok(());
        }
        if !self.buf.is_empty() && self.buf.len() + line.len() > BUF_BYTES {
            self.write_out();
            if self.failing.is_some() {
                self.dropped += 1;
                return Ok(());
            }
        }
        self.buf.extend_from_slice(line);
        self.lines += 1;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out();
        Ok(())
    }

    fn reopen(&mut self) {
        self.write_out();
        self.cut();
        match open(&self.path) {
            Ok(f) => {
                self.file = Some(f);
                self.torn = 0;
                if self.failing.take().is_some() {
                    log::info!("writing to {} again", self.path.display());
                }
            }
            Err(e) => {
                self.file = None;
                self.fail("reopening", e);
            }
        }
    }

    fn failing(&self) -> bool {
        self.failing.is_some()
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `room` bytes, then fails with ENOSPC.
    struct Full {
        got: Vec<u8>,
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room).min(5);
            self.got.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_short_write_reports_what_went_out_in_short_pieces() {
        let mut out = Full {
            got: Vec::new(),
            room: 12,
        };
        let (n, r) = write_some(&mut out, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(n, 12);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn a_full_disk_counts_every_line_and_leaves_only_whole_ones() {
        let dir = std::env::temp_dir().join(format!("tracer-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.ndjson");
        let _ = std::fs::remove_file(&path);
        let mut sink = FileSink::open(path.clone()).unwrap();
        for l in ["{\"n\":1}\n", "{\"n\":2}\n"] {
            sink.send(&bytes::Bytes::from_static(l.as_bytes())).unwrap();
        }
        sink.flush().unwrap();
        // As if the disk filled in the middle of the third line: what the kernel took of it
        // is at the end of the file.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"n\"")
            .unwrap();
        sink.torn = 4;
        sink.lines = 1;
        sink.fail("writing to", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(sink.dropped(), 1);
        // Dropped (counted) for a second, then written again from a line boundary.
        sink.send(&bytes::Bytes::from_static(b"{\"n\":4}\n"))
            .unwrap();
        assert_eq!(sink.dropped(), 2);
        sink.failing = Some(Instant::now() - RETRY);
        sink.send(&bytes::Bytes::from_static(b"{\"n\":5}\n"))
            .unwrap();
        sink.flush().unwrap();
        assert_eq!(sink.failing, None);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":5}\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
