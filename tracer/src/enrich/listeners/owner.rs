//! The process that holds a socket, from the socket's inode: the first of a namespace's pids
//! with a `/proc/PID/fd/*` link to `socket:[INODE]` (as `ss -p` finds it, but only over the
//! pids of the socket's namespace, stopping at the first hit).
//!
//! A hit is remembered with its fd and checked with one `readlink` before it is used again
//! (the process may have exited, the pid been reused). A miss is remembered until the
//! namespace directory is scanned again.
use std::{num::NonZeroUsize, os::unix::ffi::OsStrExt};

use lru::LruCache;

/// The most socket inodes remembered (least recently used evicted).
pub const MAX_SOCKETS: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

/// The process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
}

enum Cached {
    Found {
        owner: Owner,
        fd: u32,
    },
    /// Not found among the pids of this namespace-directory generation.
    Missing {
        generation: u64,
    },
}

/// Socket inode → owning process.
pub struct Owners {
    cache: LruCache<u32, Cached>,
}

impl Default for Owners {
    fn default() -> Self {
        Self::new()
    }
}

impl Owners {
    pub fn new() -> Self {
        Self {
            cache: LruCache::new(MAX_SOCKETS),
        }
    }

    /// The owner of socket `inode`, looked for among `pids` (those of directory scan
    /// `generation`). None: not found (a miss is not searched again in the same generation).
    pub fn lookup(&mut self, inode: u32, pids: &[u32], generation: u64) -> Option<Owner> {
        let target = format!("socket:[{inode}]");
        match self.cache.get(&inode) {
            Some(Cached::Found { owner, fd }) if link_is(owner.pid, *fd, &target) => {
                return Some(owner.clone());
            }
            Some(Cached::Missing { generation: g }) if *g == generation => return None,
            _ => {}
        }
        let found = pids.iter().find_map(|&pid| {
            let fd = fd_of(pid, &target)?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some((
                Owner {
                    pid,
                    comm: comm.trim_end_matches('\n').to_string(),
                },
                fd,
            ))
        });
        match found {
            Some((owner, fd)) => {
                self.cache.put(
                    inode,
                    Cached::Found {
                        owner: owner.clone(),
                        fd,
                    },
                );
                Some(owner)
            }
            None => {
                self.cache.put(inode, Cached::Missing { generation });
                None
            }
        }
    }
}

/// Whether `/proc/PID/fd/FD` links to `target`.
fn link_is(pid: u32, fd: u32, target: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .is_ok_and(|l| l.as_os_str().as_bytes() == target.as_bytes())
}

/// The first fd of process `pid` that links to `target`.
fn fd_of(pid: u32, target: &str) -> Option<u32> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    rd.flatten().find_map(|e| {
        let link = std::fs::read_link(e.path()).ok()?;
        if link.as_os_str().as_bytes() != target.as_bytes() {
            return None;
        }
        e.file_name().to_str()?.parse().ok()
    })
}
