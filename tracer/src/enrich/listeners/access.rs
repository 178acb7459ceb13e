//! What the listener lookups need of the process's sandbox, probed at start-up (one stderr
//! line per limit, `session.rs`) and by `tracer check`, so that a sandbox that denies them
//! (systemd's `RestrictAddressFamilies=`, `ProtectProc=`, a container without the host's pid
//! namespace, a seccomp profile) never turns them off silently:
//! - `netlink`: every lookup opens netlink sockets, sock_diag for the listening sockets and
//!   rtnetlink (`getifaddrs`) for the namespace's addresses. Denied, no refusal names its
//!   listeners and no listen-queue overflow is seen, in any namespace.
//! - `owners`: a listener's process is found by reading `/proc/PID/fd` of the namespace's
//!   processes, which the kernel allows only where the tracer may ptrace-read the process
//!   (CAP_SYS_PTRACE, or the same uid and no capability the tracer lacks), among the processes
//!   of its own pid namespace; `/proc` mounted `hidepid=invisible` does not even list the rest.
//!   Those listeners are named by address and uid only.
//!
//! Entering other namespaces (`setns`, CAP_SYS_ADMIN) is found out by the worker itself
//! (`Listeners::capability_note`) and checked by `tracer check`.
use std::os::unix::fs::MetadataExt;

use caps::{CapSet, Capability};
use netlink_sys::{
    Socket,
    protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG},
};

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, include/linux/proc_ns.h).
const HOST_PID_NS: u64 = 0xEFFF_FFFC;

/// Opens (and closes) the netlink sockets the lookups use. Err: which one was refused and why.
pub fn netlink() -> Result<(), String> {
    for (protocol, name) in [
        (NETLINK_SOCK_DIAG, "NETLINK_SOCK_DIAG"),
        (NETLINK_ROUTE, "NETLINK_ROUTE"),
    ] {
        if let Err(e) = Socket::new(protocol) {
            return Err(format!(
                "a netlink socket (AF_NETLINK, {name}) was refused: {e}"
            ));
        }
    }
    Ok(())
}

/// What a refused netlink socket costs, and what to do: for stderr and `tracer check`.
pub fn netlink_cost(why: &str) -> String {
    format!(
        "{why}: no refusal names its listeners (`evidence.listeners`) and no listen-queue \
         overflow is reported (`listen_overflow`), in any network namespace (allow AF_NETLINK: \
         a systemd unit's RestrictAddressFamilies= must list it; a seccomp profile must allow \
         socket(AF_NETLINK); or run with --no-listeners)"
    )
}

/// Whether the owner of every listener can be found; Err: which processes cannot be read,
/// what it costs and what to do.
pub fn owners() -> Result<(), String> {
    let mut limits = Vec::new();
    let pid_ns = std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino());
    if pid_ns.as_ref().is_ok_and(|ino| *ino != HOST_PID_NS) {
        limits.push(
            "the tracer is not in the host's pid namespace, so only the processes of its own are \
             seen (run it in the host's pid namespace: hostPID in a pod)"
                .to_string(),
        );
    }
    let ptrace =
        caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_PTRACE).unwrap_or(false);
    if !ptrace {
        let uid = nix::unistd::geteuid();
        let mut limit = format!(
            "without CAP_SYS_PTRACE a process's /proc/PID/fd can be read only when it runs as \
             uid {uid} with no capability the tracer lacks"
        );
        if proc_hides_pids(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()) {
            limit.push_str(
                ", and /proc is mounted hidepid (systemd's ProtectProc=) so the others are not \
                 even listed",
            );
        }
        limits.push(limit);
    }
    if limits.is_empty() {
        return Ok(());
    }
    Err(format!(
        "listening sockets of other processes are named by address and uid, not by process \
         (pid, comm): {}",
        limits.join("; ")
    ))
}

/// Whether the `/proc` of a `/proc/self/mountinfo` text hides processes (`hidepid=` other
/// than 0/off).
fn proc_hides_pids(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        let mut fields = l.split(' ');
        let mount_point = fields.nth(4);
        // After the optional fields: `- FSTYPE SOURCE SUPER_OPTIONS`.
        let Some((_, tail)) = l.split_once(" - ") else {
            return false;
        };
        let mut tail = tail.split(' ');
        let (fstype, super_options) = (tail.next(), tail.nth(1));
        mount_point == Some("/proc")
            && fstype == Some("proc")
            && super_options.is_some_and(|o| {
                o.split(',').any(|opt| {
                    opt.strip_prefix("hidepid=")
                        .is_some_and(|v| v != "0" && v != "off")
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidepid_is_read_from_procs_super_options() {
        let hidden = "22 26 0:5 / /proc rw,nosuid,nodev,noexec shared:12 - proc proc rw,hidepid=invisible,subset=pid\n";
        let plain = "22 26 0:5 / /proc rw,nosuid,nodev,noexec shared:12 - proc proc rw\n";
        let off = "22 26 0:5 / /proc rw,nosuid master:3 - proc proc rw,hidepid=off\n";
        let elsewhere = "40 26 0:5 / /mnt/proc rw - proc proc rw,hidepid=2\n";
        assert!(proc_hides_pids(hidden));
        assert!(proc_hides_pids(&format!(
            "{plain}{}",
            hidden.replace("invisible", "2")
        )));
        assert!(!proc_hides_pids(plain));
        assert!(!proc_hides_pids(off));
        assert!(!proc_hides_pids(elsewhere));
        assert!(!proc_hides_pids("garbage\n\n - -"));
    }
}
