//! A running tracer, shared by `run` and `top`: checks the environment, resolves offsets,
//! loads and attaches the programs, then turns what the kernel hands over into outcomes —
//! ring-buffer records, the drain beat (records below the wakeup threshold), the settle beat
//! (closes waiting for their error report), the heap-trim beat and the kernel-side log.
//! Dropping it detaches everything.
use std::{io, num::NonZeroUsize, process::ExitCode, time::Duration};

use aya::maps::{HashMap, MapData};
use aya_log::EbpfLogger;
use tokio::{
    io::unix::AsyncFd,
    time::{Instant, Interval, interval_at},
};
use tracer_common::PendingConnect;

use crate::{
    aggregate::Aggregator,
    classify::{KernelParams, Outcome},
    cli::RunArgs,
    clock::WallClock,
    counters::KernelTotals,
    kernel_btf::KernelBtf,
    listeners::causes::ListenerCauses,
    loader::{self, LoadOptions, Loaded},
    offsets::{CONNECT_CALL_PROGRAMS, HOOKS, Resolved, resolve},
    pipeline::{Pipeline, Select},
    privileges,
    record::ReasonNames,
    source::{DRAIN_INTERVAL, EventSource, KernelCounters, register_readable},
    tracefs::Tracefs,
    workload::{Workload, WorkloadFilter, Workloads, cgroupfs::Cgroupfs},
};

/// Exit code for a problem with the environment or a flag value (privileges, tracefs, kernel
/// support, a filter clap could not check alone).
const EXIT_ENVIRONMENT: u8 = 2;

/// How a command ends when it does not succeed.
pub enum Exit {
    /// A flag value clap could not check alone.
    Usage(String),
    /// Privileges, tracefs, kernel support: what the user must change.
    Environment(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit::Runtime(e.into())
    }
}

/// Runs `task` on a single-threaded runtime and maps how it ended to an exit code.
pub fn block_on(task: impl std::future::Future<Output = Result<(), Exit>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Environment(msg) | Exit::Usage(msg)) => {
            log::error!("{msg}");
            ExitCode::from(EXIT_ENVIRONMENT)
        }
        Err(Exit::Runtime(e)) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A periodic timer, or none when `seconds` is 0.
pub fn every(seconds: u64) -> Option<Interval> {
    (seconds > 0).then(|| {
        let period = Duration::from_secs(seconds);
        interval_at(Instant::now() + period, period)
    })
}

/// The next tick of `timer`; never when there is none.
pub async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How often closes waiting for their error report (no BTF) are settled.
const SETTLE_INTERVAL: Duration = Duration::from_millis(200);
/// How often heap freed after a burst goes back to the kernel (glibc keeps it otherwise).
const TRIM_SECONDS: u64 = 10;
/// How often the connect() calls in progress are swept, and how old an entry must be to be
/// swept: no connect() call lasts that long (a blocking connect gives up after
/// `tcp_syn_retries`, about two minutes by default), so its exit was skipped by the kernel
/// (counted in `kernel_skipped`) and the entry would otherwise stay.
const SWEEP_SECONDS: u64 = 60;
const STALE_CALL_NS: u64 = 600_000_000_000;
/// How often every namespace's listeners are compared for accept-queue drops.
const LISTENERS_POLL: Duration = Duration::from_secs(2);

pub struct Session {
    /// The programs and maps; attached while this lives.
    _loaded: Loaded,
    events: EventSource,
    counters: KernelCounters,
    /// The kernel-side log; it must live as long as the programs (dropping it closes its map).
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
    pub pipeline: Pipeline,
    drain: Option<Interval>,
    settle: Option<Interval>,
    trim: Option<Interval>,
    /// The connect() calls in progress, and the beat that sweeps stale ones.
    connects: HashMap<MapData, u64, PendingConnect>,
    /// The announced cgroups, where the workload filters' verdicts go.
    cgroups: HashMap<MapData, u64, u8>,
    sweep: Option<Interval>,
    /// The listeners of this host, for refusals and overflows (`--no-listeners`: none).
    causes: Option<ListenerCauses>,
    /// The filters as they apply to a listener's overflow (the kernel filters everything else).
    overflow_filter: OverflowFilter,
}

/// `--netns`, `--port` and `--dst` select a listener's overflows by its namespace, port and
/// address (the local end, as for an inbound refusal); `--pid`, `--comm` and the workload
/// filters exclude them (no process of this host connected).
struct OverflowFilter {
    netns: Option<u32>,
    ports: Vec<u16>,
    dsts: Vec<tracer_common::Cidr>,
    by_process: bool,
}

impl OverflowFilter {
    fn wants(&self, o: &Outcome) -> bool {
        let dst = o.conn.dst;
        !self.by_process
            && self.netns.is_none_or(|n| o.conn.netns == Some(n))
            && (self.ports.is_empty() || self.ports.contains(&dst.port()))
            && (self.dsts.is_empty()
                || self
                    .dsts
                    .iter()
                    .any(|c| crate::filter::cidr_contains(c, dst.ip())))
    }
}

impl Session {
    /// Checks the environment, resolves offsets, loads and attaches every program, and sets up
    /// the pipeline: everything before the first record.
    pub fn start(args: &RunArgs, select: Select) -> Result<Self, Exit> {
        let (mut loaded, reasons) = attach(args)?;
        let logger = match EbpfLogger::init(&mut loaded.ebpf) {
            Ok(l) => Some(register_readable(l)?),
            Err(e) => {
                log::warn!("kernel-side log unavailable: {e}");
                None
            }
        };
        crate::memory::release_freed();
        let events = EventSource::new(loaded.take_events()?)?;
        let counters = KernelCounters::new(loaded.take_counters()?, loaded.program_fds()?);
        let connects = loaded.take_connects()?;
        let mut cgroups = loaded.take_cgroups()?;
        let aggregator = (args.summary_interval > 0).then(|| {
            let cap =
                NonZeroUsize::new(args.max_destinations as usize).unwrap_or(NonZeroUsize::MIN);
            Aggregator::new(cap, WallClock::now_mono_ns())
        });
        let kernel = KernelParams {
            hz: crate::clock::kernel_hz(),
        };
        let mut pipeline = Pipeline::new(WallClock::sample(), kernel, reasons, select, aggregator);
        pipeline.set_workloads(workloads(args));
        pipeline.dns = crate::dns::DnsCache::new(
            NonZeroUsize::new(args.dns_cache as usize).unwrap_or(NonZeroUsize::MIN),
        );
        pipeline.dst_filter = crate::filter::DstFilter::new(&args.dsts);
        write_verdicts(&mut cgroups, pipeline.workloads_mut());
        log::info!(
            "attached {} programs ({}){}",
            loaded.attached.len(),
            loaded.attached.join(", "),
            match args.netns {
                Some(ns) => format!(" for netns {ns}"),
                None => String::new(),
            }
        );
        Ok(Self {
            _loaded: loaded,
            events,
            counters,
            logger,
            pipeline,
            drain: Some(tokio::time::interval(DRAIN_INTERVAL)),
            settle: Some(tokio::time::interval(SETTLE_INTERVAL)),
            trim: every(TRIM_SECONDS),
            connects,
            cgroups,
            sweep: every(SWEEP_SECONDS),
            causes: (!args.no_listeners).then(|| ListenerCauses::start(LISTENERS_POLL)),
            overflow_filter: OverflowFilter {
                netns: args.netns,
                ports: args.ports.clone(),
                dsts: crate::filter::cidrs(&args.dsts),
                by_process: !(args.pids.is_empty() && args.comms.is_empty()),
            },
        })
    }

    /// The listeners that overflowed their accept queue since the last call, one outcome per
    /// listener and window (since the last call), counted (filters applied).
    pub fn overflows(&mut self) -> Vec<Outcome> {
        let Some(causes) = self.causes.as_mut() else {
            return Vec::new();
        };
        let now = WallClock::now_mono_ns();
        let filter = &self.overflow_filter;
        causes
            .overflows(now)
            .into_iter()
            .filter(|o| filter.wants(o))
            .filter_map(|o| self.pipeline.admit(o))
            .collect()
    }

    /// Waits for the next thing the kernel side hands over or a beat of the session's own, and
    /// handles it: every outcome it completes goes to `each`, with the pipeline to map it to
    /// its record.
    pub async fn step(&mut self, mut each: impl FnMut(&Pipeline, Outcome)) -> Result<(), Exit> {
        let pipeline = &mut self.pipeline;
        let causes = &mut self.causes;
        let mut each = |pipeline: &Pipeline, mut o: Outcome| {
            if let Some(c) = causes.as_mut() {
                c.enrich(&mut o);
            }
            each(pipeline, o);
        };
        tokio::select! {
            batch = self.events.next_batch(|bytes| {
                if let Some(o) = pipeline.process(bytes) {
                    each(pipeline, o);
                }
            }) => {
                batch?;
            }
            _ = tick(&mut self.drain) => {
                self.events.drain_now(|bytes| {
                    if let Some(o) = pipeline.process(bytes) {
                        each(pipeline, o);
                    }
                });
            }
            _ = tick(&mut self.settle) => {
                for o in pipeline.flush(WallClock::now_mono_ns()) {
                    each(pipeline, o);
                }
            }
            _ = tick(&mut self.trim) => crate::memory::release_freed(),
            _ = tick(&mut self.sweep) => sweep(&mut self.connects, WallClock::now_mono_ns()),
            Some(guard) = readable(&mut self.logger) => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
        write_verdicts(&mut self.cgroups, self.pipeline.workloads_mut());
        Ok(())
    }

    /// What is still in the ring buffer, and every close still waiting for its error report.
    pub fn finish(&mut self, mut each: impl FnMut(&Pipeline, Outcome)) {
        let pipeline = &mut self.pipeline;
        let causes = &mut self.causes;
        let mut each = |pipeline: &Pipeline, mut o: Outcome| {
            if let Some(c) = causes.as_mut() {
                c.enrich(&mut o);
            }
            each(pipeline, o);
        };
        self.events.drain_now(|bytes| {
            if let Some(o) = pipeline.process(bytes) {
                each(pipeline, o);
            }
        });
        for o in pipeline.flush(u64::MAX) {
            each(pipeline, o);
        }
    }

    /// The kernel's counters now.
    pub fn kernel_totals(&self) -> Result<KernelTotals, aya::maps::MapError> {
        self.counters.read()
    }
}

/// The workload resolver `args` ask for. With workload filters, every cgroup that exists now is
/// judged at once (the kernel then drops the unwanted ones' connects from the first), and a
/// filter that names no workload yet is warned about: it applies when the workload appears.
fn workloads(args: &RunArgs) -> Workloads {
    let filter = WorkloadFilter {
        containers: args.containers.clone(),
        pods: args.pods.clone(),
        units: args.units.clone(),
    };
    let cgroupfs = match Cgroupfs::find() {
        Ok(fs) => Some(fs),
        Err(e) => {
            log::warn!(
                "no cgroup v2 filesystem ({e}): workloads are known only for cgroups the kernel \
                 announces after start-up"
            );
            None
        }
    };
    let cap = NonZeroUsize::new(args.max_workloads as usize).unwrap_or(NonZeroUsize::MIN);
    let now = WallClock::now_mono_ns();
    let existing = match (&cgroupfs, filter.is_active()) {
        (Some(fs), true) => fs.walk(cap.get()),
        _ => Vec::new(),
    };
    let mut w = Workloads::new(cap, args.kubelet_log_root.clone(), cgroupfs, filter);
    for (id, path) in existing {
        let resolved = Workload::resolve(path, w.kubelet_logs());
        w.insert(id, resolved, now);
    }
    if w.filter().is_active() {
        let unmatched = w.filter().unmatched(w.iter());
        if !unmatched.is_empty() {
            log::warn!(
                "{} named no running workload at start-up; traced as soon as one appears \
                 (containers and pods by the cgroup the runtime creates, pod names from the \
                 kubelet's logs under {})",
                unmatched.join(", "),
                args.kubelet_log_root.display()
            );
        }
    }
    w
}

/// Hands the workload filters' new verdicts to the kernel.
fn write_verdicts(cgroups: &mut HashMap<MapData, u64, u8>, workloads: &mut Workloads) {
    for (id, wanted) in workloads.take_verdicts() {
        let verdict = if wanted {
            tracer_common::CGROUP_WANTED
        } else {
            tracer_common::CGROUP_UNWANTED
        };
        if let Err(e) = cgroups.insert(id, verdict, 0) {
            log::debug!("cgroup {id}: verdict not written ({e}); its records are filtered here");
        }
    }
}

/// Removes the connect() calls that began more than `STALE_CALL_NS` before `now_ns`.
fn sweep(connects: &mut HashMap<MapData, u64, PendingConnect>, now_ns: u64) {
    let stale: Vec<u64> = connects
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, call)| now_ns.saturating_sub(call.start_ns) > STALE_CALL_NS)
        .map(|(thread, _)| thread)
        .collect();
    for thread in &stale {
        let _ = connects.remove(thread);
    }
    if !stale.is_empty() {
        log::debug!(
            "swept {} connect() calls whose exit was not seen",
            stale.len()
        );
    }
}

/// Checks the environment, resolves offsets, loads and attaches.
fn attach(args: &RunArgs) -> Result<(Loaded, ReasonNames), Exit> {
    let missing = privileges::missing_capabilities();
    if !missing.is_empty() {
        return Err(Exit::Environment(privileges::explain(&missing)));
    }
    if let Some(f) = crate::filter::DstFilter::new(&args.dsts)
        && args.no_dns
    {
        return Err(Exit::Usage(format!(
            "--dst {} is a DNS name, matched against the DNS answers the tracer captures, and \
             --no-dns turns the capture off: drop --no-dns, or give addresses (--dst 10.0.0.0/8)",
            f.names().join(",")
        )));
    }
    let tracefs = Tracefs::locate(args.env.tracefs.as_deref())
        .map_err(|e| Exit::Environment(e.to_string()))?;
    let btf_path = args.env.btf.display().to_string();
    let btf = KernelBtf::open(&btf_path);
    if let Err(e) = &btf {
        log::warn!("{e}: running without struct-field evidence (sk_err, netns, probes)");
    }
    let resolved = resolve(&tracefs, btf.as_ref().map_err(|e| e.as_str()));
    if let Some(p) = resolved.fatal() {
        return Err(Exit::Environment(format!("{}: {}", p.name, p.detail)));
    }
    for p in resolved.checks.iter().filter(|p| !p.ok) {
        log::warn!("degraded: {}: {}", p.name, p.detail);
    }
    if args.netns.is_some() && resolved.offsets.members.net_ns_inum == tracer_common::MEMBER_MISSING
    {
        return Err(Exit::Environment(
            "--netns needs the socket's netns from BTF (net.ns.inum), which this kernel lacks"
                .into(),
        ));
    }
    let mut config = crate::filter::config(
        args.netns.unwrap_or(0),
        &args.ports,
        &crate::filter::kernel_cidrs(&args.dsts),
        &args.pids,
        &args.comms,
    )
    .map_err(Exit::Usage)?;
    config.filter_workloads =
        u8::from(!(args.containers.is_empty() && args.pods.is_empty() && args.units.is_empty()));
    config.wakeup_bytes = crate::source::wakeup_bytes(args.ring_buffer_kib * 1024);
    config.at_risk_timeouts = args.at_risk_timeouts;
    let raw = if args.classic_tracepoints {
        Vec::new()
    } else {
        resolved.raw.clone()
    };
    config.reports_in_state = u8::from(raw.contains(&"inet_sk_error_report"));
    // The compatibility mode keeps connect() calls from entry to exit, as older kernels must.
    let calls_at_exit = resolved
        .connect_syscall
        .filter(|_| !args.classic_tracepoints);
    if let Some(nr) = calls_at_exit {
        config.calls_at_exit = 1;
        config.connect_syscall = nr;
    }
    let opts = LoadOptions {
        max_sockets: args.max_sockets,
        ring_buffer_bytes: args.ring_buffer_kib * 1024,
        config,
        skip: skipped_programs(args, &resolved, calls_at_exit.is_some()),
        raw,
        dns: dns_root(args),
    };
    let loaded = loader::load(&resolved.offsets, &opts).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("EPERM") || msg.contains("Operation not permitted") {
            Exit::Environment(format!(
                "{msg}: the kernel refused; is this a locked-down kernel or a restricted container? Try `tracer check`"
            ))
        } else {
            Exit::Runtime(e.into())
        }
    })?;
    let reasons = ReasonNames {
        rst: match &btf {
            Ok(b) => b
                .enum_variants("sk_rst_reason")
                .into_iter()
                .map(|(v, n)| (v, n.trim_start_matches("SK_RST_REASON_").to_lowercase()))
                .collect(),
            Err(_) => Vec::new(),
        },
        drop: match &btf {
            Ok(b) => b
                .enum_variants("skb_drop_reason")
                .into_iter()
                .map(|(v, n)| (v, n.trim_start_matches("SKB_DROP_REASON_").to_string()))
                .collect(),
            Err(_) => Vec::new(),
        },
    };
    Ok((loaded, reasons))
}

/// Where to attach the DNS capture: the cgroup v2 root, unless `--no-dns` (or no cgroup v2 is
/// mounted: said, and the tracer runs without names).
fn dns_root(args: &RunArgs) -> Option<std::path::PathBuf> {
    if args.no_dns {
        return None;
    }
    match crate::workload::cgroupfs::Cgroupfs::find() {
        Ok(fs) => Some(fs.mount().to_path_buf()),
        Err(e) => {
            log::warn!(
                "degraded: DNS capture: {e}; records carry no DNS names (the capture attaches to \
                 the cgroup v2 root: mount cgroup2, see `tracer check`)"
            );
            None
        }
    }
}

/// The programs not to attach: those whose tracepoint this kernel lacks (their check says what
/// degrades), the connect() syscall's when `--no-connect-calls` asks, or when the socket
/// behind a file descriptor cannot be found on this kernel (they would cost and see nothing),
/// and its entry's when the exit reads the call's arguments itself (`calls_at_exit`).
fn skipped_programs(args: &RunArgs, resolved: &Resolved, calls_at_exit: bool) -> Vec<&'static str> {
    let mut skip: Vec<&'static str> = HOOKS
        .iter()
        .filter(|h| !h.required)
        .filter(|h| resolved.checks.iter().any(|c| c.name == h.label() && !c.ok))
        .map(|h| h.program)
        .collect();
    let m = &resolved.offsets.members;
    let no_socket = [m.task_files, m.files_fdt, m.fdt_fd, m.socket_sk, m.segs_out]
        .contains(&tracer_common::MEMBER_MISSING);
    if args.no_connect_calls || no_socket {
        skip.extend(CONNECT_CALL_PROGRAMS);
    } else if calls_at_exit {
        skip.push(CONNECT_CALL_PROGRAMS[0]);
    }
    skip
}

/// Readiness of the kernel-side logger, or never when there is none.
async fn readable<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> Option<io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>>> {
    match fd {
        Some(fd) => Some(fd.readable_mut().await),
        None => std::future::pending().await,
    }
}
