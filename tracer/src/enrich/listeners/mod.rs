//! Listening TCP sockets of every network namespace on the host, for the event loop: who
//! listens on a port a connect was refused on (and whether the connect's destination is an
//! address of that namespace), and which listeners dropped connection attempts because their
//! accept queue was full.
//!
//! The facts come from netlink sock_diag (`diag`): a dump of the LISTEN sockets, IPv4 and
//! IPv6, with `INET_DIAG_SKMEMINFO`, whose `SK_MEMINFO_DROPS` is the socket's `sk_drops` —
//! incremented by the kernel's `tcp_listendrop()` at each listen overflow (the namespace's
//! `TcpExtListenOverflows`). A sock_diag socket answers for the network namespace of the thread
//! that created it, so one worker thread (`worker`, a plain `std::thread`) enters each
//! namespace with `setns` — the event loop's thread never changes namespace. Namespaces are
//! found by inode (`netns`: `/proc/*/ns/net`, `/run/netns/*`), a socket's owner by its inode
//! among the namespace's processes' fds (`owner`, a bounded scan).
//!
//! The event loop never waits for the worker: it asks (`ask`, a bounded queue; a full one says
//! so at once) and takes the answers that came (`answers`) on its next look. `on_port` waits,
//! for tools and tests only.
//!
//! Entering another namespace needs CAP_SYS_ADMIN: the first EPERM is remembered, later
//! questions about other namespaces are answered "unknown" at once, and `capability_note` says
//! why. What the sandbox denies (netlink sockets, other processes' `/proc/PID/fd`) is probed
//! at start-up by `access`, said once and shown by `tracer check`. Nothing here is fatal to
//! the tracer: every failure is an unknown (None).
pub mod access;
pub mod causes;
mod diag;
pub(crate) mod netns;
mod owner;
mod worker;

#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use worker::{Request, Worker};

/// A listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The bound address; `0.0.0.0` or `::` for every address.
    pub ip: IpAddr,
    pub port: u16,
    /// The socket's inode (`socket:[INODE]`).
    pub inode: u32,
    /// The socket's owner uid.
    pub uid: u32,
    /// The accept queue's limit (`listen()`'s backlog, capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// Connections waiting in the accept queue now.
    pub queued: u32,
    /// A process holding the socket, if found.
    pub pid: Option<u32>,
    /// Its `/proc/PID/comm`.
    pub comm: Option<String>,
    /// An IPv6 socket that takes no IPv4 connections (`IPV6_V6ONLY`); false for IPv4.
    pub v6only: bool,
}

impl Listener {
    /// Whether a connection to `dst` (on this port) reaches this socket, by address: the same
    /// address, or the wildcard of its family (`::` takes IPv4 too unless `v6only`).
    pub fn accepts(&self, dst: IpAddr) -> bool {
        let dst = dst.to_canonical();
        match self.ip.to_canonical() {
            IpAddr::V4(a) if a.is_unspecified() => dst.is_ipv4(),
            IpAddr::V6(a) if a.is_unspecified() => dst.is_ipv6() || !self.v6only,
            ip => ip == dst,
        }
    }

    /// `127.0.0.1 (python3, pid 4242)`: the address and, when known, the owner.
    pub fn describe(&self) -> String {
        match (&self.comm, self.pid) {
            (Some(comm), Some(pid)) => format!("{} ({comm}, pid {pid})", self.ip),
            (None, Some(pid)) => format!("{} (pid {pid})", self.ip),
            _ => format!("{} (uid {})", self.ip, self.uid),
        }
    }
}

/// The listeners on one port of one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortListeners {
    /// On any address, IPv4 and IPv6; empty: nothing listens on the port.
    pub listeners: Vec<Listener>,
    /// Whether the destination asked about is an address of the namespace (loopback
    /// addresses count).
    pub dst_is_local: bool,
}

impl PortListeners {
    /// One sentence for a refused connect to `dst`:`port`: "nothing listens on port 8080", or
    /// "port 8080 is listened on 127.0.0.1 (python3, pid 4242) only; the connect went to
    /// 10.0.0.5" (", not an address of that network namespace" when it is not).
    pub fn describe(&self, port: u16, dst: IpAddr) -> String {
        if self.listeners.is_empty() {
            return format!("nothing listens on port {port}");
        }
        let mut s = format!("port {port} is listened on ");
        for (i, l) in self.listeners.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(&l.describe());
        }
        if self.listeners.iter().any(|l| l.accepts(dst)) {
            let _ = write!(s, ", which takes connections to {dst}");
        } else {
            let _ = write!(s, " only; the connect went to {dst}");
        }
        if !self.dst_is_local {
            s.push_str(", not an address of that network namespace");
        }
        s
    }
}

/// A listener that dropped connection attempts (its accept queue was full).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// The listener's network namespace (inode).
    pub netns: u32,
    /// As at the poll that saw the drops.
    pub listener: Listener,
    /// Drops since the previous poll (summed over polls not yet taken).
    pub dropped: u64,
}

/// The most overflow entries kept for `take_overflows` (one per listener; more are dropped).
const MAX_PENDING: usize = 4096;

/// The requests waiting for the worker; more are refused at once (`Asked::Busy`).
const REQUEST_QUEUE: usize = 64;

/// The answers waiting for the event loop to take them (more are dropped: their askers stop
/// waiting at their deadline).
const ANSWER_QUEUE: usize = 256;

/// A question about one port of one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    /// The namespace's inode.
    pub netns: u32,
    pub port: u16,
    /// The destination: is it an address of that namespace?
    pub dst: IpAddr,
}

/// The worker's answer to a question; `listeners` None: unknown (no handle to the namespace,
/// no permission, an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub question: Question,
    pub listeners: Option<PortListeners>,
}

/// What became of a question handed to `ask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// Queued: its answer comes through `answers`, or never if it is not served by `within`.
    Queued,
    /// The worker's queue is full: not asked.
    Busy,
    /// There is no worker: never answered.
    Never,
}

const NOTE_NONE: u8 = 0;
const NOTE_DENIED: u8 = 1;
const NOTE_STRANDED: u8 = 2;
const NOTE_NO_THREAD: u8 = 3;

/// What the worker and the handle share.
#[derive(Default)]
struct Shared {
    pending: Mutex<Vec<Overflow>>,
    /// `NOTE_*`: why answers are unknown.
    note: AtomicU8,
    /// Polls done.
    polls: AtomicU64,
}

impl Shared {
    /// Adds overflows to those not yet taken, one entry per listener.
    fn push_overflows(&self, overflows: Vec<Overflow>) {
        if overflows.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for o in overflows {
            let same = pending
                .iter()
                .position(|p| p.netns == o.netns && p.listener.inode == o.listener.inode);
            match same {
                Some(i) => {
                    pending[i].dropped += o.dropped;
                    pending[i].listener = o.listener;
                }
                None if pending.len() < MAX_PENDING => pending.push(o),
                None => {}
            }
        }
    }
}

/// The handle of the listeners worker. Dropping it stops the worker.
pub struct Listeners {
    requests: Option<SyncSender<Request>>,
    /// Where the worker answers `ask`'s questions.
    answers_tx: SyncSender<Answer>,
    answers: Receiver<Answer>,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    own_netns: Option<u32>,
}

impl Listeners {
    /// How long `on_port` waits for the worker (tools and tests only: the event loop never
    /// waits).
    pub const ANSWER_TIMEOUT: Duration = Duration::from_millis(100);

    /// Starts the worker thread (in the calling thread's network namespace, the tracer's
    /// own). `poll`: how often the worker, on its own, dumps every namespace's listeners to
    /// compare drop counters (None: never; at least every 10 ms).
    pub fn start(poll: Option<Duration>) -> Listeners {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = sync_channel(REQUEST_QUEUE);
        let for_worker = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("listeners".to_string())
            .spawn(move || Worker::new(for_worker).run(rx, poll));
        let (requests, worker) = match spawned {
            Ok(h) => (Some(tx), Some(h)),
            Err(e) => {
                log::warn!("listeners: cannot start the worker thread: {e}");
                shared.note.store(NOTE_NO_THREAD, Ordering::Relaxed);
                (None, None)
            }
        };
        let (answers_tx, answers) = sync_channel(ANSWER_QUEUE);
        Listeners {
            requests,
            answers_tx,
            answers,
            shared,
            worker,
            own_netns: netns::current(),
        }
    }

    /// Non-blocking: hands `question` to the worker, to be answered through `answers` if it
    /// is served within `within` (else skipped).
    pub fn ask(&self, question: Question, within: Duration) -> Asked {
        let Some(requests) = self.requests.as_ref() else {
            return Asked::Never;
        };
        let req = Request::Port {
            question,
            deadline: Instant::now() + within,
            reply: self.answers_tx.clone(),
        };
        match requests.try_send(req) {
            Ok(()) => Asked::Queued,
            Err(TrySendError::Full(_)) => Asked::Busy,
            Err(TrySendError::Disconnected(_)) => Asked::Never,
        }
    }

    /// Non-blocking: the answers to `ask`'s questions that came since the last call.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }

    /// Blocking, bounded: waits at most `ANSWER_TIMEOUT` for the worker (tools and tests; the
    /// event loop uses `ask`). The listeners on `port` (any address, IPv4 and IPv6, wildcards
    /// included) in namespace `netns` (its inode, as in `net:[INODE]`), and whether `dst` is an
    /// address of that namespace. One dump per namespace serves every port for 1 s. None:
    /// unknown (no handle to the namespace, no permission, timeout, error).
    pub fn on_port(&self, netns: u32, port: u16, dst: IpAddr) -> Option<PortListeners> {
        let deadline = Instant::now() + Self::ANSWER_TIMEOUT;
        // A reply channel per request: an answer that comes too late goes nowhere.
        let (reply, answer) = sync_channel(1);
        let req = Request::Port {
            question: Question { netns, port, dst },
            deadline,
            reply,
        };
        self.requests.as_ref()?.try_send(req).ok()?;
        answer
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
            .and_then(|a| a.listeners)
    }

    /// Non-blocking: the listeners whose drop counter rose since the worker's previous poll
    /// (a listener's first poll is its baseline), one entry per listener with the drops not
    /// yet taken. Listeners that vanished are forgotten.
    pub fn take_overflows(&self) -> Vec<Overflow> {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pending)
    }

    /// Non-blocking: a listener on `port` taking connections to `dst` (any namespace) whose
    /// drops were seen and not yet taken, if any.
    pub fn pending_overflow(&self, port: u16, dst: IpAddr) -> Option<Overflow> {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending
            .iter()
            .find(|o| o.listener.port == port && o.listener.accepts(dst))
            .cloned()
    }

    /// Why answers about some namespaces are unknown, once the worker found out (to be said
    /// once): no permission to enter other namespaces, or no worker.
    pub fn capability_note(&self) -> Option<&'static str> {
        match self.shared.note.load(Ordering::Relaxed) {
            NOTE_NONE => None,
            NOTE_DENIED => Some(
                "listeners in other network namespaces are unknown: entering one (setns) was \
                 refused; it needs CAP_SYS_ADMIN",
            ),
            NOTE_STRANDED => Some(
                "listeners are unknown: the worker could not return to the tracer's network \
                 namespace and stopped",
            ),
            _ => Some("listeners are unknown: the worker thread could not be started"),
        }
    }

    /// The network namespace (inode) of the thread that started the worker: the one that
    /// needs no `setns`.
    pub fn own_netns(&self) -> Option<u32> {
        self.own_netns
    }

    /// How many polls the worker has finished.
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(Ordering::Relaxed)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        // Closing the channel stops the worker at its next look at it.
        self.requests = None;
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}
