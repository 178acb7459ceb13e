//! Runs a program inside the parts of a sandbox this machine can reproduce without systemd as
//! PID 1, for the tests that start the tracer as the shipped unit and configs do:
//! - `--netns PATH`: joins that network namespace (`setns`, without `ip netns exec`'s remount
//!   of `/sys`, which would unmount tracefs and the cgroup v2 hierarchy);
//! - `--hide-pids`: a mount namespace of its own whose `/proc` is a new procfs mounted
//!   `hidepid=invisible,subset=pid` (systemd's `ProtectProc=invisible` and `ProcSubset=pid`);
//! - `--hosts FILE`: `/etc/hosts` is FILE there (a name a shipped setting uses, e.g. the
//!   ConfigMap's Collector, resolves to the test's own receiver);
//! - `--nofile N`: the open-file limit (`LimitNOFILE=`);
//! - `--families AF_UNIX,AF_INET,…`: a seccomp filter, installed last, under which `socket()`
//!   of any other address family fails with EAFNOSUPPORT, as systemd's
//!   `RestrictAddressFamilies=` makes it fail (`socketpair()` is not filtered, as there).
//!
//! Then it execs the program (e.g. `setpriv`, for the user, capabilities and no_new_privs).
//! Everything it sets up ends with the process: the mount namespace, the filter, the limit.
use std::{collections::BTreeMap, os::unix::process::CommandExt, path::PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, setns, unshare},
    sys::resource::{Resource, setrlimit},
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Parser)]
struct Args {
    /// A network namespace to join (`/run/netns/NAME`).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Mount a new `/proc` with `hidepid=invisible,subset=pid` in a mount namespace of its own.
    #[arg(long)]
    hide_pids: bool,
    /// Bind-mount this file over `/etc/hosts` in a mount namespace of its own.
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// The open-file limit, soft and hard.
    #[arg(long)]
    nofile: Option<u64>,
    /// The only address families `socket()` may create (names as systemd spells them).
    #[arg(long, value_delimiter = ',')]
    families: Option<Vec<String>>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn family(name: &str) -> Result<libc::c_int> {
    Ok(match name {
        "AF_UNIX" | "AF_LOCAL" => libc::AF_UNIX,
        "AF_INET" => libc::AF_INET,
        "AF_INET6" => libc::AF_INET6,
        "AF_NETLINK" => libc::AF_NETLINK,
        "AF_PACKET" => libc::AF_PACKET,
        other => bail!("unknown address family {other}"),
    })
}

/// socket(DOMAIN, …) with DOMAIN none of `allowed`: EAFNOSUPPORT; everything else allowed.
fn families_filter(allowed: &[String]) -> Result<BpfProgram> {
    let conditions = allowed
        .iter()
        .map(|name| {
            let value = u64::try_from(family(name)?)?;
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, value)
                .context("a seccomp condition")
        })
        .collect::<Result<Vec<_>>>()?;
    if conditions.is_empty() {
        bail!("--families: at least one family");
    }
    let rules = BTreeMap::from([(libc::SYS_socket, vec![SeccompRule::new(conditions)?])]);
    let arch = TargetArch::try_from(std::env::consts::ARCH).context("this architecture")?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        arch,
    )?;
    Ok(filter.try_into()?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.netns {
        let ns = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("setns")?;
    }
    if args.hide_pids || args.hosts.is_some() {
        unshare(CloneFlags::CLONE_NEWNS).context("unshare a mount namespace")?;
        // Nothing mounted here propagates back to the host's namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("make / private")?;
    }
    if args.hide_pids {
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("hidepid=invisible,subset=pid"),
        )
        .context("mount /proc with hidepid=invisible,subset=pid")?;
    }
    if let Some(hosts) = &args.hosts {
        mount(
            Some(hosts.as_path()),
            "/etc/hosts",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind {} over /etc/hosts", hosts.display()))?;
    }
    if let Some(n) = args.nofile {
        setrlimit(Resource::RLIMIT_NOFILE, n, n).context("RLIMIT_NOFILE")?;
    }
    if let Some(families) = &args.families {
        let program = families_filter(families)?;
        seccompiler::apply_filter(&program).context("install the seccomp filter")?;
    }
    let err = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    bail!("exec {}: {err}", args.command[0])
}
