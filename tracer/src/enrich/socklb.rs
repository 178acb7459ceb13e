//! Socket-level load balancing (Cilium's socket-LB and the like): a `cgroup/connect4` or
//! `cgroup/connect6` program rewrites the destination inside connect(). The kernel side tells
//! that it happened (`VALID_REQUESTED`: the sockaddr the application passed differs from the
//! socket's destination); this module names the programs that could have done it: those
//! effective for the caller's cgroup (`BPF_PROG_QUERY` with `BPF_F_QUERY_EFFECTIVE`, which
//! includes the ones its ancestors attached), by their kernel names.
//!
//! Bounded: `SockLb` keeps at most `CAP` cgroups' answers, each for `TTL`; a question costs
//! two `bpf(2)` queries and one walk of the loaded programs' ids.
use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::enrich::workload::cgroupfs::Cgroupfs;

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;
/// The `bpf_attr` bytes passed (the kernel wants every byte it does not know zeroed).
const ATTR_SIZE: usize = 128;
/// Program ids read per attach type at most: a cgroup's effective programs are a handful.
const MAX_IDS: usize = 64;

/// How long an answer is kept, and how many cgroups' answers.
pub const TTL: Duration = Duration::from_secs(5);
pub const CAP: usize = 4096;

/// The names of the `cgroup/connect4` and `cgroup/connect6` programs effective for the cgroup
/// v2 `cgroup_id` (its own and its ancestors'), connect4's first, without duplicates. Empty:
/// none. An error: the cgroup is gone, or the caller may not query (CAP_NET_ADMIN/CAP_BPF).
pub fn connect_programs(cgroup_id: u64) -> io::Result<Vec<String>> {
    connect_programs_in(&Cgroupfs::find()?, cgroup_id)
}

/// As `connect_programs`, in the cgroup v2 hierarchy `fs`.
pub fn connect_programs_in(fs: &Cgroupfs, cgroup_id: u64) -> io::Result<Vec<String>> {
    let dir = fs.open_by_id(cgroup_id)?;
    let mut ids = Vec::new();
    for attach_type in [BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT] {
        for id in query(dir.as_fd(), attach_type)? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: HashMap<u32, String> = HashMap::new();
    for info in aya::programs::loaded_programs().flatten() {
        if ids.contains(&info.id()) {
            names.insert(info.id(), program_name(info.name()));
        }
        if names.len() == ids.len() {
            break;
        }
    }
    // A program unloaded between the two questions is left out.
    Ok(ids.iter().filter_map(|id| names.remove(id)).collect())
}

/// A kernel program name (at most 15 bytes, letters, digits, `_` and `.`), lossily, never
/// empty (an unnamed program is `?`).
fn program_name(raw: &[u8]) -> String {
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    if raw.is_empty() {
        "?".to_string()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

/// The ids of the programs effective at `attach_type` for the cgroup `dir` (at most `MAX_IDS`).
fn query(dir: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; MAX_IDS];
    let mut attr = [0u8; ATTR_SIZE];
    // struct { u32 target_fd; u32 attach_type; u32 query_flags; u32 attach_flags;
    //          u64 prog_ids; u32 prog_cnt; ... } query
    attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_F_QUERY_EFFECTIVE.to_ne_bytes());
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(MAX_IDS as u32).to_ne_bytes());
    // SAFETY: `attr` is a bpf_attr of ATTR_SIZE bytes and `ids` a buffer of MAX_IDS u32, both
    // alive across the call; the kernel writes at most prog_cnt ids into it and prog_cnt back
    // into `attr`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, attr.as_mut_ptr(), ATTR_SIZE) };
    let count = u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]) as usize;
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENOSPC: more than MAX_IDS programs; the first MAX_IDS were written.
        if e.raw_os_error() != Some(libc::ENOSPC) {
            return Err(e);
        }
    }
    Ok(ids[..count.min(MAX_IDS)].to_vec())
}

/// The names of a cgroup's connect programs, shared by every record that asks.
pub type Programs = Arc<[String]>;

/// The connect programs of each cgroup asked about, kept `TTL`, at most `CAP` cgroups.
pub struct SockLb {
    fs: Option<Cgroupfs>,
    cache: HashMap<u64, (Instant, Option<Programs>)>,
}

impl SockLb {
    /// In the cgroup v2 hierarchy of this mount namespace (none found: every answer is None).
    pub fn new() -> Self {
        Self::with(Cgroupfs::find().ok())
    }

    pub fn with(fs: Option<Cgroupfs>) -> Self {
        Self {
            fs,
            cache: HashMap::new(),
        }
    }

    /// The programs effective for `cgroup_id` (see `connect_programs`), None when they could
    /// not be asked for (the cgroup is gone, no permission, no cgroup v2).
    pub fn programs(&mut self, cgroup_id: u64, now: Instant) -> Option<Programs> {
        if let Some((at, answer)) = self.cache.get(&cgroup_id)
            && now.saturating_duration_since(*at) < TTL
        {
            return answer.clone();
        }
        let answer = self
            .fs
            .as_ref()
            .and_then(|fs| connect_programs_in(fs, cgroup_id).ok())
            .map(Arc::from);
        self.insert(cgroup_id, now, answer.clone());
        answer
    }

    /// Keeps an answer; at `CAP` the expired ones go first, then the oldest.
    fn insert(&mut self, cgroup_id: u64, now: Instant, answer: Option<Programs>) {
        if self.cache.len() >= CAP && !self.cache.contains_key(&cgroup_id) {
            self.cache
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < TTL);
            if self.cache.len() >= CAP
                && let Some(oldest) = self
                    .cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(id, _)| *id)
            {
                self.cache.remove(&oldest);
            }
        }
        self.cache.insert(cgroup_id, (now, answer));
    }

    /// Cgroups whose answer is kept.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

impl Default for SockLb {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_name_is_cut_at_its_nul_and_never_empty() {
        assert_eq!(program_name(b"cil_sock4_conn\0\0"), "cil_sock4_conn");
        assert_eq!(program_name(b"\0abc"), "?");
        assert_eq!(program_name(b""), "?");
        assert_eq!(program_name(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn answers_are_kept_for_their_ttl_and_the_cache_is_bounded() {
        // No cgroup v2: every answer is None, and still cached.
        let mut lb = SockLb::with(None);
        let t0 = Instant::now();
        assert_eq!(lb.programs(1, t0), None);
        lb.insert(1, t0, Some(Arc::from(vec!["lb4".to_string()])));
        assert_eq!(
            lb.programs(1, t0 + Duration::from_secs(4)).as_deref(),
            Some(&["lb4".to_string()][..])
        );
        // Expired: asked again (None without a hierarchy).
        assert_eq!(lb.programs(1, t0 + TTL), None);
        for id in 0..(CAP as u64 + 100) {
            lb.programs(id + 10, t0 + TTL);
        }
        assert_eq!(lb.len(), CAP);
        // Past the TTL the expired ones make room at once.
        lb.programs(1 << 40, t0 + TTL * 3);
        assert_eq!(lb.len(), 1);
    }
}
