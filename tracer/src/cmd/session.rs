//! A running tracer, shared by `run` and `top`: checks the environment, resolves offsets,
//! loads and attaches the programs, then turns what the kernel hands over into outcomes —
//! ring-buffer records, the drain beat (records below the wakeup threshold), the settle beat
//! (closes waiting for their error report), the heap-trim beat and the kernel-side log.
//! Dropping it detaches everything.
use std::{io, num::NonZeroUsize, time::Duration};

use aya::maps::{HashMap, MapData};
use aya_log::EbpfLogger;
use tokio::{io::unix::AsyncFd, time::Interval};
use tracer_common::PendingConnect;

use crate::{
    analysis::{aggregate::Aggregator, classify::KernelParams, clock::WallClock, outcome::Outcome},
    cli::RunArgs,
    cmd::{
        beats::{every, tick},
        exit::Exit,
    },
    enrich::{
        listeners::causes::ListenerCauses,
        workload::{WorkloadFilter, Workloads},
    },
    export::names::ReasonNames,
    filter::{DstFilter, OverflowFilter},
    kernel::{
        attach::AttachRequest,
        loader::Loaded,
        ringbuf::{
            BATCH, DRAIN_INTERVAL, EventSource, KernelCounters, KernelTotals, Ready,
            register_readable,
        },
    },
    pipeline::{Pipeline, Select},
};

/// The most records read from each ring buffer at exit: a whole buffer's worth of the smallest
/// records, so that a storm still going on cannot hold the exit.
const FINISH_LIMIT: usize = 1 << 18;
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
    /// DNS queries and answers, from their own ring buffer; none without the DNS capture.
    dns: Option<EventSource>,
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
        crate::cmd::memory::release_freed();
        let events = EventSource::new(loaded.take_events()?)?;
        let dns = if loaded.attached.contains(&"dns_ingress") {
            Some(EventSource::new(loaded.take_dns_events()?)?)
        } else {
            None
        };
        let counters = KernelCounters::new(loaded.take_counters()?, loaded.program_fds()?);
        let connects = loaded.take_connects()?;
        let mut cgroups = loaded.take_cgroups()?;
        let aggregator = (args.summary_interval > 0).then(|| {
            let cap =
                NonZeroUsize::new(args.max_destinations as usize).unwrap_or(NonZeroUsize::MIN);
            Aggregator::new(cap, WallClock::now_mono_ns())
        });
        let kernel = KernelParams {
            hz: crate::analysis::clock::kernel_hz(),
        };
        let netfilter_drop = reasons
            .drop
            .iter()
            .find(|(_, name)| name == "NETFILTER_DROP")
            .and_then(|(value, _)| u16::try_from(*value).ok());
        let mut pipeline = Pipeline::new(WallClock::sample(), kernel, reasons, select, aggregator);
        pipeline.services = crate::enrich::service::Services::new(
            netfilter_rulesets(args),
            Some(Box::new(crate::enrich::socklb::SockLb::new())),
            crate::enrich::listeners::netns::current(),
            netfilter_drop,
        );
        pipeline.set_workloads(Workloads::of_host(
            NonZeroUsize::new(args.max_workloads as usize).unwrap_or(NonZeroUsize::MIN),
            args.kubelet_log_root.clone(),
            WorkloadFilter {
                containers: args.containers.clone(),
                pods: args.pods.clone(),
                units: args.units.clone(),
            },
            WallClock::now_mono_ns(),
        ));
        pipeline.dns = crate::enrich::dns::DnsCache::new(
            NonZeroUsize::new(args.dns_cache as usize).unwrap_or(NonZeroUsize::MIN),
            crate::enrich::dns::CACHE_BYTES,
        );
        pipeline.dst_filter = DstFilter::new(&args.dsts);
        pipeline.listeners = (!args.no_listeners).then(|| {
            say_listener_limits();
            ListenerCauses::start(LISTENERS_POLL)
        });
        pipeline.overflow_filter = OverflowFilter {
            netns: args.netns,
            ports: args.ports.clone(),
            dsts: crate::filter::cidrs(&args.dsts),
            by_process: !(args.pids.is_empty() && args.comms.is_empty()),
        };
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
            dns,
            counters,
            logger,
            pipeline,
            drain: Some(tokio::time::interval(DRAIN_INTERVAL)),
            settle: Some(tokio::time::interval(SETTLE_INTERVAL)),
            trim: every(TRIM_SECONDS),
            connects,
            cgroups,
            sweep: every(SWEEP_SECONDS),
        })
    }

    /// The listeners that overflowed their accept queue since the last call, one outcome per
    /// listener and window, enriched and counted (filters applied).
    pub fn overflows(&mut self) -> Vec<Outcome> {
        self.pipeline.overflows(WallClock::now_mono_ns())
    }

    /// Waits for the next thing the kernel side hands over or a beat of the session's own, and
    /// handles it: every outcome it completes goes to `each`, with the pipeline to map it to
    /// its record.
    pub async fn step(&mut self, mut each: impl FnMut(&Pipeline, Outcome)) -> Result<(), Exit> {
        let pipeline = &mut self.pipeline;
        tokio::select! {
            ready = self.events.ready() => {
                let ready = ready?;
                // The answers first: a connect made after its answer arrived finds it.
                if let Some(dns) = self.dns.as_mut() {
                    dns.drain_now(BATCH, |bytes| pipeline.process_dns(bytes));
                }
                ready.read(|bytes| {
                    if let Some(o) = pipeline.process(bytes) {
                        each(pipeline, o);
                    }
                });
            }
            Some(ready) = dns_ready(&mut self.dns) => {
                ready?.read(|bytes| pipeline.process_dns(bytes));
            }
            _ = tick(&mut self.drain) => {
                if let Some(dns) = self.dns.as_mut() {
                    dns.drain_now(BATCH, |bytes| pipeline.process_dns(bytes));
                }
                self.events.drain_now(BATCH, |bytes| {
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
            _ = tick(&mut self.trim) => crate::cmd::memory::release_freed(),
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
        // The answers first, so that the last failures can be named; each read bounded, so that
        // a storm still going on cannot hold the exit.
        if let Some(dns) = self.dns.as_mut() {
            dns.drain_now(FINISH_LIMIT, |bytes| pipeline.process_dns(bytes));
        }
        self.events.drain_now(FINISH_LIMIT, |bytes| {
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

/// The kernel side `args` ask for, preflight and all, and the reasons' names from its BTF.
fn attach(args: &RunArgs) -> Result<(Loaded, ReasonNames), Exit> {
    if let Some(f) = DstFilter::new(&args.dsts)
        && args.no_dns
    {
        return Err(Exit::Usage(format!(
            "--dst {} is a DNS name, matched against the DNS answers the tracer captures, and \
             --no-dns turns the capture off: drop --no-dns, or give addresses (--dst 10.0.0.0/8)",
            f.names().join(",")
        )));
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
    config.wakeup_bytes = crate::kernel::ringbuf::wakeup_bytes(args.ring_buffer_kib * 1024);
    config.dns_wakeup_bytes =
        crate::kernel::ringbuf::wakeup_bytes(crate::kernel::ringbuf::DNS_RING_BYTES);
    config.at_risk_timeouts = args.at_risk_timeouts;
    let attached = crate::kernel::attach::attach(AttachRequest {
        tracefs: args.env.tracefs.clone(),
        btf: args.env.btf.clone(),
        config,
        needs_netns: args.netns.is_some(),
        classic_tracepoints: args.classic_tracepoints,
        no_connect_calls: args.no_connect_calls,
        no_nat: !args.nat,
        max_sockets: args.max_sockets,
        ring_buffer_bytes: args.ring_buffer_kib * 1024,
        dns_root: dns_root(args),
    })
    .map_err(Exit::attach)?;
    let reasons = attached
        .btf
        .as_ref()
        .map(ReasonNames::from_btf)
        .unwrap_or_default();
    Ok((attached.loaded, reasons))
}

/// Says once, at start-up, what the sandbox denies the listener lookups and what it costs
/// (`tracer check` shows the same). Entering other namespaces is said by the worker when it
/// is refused.
fn say_listener_limits() {
    use crate::enrich::listeners::access;
    if let Err(why) = access::netlink() {
        log::warn!("degraded: listeners: {}", access::netlink_cost(&why));
    }
    if let Err(why) = access::owners() {
        log::warn!("degraded: listener owners: {why}");
    }
}

/// Where to attach the DNS capture: the cgroup v2 root, unless `--no-dns` (or no cgroup v2 is
/// mounted: said, and the tracer runs without names).
fn dns_root(args: &RunArgs) -> Option<std::path::PathBuf> {
    if args.no_dns {
        return None;
    }
    match crate::enrich::workload::cgroupfs::Cgroupfs::find() {
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

/// Readiness of the DNS ring buffer, or never when there is no DNS capture.
async fn dns_ready(dns: &mut Option<EventSource>) -> Option<io::Result<Ready<'_>>> {
    match dns {
        Some(dns) => Some(dns.ready().await),
        None => std::future::pending().await,
    }
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

/// The nftables rulesets of every namespace, read by their own thread (`--no-netfilter`: none).
/// Waits up to 1 s for the first pass, so that a failure right after start finds its rules.
fn netfilter_rulesets(args: &RunArgs) -> Box<dyn crate::enrich::service::Rulesets> {
    if args.no_netfilter {
        return Box::new(crate::enrich::service::NoRulesets);
    }
    if !crate::kernel::privileges::can_enter_namespaces() {
        log::warn!(
            "degraded: netfilter rulesets: no CAP_SYS_ADMIN to enter other network namespaces, so only the tracer's own namespace's rules name Services and dropping rules (a pod's own rules are not read)"
        );
    }
    match crate::enrich::netfilter::Netfilter::start(crate::enrich::netfilter::Limits::default()) {
        Ok(nf) => {
            if !nf.wait_ready(std::time::Duration::from_secs(1)) {
                log::info!(
                    "netfilter: the first read of every namespace's ruleset goes on in the background"
                );
            } else if nf.all().is_empty() && nf.counters().failures > 0 {
                log::warn!(
                    "degraded: netfilter rulesets could not be read (no CAP_NET_ADMIN, or AF_NETLINK denied): no Service names from kube-proxy's rules, no rule named for a dropped SYN (see `tracer check`)"
                );
            }
            Box::new(nf)
        }
        Err(e) => {
            log::warn!(
                "degraded: netfilter rulesets not read ({e}): no Service names from kube-proxy's rules, no rule named for a dropped SYN"
            );
            Box::new(crate::enrich::service::NoRulesets)
        }
    }
}
