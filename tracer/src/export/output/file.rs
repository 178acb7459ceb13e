//! A file, appended to and reopened on SIGHUP (logrotate). Write errors (a full disk, a removed
//! directory) are logged, counted as dropped lines, and retried at the next reopen; they never
//! stop the tracer.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::PathBuf,
};

use super::Sink;

pub struct FileSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    dropped: u64,
    failing: bool,
}

fn open(path: &PathBuf) -> io::Result<BufWriter<File>> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(64 * 1024, f))
}

impl FileSink {
    /// Opens (creates) `path` for appending; fails if it cannot, so a typo is caught at start.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let out = open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("--output {}: {e}", path.display())))?;
        Ok(Self {
            path,
            out: Some(out),
            dropped: 0,
            failing: false,
        })
    }

    fn fail(&mut self, e: io::Error) {
        if !self.failing {
            log::error!(
                "writing to {} failed: {e}; dropping records until it works again (SIGHUP reopens)",
                self.path.display()
            );
            self.failing = true;
        }
        self.out = None;
    }
}

impl Sink for FileSink {
    fn send(&mut self, line: &bytes::Bytes) -> io::Result<()> {
        match self.out.as_mut().map(|o| o.write_all(line)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.dropped += 1;
                self.fail(e);
            }
            None => self.dropped += 1,
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(Err(e)) = self.out.as_mut().map(|o| o.flush()) {
            self.fail(e);
        }
        Ok(())
    }

    fn reopen(&mut self) {
        if let Some(mut o) = self.out.take() {
            let _ = o.flush();
        }
        match open(&self.path) {
            Ok(o) => {
                if self.failing {
                    log::info!("writing to {} again", self.path.display());
                }
                self.out = Some(o);
                self.failing = false;
            }
            Err(e) => self.fail(e),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
