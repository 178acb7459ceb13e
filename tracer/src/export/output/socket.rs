//! A stream socket (TCP, or a Unix socket) to a log shipper that reads NDJSON: Vector's
//! `socket` source, Fluent Bit's `tcp` input, Logstash's `tcp` input with the json_lines codec.
//!
//! The event loop only enqueues lines (bounded); a task owns the connection, reconnects with
//! exponential backoff, and writes. While the peer is away lines wait in the queue; when it is
//! full, new lines are dropped and counted (`stats.output_dropped`), never blocking the tracer.
//! A line counts as delivered once the kernel took all of it; one cut by a broken connection is
//! sent again whole on the next. At exit (`Sink::close`) the task writes what it holds and
//! ends, or is stopped at the deadline: every line it still held then is counted as dropped.
use std::{
    io::{self, IoSlice},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::{TcpStream, UnixStream},
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

use bytes::Bytes;

use super::{Closing, Sink, closing};
use crate::export::backoff::Backoff;

/// Lines held while the peer is away.
pub const QUEUE_LINES: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShipperAddr {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for ShipperAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShipperAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ShipperAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Lines written in one system call at most (the kernel's `IOV_MAX`).
const WRITE_LINES: usize = 1024;

/// Counts the sink and its task share.
#[derive(Debug, Default)]
struct Shared {
    /// Lines queued and not delivered yet: in the channel, or held by the task.
    queued: AtomicUsize,
    dropped: AtomicU64,
    /// Not connected: from the first failed connect or a lost connection to the next connect.
    down: std::sync::atomic::AtomicBool,
}

pub struct SocketSink {
    addr: ShipperAddr,
    /// `None` once closed.
    tx: Option<mpsc::Sender<Bytes>>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl SocketSink {
    /// Starts the connection task (needs a tokio runtime).
    pub fn start(addr: ShipperAddr) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(deliver(addr.clone(), rx, shared.clone()));
        Self {
            addr,
            tx: Some(tx),
            shared,
            task: Some(task),
        }
    }
}

impl Sink for SocketSink {
    fn send(&mut self, line: &Bytes) -> io::Result<()> {
        // A reference to the one serialized line, not a copy.
        match self.tx.as_ref().map(|tx| tx.try_send(line.clone())) {
            Some(Ok(())) => {
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn failing(&self) -> bool {
        self.shared.down.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        self.addr.to_string()
    }

    fn close(&mut self, deadline: Instant) -> Option<Closing> {
        self.tx = None; // the task writes what it holds, then ends
        let task = self.task.take()?;
        let shared = self.shared.clone();
        Some(closing(task, deadline, move || {
            let left = shared.queued.swap(0, Ordering::Relaxed);
            shared.dropped.fetch_add(left as u64, Ordering::Relaxed);
        }))
    }
}

/// A connected stream of either kind.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

async fn connect(addr: &ShipperAddr) -> io::Result<Box<dyn Conn>> {
    Ok(match addr {
        ShipperAddr::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
        ShipperAddr::Unix(path) => Box::new(UnixStream::connect(path).await?),
    })
}

/// Owns the connection: connect (with backoff), write queued lines, reconnect on error and
/// send the line that was cut again whole. Ends once the sink is closed and every line written.
async fn deliver(addr: ShipperAddr, mut rx: mpsc::Receiver<Bytes>, shared: Arc<Shared>) {
    let mut backoff = Backoff::default();
    let mut held = Held::default();
    let mut warned = false;
    loop {
        let stream = match connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                shared.down.store(true, Ordering::Relaxed);
                if !warned {
                    log::warn!(
                        "output {addr}: cannot connect ({e}); retrying, records queue up to {QUEUE_LINES}"
                    );
                    warned = true;
                }
                // Waits out the backoff; ends at once if the sink closes with nothing held.
                let wait = tokio::time::sleep(backoff.next_wait());
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        line = rx.recv(), if held.lines.is_empty() => match line {
                            Some(l) => held.lines.push_back(l),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        shared.down.store(false, Ordering::Relaxed);
        if std::mem::take(&mut warned) {
            log::info!("output {addr}: connected");
        }
        backoff.reset();
        let (reader, writer) = tokio::io::split(stream);
        match held.deliver(&mut rx, reader, writer, &shared).await {
            Ok(()) => return,
            Err(e) => {
                shared.down.store(true, Ordering::Relaxed);
                log::warn!("output {addr}: connection lost ({e}); reconnecting")
            }
        }
    }
}

/// The lines taken from the queue and not delivered yet, the first one perhaps in part.
#[derive(Default)]
struct Held {
    lines: std::collections::VecDeque<Bytes>,
    /// Bytes of the first line written on this connection.
    sent: usize,
}

impl Held {
    /// Writes what it holds and what the queue brings over one connection, until the queue is
    /// closed and everything is written (`Ok`) or the connection fails.
    async fn deliver(
        &mut self,
        rx: &mut mpsc::Receiver<Bytes>,
        mut reader: ReadHalf<Box<dyn Conn>>,
        mut writer: WriteHalf<Box<dyn Conn>>,
        shared: &Shared,
    ) -> io::Result<()> {
        // A line cut on the last connection goes again whole.
        self.sent = 0;
        let mut scratch = [0u8; 512];
        loop {
            if self.lines.is_empty() {
                tokio::select! {
                    line = rx.recv() => match line {
                        Some(l) => self.lines.push_back(l),
                        None => return writer.flush().await,
                    },
                    // The peer sends nothing; a read returning means it closed (or reset):
                    // reconnect now rather than write into a dead connection.
                    read = reader.read(&mut scratch) => peer_read(read)?,
                }
            }
            while self.lines.len() < WRITE_LINES {
                match rx.try_recv() {
                    Ok(l) => self.lines.push_back(l),
                    Err(_) => break,
                }
            }
            let slices: Vec<IoSlice<'_>> = self
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| IoSlice::new(if i == 0 { &l[self.sent..] } else { l }))
                .collect();
            let written = tokio::select! {
                n = writer.write_vectored(&slices) => n?,
                read = reader.read(&mut scratch) => {
                    peer_read(read)?;
                    continue;
                }
            };
            drop(slices);
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            shared
                .queued
                .fetch_sub(self.advance(written), Ordering::Relaxed);
        }
    }

    /// Marks `n` more bytes written; returns how many lines are now delivered whole.
    fn advance(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while let Some(first) = self.lines.front() {
            let left = first.len() - self.sent;
            if n < left {
                self.sent += n;
                break;
            }
            n -= left;
            self.sent = 0;
            self.lines.pop_front();
            done += 1;
        }
        done
    }
}

/// What a read from the peer means: it sends nothing, so data is ignored and an end or an
/// error ends the connection.
fn peer_read(read: io::Result<usize>) -> io::Result<()> {
    match read {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed by the peer",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_written_in_part_is_delivered_only_when_whole() {
        let mut held = Held::default();
        for l in ["ab\n", "cde\n", "f\n"] {
            held.lines.push_back(Bytes::from_static(l.as_bytes()));
        }
        assert_eq!(held.advance(2), 0);
        assert_eq!(
            held.advance(3),
            1,
            "the first line's end and 2 bytes of the next"
        );
        assert_eq!(held.sent, 2);
        assert_eq!(held.advance(4), 2);
        assert!(held.lines.is_empty());
        assert_eq!(held.sent, 0);
    }
}
