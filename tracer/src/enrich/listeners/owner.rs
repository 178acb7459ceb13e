//! The process that holds a socket, from the socket's inode: a `/proc/PID/fd/*` link to
//! `socket:[INODE]` among the pids of the socket's namespace (as `ss -p` finds it).
//!
//! Bounded, because a socket may have no owner to find (its only reference in flight over
//! SCM_RIGHTS) in a namespace of tens of thousands of fds:
//! - A socket whose owner is not cached joins its namespace's **pass**: one walk over that
//!   namespace's pids and their fds, shared by every socket wanted there, stopping when all
//!   are found. A pass runs in slices of at most `SLICE_FDS` links read, all passes together
//!   at most `FDS_PER_SECOND`, so the worker answers questions between slices; a pass resumes
//!   where its last slice stopped (pid, then fd: `/proc/PID/fd` lists fds in ascending order).
//! - A socket a whole pass did not find is **missing** for `MISS_TTL`: not looked for again
//!   meanwhile (negative cache). A socket that joined a pass already under way and was not
//!   found is simply wanted again by the next question.
//! - A hit is remembered with its fd and checked with one `readlink` before it is used again
//!   (the process may have exited, the pid been reused).
//!
//! A process name (`/proc/PID/comm`) is bytes: converted lossily (U+FFFD), like every name.
use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    os::unix::ffi::OsStrExt,
    time::{Duration, Instant},
};

use lru::LruCache;

/// The most socket inodes remembered (least recently used evicted), found and missing each.
pub const MAX_SOCKETS: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

/// The most `readlink`s of one slice of a pass (a few ms).
pub const SLICE_FDS: usize = 2048;

/// The most `readlink`s of a pass's first slice, run while a question waits: a namespace of
/// a few processes is done in it.
pub const FIRST_SLICE_FDS: usize = 512;

/// The most `readlink`s per second, over every pass (≈ 20% of a core at worst).
pub const FDS_PER_SECOND: usize = 50_000;

/// How long a socket a whole pass did not find is not looked for again.
pub const MISS_TTL: Duration = Duration::from_secs(5);

/// The most passes (namespaces) waiting; a socket of another namespace waits for a question
/// after one of them ended.
const MAX_PASSES: usize = 64;

/// The most sockets wanted by one pass.
const MAX_WANTED: usize = 1024;

/// The process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `/proc/PID/comm`, lossily UTF-8.
    pub comm: String,
}

/// What is known now of a socket's owner.
#[derive(Debug, PartialEq, Eq)]
pub enum Known {
    Found(Owner),
    /// A whole pass did not find it, less than `MISS_TTL` ago.
    Missing,
    /// Not looked for yet, or being looked for.
    Unknown,
}

/// One walk over a namespace's pids.
struct Pass {
    netns: u32,
    pids: Vec<u32>,
    /// Index in `pids` of the process being read.
    at: usize,
    /// Its first fd not read yet.
    from_fd: u32,
    /// The sockets looked for, each with whether it was wanted before the walk began (only
    /// those are missing when it ends without them).
    wanted: HashMap<u32, bool>,
}

/// Socket inode → owning process.
pub struct Owners {
    found: LruCache<u32, (Owner, u32)>,
    missing: LruCache<u32, Instant>,
    passes: VecDeque<Pass>,
    /// The current second of the `FDS_PER_SECOND` budget, and the links read in it.
    second: Instant,
    spent: usize,
}

impl Default for Owners {
    fn default() -> Self {
        Self::new()
    }
}

impl Owners {
    pub fn new() -> Self {
        Self {
            found: LruCache::new(MAX_SOCKETS),
            missing: LruCache::new(MAX_SOCKETS),
            passes: VecDeque::new(),
            second: Instant::now(),
            spent: 0,
        }
    }

    /// What is known of socket `inode`'s owner now (a hit checked with one `readlink`).
    pub fn known(&mut self, inode: u32, now: Instant) -> Known {
        if let Some((owner, fd)) = self.found.get(&inode) {
            if link_inode(owner.pid, *fd) == Some(inode) {
                return Known::Found(owner.clone());
            }
            self.found.pop(&inode);
        }
        match self.missing.get(&inode) {
            Some(until) if now < *until => Known::Missing,
            Some(_) => {
                self.missing.pop(&inode);
                Known::Unknown
            }
            None => Known::Unknown,
        }
    }

    /// Whether a pass over namespace `netns` is under way or waiting.
    pub fn searching(&self, netns: u32) -> bool {
        self.passes.iter().any(|p| p.netns == netns)
    }

    /// Looks for socket `inode` in namespace `netns`: it joins that namespace's pass, or one
    /// over `pids` begins (dropped when `MAX_PASSES` wait already).
    pub fn want(&mut self, netns: u32, inode: u32, pids: &[u32]) {
        if let Some(p) = self.passes.iter_mut().find(|p| p.netns == netns) {
            let from_start = p.at == 0 && p.from_fd == 0;
            if p.wanted.len() < MAX_WANTED {
                p.wanted.entry(inode).or_insert(from_start);
            }
            return;
        }
        if self.passes.len() < MAX_PASSES {
            self.passes.push_back(Pass {
                netns,
                pids: pids.to_vec(),
                at: 0,
                from_fd: 0,
                wanted: HashMap::from([(inode, true)]),
            });
        }
    }

    /// When the next slice may run: None when no pass waits, else now or the start of the
    /// next second of the budget.
    pub fn next_slice(&self, now: Instant) -> Option<Instant> {
        if self.passes.is_empty() {
            return None;
        }
        if self.spent < FDS_PER_SECOND || now.duration_since(self.second) >= Duration::from_secs(1)
        {
            return Some(now);
        }
        Some(self.second + Duration::from_secs(1))
    }

    /// Runs one slice of the first pass waiting, if the budget allows: at most `SLICE_FDS`
    /// links read.
    pub fn step(&mut self, now: Instant) {
        self.run_slice(0, SLICE_FDS, now);
    }

    /// Runs the first slice of namespace `netns`'s pass (just begun), at most
    /// `FIRST_SLICE_FDS` links, if the budget allows.
    pub fn step_first(&mut self, netns: u32, now: Instant) {
        if let Some(i) = self.passes.iter().position(|p| p.netns == netns) {
            self.run_slice(i, FIRST_SLICE_FDS, now);
        }
    }

    fn run_slice(&mut self, i: usize, most: usize, now: Instant) {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.spent = 0;
        }
        let budget = most.min(FDS_PER_SECOND.saturating_sub(self.spent));
        let Some(pass) = self.passes.get_mut(i) else {
            return;
        };
        if budget == 0 {
            return;
        }
        let (read, hits) = pass.slice(budget);
        self.spent += read;
        for (inode, owner, fd) in hits {
            self.missing.pop(&inode);
            self.found.put(inode, (owner, fd));
        }
        if pass.wanted.is_empty() || pass.at >= pass.pids.len() {
            let ended = self.passes.remove(i).expect("the pass just run");
            for (inode, from_start) in ended.wanted {
                if from_start {
                    self.missing.put(inode, now + MISS_TTL);
                }
            }
        }
    }
}

impl Pass {
    /// Reads at most `budget` links from where the walk stopped; (links read, owners found).
    fn slice(&mut self, budget: usize) -> (usize, Vec<(u32, Owner, u32)>) {
        let mut read = 0;
        let mut hits = Vec::new();
        while read < budget && !self.wanted.is_empty() && self.at < self.pids.len() {
            let pid = self.pids[self.at];
            match self.process(pid, budget - read, &mut hits) {
                (n, Some(next_fd)) => {
                    read += n;
                    self.from_fd = next_fd;
                }
                (n, None) => {
                    read += n;
                    self.at += 1;
                    self.from_fd = 0;
                }
            }
        }
        (read, hits)
    }

    /// Reads process `pid`'s fds from `from_fd`, at most `budget` of them; (links read, the
    /// fd to resume at, None when the process is done).
    fn process(
        &mut self,
        pid: u32,
        budget: usize,
        hits: &mut Vec<(u32, Owner, u32)>,
    ) -> (usize, Option<u32>) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return (0, None);
        };
        let mut read = 0;
        for entry in dir.flatten() {
            let Some(fd) = std::str::from_utf8(entry.file_name().as_bytes())
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if fd < self.from_fd {
                continue;
            }
            if read >= budget {
                return (read, Some(fd));
            }
            read += 1;
            let Some(inode) = std::fs::read_link(entry.path())
                .ok()
                .and_then(|l| socket_inode(l.as_os_str().as_bytes()))
            else {
                continue;
            };
            if self.wanted.remove(&inode).is_some() {
                hits.push((
                    inode,
                    Owner {
                        pid,
                        comm: comm(pid),
                    },
                    fd,
                ));
                if self.wanted.is_empty() {
                    return (read, None);
                }
            }
        }
        (read, None)
    }
}

/// `socket:[INODE]` → INODE.
fn socket_inode(link: &[u8]) -> Option<u32> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The socket inode `/proc/PID/fd/FD` links to, if a socket.
fn link_inode(pid: u32, fd: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    socket_inode(link.as_os_str().as_bytes())
}

/// `/proc/PID/comm` (at most 64 bytes read), without its newline, lossily UTF-8; empty when
/// unreadable.
fn comm(pid: u32) -> String {
    use std::io::Read;
    let mut buf = Vec::with_capacity(64);
    let _ = std::fs::File::open(format!("/proc/{pid}/comm"))
        .and_then(|f| f.take(64).read_to_end(&mut buf));
    let name = buf.strip_suffix(b"\n").unwrap_or(&buf);
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_are_parsed() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
        assert_eq!(socket_inode(b"anon_inode:[eventfd]"), None);
    }

    /// This process's own socket is found by a pass over its pid; one nobody holds is missing
    /// after a whole pass and not looked for again within `MISS_TTL`.
    #[test]
    fn a_pass_finds_an_owner_and_remembers_a_miss() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino() as u32;
        let me = std::process::id();
        let now = Instant::now();
        let mut owners = Owners::new();
        assert_eq!(owners.known(inode, now), Known::Unknown);
        owners.want(7, inode, &[me]);
        owners.want(7, 1, &[me]); // no socket has inode 1
        assert!(owners.searching(7));
        assert_eq!(owners.next_slice(now), Some(now));
        owners.step(now);
        assert!(!owners.searching(7), "the pass ended");
        match owners.known(inode, now) {
            Known::Found(o) => {
                assert_eq!(o.pid, me);
                let comm = std::fs::read("/proc/self/comm").unwrap();
                assert_eq!(o.comm.as_bytes(), comm.strip_suffix(b"\n").unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(owners.known(1, now), Known::Missing);
        assert_eq!(owners.known(1, now + MISS_TTL), Known::Unknown);
        assert_eq!(owners.next_slice(now), None);
    }

    /// A slice reads at most `SLICE_FDS` links and the next one resumes after them; the
    /// budget of a second stops the slices until the next second.
    #[test]
    fn slices_resume_and_the_budget_bounds_them() {
        let mut pass = Pass {
            netns: 1,
            pids: vec![std::process::id()],
            at: 0,
            from_fd: 0,
            wanted: HashMap::from([(1, true)]),
        };
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
        let (read, hits) = pass.slice(1);
        assert_eq!((read, hits.len()), (1, 0));
        if fds > 2 {
            assert_eq!(pass.at, 0, "this process has more fds to read");
            assert!(pass.from_fd > 0);
        }
        let (rest, _) = pass.slice(usize::MAX);
        assert!(rest + 1 >= fds - 1, "read {} of {fds}", rest + 1);
        assert_eq!(pass.at, 1, "done");

        let now = Instant::now();
        let mut owners = Owners::new();
        owners.spent = FDS_PER_SECOND;
        owners.second = now;
        owners.want(1, 1, &[std::process::id()]);
        assert_eq!(owners.next_slice(now), Some(now + Duration::from_secs(1)));
        owners.step(now);
        assert!(owners.searching(1), "no budget left: nothing read");
        let later = now + Duration::from_secs(1);
        assert_eq!(owners.next_slice(later), Some(later));
        owners.step(later);
        assert!(!owners.searching(1));
    }
}
