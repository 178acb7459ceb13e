//! The HTTP/1 server behind `--metrics-addr` (`/metrics`, `/healthz`, `/readyz`), bounded against
//! its clients: in the DaemonSet any pod can reach it, so every connection is hostile.
//!
//! - **Time.** A request head must arrive within `head_timeout` (hyper's header-read timer,
//!   which also runs while a kept-alive connection waits for its next request: the idle timeout),
//!   and each response must be written within `response_timeout` of its request, else the
//!   connection is closed.
//! - **Memory.** A head is read into at most `max_head_bytes` (hyper's `max_buf_size`); past it
//!   the answer is 431 and the connection closes. Bodies are never read.
//! - **Connections.** At most `max_connections` at once, and never more than a quarter of the
//!   open-file limit. A new connection past the cap closes the oldest one (counted): a client
//!   that holds connections open can only push out its own, while a probe, which sends its head
//!   at once and is answered within a millisecond, is never the oldest.
//! - **accept() errors.** Out of file descriptors (EMFILE, ENFILE), the oldest connection is
//!   closed to make room and the cap is lowered to what fits; any error that is not about one
//!   connection is then retried after 100 ms, doubling to 1 s while it lasts, never at once.
//!   It is logged once per episode, and when accepting works again.
//!
//! Every refusal is counted in [`ServerStats`], which the `stats` record and the health metrics
//! report (`metrics_listener_*`).
use std::{
    collections::BTreeMap,
    convert::Infallible,
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
    time::Instant,
};

/// The bounds of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections at once (lowered to a quarter of the open-file limit).
    pub max_connections: usize,
    /// The cap is never lowered below this at EMFILE.
    pub min_connections: usize,
    /// From the start of reading a head (a new connection, or the end of the previous
    /// response) to its end.
    pub head_timeout: Duration,
    /// From a request's head to its response written.
    pub response_timeout: Duration,
    /// The most a request head may take (hyper's minimum is 8,192).
    pub max_head_bytes: usize,
    /// The first and the longest wait after a failed accept().
    pub backoff_first: Duration,
    pub backoff_max: Duration,
}

/// The tracer's bounds: a probe or a scrape sends a head of a few hundred bytes at once.
pub const LIMITS: Limits = Limits {
    max_connections: 256,
    min_connections: 16,
    head_timeout: Duration::from_secs(5),
    response_timeout: Duration::from_secs(10),
    max_head_bytes: 16 * 1024,
    backoff_first: Duration::from_millis(100),
    backoff_max: Duration::from_secs(1),
};

/// What the server refused, shared with the event loop, which reads it into the totals.
#[derive(Debug, Default)]
pub struct ServerStats {
    evicted: AtomicU64,
    timeouts: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
}

/// [`ServerStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// Connections closed to make room for a new one, at the cap or out of fds.
    pub evicted: u64,
    /// Connections closed because their first head or a response took too long (a kept-alive
    /// connection closed when idle is not counted).
    pub timeouts: u64,
    /// Requests answered 431 (a head past the bound) or 400 (not HTTP/1), then closed.
    pub refused: u64,
    /// accept() calls that failed.
    pub accept_errors: u64,
}

impl ServerStats {
    pub fn counts(&self) -> ServerCounts {
        ServerCounts {
            evicted: self.evicted.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            refused: self.refused.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
        }
    }
}

/// The open connections by age (ids increase), each with the signal that closes it.
#[derive(Default)]
struct Table {
    open: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the oldest connection; false if there is none.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_first() {
            Some((_, close)) => {
                // A stored permit: the connection closes even if it is not waiting yet.
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The cap for an open-file limit of `nofile`: a quarter of it, so that the connections leave
/// the rest of the tracer (maps, programs, outputs, the listener worker) its descriptors.
pub fn cap_for(limits: &Limits, nofile: Option<u64>) -> usize {
    let quarter = nofile.map_or(usize::MAX, |n| usize::try_from(n / 4).unwrap_or(usize::MAX));
    limits
        .max_connections
        .min(quarter)
        .max(limits.min_connections.min(limits.max_connections))
}

/// The soft open-file limit, if it can be read.
fn nofile() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// An accept() error about one connection (gone before it was accepted): retried at once, as
/// accept(2) says. Any other (EMFILE, ENFILE, ENOBUFS, ENOMEM, …) is backed off.
fn about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::EINTR
        )
    )
}

/// Text from outside (here an OS error message) made safe for one log line.
fn escape(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

/// What answers a request (from its head: bodies are not read).
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `listener` with `handler` until the process ends.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    stats: Arc<ServerStats>,
    handler: Handler,
) {
    let table = Arc::new(Table::default());
    let mut cap = cap_for(&limits, nofile());
    let mut next_id = 0u64;
    // The current wait while accept() keeps failing (None: it works).
    let mut backoff: Option<Duration> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if backoff.take().is_some() {
                    log::info!("metrics listener: accepting connections again");
                }
                // Past the cap, the oldest goes; its task runs (and closes its socket) before the
                // next accept(), so that the fds it held are free again.
                let mut evicted = false;
                while table.lock().len() >= cap && table.evict_oldest() {
                    stats.evicted.fetch_add(1, Relaxed);
                    evicted = true;
                }
                let (id, close) = (next_id, Arc::new(Notify::new()));
                next_id += 1;
                table.lock().insert(id, close.clone());
                tokio::spawn(connection(
                    stream,
                    id,
                    close,
                    table.clone(),
                    stats.clone(),
                    limits,
                    handler.clone(),
                ));
                if evicted {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) if about_one_connection(&e) => {
                stats.accept_errors.fetch_add(1, Relaxed);
                log::debug!("metrics listener: accept(): {}", escape(&e.to_string()));
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Relaxed);
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let mut lowered = None;
                if out_of_fds {
                    let open = table.lock().len();
                    if table.evict_oldest() {
                        stats.evicted.fetch_add(1, Relaxed);
                    }
                    let fits = open.saturating_sub(1).max(limits.min_connections);
                    if fits < cap {
                        cap = fits;
                        lowered = Some(cap);
                    }
                }
                let wait =
                    backoff.map_or(limits.backoff_first, |w| (w * 2).min(limits.backoff_max));
                if backoff.is_none() {
                    log::warn!(
                        "metrics listener: accept() failed: {}; retrying in {} ms, backing off to {} s while it fails{}",
                        escape(&e.to_string()),
                        wait.as_millis(),
                        limits.backoff_max.as_secs(),
                        match lowered {
                            Some(cap) => format!(
                                "; closed the oldest connection and lowered the connection cap to {cap}"
                            ),
                            None => String::new(),
                        }
                    );
                } else if let Some(cap) = lowered {
                    log::debug!("metrics listener: connection cap lowered to {cap}");
                }
                backoff = Some(wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// How a connection ended.
enum End {
    /// hyper finished it (the client closed, or asked to), or it failed in a way not counted.
    Done,
    /// Pushed out by a newer one (counted when evicted).
    Evicted,
    TimedOut,
    Refused,
}

/// One connection: hyper's HTTP/1 with the head bounds, raced against eviction and the
/// response deadline.
async fn connection(
    stream: TcpStream,
    id: u64,
    close: Arc<Notify>,
    table: Arc<Table>,
    stats: Arc<ServerStats>,
    limits: Limits,
    handler: Handler,
) {
    let start = Instant::now();
    // The response deadline in ms from `start`: from the first request on, its head's arrival
    // plus `response_timeout`; before it, `response_timeout` from the accept (the head timer,
    // shorter, ends a connection that sends none).
    let deadline_ms = Arc::new(AtomicU64::new(millis(limits.response_timeout)));
    // Requests answered: a head timeout after one is a kept-alive connection left idle, which
    // closes without being counted.
    let served = Arc::new(AtomicU64::new(0));
    let service = {
        let (deadline_ms, served) = (deadline_ms.clone(), served.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            deadline_ms.store(millis(start.elapsed() + limits.response_timeout), Relaxed);
            served.fetch_add(1, Relaxed);
            let response = handler(&req);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let end = loop {
        let due = deadline_ms.load(Relaxed);
        tokio::select! {
            r = conn.as_mut() => break match r {
                Ok(()) => End::Done,
                Err(e) if e.is_timeout() && served.load(Relaxed) == 0 => End::TimedOut,
                Err(e) if e.is_parse() || e.is_parse_too_large() => End::Refused,
                Err(_) => End::Done,
            },
            () = close.notified() => break End::Evicted,
            () = tokio::time::sleep_until(start + Duration::from_millis(due)) => {
                // A request that arrived meanwhile moved the deadline: wait for the new one.
                if deadline_ms.load(Relaxed) == due {
                    break End::TimedOut;
                }
            }
        }
    };
    table.lock().remove(&id);
    match end {
        End::Done | End::Evicted => {}
        End::TimedOut => {
            stats.timeouts.fetch_add(1, Relaxed);
        }
        End::Refused => {
            stats.refused.fetch_add(1, Relaxed);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_three_quarters_of_the_fds() {
        assert_eq!(cap_for(&LIMITS, None), 256);
        assert_eq!(cap_for(&LIMITS, Some(1_048_576)), 256);
        assert_eq!(cap_for(&LIMITS, Some(1024)), 256);
        assert_eq!(cap_for(&LIMITS, Some(400)), 100);
        assert_eq!(cap_for(&LIMITS, Some(8)), 16, "never below the floor");
    }

    #[test]
    fn only_errors_about_one_connection_are_retried_at_once() {
        assert!(about_one_connection(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!about_one_connection(&io::Error::from_raw_os_error(errno)));
        }
    }

    #[test]
    fn log_text_is_escaped() {
        assert_eq!(escape("a\nb\x1b[2J"), "a\\nb\\u{1b}[2J");
    }
}
