//! `tracer run`: load, attach, stream records until SIGINT/SIGTERM.
use std::{
    io::{self, ErrorKind},
    num::NonZeroUsize,
    process::ExitCode,
    time::Duration,
};

use aya_log::EbpfLogger;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{Instant, Interval, interval_at},
};

use crate::{
    aggregate::Aggregator,
    classify::KernelParams,
    cli::RunArgs,
    clock::WallClock,
    kernel_btf::KernelBtf,
    loader::{self, LoadOptions, Loaded},
    loss::{LossMonitor, Notice},
    metrics::Metrics,
    offsets::resolve,
    output::Output,
    pipeline::{Pipeline, Select},
    privileges,
    record::RstReasons,
    source::{DRAIN_INTERVAL, EventSource, KernelCounters, register_readable},
    tracefs::Tracefs,
};

/// Exit code for a problem with the environment (privileges, tracefs, kernel support).
const EXIT_ENVIRONMENT: u8 = 2;

pub fn main(args: RunArgs) -> ExitCode {
    block_on(run(args))
}

/// Runs `task` on a single-threaded runtime and maps its failure to an exit code.
pub(crate) fn block_on(task: impl std::future::Future<Output = Result<(), Failure>>) -> ExitCode {
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
        Err(Failure::Environment(msg) | Failure::Usage(msg)) => {
            log::error!("{msg}");
            ExitCode::from(EXIT_ENVIRONMENT)
        }
        Err(Failure::Runtime(e)) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) enum Failure {
    /// A flag value clap could not check alone.
    Usage(String),
    Environment(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Runtime(e.into())
    }
}

/// Checks the environment, resolves offsets, loads and attaches: everything before streaming.
pub(crate) fn start(args: &RunArgs) -> Result<(Loaded, RstReasons), Failure> {
    let missing = privileges::missing_capabilities();
    if !missing.is_empty() {
        return Err(Failure::Environment(privileges::explain(&missing)));
    }
    let tracefs = Tracefs::locate(args.env.tracefs.as_deref())
        .map_err(|e| Failure::Environment(e.to_string()))?;
    let btf_path = args.env.btf.display().to_string();
    let btf = KernelBtf::open(&btf_path);
    if let Err(e) = &btf {
        log::warn!("{e}: running without struct-field evidence (sk_err, netns, probes)");
    }
    let resolved = resolve(&tracefs, btf.as_ref().map_err(|e| e.as_str()));
    if let Some(p) = resolved.fatal() {
        return Err(Failure::Environment(format!("{}: {}", p.name, p.detail)));
    }
    for p in resolved.checks.iter().filter(|p| !p.ok) {
        log::warn!("degraded: {}: {}", p.name, p.detail);
    }
    if args.netns.is_some() && resolved.offsets.members.net_ns_inum == tracer_common::MEMBER_MISSING
    {
        return Err(Failure::Environment(
            "--netns needs the socket's netns from BTF (net.ns.inum), which this kernel lacks"
                .into(),
        ));
    }
    let mut config = crate::filter::config(
        args.netns.unwrap_or(0),
        &args.ports,
        &args.dsts,
        &args.pids,
        &args.comms,
    )
    .map_err(Failure::Usage)?;
    config.wakeup_bytes = crate::source::wakeup_bytes(args.ring_buffer_kib * 1024);
    let opts = LoadOptions {
        max_sockets: args.max_sockets,
        ring_buffer_bytes: args.ring_buffer_kib * 1024,
        config,
    };
    let loaded = loader::load(&resolved.offsets, &opts).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("EPERM") || msg.contains("Operation not permitted") {
            Failure::Environment(format!(
                "{msg}: the kernel refused; is this a locked-down kernel or a restricted container? Try `tracer check`"
            ))
        } else {
            Failure::Runtime(e.into())
        }
    })?;
    let reasons = RstReasons(match &btf {
        Ok(b) => b
            .enum_variants("sk_rst_reason")
            .into_iter()
            .map(|(v, n)| (v, n.trim_start_matches("SK_RST_REASON_").to_lowercase()))
            .collect(),
        Err(_) => Vec::new(),
    });
    Ok((loaded, reasons))
}

/// A periodic timer, or none when `seconds` is 0.
pub(crate) fn every(seconds: u64) -> Option<Interval> {
    (seconds > 0).then(|| {
        let period = Duration::from_secs(seconds);
        interval_at(Instant::now() + period, period)
    })
}

pub(crate) async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    // Signal handlers first: a signal that arrives once we say "attached" must be handled.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // Output targets first: a bad path fails before anything is loaded.
    let mut out = Output::open(&args.output).map_err(|e| Failure::Environment(e.to_string()))?;
    let metrics_listener = match args.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::Environment(format!("--metrics-addr {addr}: cannot listen: {e}"))
            })?;
            // Before "attached": whoever waits for that line may read this one.
            log::info!(
                "serving metrics at http://{}/metrics",
                listener.local_addr()?
            );
            Some(listener)
        }
        None => None,
    };
    let (mut loaded, reasons) = start(&args)?;
    // Keep the logger alive as long as the programs: dropping it closes its map.
    let mut logger = match EbpfLogger::init(&mut loaded.ebpf) {
        Ok(l) => Some(register_readable(l)?),
        Err(e) => {
            log::warn!("kernel-side log unavailable: {e}");
            None
        }
    };
    crate::memory::release_freed();
    let mut events = EventSource::new(loaded.take_events()?)?;
    let counters = KernelCounters::new(loaded.take_counters()?, loaded.program_fds()?);
    log::info!(
        "attached {} programs ({}); streaming records{}",
        loaded.attached.len(),
        loaded.attached.join(", "),
        match args.netns {
            Some(ns) => format!(" for netns {ns}"),
            None => String::new(),
        }
    );

    let select = Select {
        failures: !args.summaries_only,
        successes: args.successes,
        summaries: !args.failures_only,
    };
    let aggregator = (args.summary_interval > 0).then(|| {
        let cap = NonZeroUsize::new(args.max_destinations as usize).unwrap_or(NonZeroUsize::MIN);
        Aggregator::new(cap, WallClock::now_mono_ns())
    });
    let kernel = KernelParams {
        hz: crate::clock::kernel_hz(),
    };
    let mut pipeline = Pipeline::new(WallClock::sample(), kernel, reasons, select, aggregator);
    let mut metrics_tick = None;
    if let Some(listener) = metrics_listener {
        let metrics = Metrics::new(args.metrics_max_destinations as usize);
        tokio::spawn(crate::metrics::serve(listener, metrics.registry()));
        pipeline = pipeline.with_metrics(metrics);
        metrics_tick = every(1);
    }
    let mut stats_tick = every(args.stats_interval);
    // Records below the kernel's wakeup threshold are collected on this beat.
    let mut drain_tick = Some(tokio::time::interval(DRAIN_INTERVAL));
    // Closes waiting for their error report (no BTF) are settled on this beat.
    let mut settle_tick = Some(tokio::time::interval(Duration::from_millis(200)));
    let mut summary_tick = every(args.summary_interval);
    let mut loss_tick = every(1);
    // Heap freed after a burst goes back to the kernel on this beat (glibc keeps it otherwise).
    let mut trim_tick = every(10);
    let mut loss = LossMonitor::new(args.ring_buffer_kib);
    let mut written: io::Result<()> = Ok(());

    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => out.reopen(),
            batch = events.next_batch(|bytes| {
                if written.is_ok() {
                    written = pipeline.process(bytes, &mut out);
                }
            }) => {
                batch?;
                written = written.and_then(|()| out.flush());
            }
            _ = tick(&mut drain_tick) => {
                if events.drain_now(|bytes| {
                    if written.is_ok() {
                        written = pipeline.process(bytes, &mut out);
                    }
                }) > 0 {
                    written = written.and_then(|()| out.flush());
                }
            }
            _ = tick(&mut settle_tick) => {
                written = written
                    .and_then(|()| pipeline.flush(WallClock::now_mono_ns(), &mut out))
                    .and_then(|()| out.flush());
            }
            _ = tick(&mut summary_tick) => {
                written = written
                    .and_then(|()| pipeline.summaries(WallClock::now_mono_ns(), &mut out))
                    .and_then(|()| out.flush());
            }
            _ = tick(&mut metrics_tick) => pipeline.update_health(&counters.read()?, out.dropped()),
            _ = tick(&mut trim_tick) => crate::memory::release_freed(),
            _ = tick(&mut loss_tick) => {
                let totals = pipeline.losses(&counters.read()?, out.dropped());
                match loss.check(WallClock::now_mono_ns(), totals) {
                    Some(Notice::Losing(msg)) => log::warn!("{msg}"),
                    Some(Notice::Stopped(msg)) => log::info!("{msg}"),
                    None => {}
                }
            }
            _ = tick(&mut stats_tick) => {
                let record = pipeline.stats(&counters.read()?, out.dropped(), WallClock::now_mono_ns());
                written = written.and_then(|()| out.write(&record)).and_then(|()| out.flush());
            }
            Some(guard) = readable(&mut logger) => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
        if let Err(e) = &written {
            if e.kind() == ErrorKind::BrokenPipe {
                // The reader went away (`tracer | head -1`): stop quietly.
                return Ok(());
            }
            return Err(anyhow::anyhow!("writing records to stdout failed: {e}").into());
        }
    }

    // What is still in the buffer, the last summaries, then the final stats.
    events.drain_now(|bytes| {
        if written.is_ok() {
            written = pipeline.process(bytes, &mut out);
        }
    });
    let now = WallClock::now_mono_ns();
    written = written.and_then(|()| pipeline.flush(u64::MAX, &mut out));
    let record = pipeline.stats(&counters.read()?, out.dropped(), now);
    let result = written
        .and_then(|()| pipeline.summaries(now, &mut out))
        .and_then(|()| out.write(&record))
        .and_then(|()| out.flush());
    drop(out); // closes the socket sinks' queues: their tasks flush what they hold
    match result {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("writing records to stdout failed: {e}").into())
        }
        _ => {
            log::info!("detached; exiting");
            Ok(())
        }
    }
}

/// Readiness of the kernel-side logger, or never when there is none.
pub(crate) async fn readable<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> Option<io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>>> {
    match fd {
        Some(fd) => Some(fd.readable_mut().await),
        None => std::future::pending().await,
    }
}
