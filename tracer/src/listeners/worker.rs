//! The worker thread: the only thread that enters other network namespaces. It answers port
//! questions (from a per-namespace dump cached for `DUMP_TTL`) and, every poll interval, dumps
//! every namespace to compare the listeners' drop counters with the previous poll.
//!
//! Entering namespace N: `setns(N)`, create the sock_diag socket (and read N's addresses), and
//! `setns` back at once; the dump itself runs from the worker's own namespace, the socket
//! staying bound to N. A failed return to its own namespace stops the worker (it would answer
//! for the wrong namespace).
use std::{
    collections::HashMap,
    fs::File,
    net::IpAddr,
    sync::{
        Arc,
        atomic::Ordering,
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError},
    },
    time::{Duration, Instant},
};

use lru::LruCache;
use nix::{errno::Errno, sched::CloneFlags};

use super::{
    Listener, NOTE_DENIED, NOTE_STRANDED, Overflow, PortListeners, Shared, diag, diag::RawListener,
    netns, owner::Owners,
};

/// How long one namespace's dump answers port questions.
pub const DUMP_TTL: Duration = Duration::from_secs(1);

/// The shortest poll interval (a zero interval would spin).
const MIN_POLL: Duration = Duration::from_millis(10);

/// The most listeners whose drop counters are followed, over all namespaces.
const MAX_BASELINES: usize = 65_536;

/// A question for the worker; the answer goes to `reply`, its own channel.
pub enum Request {
    Port {
        netns: u32,
        port: u16,
        dst: IpAddr,
        /// After this the asker has given up: the request is skipped.
        deadline: Instant,
        reply: SyncSender<Option<PortListeners>>,
    },
}

/// One namespace's listeners, and its addresses when they were asked for.
pub struct Dump {
    pub at: Instant,
    pub listeners: Vec<RawListener>,
    pub local: Option<Vec<IpAddr>>,
}

pub struct Worker {
    /// The worker's own namespace, to return to after each visit.
    home: Option<File>,
    home_ns: Option<u32>,
    dir: netns::Directory,
    owners: Owners,
    dumps: LruCache<u32, Dump>,
    /// Drop counter of each listener, by (namespace, socket inode), at the previous poll.
    baselines: HashMap<(u32, u32), u32>,
    /// `setns` was refused (EPERM): other namespaces are not tried again.
    denied: bool,
    /// Could not return to its own namespace: the worker stops.
    stranded: bool,
    shared: Arc<Shared>,
}

impl Worker {
    /// Must be called on the worker thread: its namespace is the worker's home.
    pub fn new(shared: Arc<Shared>) -> Self {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| log::debug!("listeners: own network namespace: {e}"))
            .ok();
        Self {
            home,
            home_ns: netns::current(),
            dir: netns::Directory::new(),
            owners: Owners::new(),
            dumps: LruCache::new(netns::MAX_NAMESPACES),
            baselines: HashMap::new(),
            denied: false,
            stranded: false,
            shared,
        }
    }

    /// Serves requests until the channel closes; polls every `poll`.
    pub fn run(mut self, requests: Receiver<Request>, poll: Option<Duration>) {
        let poll = poll.map(|p| p.max(MIN_POLL));
        let mut next_poll = poll.map(|_| Instant::now());
        while !self.stranded {
            if let (Some(every), Some(at)) = (poll, next_poll)
                && Instant::now() >= at
            {
                if !self.poll(&requests) {
                    return;
                }
                next_poll = Some((at + every).max(Instant::now()));
            }
            let msg = match next_poll {
                Some(at) => requests.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(req) => self.serve(req),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Serves what waits in the queue; false when the channel is closed.
    fn serve_pending(&mut self, requests: &Receiver<Request>) -> bool {
        loop {
            match requests.try_recv() {
                Ok(req) => self.serve(req),
                Err(TryRecvError::Empty) => return !self.stranded,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn serve(&mut self, req: Request) {
        match req {
            Request::Port {
                netns,
                port,
                dst,
                deadline,
                reply,
            } => {
                if Instant::now() >= deadline {
                    return;
                }
                let answer = self.on_port(netns, port, dst);
                // The asker may have timed out: its receiver is gone, nothing to do.
                let _ = reply.try_send(answer);
            }
        }
    }

    /// The listeners on `port` in namespace `netns`, and whether `dst` is one of its addresses.
    pub fn on_port(&mut self, netns: u32, port: u16, dst: IpAddr) -> Option<PortListeners> {
        let dump = self.snapshot(netns)?;
        let dst = dst.to_canonical();
        let dst_is_local =
            dst.is_loopback() || dump.local.as_ref().is_some_and(|l| l.contains(&dst));
        let raws: Vec<RawListener> = dump
            .listeners
            .iter()
            .filter(|l| l.port == port)
            .cloned()
            .collect();
        let listeners = raws
            .into_iter()
            .map(|raw| self.listener(netns, raw))
            .collect();
        Some(PortListeners {
            listeners,
            dst_is_local,
        })
    }

    /// The cached dump of `netns` with its addresses, fetched again when older than `DUMP_TTL`.
    fn snapshot(&mut self, netns: u32) -> Option<&Dump> {
        let fresh = self
            .dumps
            .peek(&netns)
            .is_some_and(|d| d.at.elapsed() < DUMP_TTL && d.local.is_some());
        if !fresh {
            match self.fetch(netns, true) {
                Some(d) => {
                    self.dumps.put(netns, d);
                }
                None => {
                    self.dumps.pop(&netns);
                    return None;
                }
            }
        }
        self.dumps.get(&netns)
    }

    /// A new dump of namespace `netns` (and its addresses if `with_addrs`); None: unknown.
    pub fn fetch(&mut self, netns: u32, with_addrs: bool) -> Option<Dump> {
        let at = Instant::now();
        if self.home_ns == Some(netns) {
            let local = match with_addrs {
                true => Some(
                    local_addrs()
                        .map_err(|e| log::debug!("getifaddrs: {e}"))
                        .ok()?,
                ),
                false => None,
            };
            let sock = diag::socket()
                .map_err(|e| log::debug!("listeners: {e}"))
                .ok()?;
            return self.finish(at, &sock, local);
        }
        if self.denied || self.stranded {
            return None;
        }
        let target = self.dir.open(netns)?;
        let home = self.home.as_ref()?;
        match nix::sched::setns(&target, CloneFlags::CLONE_NEWNET) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                self.denied = true;
                self.shared.note.store(NOTE_DENIED, Ordering::Relaxed);
                return None;
            }
            Err(e) => {
                log::debug!("listeners: setns into net:[{netns}]: {e}");
                return None;
            }
        }
        let sock = diag::socket();
        let local = with_addrs.then(local_addrs);
        if let Err(e) = nix::sched::setns(home, CloneFlags::CLONE_NEWNET) {
            log::warn!("listeners: cannot return to the tracer's network namespace: {e}");
            self.stranded = true;
            self.shared.note.store(NOTE_STRANDED, Ordering::Relaxed);
            return None;
        }
        let sock = sock.map_err(|e| log::debug!("listeners: {e}")).ok()?;
        let local = local
            .transpose()
            .map_err(|e| log::debug!("getifaddrs in net:[{netns}]: {e}"))
            .ok()?;
        self.finish(at, &sock, local)
    }

    fn finish(
        &self,
        at: Instant,
        sock: &netlink_sys::Socket,
        local: Option<Vec<IpAddr>>,
    ) -> Option<Dump> {
        let listeners = diag::dump(sock)
            .map_err(|e| log::debug!("listeners: {e}"))
            .ok()?;
        Some(Dump {
            at,
            listeners,
            local,
        })
    }

    /// A listener with its owner, if found.
    fn listener(&mut self, netns: u32, raw: RawListener) -> Listener {
        let owner = self.owner(netns, raw.inode);
        Listener {
            ip: raw.ip,
            port: raw.port,
            inode: raw.inode,
            uid: raw.uid,
            backlog: raw.backlog,
            queued: raw.queued,
            pid: owner.as_ref().map(|o| o.pid),
            comm: owner.map(|o| o.comm),
            v6only: raw.v6only,
        }
    }

    /// The owner of socket `inode` among the pids of `netns`; after a miss, once more after a
    /// fresh scan of the namespaces, if one is due.
    fn owner(&mut self, netns: u32, inode: u32) -> Option<super::owner::Owner> {
        let found = self
            .owners
            .lookup(inode, self.dir.pids(netns), self.dir.generation());
        if found.is_some() || !self.dir.rescan_if_due() {
            return found;
        }
        self.owners
            .lookup(inode, self.dir.pids(netns), self.dir.generation())
    }

    /// Dumps every namespace and reports the listeners whose drop counter rose since the
    /// previous poll. False when the request channel closed meanwhile.
    fn poll(&mut self, requests: &Receiver<Request>) -> bool {
        self.dir.rescan_if_due();
        let mut namespaces: Vec<u32> = self.home_ns.into_iter().collect();
        if !self.denied {
            namespaces.extend(
                self.dir
                    .inodes()
                    .into_iter()
                    .filter(|n| Some(*n) != self.home_ns),
            );
        }
        let mut next = HashMap::with_capacity(self.baselines.len());
        let mut rose = Vec::new();
        for netns in namespaces {
            if !self.serve_pending(requests) {
                return false;
            }
            let Some(dump) = self.fetch(netns, false) else {
                // Unknown this time: keep its baselines while the namespace exists.
                next.extend(self.baselines.iter().filter(|(k, _)| k.0 == netns));
                continue;
            };
            for l in dump.listeners {
                let Some(drops) = l.drops else {
                    continue;
                };
                let key = (netns, l.inode);
                if let Some(prev) = self.baselines.get(&key) {
                    let delta = drops.wrapping_sub(*prev);
                    if delta != 0 && delta < 1 << 31 {
                        rose.push((netns, l, u64::from(delta)));
                    }
                }
                if next.len() < MAX_BASELINES {
                    next.insert(key, drops);
                }
            }
        }
        self.baselines = next;
        let overflows: Vec<Overflow> = rose
            .into_iter()
            .map(|(netns, raw, dropped)| Overflow {
                netns,
                listener: self.listener(netns, raw),
                dropped,
            })
            .collect();
        self.shared.push_overflows(overflows);
        self.shared.polls.fetch_add(1, Ordering::Relaxed);
        !self.stranded
    }
}

/// Every IPv4 and IPv6 address of the calling thread's network namespace.
fn local_addrs() -> nix::Result<Vec<IpAddr>> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|a| {
            let s = a.address?;
            if let Some(v4) = s.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .collect())
}
