//! Everything before the first record on the kernel side: the preflight (capabilities, tracefs,
//! BTF, offsets), which programs to attach in which mode, then loading and attaching them.
//! What the user must change comes back as [`AttachError::Environment`] or
//! [`AttachError::PermissionDenied`]; the caller maps it to an exit.
use std::path::PathBuf;

use tracer_common::{Config, MEMBER_MISSING};

use crate::kernel::{
    btf::KernelBtf,
    loader::{self, LoadError, LoadOptions, Loaded},
    offsets::{CONNECT_CALL_PROGRAMS, HOOKS, Resolved, resolve},
    privileges,
    tracefs::Tracefs,
};

/// What to attach, and how.
pub struct AttachRequest {
    /// `--tracefs`: where tracefs is, when not at one of the usual places.
    pub tracefs: Option<PathBuf>,
    /// `--btf`: the kernel's BTF.
    pub btf: PathBuf,
    /// The kernel side's configuration, filters already in it; the mode fields are set here.
    pub config: Config,
    /// `--netns` asks for a namespace: the socket's netns must be readable.
    pub needs_netns: bool,
    /// `--classic-tracepoints`: the compatibility mode.
    pub classic_tracepoints: bool,
    /// `--no-connect-calls`.
    pub no_connect_calls: bool,
    /// Without `--nat`: no `net_dev_queue`.
    pub no_nat: bool,
    pub max_sockets: u32,
    pub ring_buffer_bytes: u32,
    /// The cgroup v2 root for the DNS capture, if it runs.
    pub dns_root: Option<PathBuf>,
}

/// The programs running, and the kernel's BTF when it could be read.
pub struct Attached {
    pub loaded: Loaded,
    pub btf: Result<KernelBtf, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Privileges, tracefs, kernel support: what the user must change.
    #[error("{0}")]
    Environment(String),
    /// The kernel refused a program or a map (EPERM/EACCES) although the capabilities are there.
    #[error(
        "{0}: the kernel refused; is this a locked-down kernel or a restricted container? Try \
         `tracer check`"
    )]
    PermissionDenied(LoadError),
    #[error(transparent)]
    Load(LoadError),
}

/// Checks the environment, resolves offsets, loads and attaches.
pub fn attach(req: AttachRequest) -> Result<Attached, AttachError> {
    let missing = privileges::missing_capabilities();
    if !missing.is_empty() {
        return Err(AttachError::Environment(privileges::explain(&missing)));
    }
    let tracefs = Tracefs::locate(req.tracefs.as_deref())
        .map_err(|e| AttachError::Environment(e.to_string()))?;
    let btf_path = req.btf.display().to_string();
    let btf = KernelBtf::open(&btf_path);
    if let Err(e) = &btf {
        log::warn!("{e}: running without struct-field evidence (sk_err, netns, probes)");
    }
    let resolved = resolve(&tracefs, btf.as_ref().map_err(|e| e.as_str()));
    if let Some(p) = resolved.fatal() {
        return Err(AttachError::Environment(format!(
            "{}: {}",
            p.name, p.detail
        )));
    }
    for p in resolved.checks.iter().filter(|p| !p.ok) {
        log::warn!("degraded: {}: {}", p.name, p.detail);
    }
    if req.needs_netns && resolved.offsets.members.net_ns_inum == MEMBER_MISSING {
        return Err(AttachError::Environment(
            "--netns needs the socket's netns from BTF (net.ns.inum), which this kernel lacks"
                .into(),
        ));
    }
    let mut config = req.config;
    let raw = if req.classic_tracepoints {
        Vec::new()
    } else {
        resolved.raw.clone()
    };
    config.reports_in_state = u8::from(raw.contains(&"inet_sk_error_report"));
    // The compatibility mode keeps connect() calls from entry to exit, as older kernels must.
    let calls_at_exit = resolved
        .connect_syscall
        .filter(|_| !req.classic_tracepoints);
    if let Some(nr) = calls_at_exit {
        config.calls_at_exit = 1;
        config.connect_syscall = nr;
    }
    let opts = LoadOptions {
        max_sockets: req.max_sockets,
        ring_buffer_bytes: req.ring_buffer_bytes,
        config,
        skip: skipped_programs(
            req.no_connect_calls,
            req.no_nat,
            &resolved,
            calls_at_exit.is_some(),
        ),
        raw,
        dns: req.dns_root,
    };
    let loaded = loader::load(&resolved.offsets, &opts).map_err(|e| {
        if e.permission_denied() {
            AttachError::PermissionDenied(e)
        } else {
            AttachError::Load(e)
        }
    })?;
    Ok(Attached { loaded, btf })
}

/// The programs not to attach: those whose tracepoint this kernel lacks (their check says what
/// degrades), the connect() syscall's when `--no-connect-calls` asks, or when the socket
/// behind a file descriptor cannot be found on this kernel (they would cost and see nothing),
/// and its entry's when the exit reads the call's arguments itself (`calls_at_exit`).
fn skipped_programs(
    no_connect_calls: bool,
    no_nat: bool,
    resolved: &Resolved,
    calls_at_exit: bool,
) -> Vec<&'static str> {
    let mut skip: Vec<&'static str> = HOOKS
        .iter()
        .filter(|h| !h.required)
        .filter(|h| resolved.checks.iter().any(|c| c.name == h.label() && !c.ok))
        .map(|h| h.program)
        .collect();
    let m = &resolved.offsets.members;
    // Without conntrack's members the per-packet hook would cost and see nothing.
    if no_nat || m.skb_nfct == MEMBER_MISSING {
        skip.push("net_dev_queue");
    }
    let no_socket =
        [m.task_files, m.files_fdt, m.fdt_fd, m.socket_sk, m.segs_out].contains(&MEMBER_MISSING);
    if no_connect_calls || no_socket {
        skip.extend(CONNECT_CALL_PROGRAMS);
    } else if calls_at_exit {
        skip.push(CONNECT_CALL_PROGRAMS[0]);
    }
    skip
}
