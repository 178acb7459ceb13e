//! `tracer check`: every prerequisite, hook and struct field, one line each.
use std::process::ExitCode;

use crate::{
    cli::EnvArgs,
    enrich::listeners::access,
    kernel::btf::KernelBtf,
    kernel::offsets::{Check, hooks_unreachable, resolve},
    kernel::privileges,
    kernel::tracefs::Tracefs,
};

/// Everything `run` needs, as checks (privileges, tracefs, BTF, tracepoints, fields).
pub fn checks(args: &EnvArgs) -> Vec<Check> {
    let mut out = Vec::new();
    let missing = privileges::missing_capabilities();
    out.push(if missing.is_empty() {
        Check::ok("privileges", "CAP_BPF and CAP_PERFMON (or root)")
    } else {
        Check::missing("privileges", privileges::explain(&missing), true)
    });
    out.extend(listener_checks());
    let btf_path = args.btf.display().to_string();
    let btf = KernelBtf::open(&btf_path);
    out.push(match &btf {
        Ok(_) => Check::ok("btf", btf_path.clone()),
        Err(e) => Check::missing(
            "btf",
            format!("{e}: struct-field evidence (sk_err, netns, probes) degrades; needs a kernel built with CONFIG_DEBUG_INFO_BTF"),
            false,
        ),
    });
    out.push(match crate::enrich::workload::cgroupfs::Cgroupfs::find() {
        Ok(fs) => Check::ok("cgroup v2", fs.mount().display().to_string()),
        Err(e) => Check::missing(
            "cgroup v2",
            format!(
                "{e}: every process's cgroup is the v2 root, so records name no unit, container \
                 or pod (a cgroup v1-only host; mount cgroup2, e.g. `mount -t cgroup2 none \
                 /sys/fs/cgroup/unified`, or boot with systemd.unified_cgroup_hierarchy=1)"
            ),
            false,
        ),
    });
    out.push(dns_check());
    out.push(netfilter_check());
    out.push(own_check(
        &std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
    ));
    match Tracefs::locate(args.tracefs.as_deref()) {
        Ok(t) => {
            out.push(Check::ok("tracefs", t.root().display().to_string()));
            out.extend(resolve(&t, btf.as_ref().map_err(|e| e.as_str())).checks);
        }
        Err(e) => {
            out.push(Check::missing("tracefs", e.to_string(), true));
            out.extend(hooks_unreachable("tracefs is not mounted"));
        }
    }
    out
}

/// The listener lookups: netlink sockets, the owners' `/proc/PID/fd`, other namespaces.
fn listener_checks() -> [Check; 3] {
    [
        match access::netlink() {
            Ok(()) => Check::ok(
                "listeners",
                "netlink sock_diag and rtnetlink sockets (AF_NETLINK)",
            ),
            Err(why) => Check::missing("listeners", access::netlink_cost(&why), false),
        },
        match access::owners() {
            Ok(()) => Check::ok(
                "listener owners",
                "every process's /proc/PID/fd (CAP_SYS_PTRACE, the host's pid namespace)",
            ),
            Err(why) => Check::missing("listener owners", why, false),
        },
        if privileges::can_enter_namespaces() {
            Check::ok(
                "listeners in other namespaces",
                "sock_diag in every network namespace (CAP_SYS_ADMIN enters them)",
            )
        } else {
            Check::missing(
                "listeners in other namespaces",
                "no CAP_SYS_ADMIN: the listening sockets of other network namespaces than the \
                 tracer's own are unknown, so refusals there name no listeners and their \
                 listen-queue overflows are not seen (grant CAP_SYS_ADMIN, and run in the host's \
                 pid namespace)",
                false,
            )
        },
    ]
}

/// The nftables rulesets (Services from kube-proxy's rules, the rule that dropped a SYN): a
/// `NETLINK_NETFILTER` socket and the ruleset generation, in the tracer's own namespace.
fn netfilter_check() -> Check {
    use crate::enrich::netfilter::dump;
    let asked = dump::socket().map_err(|e| e.to_string()).and_then(|sock| {
        dump::Session::new(&sock, 1 << 16)
            .generation()
            .map_err(|e| e.to_string())
    });
    match asked {
        Ok(generation) => Check::ok(
            "netfilter rulesets",
            format!(
                "nftables over NETLINK_NETFILTER (generation {generation}): kube-proxy's Services \
                 (nftables and iptables-nft modes) and the rule that dropped a SYN{}",
                if privileges::can_enter_namespaces() {
                    ", in every network namespace"
                } else {
                    "; only the tracer's own network namespace (no CAP_SYS_ADMIN to enter others)"
                }
            ),
        ),
        Err(why) => Check::missing(
            "netfilter rulesets",
            format!(
                "{why}: no Service is named from kube-proxy's rules and no rule for a dropped SYN \
                 (grant CAP_NET_ADMIN and allow AF_NETLINK, or run with --no-netfilter)"
            ),
            false,
        ),
    }
}

/// The DNS capture: a cgroup_skb program (CAP_NET_ADMIN) on the cgroup v2 root.
fn dns_check() -> Check {
    let root = crate::enrich::workload::cgroupfs::Cgroupfs::find();
    match (privileges::can_capture_dns(), root) {
        (true, Ok(fs)) => Check::ok(
            "dns",
            format!(
                "DNS answers of every namespace, cgroup_skb ingress on {}",
                fs.mount().display()
            ),
        ),
        (false, _) => Check::missing(
            "dns",
            "no CAP_NET_ADMIN: the DNS capture (a cgroup_skb program) cannot attach, so records \
             name no destination (grant CAP_NET_ADMIN, or run with --no-dns)",
            false,
        ),
        (true, Err(e)) => Check::missing(
            "dns",
            format!(
                "{e}: the DNS capture attaches to the cgroup v2 root, so records name no \
                 destination (mount cgroup2, or run with --no-dns)"
            ),
            false,
        ),
    }
}

/// The tracer's own connects are skipped in the kernel once it knows its own tgid, which a test
/// run of a raw tracepoint program tells (Linux 5.10); `run` says so if that fails all the same.
fn own_check(osrelease: &str) -> Check {
    let mut v = osrelease
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if version >= (5, 10) {
        Check::ok(
            "own connections",
            "the tracer's own connects (its sinks, its OTLP exporter) are skipped in the kernel",
        )
    } else {
        Check::missing(
            "own connections",
            format!(
                "Linux {}.{} cannot test-run a raw tracepoint program (5.10 can), so the kernel \
                 side cannot tell the tracer's own pid: its own connects (--output tcp:, the \
                 OTLP exporter) are reported as this host's and enter the summaries",
                version.0, version.1
            ),
            false,
        )
    }
}

pub fn main(args: &EnvArgs) -> ExitCode {
    let checks = checks(args);
    for c in &checks {
        println!(
            "{:<8} {}: {}",
            if c.ok { "ok" } else { "missing" },
            c.name,
            c.detail
        );
    }
    let bad = checks.iter().filter(|c| !c.ok).count();
    if bad == 0 {
        println!("all {} checks ok", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{bad} of {} checks failed", checks.len());
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::own_check;

    #[test]
    fn own_connections_are_skipped_from_linux_5_10() {
        assert!(own_check("6.18.0-1-amd64\n").ok);
        assert!(own_check("5.10.0").ok);
        assert!(!own_check("5.9.16-arch1").ok);
        assert!(!own_check("4.19.0-27-amd64").ok);
        assert!(!own_check("").ok, "unknown: not claimed");
    }
}
