//! A network namespace owned by one test, removed on drop.
use std::{
    io::Write,
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::process::Proc;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    /// The namespace's inode: what the tracer reports as `netns` and filters on.
    pub inode: u32,
    veths: std::cell::Cell<u32>,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// A fresh namespace with only `lo`, up. `tag` names it for whoever lists namespaces.
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tt-{}-{n}-{tag}", std::process::id());
        sh(Command::new("ip").args(["netns", "add", &name]));
        let mut ns = Netns {
            inode: 0,
            name,
            veths: Default::default(),
        };
        ns.inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
            .expect("stat /run/netns/NAME")
            .ino() as u32;
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Its bind mount, `/run/netns/NAME`.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread of its own inside the namespace (`setns` of that thread only): a
    /// socket it creates stays in the namespace, e.g. a server's listener, and a connect it
    /// makes goes to the namespace's addresses.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Runs a command inside the namespace and returns its stdout; panics if it fails.
    pub fn exec(&self, argv: &[&str]) -> String {
        sh(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv))
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Loads an nftables ruleset (nft -f syntax) into the namespace.
    pub fn nft(&self, ruleset: &str) {
        self.exec_with_input(&["nft", "-f", "-"], ruleset);
    }

    /// Runs a command inside the namespace with `input` on its stdin and returns its stdout;
    /// panics (with the input) if it fails.
    pub fn exec_with_input(&self, argv: &[&str], input: &str) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?} failed: {}\n{input}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Joins this namespace to `peer` with a veth pair: `local` (CIDR) on a new interface here,
    /// and `peer_addr` (CIDR) on its peer there, or no address there when `None`. Returns the
    /// local interface's name.
    pub fn veth(&self, peer: &Netns, local: &str, peer_addr: Option<&str>) -> String {
        let n = self.veths.get();
        self.veths.set(n + 1);
        let (here, there) = (format!("tt{n}"), format!("tt{n}p"));
        sh(Command::new("ip").args([
            "-n", &self.name, "link", "add", &here, "type", "veth", "peer", "name", &there,
            "netns", &peer.name,
        ]));
        self.exec(&["ip", "addr", "add", local, "dev", &here]);
        self.exec(&["ip", "link", "set", &here, "up"]);
        if let Some(addr) = peer_addr {
            peer.exec(&["ip", "addr", "add", addr, "dev", &there]);
        }
        peer.exec(&["ip", "link", "set", &there, "up"]);
        here
    }

    /// Starts a program inside the namespace. `ip netns exec` execs in place, so the pid is
    /// the program's own.
    pub fn spawn(&self, program: &std::path::Path, args: &[&str]) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        Proc::spawn(cmd)
    }

    /// Makes `cmd` run inside the namespace (setns(2) before exec), without `ip netns exec`'s
    /// remount of /sys: a tracer started so keeps tracefs, BTF and the cgroup v2 mount, and its
    /// own connections (sinks, exporter) are made in this namespace.
    pub fn join_at_exec(&self, cmd: &mut std::process::Command) {
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        let ns = std::sync::Arc::new(
            std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open /run/netns/NAME"),
        );
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe, on an fd the closure keeps open (the `Arc` it holds).
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &ns;
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// Starts the test client inside the namespace.
    pub fn client(&self, args: &[&str]) -> Proc {
        self.spawn(&crate::client_bin(), args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Removes the namespace with its nftables rules and sysctls. Processes still inside
        // were started by the test and are ended by their own guards.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
