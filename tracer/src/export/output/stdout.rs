//! stdout, written by a thread of its own, so that a reader that stops reading (a full pipe, a
//! stopped pager, a dead reader whose pipe another process keeps open) never blocks the event
//! loop or the exit.
//!
//! The loop appends each step's lines to a chunk and hands it to the thread at `flush` (or at
//! 64 KiB); the thread writes each chunk with as few system calls as it can. At most
//! `QUEUE_LINES` lines wait in all: past that a new line is dropped and counted
//! (`stats.output_dropped`). A write error ends the thread; the loop sees it at its next
//! `flush` and ends on it (a closed pipe quietly: `tracer | head -1`). At exit (`Sink::close`)
//! the thread gets until the deadline to write what it holds; what it still holds then is
//! counted as dropped, and the process exits even if the thread is blocked in `write`.
use std::{
    fs::File,
    io::{self, Write},
    os::fd::AsFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
};

use tokio::{
    sync::oneshot,
    time::{Instant, timeout_at},
};

use super::{Closing, Sink, socket::QUEUE_LINES};

/// A chunk goes to the thread at this size, or at the end of the loop step.
const CHUNK_BYTES: usize = 64 * 1024;

/// Counts and the first error, shared by the sink and its thread.
#[derive(Debug, Default)]
struct Shared {
    /// Lines handed to the thread and not written yet.
    queued: AtomicUsize,
    dropped: AtomicU64,
    /// The write error that ended the thread, until the loop takes it.
    error: Mutex<Option<io::Error>>,
}

/// Lines of one loop step.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    lines: usize,
}

pub struct StdoutSink {
    chunk: Chunk,
    /// `None` once closed.
    tx: Option<mpsc::Sender<Chunk>>,
    shared: Arc<Shared>,
    /// Completes when the thread has ended.
    done: Option<oneshot::Receiver<()>>,
}

impl StdoutSink {
    /// Starts the writer thread, on a duplicate of file descriptor 1.
    pub fn start() -> io::Result<Self> {
        let out = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| io::Error::new(e.kind(), format!("stdout: cannot use it ({e})")))?;
        Self::start_on(File::from(out))
    }

    /// The sink, writing to `out` from its own thread.
    fn start_on(out: impl Write + Send + 'static) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = oneshot::channel();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("tracer-stdout".into())
            .spawn(move || {
                write_chunks(out, &rx, &theirs);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            chunk: Chunk::default(),
            tx: Some(tx),
            shared,
            done: Some(done),
        })
    }

    /// Hands the chunk to the thread.
    fn ship(&mut self) {
        if self.chunk.lines == 0 {
            return;
        }
        let chunk = std::mem::take(&mut self.chunk);
        let n = chunk.lines;
        self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.as_ref().is_none_or(|tx| tx.send(chunk).is_err()) {
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
            self.shared.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Bytes written in one system call at most, in whole lines: `PIPE_BUF`, so that a write to a
/// pipe is all or nothing, and what a reader stuck for good has is known to the line.
const PIECE_BYTES: usize = 4096;

/// Where the write that starts at `from` ends: after the last line that fits in
/// `PIECE_BYTES`, or after the first line when even that one is longer.
fn piece_end(bytes: &[u8], from: usize) -> usize {
    let limit = (from + PIECE_BYTES).min(bytes.len());
    if limit == bytes.len() {
        return limit;
    }
    let newline = |b: &u8| *b == b'\n';
    match bytes[from..limit].iter().rposition(newline) {
        Some(i) => from + i + 1,
        None => bytes[limit..]
            .iter()
            .position(newline)
            .map_or(bytes.len(), |i| limit + i + 1),
    }
}

/// The thread: writes every chunk, until the sink is closed (and everything written) or a
/// write fails (kept in `shared.error`; what was not written is left in `queued`). A line
/// leaves `queued` once written whole, so that what a reader stuck mid-chunk has is not
/// counted as undelivered at exit.
fn write_chunks(mut out: impl Write, rx: &mpsc::Receiver<Chunk>, shared: &Shared) {
    while let Ok(chunk) = rx.recv() {
        let mut written = 0;
        while written < chunk.bytes.len() {
            let end = piece_end(&chunk.bytes, written);
            let n = match out.write(&chunk.bytes[written..end]) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    if let Ok(mut slot) = shared.error.lock() {
                        *slot = Some(e);
                    }
                    return;
                }
            };
            // Each line ends in its only newline (JSON escapes the others).
            let whole = chunk.bytes[written..written + n]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            written += n;
            // Saturating: once the exit deadline has counted what was held, a write that
            // completes after it changes nothing.
            let _ = shared
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                    Some(q.saturating_sub(whole))
                });
        }
    }
}

impl Sink for StdoutSink {
    fn send(&mut self, line: &bytes::Bytes) -> io::Result<()> {
        let held = self.shared.queued.load(Ordering::Relaxed) + self.chunk.lines;
        if self.tx.is_none() || held >= QUEUE_LINES {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.chunk.bytes.extend_from_slice(line);
        self.chunk.lines += 1;
        if self.chunk.bytes.len() >= CHUNK_BYTES {
            self.ship();
        }
        Ok(())
    }

    /// Hands over the step's lines; the thread's write error, once it failed.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.shared.error.lock().ok().and_then(|mut e| e.take()) {
            self.tx = None;
            return Err(e);
        }
        self.ship();
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        "stdout".into()
    }

    fn close(&mut self, deadline: Instant) -> Option<Closing> {
        self.ship();
        self.tx = None; // the thread writes what it holds, then ends
        let done = self.done.take()?;
        let shared = self.shared.clone();
        Some(Box::pin(async move {
            // The thread ends by itself (or already did, at an error), or is left blocked in
            // `write`: the process exits without it.
            // Once it ended by itself, all it holds is what a write error left.
            let _ = timeout_at(deadline, done).await;
            let left = shared.queued.swap(0, Ordering::Relaxed);
            shared.dropped.fetch_add(left as u64, Ordering::Relaxed);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Takes nothing until `open` is sent, then everything.
    struct Gate {
        open: mpsc::Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
    }
    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.open.recv();
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink on a `Gate`: the gate's key, what got through, the sink.
    fn gated() -> (mpsc::Sender<()>, Arc<Mutex<Vec<u8>>>, StdoutSink) {
        let (open, gate) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = StdoutSink::start_on(Gate {
            open: gate,
            got: got.clone(),
        })
        .unwrap();
        (open, got, sink)
    }

    fn line(n: usize) -> bytes::Bytes {
        format!("{n}\n").into()
    }

    #[test]
    fn writes_are_whole_lines_of_at_most_a_pipe_buffer() {
        let mut bytes = Vec::new();
        for _ in 0..10 {
            bytes.extend_from_slice(&[b'x'; 999]);
            bytes.push(b'\n');
        }
        assert_eq!(piece_end(&bytes, 0), 4000);
        assert_eq!(piece_end(&bytes, 4000), 8000);
        assert_eq!(piece_end(&bytes, 8000), 10_000);
        assert_eq!(piece_end(&bytes, 4500), 8000, "after a partial write");
        let long = [vec![b'y'; 10_000], b"\nz\n".to_vec()].concat();
        assert_eq!(piece_end(&long, 0), 10_001, "a longer line goes alone");
    }

    #[tokio::test]
    async fn a_stuck_reader_costs_counted_lines_never_a_wait() {
        let (open, _, mut sink) = gated();
        let total = QUEUE_LINES + 10;
        for n in 0..total {
            sink.send(&line(n)).unwrap();
            if n % 100 == 0 {
                sink.flush().unwrap();
            }
        }
        sink.flush().unwrap();
        assert_eq!(sink.dropped(), 10, "past the queue, each line counted");
        // Still stuck at the deadline: everything held is counted, and close returns.
        sink.close(Instant::now() + Duration::from_millis(50))
            .unwrap()
            .await;
        assert_eq!(sink.dropped() as usize, total);
        drop(open);
    }

    #[tokio::test]
    async fn close_waits_for_the_last_lines() {
        let (open, got, mut sink) = gated();
        for n in 0..3 {
            sink.send(&line(n)).unwrap();
        }
        let closing = sink.close(Instant::now() + Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let _ = open.send(());
        }
        drop(open);
        closing.await;
        assert_eq!(sink.dropped(), 0);
        assert_eq!(&got.lock().unwrap()[..], b"0\n1\n2\n");
    }

    #[test]
    fn a_write_error_reaches_the_loop_and_stops_the_sink() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = StdoutSink::start_on(Broken).unwrap();
        sink.send(&line(1)).unwrap();
        sink.flush().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let e = loop {
            if let Err(e) = sink.flush() {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no error reached the loop"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        sink.send(&line(2)).unwrap();
        assert_eq!(sink.dropped(), 1, "nothing is taken after the error");
    }
}
