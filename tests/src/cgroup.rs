//! A cgroup v2 child with cgroup `connect` programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR) attached:
//! one that denies every connect (`r0 = 0; exit` at BPF_CGROUP_INET4_CONNECT and
//! BPF_CGROUP_INET6_CONNECT, so connect() fails with EPERM before any route lookup), or a test's
//! own instructions (e.g. a socket load balancer rewriting the destination, `kube::sock_lb`).
//! Loaded with raw bpf(2) (no libbpf); detached, closed and removed on drop, with any process
//! left in it killed by pid first.
use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{fs::MetadataExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{Netns, Proc};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
/// The bpf_attr size passed to bpf(2); the kernel requires the bytes it does not know to be 0.
const ATTR_SIZE: usize = 128;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct ConnectCgroup {
    path: PathBuf,
    dir: File,
    /// (program fd, attach type) of every program attached so far.
    progs: Vec<(OwnedFd, u32)>,
}

/// Where cgroup v2 is mounted (e.g. /sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1).
pub fn cgroup2_mount() -> PathBuf {
    find_cgroup2_mount()
        .expect("no cgroup v2 mount in /proc/self/mounts: a cgroup connect4 program needs one")
}

/// The first cgroup v2 mount in /proc/self/mounts, if any.
pub fn find_cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a bpf_attr of ATTR_SIZE bytes that outlives the call; the pointers in it
    // point at buffers the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(attr: &mut [u8; ATTR_SIZE], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_SIZE], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// `r0 = 0; exit`: BPF_MOV64_IMM(r0, 0) (opcode 0xb7), BPF_EXIT_INSN (opcode 0x95).
const DENY: [u64; 2] = [0xb7, 0x95];

/// Loads `insns` as a cgroup sock_addr program named `name` (at most 15 bytes: the kernel's
/// `prog_name`, what `bpftool cgroup tree` shows) for `attach_type`.
fn load(name: &str, insns: &[u64], attach_type: u32) -> io::Result<OwnedFd> {
    assert!(
        name.len() < 16 && name.is_ascii(),
        "a program name of at most 15 bytes"
    );
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR); // prog_type
    put_u32(&mut attr, 4, insns.len() as u32); // insn_cnt
    put_u64(&mut attr, 8, insns.as_ptr() as u64); // insns
    put_u64(&mut attr, 16, license.as_ptr() as u64); // license
    put_u32(&mut attr, 24, 1); // log_level
    put_u32(&mut attr, 28, log.len() as u32); // log_size
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64); // log_buf
    attr[48..48 + name.len()].copy_from_slice(name.as_bytes()); // prog_name[16]
    put_u32(&mut attr, 68, attach_type); // expected_attach_type
    let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        io::Error::new(
            e.kind(),
            format!("{e}; verifier: {}", String::from_utf8_lossy(&log[..end])),
        )
    })?;
    // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn attach_attr(cgroup: &File, prog: &OwnedFd, attach_type: u32) -> [u8; ATTR_SIZE] {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, cgroup.as_raw_fd() as u32); // target_fd
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32); // attach_bpf_fd
    put_u32(&mut attr, 8, attach_type); // attach_type
    attr
}

impl ConnectCgroup {
    /// Creates the child cgroup `tt-<pid>-<n>-<tag>` under the cgroup v2 mount and attaches the
    /// deny programs (`tt_deny_connect`) to it.
    pub fn deny(tag: &str) -> Self {
        Self::with_programs(
            tag,
            &[
                ("tt_deny_connect", &DENY, BPF_CGROUP_INET4_CONNECT),
                ("tt_deny_connect", &DENY, BPF_CGROUP_INET6_CONNECT),
            ],
        )
    }

    /// Creates the child cgroup `tt-<pid>-<n>-<tag>` and attaches each `(name, instructions,
    /// attach type)` to it.
    pub fn with_programs(tag: &str, programs: &[(&str, &[u64], u32)]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = cgroup2_mount().join(format!("tt-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        let dir = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                panic!("cannot open cgroup {}: {e}", path.display());
            }
        };
        // From here on Drop removes whatever was set up, also when an attach fails.
        let mut cg = ConnectCgroup {
            path,
            dir,
            progs: Vec::new(),
        };
        for &(name, insns, attach_type) in programs {
            let prog = load(name, insns, attach_type).unwrap_or_else(|e| {
                panic!("BPF_PROG_LOAD {name} (cgroup/connect {attach_type}): {e}")
            });
            let mut attr = attach_attr(&cg.dir, &prog, attach_type);
            bpf(BPF_PROG_ATTACH, &mut attr).unwrap_or_else(|e| {
                panic!(
                    "BPF_PROG_ATTACH to {} (type {attach_type}): {e}",
                    cg.path.display()
                )
            });
            cg.progs.push((prog, attach_type));
        }
        cg
    }

    /// The cgroup's id: what the tracer reports as `cgroup_id` for a process in it.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path)
            .expect("stat the cgroup")
            .ino()
    }

    /// Starts `program` inside `ns` as a member of this cgroup (see `spawn_in_cgroup`).
    pub fn spawn_in(&self, ns: &Netns, program: &Path, args: &[&str]) -> Proc {
        spawn_in_cgroup(&self.path, ns, program, args)
    }
}

/// Starts `program` inside `ns` as a member of the cgroup at `dir`. The child joins the cgroup
/// (writes 0 to cgroup.procs) before `ip netns exec`, which remounts /sys and would hide it.
pub fn spawn_in_cgroup(dir: &Path, ns: &Netns, program: &Path, args: &[&str]) -> Proc {
    let procs = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(program)
        .args(args);
    // SAFETY: the closure runs in the forked child before exec and only calls write(2),
    // which is async-signal-safe, on an fd the parent keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let proc = Proc::spawn(cmd);
    drop(procs);
    proc
}

/// The pids in the cgroup at `dir`.
fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills the processes in the cgroup at `dir` (only this test's: it created the cgroup) and
/// waits for them to be gone, at most 5 s. No panic: it runs in `Drop`.
fn empty(dir: &Path) {
    for pid in members(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !members(dir).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup path as a container runtime or systemd lays it out (`/system.slice/nginx.service`,
/// `/kubepods/burstable/pod<uid>/<id>`), created under the cgroup v2 mount's root. Only the
/// directories that did not exist are created, and those are removed on drop, leaf first, with
/// any process this test left in them killed by pid.
pub struct WorkloadCgroup {
    /// The path from the hierarchy's root, as the tracer reports it.
    pub path: String,
    /// The directories this guard created, rootmost first.
    created: Vec<PathBuf>,
    leaf: PathBuf,
}

impl WorkloadCgroup {
    pub fn create(path: &str) -> Self {
        let mut guard = Self {
            path: path.to_string(),
            created: Vec::new(),
            leaf: cgroup2_mount(),
        };
        for part in path.split('/').filter(|p| !p.is_empty()) {
            guard.leaf.push(part);
            if !guard.leaf.exists() {
                std::fs::create_dir(&guard.leaf).unwrap_or_else(|e| {
                    panic!("cannot create cgroup {}: {e}", guard.leaf.display())
                });
                guard.created.push(guard.leaf.clone());
            }
        }
        guard
    }

    /// The cgroup's id: what the tracer reports as `cgroup_id` for a process in it.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.leaf)
            .expect("stat the cgroup")
            .ino()
    }

    /// Starts `program` inside `ns` as a member of this cgroup.
    pub fn spawn_in(&self, ns: &Netns, program: &Path, args: &[&str]) -> Proc {
        spawn_in_cgroup(&self.leaf, ns, program, args)
    }

    /// Removes the cgroup now (what a runtime does when its container exits).
    pub fn remove(self) {
        drop(self);
    }
}

impl Drop for WorkloadCgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            empty(dir);
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("could not remove cgroup {}: {e}", dir.display());
            }
        }
    }
}

impl Drop for ConnectCgroup {
    fn drop(&mut self) {
        for (prog, attach_type) in self.progs.drain(..) {
            let mut attr = attach_attr(&self.dir, &prog, attach_type);
            if let Err(e) = bpf(BPF_PROG_DETACH, &mut attr) {
                eprintln!("BPF_PROG_DETACH from {}: {e}", self.path.display());
            }
        }
        // Only processes this test started are in the cgroup it created; a client that is still
        // running (the test failed before it ended) is killed by its pid.
        empty(&self.path);
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("could not remove cgroup {}: {e}", self.path.display());
        }
    }
}

/// A memory cgroup with a limit (`memory.max` on cgroup v2, `memory.limit_in_bytes` where the
/// memory controller is on a v1 hierarchy, as on a hybrid host), for running the tracer as the
/// DaemonSet runs it: in 256 MiB. Removed on drop, with any process left in it killed by pid.
pub struct MemoryCgroup {
    dir: PathBuf,
}

/// Where the memory controller is: the cgroup v2 mount if it offers `memory`, else the cgroup v1
/// hierarchy mounted with it. `true`: v2.
fn memory_hierarchy() -> (PathBuf, bool) {
    if let Some(v2) = find_cgroup2_mount()
        && std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    {
        return (v2, true);
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    let v1 = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    });
    (
        v1.expect("no memory controller: neither on the cgroup v2 mount nor on a v1 hierarchy"),
        false,
    )
}

impl MemoryCgroup {
    /// Creates `tt-<pid>-<n>-<tag>` at the memory hierarchy's root, limited to `bytes`.
    pub fn new(tag: &str, bytes: u64) -> Self {
        let (root, v2) = memory_hierarchy();
        if v2 {
            // The root's children get the controller only if the root hands it down.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("tt-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        let cg = MemoryCgroup { dir };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cg.dir.join(file), bytes.to_string())
            .unwrap_or_else(|e| panic!("cannot set {file} of {}: {e}", cg.dir.display()));
        // No swap to hide in (where the kernel accounts it).
        let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        cg
    }

    /// Times the kernel's OOM killer acted in this cgroup (v2 `memory.events`, v1
    /// `memory.oom_control`).
    pub fn oom_kills(&self) -> u64 {
        let events = std::fs::read_to_string(self.dir.join("memory.events"))
            .or_else(|_| std::fs::read_to_string(self.dir.join("memory.oom_control")))
            .unwrap_or_default();
        events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Makes `cmd`'s process join this cgroup before it execs (it writes 0 to `cgroup.procs`).
    pub fn join_at_exec(&self, cmd: &mut Command) {
        let procs = OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("open cgroup.procs");
        let fd = procs.as_raw_fd();
        // The fd must stay open in the parent until the child has forked: it is leaked into the
        // closure, which the Command keeps (and drops with it).
        let procs = std::sync::Arc::new(procs);
        // SAFETY: the closure runs in the forked child before exec and only calls write(2),
        // which is async-signal-safe, on an fd the closure keeps open (the `Arc` it holds).
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &procs;
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }

    /// The pids in the cgroup.
    pub fn members(&self) -> Vec<i32> {
        members(&self.dir)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        empty(&self.dir);
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("could not remove cgroup {}: {e}", self.dir.display());
        }
    }
}
