//! Embeds the eBPF object, loads it with this kernel's offsets, attaches every program.
//!
//! All links are owned by file descriptors of this process: when it exits, for any reason, the
//! kernel detaches and frees everything. A failure part-way drops what was loaded before it.
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramFd, RawTracePoint, TracePoint},
};
use tracer_common::{Config, KernelOffsets, PendingConnect};

use crate::kernel::offsets::{HOOKS, RAW_HOOKS};

/// The object built from `tracer-ebpf` by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Size of the per-socket LRU map (entries).
    pub max_sockets: u32,
    /// Size of the ring buffer (bytes, a power of two multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Namespace and process/destination filters.
    pub config: Config,
    /// Programs of `HOOKS` not to load and attach (their tracepoint is missing, or not wanted).
    pub skip: Vec<&'static str>,
    /// Programs of `HOOKS` to run as their raw tracepoint program (`RAW_HOOKS`) instead.
    pub raw: Vec<&'static str>,
    /// Attach `dns_egress` and `dns_ingress` to this cgroup v2 mount (not with `--no-dns`): DNS
    /// queries, and the answers to them.
    pub dns: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("program {program} is missing from the eBPF object")]
    MissingProgram { program: &'static str },
    #[error("loading program {program} into the kernel failed: {source:#}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to tracepoint {group}:{name} failed: {source:#}")]
    Attach {
        program: &'static str,
        group: &'static str,
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

impl LoadError {
    /// Whether the kernel refused with EPERM or EACCES somewhere down the chain of causes (a
    /// locked-down kernel, a seccomp or LSM policy), as opposed to a broken object.
    pub fn permission_denied(&self) -> bool {
        std::iter::successors(Some(self as &dyn std::error::Error), |e| e.source()).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|n| n == libc::EPERM || n == libc::EACCES)
        })
    }
}

/// The loaded programs and the maps userspace reads. Dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub attached: Vec<&'static str>,
    /// This process's tgid as the programs see it (the initial pid namespace's), whose connects
    /// they skip; `None` when the kernel could not tell (then they are reported like any other).
    pub own_tgid: Option<u32>,
}

impl Loaded {
    /// The ring buffer of records (`EVENTS`).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        self.take("EVENTS")
    }

    /// The ring buffer of DNS queries and answers (`DNS_EVENTS`).
    pub fn take_dns_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        self.take("DNS_EVENTS")
    }

    /// The per-CPU counters (`COUNTERS`).
    pub fn take_counters(&mut self) -> Result<PerCpuArray<MapData, u64>, LoadError> {
        self.take("COUNTERS")
    }

    /// The connect() calls in progress (`CONNECTS`), to sweep entries whose exit went unseen.
    pub fn take_connects(&mut self) -> Result<HashMap<MapData, u64, PendingConnect>, LoadError> {
        self.take("CONNECTS")
    }

    /// The announced cgroups (`CGROUPS`), where userspace writes its workload-filter verdicts.
    pub fn take_cgroups(&mut self) -> Result<HashMap<MapData, u64, u8>, LoadError> {
        self.take("CGROUPS")
    }

    /// Takes the map `name` out of the object as the map type `M`.
    fn take<M>(&mut self, name: &'static str) -> Result<M, LoadError>
    where
        M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(LoadError::MissingMap(name))?;
        M::try_from(map).map_err(|source| LoadError::Map { map: name, source })
    }

    /// Duplicates of the attached programs' fds (for their kernel statistics).
    pub fn program_fds(&self) -> Result<Vec<ProgramFd>, LoadError> {
        let mut fds = Vec::new();
        for name in &self.attached {
            let program = self
                .ebpf
                .program(name)
                .ok_or(LoadError::MissingProgram { program: name })?;
            let fd = program
                .fd()
                .and_then(|fd| fd.try_clone().map_err(Into::into))
                .map_err(|source| LoadError::Program {
                    program: name,
                    source: Box::new(source),
                })?;
            fds.push(fd);
        }
        Ok(fds)
    }
}

pub fn load(offsets: &KernelOffsets, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .override_global("CONFIG", &opts.config, true)
        .map_max_entries("SOCKS", opts.max_sockets)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .map_max_entries("DNS_EVENTS", crate::kernel::ringbuf::DNS_RING_BYTES)
        .load(OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))?;
    // Before any hook: from the first one on, this process's connects are not the host's.
    let own_tgid = match identify_self(&mut ebpf) {
        Ok(tgid) => Some(tgid),
        Err(e) => {
            log::warn!(
                "degraded: the tracer's own connections (its --output tcp: sinks, its OTLP \
                 exporter) are reported as this host's, and enter the summaries: the kernel did \
                 not run the program that tells the programs this process's pid ({e:#}; a test \
                 run of a raw tracepoint program needs Linux 5.10)"
            );
            None
        }
    };
    let mut attached = Vec::new();
    for hook in HOOKS.iter().filter(|h| !opts.skip.contains(&h.program)) {
        let (program, group, name) = (hook.program, hook.group, hook.tracepoint);
        if opts.raw.contains(&program)
            && let Some(raw) = RAW_HOOKS.iter().find(|r| r.classic == program)
        {
            match attach_raw(&mut ebpf, raw.program, raw.tracepoint) {
                Ok(()) => {
                    attached.push(raw.program);
                    continue;
                }
                Err(e) => log::warn!(
                    "{} could not run as a raw tracepoint ({e:#}): attaching the classic \
                     tracepoint instead{}",
                    raw.tracepoint,
                    if program == "inet_sk_error_report" {
                        "; an error an application takes before it closes the connection is \
                         not reported (--classic-tracepoints avoids this)"
                    } else {
                        ""
                    }
                ),
            }
        }
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram { program })?
            .try_into()
            .map_err(|source| LoadError::Program {
                program,
                source: Box::new(source),
            })?;
        prog.load().map_err(|source| LoadError::Program {
            program,
            source: Box::new(source),
        })?;
        prog.attach(group, name)
            .map_err(|source| LoadError::Attach {
                program,
                group,
                name,
                source: Box::new(source),
            })?;
        attached.push(program);
    }
    if let Some(root) = &opts.dns {
        match attach_dns(&mut ebpf, root) {
            Ok(()) => attached.extend(["dns_egress", "dns_ingress"]),
            Err(e) => log::warn!(
                "degraded: DNS capture: {e:#}; records carry no DNS names (attaching a cgroup_skb \
                 program needs CAP_NET_ADMIN; `tracer check` says what is missing, `--no-dns` \
                 silences this)"
            ),
        }
    }
    Ok(Loaded {
        ebpf,
        attached,
        own_tgid,
    })
}

/// Runs `whoami` once in this thread (`BPF_PROG_TEST_RUN`, never attached): it stores this
/// process's tgid, as the programs see tasks, in `OWN_TGID`, where the filters read it
/// (`tracer-ebpf` `own.rs`); returns it. Unloaded again: it holds nothing.
fn identify_self(ebpf: &mut aya::Ebpf) -> anyhow::Result<u32> {
    use anyhow::Context;
    use aya::programs::{RawTracePointRunOptions, TestRun};
    let prog: &mut RawTracePoint = ebpf
        .program_mut("whoami")
        .context("the object has no whoami program")?
        .try_into()?;
    prog.load().context("loading whoami")?;
    let run = prog.test_run(RawTracePointRunOptions::new());
    let _ = prog.unload();
    run.context("running whoami")?;
    let own: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
        ebpf.map("OWN_TGID")
            .context("the object has no OWN_TGID map")?,
    )?;
    let tgid = own.get(&0, 0).context("reading OWN_TGID")?;
    anyhow::ensure!(tgid != 0, "whoami saw no process");
    Ok(tgid)
}

/// Loads the raw tracepoint program `program` and attaches it to `tracepoint`; unloads it
/// again if attaching fails.
fn attach_raw(ebpf: &mut aya::Ebpf, program: &str, tracepoint: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("the object has no {program} program"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {program}"))?;
    if let Err(e) = prog.attach(tracepoint) {
        let _ = prog.unload();
        return Err(e).with_context(|| format!("attaching {program}"));
    }
    Ok(())
}

/// Loads `dns_egress` and `dns_ingress` and attaches them to the cgroup v2 root at `root`
/// (links: other programs there stay; they go with this process). The queries first: an answer
/// is only taken when its query was seen. Both or neither: an answer without the query side
/// names nothing.
fn attach_dns(ebpf: &mut aya::Ebpf, root: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
    let mut links = Vec::new();
    for (name, direction) in [
        ("dns_egress", CgroupSkbAttachType::Egress),
        ("dns_ingress", CgroupSkbAttachType::Ingress),
    ] {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .with_context(|| format!("the object has no {name} program"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        let cgroup =
            std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
        match prog.attach(cgroup, direction, CgroupAttachMode::Single) {
            Ok(link) => links.push((name, link)),
            Err(e) => {
                for (name, link) in links {
                    let prog: Result<&mut CgroupSkb, _> = ebpf
                        .program_mut(name)
                        .context("no program")
                        .and_then(|p| p.try_into().map_err(Into::into));
                    if let Ok(prog) = prog {
                        let _ = prog.detach(link);
                    }
                }
                return Err(e).with_context(|| format!("attaching {name} to the cgroup v2 root"));
            }
        }
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it (harmless on newer ones).
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; no memory is handed over.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        log::debug!("could not lift RLIMIT_MEMLOCK (fine on kernels ≥ 5.11)");
    }
}
