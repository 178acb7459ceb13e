//! The network namespaces of the host, by inode, and a handle to enter each: a bind mount
//! (`/run/netns/NAME`, as `ip netns add` makes) or a process in it (`/proc/PID/ns/net`).
//!
//! A handle is opened and its inode checked on the open file before use (a pid may have been
//! reused, a bind mount removed). The directory also keeps, per namespace, the pids whose
//! `/proc/PID/ns/net` is that namespace: where the owner of one of its sockets is looked for.
use std::{
    fs::File,
    num::NonZeroUsize,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lru::LruCache;

/// The most namespaces remembered (least recently used evicted).
pub const MAX_NAMESPACES: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

/// The most pids remembered per namespace.
const MAX_PIDS: usize = 65_536;

/// The most bind mounts remembered per namespace.
const MAX_PATHS: usize = 4;

/// A rescan (on a miss) waits at least this long after the previous one.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Directories of namespace bind mounts: iproute2's, and Docker's.
const BIND_DIRS: [&str; 2] = ["/run/netns", "/run/docker/netns"];

#[derive(Default)]
struct Entry {
    paths: Vec<PathBuf>,
    pids: Vec<u32>,
}

/// The namespaces found by the last scan of `/proc` and the bind-mount directories.
pub struct Directory {
    entries: LruCache<u32, Entry>,
    /// The nsfs device: a bind-mount path whose device differs is not a namespace.
    nsfs_dev: Option<u64>,
    scanned: Option<Instant>,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    pub fn new() -> Self {
        Self {
            entries: LruCache::new(MAX_NAMESPACES),
            nsfs_dev: std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev()),
            scanned: None,
        }
    }

    /// Scans again unless the last scan is younger than `RESCAN_INTERVAL`; whether it did.
    pub fn rescan_if_due(&mut self) -> bool {
        if self.scanned.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
            return false;
        }
        self.scan();
        true
    }

    /// Every namespace of the last scan.
    pub fn inodes(&self) -> Vec<u32> {
        self.entries.iter().map(|(k, _)| *k).collect()
    }

    /// The pids last seen in namespace `netns`.
    pub fn pids(&self, netns: u32) -> &[u32] {
        self.entries.peek(&netns).map_or(&[], |e| &e.pids)
    }

    /// An open handle of namespace `netns`, its inode checked; rescans once (if due) when no
    /// handle is known or none still names it.
    pub fn open(&mut self, netns: u32) -> Option<File> {
        if let Some(f) = self.open_known(netns) {
            return Some(f);
        }
        if self.rescan_if_due() {
            return self.open_known(netns);
        }
        None
    }

    fn open_known(&mut self, netns: u32) -> Option<File> {
        let nsfs_dev = self.nsfs_dev;
        let entry = self.entries.get(&netns)?;
        let pid_paths = entry
            .pids
            .iter()
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")));
        entry
            .paths
            .iter()
            .cloned()
            .chain(pid_paths)
            .find_map(|p| open_checked(&p, netns, nsfs_dev))
    }

    /// Reads `/proc/*/ns/net` and the bind-mount directories.
    pub fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        let mut found: std::collections::HashMap<u32, Entry> = Default::default();
        for dir in BIND_DIRS {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let path = e.path();
                let Some(ino) = ns_inode(&path, self.nsfs_dev) else {
                    continue;
                };
                let entry = found.entry(ino).or_default();
                if entry.paths.len() < MAX_PATHS {
                    entry.paths.push(path);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Some(ino) = ns_inode(&e.path().join("ns/net"), self.nsfs_dev) else {
                    continue;
                };
                let entry = found.entry(ino).or_default();
                if entry.pids.len() < MAX_PIDS {
                    entry.pids.push(pid);
                }
            }
        }
        let gone: Vec<u32> = self
            .entries
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !found.contains_key(k))
            .collect();
        for k in gone {
            self.entries.pop(&k);
        }
        for (ino, entry) in found {
            self.entries.put(ino, entry);
        }
    }
}

/// The namespace inode a path names (through its symlink), if it is on nsfs.
fn ns_inode(path: &Path, nsfs_dev: Option<u64>) -> Option<u32> {
    let m = std::fs::metadata(path).ok()?;
    if nsfs_dev.is_some_and(|d| d != m.dev()) {
        return None;
    }
    u32::try_from(m.ino()).ok()
}

/// Opens `path` and checks, on the open file, that it is namespace `netns`.
fn open_checked(path: &Path, netns: u32, nsfs_dev: Option<u64>) -> Option<File> {
    let f = File::open(path).ok()?;
    let m = f.metadata().ok()?;
    let same_dev = nsfs_dev.is_none_or(|d| d == m.dev());
    (same_dev && m.ino() == u64::from(netns)).then_some(f)
}

/// The inode of the network namespace of the calling thread.
pub fn current() -> Option<u32> {
    ns_inode(Path::new("/proc/thread-self/ns/net"), None)
}
