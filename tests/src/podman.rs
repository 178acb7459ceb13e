//! A real podman container that runs the test client, so a test can check what the tracer
//! reports for a connect made inside a container (its cgroup, its container id).
//!
//! No registry and no image: the container's root is a directory made for it (`--rootfs`) that
//! holds only the client binary, the shared libraries `ldd` lists for it and the dynamic loader.
//! The container runs with runc (crun refuses a hybrid cgroup v1/v2 host), `--network none` (its
//! own network namespace with only a loopback, so every connect stays inside it), and ulimits it
//! can get without CAP_SYS_RESOURCE (see `ulimits`). It is started attached (`podman run --rm
//! -i`), so the client's stdout lines and stdin work as with [`Proc`]. The container and the
//! directory are removed on drop, also when the test fails.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::Proc;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long podman may take to create and start a container (about 0.2 s on the test VM).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the client lives inside the container.
const CLIENT_IN_CONTAINER: &str = "/tt-client";

pub struct Container {
    /// `tt-<pid>-<n>-<tag>`: the container's name, and the name of its folder in the temp dir.
    name: String,
    /// The folder holding `rootfs/` and `cid` (the id podman writes with `--cidfile`).
    dir: PathBuf,
    /// The attached `podman run` client; `None` once `wait` took it.
    proc: Option<Proc>,
}

/// Why a container cannot run here (`Err` lists every reason), or `Ok`.
pub fn available() -> Result<(), String> {
    let mut why = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        why.push("not root: the tests run rootful podman".to_string());
    }
    match Command::new("podman")
        .args(["info", "--format", "{{.Host.CgroupManager}}"])
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => why.push(format!(
            "cannot run podman ({e}): install podman, buildah and runc (cargo xtask setup does it)"
        )),
        Ok(out) if !out.status.success() => why.push(format!(
            "`podman info` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {}
    }
    for (tool, arg) in [("runc", "--version"), ("ldd", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            why.push(format!("cannot run `{tool} {arg}`: is {tool} installed?"));
        }
    }
    let has_cgroup2 = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
    if !has_cgroup2 {
        why.push("no cgroup v2 mount: a container's cgroup id is its cgroup v2 inode".into());
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// The shared libraries and the loader that `ldd` lists for `program` (none for a static one).
fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(program)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ldd: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": a static binary needs nothing beside it.
        return Vec::new();
    }
    text.lines()
        .filter_map(|line| {
            assert!(
                !line.contains("not found"),
                "ldd {}: a library is missing: {line}",
                program.display()
            );
            // `libc.so.6 => /lib/…/libc.so.6 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`, or
            // `linux-vdso.so.1 (0x…)` (in the kernel, no file).
            line.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// Copies `program` to `/tt-client` in a new `rootfs`, with its libraries at their own paths.
fn make_rootfs(rootfs: &Path, program: &Path) {
    std::fs::create_dir(rootfs)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", rootfs.display()));
    let mut files = vec![(program.to_path_buf(), rootfs.join("tt-client"))];
    for lib in shared_libraries(program) {
        let at = rootfs.join(lib.strip_prefix("/").expect("ldd lists absolute paths"));
        files.push((lib, at));
    }
    for (from, to) in files {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        // fs::copy follows symlinks (libc.so.6 may be one) and keeps the mode bits.
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
    }
}

/// podman lowers its own RLIMIT_NPROC to this (both limits) before it starts conmon and runc, so
/// a container cannot get more.
const PODMAN_NPROC: libc::rlim_t = 32768;

/// `--ulimit` arguments the container can get without CAP_SYS_RESOURCE: this process's own
/// nofile limits (podman's rootful default, 1048576, would be a raise that runc cannot make), and
/// its nproc limits capped at [`PODMAN_NPROC`].
pub fn ulimits() -> Vec<String> {
    let mut args = Vec::new();
    for (name, resource, cap) in [
        ("nofile", libc::RLIMIT_NOFILE, libc::RLIM_INFINITY),
        ("nproc", libc::RLIMIT_NPROC, PODMAN_NPROC),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `lim`, which outlives the call.
        if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
            continue;
        }
        args.push("--ulimit".into());
        args.push(format!(
            "{name}={}:{}",
            lim.rlim_cur.min(cap),
            lim.rlim_max.min(cap)
        ));
    }
    args
}

impl Container {
    /// Starts `client` (the tt-client binary) with `args` in a new container
    /// `tt-<pid>-<n>-<tag>`. Returns once `podman run` is started; [`Container::id`] and
    /// [`Container::pid`] wait for the container itself.
    pub fn run(tag: &str, client: &Path, args: &[&str]) -> Container {
        assert!(
            !tag.is_empty()
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "container tag {tag:?}: use letters, digits, '-', '_' or '.'"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tt-{}-{n}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // From here on Drop removes whatever was set up, also when a step below fails.
        let mut container = Container {
            name,
            dir,
            proc: None,
        };
        let rootfs = container.dir.join("rootfs");
        make_rootfs(&rootfs, client);
        let mut cmd = Command::new("podman");
        // Every option goes before `--rootfs DIR`: podman reads the first word that is not an
        // option as the image (here the rootfs), and everything after it as the command.
        cmd.args(["run", "--rm", "-i", "--name", &container.name])
            .arg("--cidfile")
            .arg(container.dir.join("cid"))
            .args(["--runtime", "runc", "--network", "none"])
            .args(ulimits())
            .arg("--rootfs")
            .arg(&rootfs)
            .arg(CLIENT_IN_CONTAINER)
            .args(args);
        container.proc = Some(Proc::spawn(cmd));
        container
    }

    /// The container's name, `tt-<pid>-<n>-<tag>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container id podman gave it: 64 hex digits, as in its cgroup `libpod-<id>`.
    pub fn id(&self) -> String {
        let cid = self.dir.join("cid");
        crate::wait_until(
            &format!("podman to create container {}", self.name),
            START_TIMEOUT,
            || {
                let id = std::fs::read_to_string(&cid).ok()?.trim().to_string();
                (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
            },
        )
    }

    /// The client's pid (in this pid namespace). The container must still be running: use the
    /// client's `--after-line` to hold it until the test has looked.
    pub fn pid(&self) -> u32 {
        crate::wait_until(
            &format!("container {} to be running", self.name),
            START_TIMEOUT,
            || {
                let out = Command::new("podman")
                    .args(["inspect", "--format", "{{.State.Pid}}", &self.name])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
                (out.status.success() && pid != 0).then_some(pid)
            },
        )
    }

    /// The client's cgroup v2 path (the `0::` line of /proc/PID/cgroup), such as
    /// `/libpod_parent/libpod-<id>` with podman's cgroupfs manager. Container running, as for
    /// [`Container::pid`].
    pub fn cgroup_path(&self) -> String {
        let pid = self.pid();
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_else(|| panic!("no cgroup v2 (0::) line in /proc/{pid}/cgroup: {text}"))
            .to_string()
    }

    /// The client's cgroup id, what `bpf_get_current_cgroup_id()` returns for it: the inode of
    /// its cgroup v2 folder. Container running, as for [`Container::pid`].
    pub fn cgroup_id(&self) -> u64 {
        let rel = self.cgroup_path();
        let path = crate::cgroup::cgroup2_mount().join(rel.trim_start_matches('/'));
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .ino()
    }

    fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("the client is running")
    }

    /// Every stdout line of the client so far.
    pub fn lines(&self) -> Vec<String> {
        self.proc().lines()
    }

    /// Waits for a stdout line of the client starting with `prefix`.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        self.proc().wait_line(prefix, timeout)
    }

    /// Writes one line to the client's stdin (e.g. the go for `--after-line`).
    pub fn send_line(&mut self, line: &str) {
        self.proc
            .as_mut()
            .expect("the client is running")
            .send_line(line);
    }

    /// Waits for the client to exit by itself; returns `podman run`'s status (the client's exit
    /// status, or 125-127 when podman or runc failed) and every stdout line of the client.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        self.proc
            .take()
            .expect("the client is running")
            .wait(timeout)
    }
}

/// Whether any mount point lies in `dir` (then its files are not ours to delete).
fn has_mount_under(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|mount_point| Path::new(mount_point).starts_with(dir))
}

impl Drop for Container {
    fn drop(&mut self) {
        // First the `podman run` client (our child, killed by its pid), so it cannot create the
        // container after the removal below.
        drop(self.proc.take());
        // `-t 0`: no grace period; the client is PID 1 in the container and ignores SIGTERM,
        // so podman would wait 10 s before SIGKILL. `-f` also succeeds when `--rm` removed it.
        match Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "podman rm -f {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cannot run podman rm -f {}: {e}", self.name),
        }
        if has_mount_under(&self.dir) {
            eprintln!(
                "not removing {}: something is still mounted in it",
                self.dir.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}
