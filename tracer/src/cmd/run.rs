//! `tracer run`: load, attach, stream records until SIGINT/SIGTERM.
//!
//! Readiness: the first `stats` record is written as soon as every program is attached; from
//! then on every connection is seen. Scripts and tests wait for it, not for a log line.
use std::{io::ErrorKind, process::ExitCode, sync::Arc, time::Duration};

use tokio::signal::unix::{SignalKind, signal};

use crate::{
    analysis::clock::WallClock,
    analysis::outcome::Outcome,
    cli::RunArgs,
    cmd::{
        beats::{every, tick},
        exit::{Exit, block_on},
        session::Session,
    },
    export::health::Health,
    export::http_server::{self, LIMITS, ServerStats},
    export::loss::{LossMonitor, Notice},
    export::metrics::{Metrics, Pages},
    export::otlp::metrics::MetricsExporter,
    export::output::Output,
    pipeline::{Pipeline, Select},
};

pub fn main(args: RunArgs) -> ExitCode {
    block_on(run(args))
}

async fn run(args: RunArgs) -> Result<(), Exit> {
    // Signal handlers first: a signal that arrives once we are ready must be handled.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // Outputs and the metrics port first: a bad path or port fails before anything is loaded.
    let mut out = Output::open(&args.output).map_err(|e| Exit::Environment(e.to_string()))?;
    let metrics_listener = listen_metrics(&args).await?;
    let mut otlp_metrics = None;
    if let Some(otlp) = crate::export::otlp::start(&args.otlp) {
        out.add(Box::new(otlp.logs));
        otlp_metrics = otlp.metrics;
    }
    let select = Select {
        failures: !args.summaries_only,
        successes: args.successes,
        summaries: !args.failures_only,
    };
    let mut session = Session::start(&args, select)?;
    let health = Arc::new(Health::default());
    health.set_attached();
    // The metrics count for /metrics and for OTLP alike.
    if metrics_listener.is_some() || otlp_metrics.is_some() {
        let by_workload = args
            .metrics_labels
            .contains(&crate::cli::MetricsLabels::Workload);
        let metrics = Metrics::new(args.metrics_max_destinations as usize, by_workload);
        session.pipeline.set_metrics(metrics);
    }
    let mut metrics_tick = metrics_listener.and_then(|listener| {
        let registry = session.pipeline.metrics().map(Metrics::registry)?;
        let stats = Arc::new(ServerStats::default());
        session.pipeline.set_http_stats(stats.clone());
        let pages = Pages::new(registry, health.clone());
        tokio::spawn(http_server::serve(listener, LIMITS, stats, pages.handler()));
        every(1)
    });
    let mut otlp_metrics_tick = otlp_metrics
        .as_ref()
        .and_then(|_| every(args.otlp.otlp_metrics_interval));
    write_stats(&mut session, &mut out)?; // ready
    out.flush();
    let mut stats_tick = every(args.stats_interval);
    let mut summary_tick = every(args.summary_interval);
    // Listen-queue overflows: one record per listener and window (the summary window, or 10 s
    // without summaries).
    let overflow_window = if args.summary_interval > 0 {
        args.summary_interval
    } else {
        10
    };
    let mut overflow_tick = every(overflow_window);
    let mut loss_tick = every(1);
    let mut loss = LossMonitor::new(args.ring_buffer_kib);

    while out.error().is_none() {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => out.reopen(),
            step = session.step(write_to(&mut out)) => step?,
            _ = tick(&mut summary_tick) => {
                session.pipeline.summaries(WallClock::now_mono_ns(), |record| out.write(&record));
            }
            _ = tick(&mut overflow_tick) => {
                for o in session.overflows() {
                    write_to(&mut out)(&session.pipeline, o);
                }
            }
            _ = tick(&mut metrics_tick) => {
                let kernel = session.kernel_totals()?;
                session.pipeline.update_health(&kernel, out.dropped());
            }
            _ = tick(&mut otlp_metrics_tick) => export_metrics(&mut session, &out, otlp_metrics.as_ref())?,
            _ = tick(&mut loss_tick) => {
                let totals = session.pipeline.totals(&session.kernel_totals()?, out.dropped());
                let now = WallClock::now_mono_ns();
                match loss.check(now, totals) {
                    Some(Notice::Losing(msg)) => log::warn!("{msg}"),
                    Some(Notice::Stopped(msg)) => log::info!("{msg}"),
                    None => {}
                }
                health.checked(now, loss.last_loss_ns());
                health.outputs(out.failing());
            }
            _ = tick(&mut stats_tick) => write_stats(&mut session, &mut out)?,
        }
        out.flush();
    }

    // The sinks deliver what they hold by this deadline, so that the tracer exits within 2 s
    // of the signal.
    let deadline = tokio::time::Instant::now() + EXIT_FLUSH;
    // What is still in the buffer, the last overflows and summaries, then the final stats.
    session.finish(write_to(&mut out));
    for o in session.overflows() {
        write_to(&mut out)(&session.pipeline, o);
    }
    session
        .pipeline
        .summaries(WallClock::now_mono_ns(), |record| out.write(&record));
    // OTLP, which takes no stats: the last metrics, then what the exporters hold, delivered
    // by the deadline; the final stats counts what was not. Meanwhile the other sinks'
    // threads and tasks deliver what they hold.
    export_metrics(&mut session, &out, otlp_metrics.as_ref())?;
    out.close_records(deadline).await;
    if let Some(m) = otlp_metrics.as_mut() {
        m.close(deadline).await;
    }
    // The final stats, and every other sink delivers it with the rest by the same deadline;
    // what one cannot is counted and said on stderr.
    write_stats(&mut session, &mut out)?;
    out.close(deadline).await;
    let error = out.error().map(|e| (e.kind(), e.to_string()));
    match error {
        // The reader went away (`tracer | head -1`): stop quietly.
        Some((ErrorKind::BrokenPipe, _)) | None => {
            log::info!("detached; exiting");
            Ok(())
        }
        Some((_, e)) => Err(anyhow::anyhow!("writing records failed: {e}").into()),
    }
}

/// How long the sinks (and the OTLP metrics exporter) get at exit, from the signal, to
/// deliver what they hold: what is left by then is counted. The rest of the exit (detaching)
/// takes well under the other half second of the 2 s the README promises.
const EXIT_FLUSH: Duration = Duration::from_millis(1500);

/// Hands the metrics' values now to the OTLP metrics exporter, if there is one.
fn export_metrics(
    session: &mut Session,
    out: &Output,
    exporter: Option<&MetricsExporter>,
) -> Result<(), Exit> {
    let Some(exporter) = exporter else {
        return Ok(());
    };
    let kernel = session.kernel_totals()?;
    session.pipeline.update_health(&kernel, out.dropped());
    if let Some(m) = session.pipeline.metrics() {
        exporter.export(&m.snapshot());
    }
    Ok(())
}

/// Writes each outcome's record, if the selection prints it.
fn write_to(out: &mut Output) -> impl FnMut(&Pipeline, Outcome) + '_ {
    |pipeline, outcome| {
        if let Some(record) = pipeline.record(&outcome) {
            out.write(&record);
        }
    }
}

/// A `stats` record of the totals now.
fn write_stats(session: &mut Session, out: &mut Output) -> Result<(), Exit> {
    let kernel = session.kernel_totals()?;
    let record = session
        .pipeline
        .stats(&kernel, out.dropped(), WallClock::now_mono_ns());
    out.write(&record);
    Ok(())
}

/// The `--metrics-addr` listener, bound before anything is loaded.
async fn listen_metrics(args: &RunArgs) -> Result<Option<tokio::net::TcpListener>, Exit> {
    let Some(addr) = args.metrics_addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Exit::Environment(format!("--metrics-addr {addr}: cannot listen: {e}")))?;
    let local = listener.local_addr()?;
    log::info!("serving metrics at http://{local}/metrics");
    log::info!("probes at http://{local}/healthz (alive) and http://{local}/readyz (ready)");
    Ok(Some(listener))
}
