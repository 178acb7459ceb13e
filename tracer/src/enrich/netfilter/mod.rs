//! The nftables rulesets of the host's network namespaces, for the event loop: which Service
//! (kube-proxy) a virtual address or a backend belongs to, and which rule drops or rejects a
//! new TCP SYN at a hook.
//!
//! A worker thread (`reader`, a plain `std::thread`, never the event loop) enters each
//! namespace with `setns`, creates a `NETLINK_NETFILTER` socket there and returns at once;
//! every poll (1 s) it asks each namespace's ruleset generation (`NFT_MSG_GETGEN`) and, when
//! it changed and the namespace was not dumped within `Limits::min_interval`, dumps the
//! ruleset (`dump`), parses it (`ruleset`, from the raw attributes, hostile bytes counted and
//! never a panic), indexes kube-proxy's Services (`kube`) and publishes an immutable
//! [`NsRules`] per namespace, which the loop reads without waiting ([`Netfilter::rules`]).
//! `eval` answers which rule drops a SYN, from a published ruleset.
//!
//! Bounds: bytes per namespace dump (beyond: the namespace is "too big", said once on stderr,
//! and names nothing), bytes of all published dumps, namespaces followed, and the minimum
//! interval between two dumps of one namespace.
pub mod dump;
pub mod eval;
pub mod kube;
pub mod ruleset;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::CloneFlags;

use crate::enrich::listeners::netns;

pub use eval::{Action, Hook, Packet, RuleHit, dropping_rule};
pub use kube::{ServiceHit, ServiceState, Services};
pub use ruleset::Ruleset;

/// What the reader may spend.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of one namespace's dump; beyond, the namespace is too big and names nothing.
    pub namespace_bytes: usize,
    /// Bytes of all published dumps together.
    pub total_bytes: usize,
    /// Namespaces followed (the first found at each scan).
    pub namespaces: usize,
    /// The shortest time between two dumps of one namespace.
    pub min_interval: Duration,
    /// How often generations are asked.
    pub poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 10,000 kube-proxy Services with one endpoint each dump 19.8 MB.
            namespace_bytes: 32 << 20,
            total_bytes: 48 << 20,
            namespaces: 1024,
            min_interval: Duration::from_secs(5),
            poll: Duration::from_secs(1),
        }
    }
}

/// One namespace's ruleset and what was derived from it, immutable once published.
#[derive(Debug)]
pub struct NsRules {
    pub netns: u32,
    pub ruleset: Ruleset,
    pub services: Services,
    /// Bytes of the dump it was parsed from.
    pub bytes: usize,
    pub at: Instant,
}

/// The reader's counters (monotonic), for `stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Full dumps made.
    pub dumps: AtomicU64,
    /// Bytes received by dumps.
    pub bytes: AtomicU64,
    /// Attributes or messages that did not decode, and kube-proxy entries skipped.
    pub parse_errors: AtomicU64,
    /// Dumps abandoned for exceeding a byte bound.
    pub too_big: AtomicU64,
    /// Dumps or generation questions that failed (EPERM, a vanished namespace, EINTR dumps).
    pub failures: AtomicU64,
    /// Generation questions asked.
    pub generations: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub dumps: u64,
    pub bytes: u64,
    pub parse_errors: u64,
    pub too_big: u64,
    pub failures: u64,
    pub generations: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            dumps: l(&self.dumps),
            bytes: l(&self.bytes),
            parse_errors: l(&self.parse_errors),
            too_big: l(&self.too_big),
            failures: l(&self.failures),
            generations: l(&self.generations),
        }
    }
}

type Map = Arc<HashMap<u32, Arc<NsRules>>>;

#[derive(Default)]
struct Shared {
    /// Replaced whole by the worker (copy on write); the lock is held for an `Arc` clone.
    map: Mutex<Map>,
    ready: Mutex<bool>,
    ready_cv: Condvar,
    stop: AtomicBool,
    counters: Counters,
}

/// The reader: its thread, and what it publishes.
pub struct Netfilter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Netfilter {
    /// Starts the reader thread; its first pass over every namespace begins at once.
    pub fn start(limits: Limits) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netfilter".into())
            .spawn(move || Reader::new(s, limits).run())?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Whether the first pass over every namespace is done.
    pub fn ready(&self) -> bool {
        self.shared.ready.lock().map(|r| *r).unwrap_or(true)
    }

    /// Waits up to `timeout` for the first pass; whether it is done.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let Ok(g) = self.shared.ready.lock() else {
            return true;
        };
        match self.shared.ready_cv.wait_timeout_while(g, timeout, |r| !*r) {
            Ok((g, _)) => *g,
            Err(_) => true,
        }
    }

    /// The last published ruleset of namespace `netns`.
    pub fn rules(&self, netns: u32) -> Option<Arc<NsRules>> {
        self.all().get(&netns).cloned()
    }

    /// Every published ruleset.
    pub fn all(&self) -> Arc<HashMap<u32, Arc<NsRules>>> {
        self.shared
            .map
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.shared.counters.snapshot()
    }
}

impl Drop for Netfilter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the reader remembers of a namespace.
struct Seen {
    generation: Option<u32>,
    dumped: Option<Instant>,
    bytes: usize,
}

struct Reader {
    shared: Arc<Shared>,
    limits: Limits,
    dir: netns::Directory,
    home: Option<File>,
    home_ns: Option<u32>,
    seen: HashMap<u32, Seen>,
    /// Namespaces said to be too big (once each).
    said: HashSet<u32>,
    denied: bool,
    stranded: bool,
}

impl Reader {
    fn new(shared: Arc<Shared>, limits: Limits) -> Self {
        Self {
            shared,
            limits,
            dir: netns::Directory::new(),
            home: File::open("/proc/thread-self/ns/net").ok(),
            home_ns: netns::current(),
            seen: HashMap::new(),
            said: HashSet::new(),
            denied: false,
            stranded: false,
        }
    }

    fn run(mut self) {
        let poll = self.limits.poll.max(Duration::from_millis(10));
        loop {
            let started = Instant::now();
            self.pass();
            if let Ok(mut r) = self.shared.ready.lock() {
                *r = true;
                self.shared.ready_cv.notify_all();
            }
            if self.stranded {
                return;
            }
            while started.elapsed() < poll {
                if self.shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20).min(poll));
            }
        }
    }

    /// One pass over every namespace.
    fn pass(&mut self) {
        self.dir.scan();
        let mut inodes = self.dir.inodes();
        inodes.sort_unstable();
        if let Some(h) = self.home_ns
            && !inodes.contains(&h)
        {
            inodes.insert(0, h);
        }
        inodes.truncate(self.limits.namespaces);
        let live: HashSet<u32> = inodes.iter().copied().collect();
        self.seen.retain(|k, _| live.contains(k));
        let mut map: HashMap<u32, Arc<NsRules>> = (*self.all()).clone();
        let before = map.len();
        map.retain(|k, _| live.contains(k));
        let mut changed = map.len() != before;
        for ns in inodes {
            if self.shared.stop.load(Ordering::Relaxed) || self.stranded {
                break;
            }
            changed |= self.visit(ns, &mut map);
        }
        if changed && let Ok(mut m) = self.shared.map.lock() {
            *m = Arc::new(map);
        }
    }

    fn all(&self) -> Map {
        self.shared
            .map
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Asks `ns`'s generation and dumps it if due; whether `map` changed.
    fn visit(&mut self, ns: u32, map: &mut HashMap<u32, Arc<NsRules>>) -> bool {
        let shared = self.shared.clone();
        let c = &shared.counters;
        let Some(sock) = self.socket_in(ns) else {
            c.failures.fetch_add(1, Ordering::Relaxed);
            return map.remove(&ns).is_some();
        };
        let used: usize = map
            .iter()
            .filter(|(k, _)| **k != ns)
            .map(|(_, v)| v.bytes)
            .sum();
        let budget = self
            .limits
            .namespace_bytes
            .min(self.limits.total_bytes.saturating_sub(used));
        let mut session = dump::Session::new(&sock, budget);
        c.generations.fetch_add(1, Ordering::Relaxed);
        let generation = match session.generation() {
            Ok(g) => g,
            Err(e) => {
                log::debug!("netfilter: net:[{ns}]: {e}");
                c.failures.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let seen = self.seen.entry(ns).or_insert(Seen {
            generation: None,
            dumped: None,
            bytes: 0,
        });
        if seen.generation == Some(generation) {
            return false;
        }
        if seen
            .dumped
            .is_some_and(|t| t.elapsed() < self.limits.min_interval)
        {
            return false; // changed, but dumped too recently: the next pass after the interval
        }
        seen.dumped = Some(Instant::now());
        let result = session.ruleset(generation);
        let bytes = session.bytes;
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        seen.bytes = bytes;
        match result {
            Ok(rs) => {
                seen.generation = Some(generation);
                c.dumps.fetch_add(1, Ordering::Relaxed);
                let services = Services::index(&rs);
                c.parse_errors
                    .fetch_add(rs.parse_errors + services.skipped, Ordering::Relaxed);
                self.said.remove(&ns);
                map.insert(
                    ns,
                    Arc::new(NsRules {
                        netns: ns,
                        ruleset: rs,
                        services,
                        bytes,
                        at: Instant::now(),
                    }),
                );
                true
            }
            Err(dump::DumpError::TooBig(limit)) => {
                // Too big at this generation: not dumped again until it changes.
                seen.generation = Some(generation);
                c.too_big.fetch_add(1, Ordering::Relaxed);
                if self.said.insert(ns) {
                    log::warn!(
                        "netfilter: the nftables ruleset of net:[{ns}] exceeds {limit} bytes; \
                         its rules and Services are not read"
                    );
                }
                map.remove(&ns).is_some()
            }
            Err(e) => {
                log::debug!("netfilter: net:[{ns}]: {e}");
                c.failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A netfilter socket created inside namespace `ns` (entered and left on this thread).
    fn socket_in(&mut self, ns: u32) -> Option<netlink_sys::Socket> {
        if self.home_ns == Some(ns) {
            return dump::socket().ok();
        }
        if self.denied || self.stranded {
            return None;
        }
        let target = self.dir.open(ns)?;
        let home = self.home.as_ref()?;
        match nix::sched::setns(&target, CloneFlags::CLONE_NEWNET) {
            Ok(()) => {}
            Err(nix::errno::Errno::EPERM) => {
                self.denied = true;
                return None;
            }
            Err(_) => return None,
        }
        let sock = dump::socket();
        if let Err(e) = nix::sched::setns(home, CloneFlags::CLONE_NEWNET) {
            log::warn!("netfilter: cannot return to the tracer's network namespace: {e}");
            self.stranded = true;
            return None;
        }
        sock.ok()
    }
}
