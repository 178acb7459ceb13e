//! A stream socket (TCP, or a Unix socket) to a log shipper that reads NDJSON: Vector's
//! `socket` source, Fluent Bit's `tcp` input, Logstash's `tcp` input with the json_lines codec.
//!
//! The event loop only enqueues lines (bounded); a task owns the connection, reconnects with
//! exponential backoff, and writes. While the peer is away lines wait in the queue; when it is
//! full, new lines are dropped and counted (`stats.output_dropped`), never blocking the tracer.
use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter},
    net::{TcpStream, UnixStream},
    sync::mpsc,
};

use bytes::Bytes;

use super::Sink;
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

pub struct SocketSink {
    addr: ShipperAddr,
    tx: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl SocketSink {
    /// Starts the connection task (needs a tokio runtime).
    pub fn start(addr: ShipperAddr) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        tokio::spawn(deliver(addr.clone(), rx));
        Self {
            addr,
            tx,
            dropped: Arc::default(),
        }
    }
}

impl Sink for SocketSink {
    fn send(&mut self, line: &Bytes) -> io::Result<()> {
        // A reference to the one serialized line, not a copy.
        if self.tx.try_send(line.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        self.addr.to_string()
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

/// Owns the connection: connect (with backoff), write queued lines, reconnect on error keeping
/// the line that failed.
async fn deliver(addr: ShipperAddr, mut rx: mpsc::Receiver<Bytes>) {
    let mut backoff = Backoff::default();
    let mut pending: Option<Bytes> = None;
    let mut warned = false;
    loop {
        let stream = match connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    log::warn!(
                        "output {addr}: cannot connect ({e}); retrying, records queue up to {QUEUE_LINES}"
                    );
                    warned = true;
                }
                tokio::time::sleep(backoff.next_wait()).await;
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
                continue;
            }
        };
        if std::mem::take(&mut warned) {
            log::info!("output {addr}: connected");
        }
        backoff.reset();
        let (mut reader, writer) = tokio::io::split(stream);
        let mut w = BufWriter::new(writer);
        let mut scratch = [0u8; 512];
        let result: io::Result<()> = async {
            loop {
                let line = match pending.take() {
                    Some(l) => l,
                    None => tokio::select! {
                        line = rx.recv() => match line {
                            Some(l) => l,
                            None => {
                                w.flush().await?;
                                return Ok(());
                            }
                        },
                        // The peer sends nothing; a read returning means it closed (or reset):
                        // reconnect now rather than write into a dead connection.
                        read = reader.read(&mut scratch) => match read {
                            Ok(0) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the peer")),
                            Ok(_) => continue,
                            Err(e) => return Err(e),
                        },
                    },
                };
                if let Err(e) = w.write_all(&line).await {
                    pending = Some(line);
                    return Err(e);
                }
                if rx.is_empty() {
                    w.flush().await?;
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) => log::warn!("output {addr}: connection lost ({e}); reconnecting"),
        }
    }
}
