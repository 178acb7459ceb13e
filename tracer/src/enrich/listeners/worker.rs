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
    Answer, Listener, NOTE_DENIED, NOTE_STRANDED, Overflow, PortListeners, Question, Shared, diag,
    diag::RawListener,
    netns,
    owner::{Known, Owners},
};

/// How long one namespace's dump answers port questions.
pub const DUMP_TTL: Duration = Duration::from_secs(1);

/// The shortest poll interval (a zero interval would spin).
const MIN_POLL: Duration = Duration::from_millis(10);

/// The most listeners whose drop counters are followed, over all namespaces.
const MAX_BASELINES: usize = 65_536;

/// A question for the worker; the answer goes to `reply` (if it has room: an asker that no
/// longer waits has dropped its receiver, or left no room).
pub enum Request {
    Port {
        question: Question,
        /// After this the asker has given up: the request is skipped.
        deadline: Instant,
        reply: SyncSender<Answer>,
    },
}

/// One namespace's listeners, and its addresses when they were asked for.
pub struct Dump {
    pub at: Instant,
    pub listeners: Vec<RawListener>,
    pub local: Option<Vec<IpAddr>>,
    /// The namespace's `TcpExtListenOverflows` (polls only), read just before the dump.
    pub overflows: Option<u64>,
}

/// A namespace's listen overflows not yet attributed to a listener.
#[derive(Default)]
struct Credit {
    /// `TcpExtListenOverflows` at the previous poll.
    last: u64,
    /// Overflows counted by the namespace and not yet matched to a listener's drops.
    credit: u64,
    /// Polls in a row with credit left and no listener to give it to.
    idle: u8,
}

/// A listener's drops not yet matched to its namespace's overflows: drops that were not
/// overflows (a retransmitted SYN for a pending request also counts in `sk_drops`), or overflows
/// the namespace's counter shows at the next poll.
struct Unmatched {
    listener: RawListener,
    drops: u64,
    /// Polls it has waited.
    age: u8,
}

/// Polls an unmatched drop or an unused credit waits before it is forgotten.
const MATCH_POLLS: u8 = 2;

pub struct Worker {
    /// The worker's own namespace, to return to after each visit.
    home: Option<File>,
    home_ns: Option<u32>,
    dir: netns::Directory,
    owners: Owners,
    dumps: LruCache<u32, Dump>,
    /// Drop counter of each listener, by (namespace, socket inode), at the previous poll.
    baselines: HashMap<(u32, u32), u32>,
    /// Per namespace, its overflows not yet attributed.
    credits: HashMap<u32, Credit>,
    /// Per listener, its drops not yet matched to overflows.
    unmatched: HashMap<(u32, u32), Unmatched>,
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
            credits: HashMap::new(),
            unmatched: HashMap::new(),
            denied: false,
            stranded: false,
            shared,
        }
    }

    /// Serves requests until the channel closes; polls every `poll`; between requests, runs
    /// the owner scan's slices (`owner.rs`).
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
            let now = Instant::now();
            let wake = match (next_poll, self.owners.next_slice(now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let msg = match wake {
                Some(at) => requests.recv_timeout(at.saturating_duration_since(now)),
                None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(req) => {
                    self.serve(req);
                    // Every question waiting is answered before the next slice.
                    if !self.serve_pending(&requests) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if self.owners.next_slice(now).is_some_and(|at| at <= now) {
                self.owners.step(now);
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
                question,
                deadline,
                reply,
            } => {
                if Instant::now() >= deadline {
                    return;
                }
                let listeners = self.on_port(question.netns, question.port, question.dst);
                // The asker may have given up: its receiver is gone, nothing to do.
                let _ = reply.try_send(Answer {
                    question,
                    listeners,
                });
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
        // Every owner not known yet is looked for by the namespace's pass; a pass that begins
        // here runs its first slice at once (a small namespace answers with its owners), the
        // rest between questions (a large one names them in later answers).
        self.want_owners(netns, raws.iter().map(|r| r.inode));
        let listeners = raws.into_iter().map(|raw| self.listener(raw)).collect();
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
            let overflows = (!with_addrs).then(listen_overflows).flatten();
            let sock = diag::socket()
                .map_err(|e| log::debug!("listeners: {e}"))
                .ok()?;
            return self.finish(at, &sock, local, overflows);
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
        let overflows = (!with_addrs).then(listen_overflows).flatten();
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
        self.finish(at, &sock, local, overflows)
    }

    fn finish(
        &self,
        at: Instant,
        sock: &netlink_sys::Socket,
        local: Option<Vec<IpAddr>>,
        overflows: Option<u64>,
    ) -> Option<Dump> {
        let listeners = diag::dump(sock)
            .map_err(|e| log::debug!("listeners: {e}"))
            .ok()?;
        Some(Dump {
            at,
            listeners,
            local,
            overflows,
        })
    }

    /// A listener with its owner, if known now.
    fn listener(&mut self, raw: RawListener) -> Listener {
        let owner = match self.owners.known(raw.inode, Instant::now()) {
            Known::Found(o) => Some(o),
            Known::Missing | Known::Unknown => None,
        };
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

    /// Looks for the owners not known yet of these sockets among the pids of `netns`. A pass
    /// that begins here (the namespaces scanned again first, if due) runs its first slice at
    /// once, `owner::FIRST_SLICE_FDS` links at most; one under way takes them in.
    fn want_owners(&mut self, netns: u32, inodes: impl Iterator<Item = u32>) {
        let now = Instant::now();
        let mut begun = false;
        for inode in inodes {
            if self.owners.known(inode, now) != Known::Unknown {
                continue;
            }
            if !self.owners.searching(netns) {
                self.dir.rescan_if_due();
                begun = true;
            }
            self.owners.want(netns, inode, self.dir.pids(netns));
        }
        if begun {
            self.owners.step_first(netns, now);
        }
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
            let mut risen = Vec::new();
            for l in dump.listeners {
                let Some(drops) = l.drops else {
                    continue;
                };
                let key = (netns, l.inode);
                if let Some(prev) = self.baselines.get(&key) {
                    let delta = drops.wrapping_sub(*prev);
                    if delta != 0 && delta < 1 << 31 {
                        risen.push((l.clone(), u64::from(delta)));
                    }
                }
                if next.len() < MAX_BASELINES {
                    next.insert(key, drops);
                }
            }
            match dump.overflows {
                Some(overflows) => self.attribute(netns, overflows, risen, &mut rose),
                // No namespace counter to check them against: every drop counts.
                None => rose.extend(risen.into_iter().map(|(l, d)| (netns, l, d))),
            }
        }
        self.baselines = next;
        let live: std::collections::HashSet<u32> = self.baselines.keys().map(|k| k.0).collect();
        self.credits.retain(|ns, _| live.contains(ns));
        for (netns, raw, _) in &rose {
            self.want_owners(*netns, std::iter::once(raw.inode));
        }
        let overflows: Vec<Overflow> = rose
            .into_iter()
            .map(|(netns, raw, dropped)| Overflow {
                netns,
                listener: self.listener(raw),
                dropped,
            })
            .collect();
        self.shared.push_overflows(overflows);
        self.shared.polls.fetch_add(1, Ordering::Relaxed);
        !self.stranded
    }
}

impl Worker {
    /// Matches the listeners' new drops in `netns` with the namespace's new overflows
    /// (`TcpExtListenOverflows`): a listener's `sk_drops` also counts discards that are not
    /// overflows (a retransmitted SYN for a request already pending), the namespace's counter
    /// only overflows. The overflows go to the listeners whose drops rose — a full accept queue
    /// first, then the most drops — each at most its drops; what is left on either side waits
    /// `MATCH_POLLS` polls (a drop counted between the two reads shows on the other side next
    /// time), then is forgotten.
    fn attribute(
        &mut self,
        netns: u32,
        overflows: u64,
        risen: Vec<(RawListener, u64)>,
        out: &mut Vec<(u32, RawListener, u64)>,
    ) {
        let credit = match self.credits.get_mut(&netns) {
            Some(c) => {
                c.credit += overflows.saturating_sub(c.last);
                c.last = overflows;
                c
            }
            None => {
                // The first poll of a namespace is its baseline.
                self.credits.insert(
                    netns,
                    Credit {
                        last: overflows,
                        ..Credit::default()
                    },
                );
                return;
            }
        };
        for (l, drops) in risen {
            let u = self
                .unmatched
                .entry((netns, l.inode))
                .or_insert_with(|| Unmatched {
                    listener: l.clone(),
                    drops: 0,
                    age: 0,
                });
            u.listener = l;
            u.drops += drops;
            u.age = 0;
        }
        let mut waiting: Vec<(u32, bool, u64)> = self
            .unmatched
            .iter()
            .filter(|(k, _)| k.0 == netns)
            .map(|(k, u)| (k.1, u.listener.queued >= u.listener.backlog, u.drops))
            .collect();
        waiting.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)));
        for (inode, _, drops) in &waiting {
            let take = (*drops).min(credit.credit);
            if take == 0 {
                continue;
            }
            credit.credit -= take;
            if let Some(u) = self.unmatched.get_mut(&(netns, *inode)) {
                u.drops -= take;
                out.push((netns, u.listener.clone(), take));
            }
        }
        if credit.credit > 0 && waiting.iter().all(|w| w.2 == 0) {
            credit.idle += 1;
            if credit.idle > MATCH_POLLS {
                credit.credit = 0;
                credit.idle = 0;
            }
        } else {
            credit.idle = 0;
        }
        self.unmatched.retain(|k, u| {
            if k.0 != netns {
                return true;
            }
            u.age += 1;
            u.drops > 0 && u.age <= MATCH_POLLS
        });
    }
}

/// `TcpExtListenOverflows` of the calling thread's network namespace.
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/thread-self/net/netstat")
        .map_err(|e| log::debug!("netstat: {e}"))
        .ok()?;
    tcp_ext(&netstat, "ListenOverflows")
}

/// A `TcpExt:` counter of a `/proc/net/netstat` text (a line of names, then a line of values).
fn tcp_ext(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
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

#[cfg(test)]
mod attribution_tests {
    use super::*;

    fn listener(inode: u32, queued: u32, backlog: u32) -> RawListener {
        RawListener {
            ip: "10.0.0.1".parse().unwrap(),
            port: 80,
            inode,
            uid: 0,
            backlog,
            queued,
            drops: Some(0),
            v6only: false,
        }
    }

    fn worker() -> Worker {
        Worker::new(Arc::new(Shared::default()))
    }

    #[test]
    fn netstat_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 36 36\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(tcp_ext(text, "ListenOverflows"), Some(36));
        assert_eq!(tcp_ext(text, "Nope"), None);
    }

    /// Drops that are not overflows (retransmitted SYNs for pending requests) are never
    /// reported; overflows are, once, whichever side is read first.
    #[test]
    fn only_the_namespaces_overflows_are_reported() {
        let mut w = worker();
        let mut out = Vec::new();
        w.attribute(7, 100, Vec::new(), &mut out); // baseline
        // 5 drops, no overflow: a retransmitted SYN's discards.
        w.attribute(7, 100, vec![(listener(1, 0, 5), 5)], &mut out);
        assert!(out.is_empty());
        // 10 drops, 8 overflows counted so far; the other 2 show next poll.
        w.attribute(7, 108, vec![(listener(1, 6, 5), 10)], &mut out);
        w.attribute(7, 110, Vec::new(), &mut out);
        let total: u64 = out.iter().map(|o| o.2).sum();
        assert_eq!(
            total,
            10,
            "{:?}",
            out.iter().map(|o| o.2).collect::<Vec<_>>()
        );
        // Nothing left over later.
        out.clear();
        w.attribute(7, 110, Vec::new(), &mut out);
        w.attribute(7, 110, Vec::new(), &mut out);
        w.attribute(7, 110, Vec::new(), &mut out);
        assert!(out.is_empty());
    }

    /// Two listeners' drops rose: the one whose queue is full gets the overflows first.
    #[test]
    fn a_full_queue_takes_the_overflows_first() {
        let mut w = worker();
        let mut out = Vec::new();
        w.attribute(7, 0, Vec::new(), &mut out);
        w.attribute(
            7,
            4,
            vec![(listener(1, 0, 128), 9), (listener(2, 2, 1), 4)],
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].1.inode, out[0].2), (2, 4));
    }
}
