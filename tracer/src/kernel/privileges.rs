//! Does this process hold what loading eBPF programs takes?
use caps::{CapSet, Capability};

/// The capabilities missing for loading and attaching the programs (empty when all are held).
pub fn missing_capabilities() -> Vec<&'static str> {
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    if has(Capability::CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(Capability::CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(Capability::CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// The message for a user who lacks them: what, why, how to fix.
pub fn explain(missing: &[&str]) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tracer".into());
    format!(
        "missing capabilities {}: tracer loads eBPF programs and attaches them to kernel \
         tracepoints, which needs CAP_BPF and CAP_PERFMON (or root). Run it as root \
         (`sudo {exe}`), or grant them once: `sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep {exe}`",
        missing.join(", ")
    )
}

/// Whether this process may enter other network namespaces (`setns` needs CAP_SYS_ADMIN), to
/// list their listening sockets.
pub fn can_enter_namespaces() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false)
}

/// Whether this process may load the DNS capture (a cgroup_skb program: CAP_NET_ADMIN).
pub fn can_capture_dns() -> bool {
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    has(Capability::CAP_NET_ADMIN) || has(Capability::CAP_SYS_ADMIN)
}
