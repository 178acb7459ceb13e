//! `tracer top`: a live table of destinations, sorted by failures, refreshed every second.
use std::{collections::HashMap, io::IsTerminal, net::SocketAddr, process::ExitCode};

use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyModifiers},
    layout::Constraint,
    style::{Modifier, Style},
    widgets::{Block, Row, Table},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    analysis::aggregate::{FAILURE_LABELS, Summary, Verdict},
    analysis::clock::WallClock,
    cli::RunArgs,
    cmd::{
        beats::{every, tick},
        exit::{Exit, block_on},
        session::Session,
    },
    pipeline::Select,
};

/// One destination's line.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub dst: SocketAddr,
    /// Attempts per second in the last window.
    pub attempts_per_s: f64,
    /// Failures per label (`FAILURE_LABELS` order) since `tracer top` started.
    pub failures: [u64; FAILURE_LABELS.len()],
    /// p99 connect latency of the last window that had successes.
    pub p99_ms: Option<f64>,
    /// Verdict of the last window the destination was active in.
    pub verdict: Verdict,
    /// The workload of the process with the most attempts in the last active window.
    pub workload: Option<String>,
    /// The name DNS last gave this address (kept until another answer names it).
    pub name: Option<String>,
}

impl Line {
    /// `name (ip:port)` when DNS named it, else `ip:port`.
    pub fn destination(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.dst),
            None => self.dst.to_string(),
        }
    }
}

/// The table's content, fed one window of summaries at a time. Pure.
#[derive(Default)]
pub struct TopTable {
    lines: HashMap<SocketAddr, Line>,
}

impl TopTable {
    /// `name_of`: a workload's short name by cgroup id (`Workload::short_name`).
    pub fn update(
        &mut self,
        window_s: f64,
        summaries: &[Summary],
        name_of: impl Fn(u64) -> Option<String>,
    ) {
        for l in self.lines.values_mut() {
            l.attempts_per_s = 0.0;
        }
        for s in summaries {
            let l = self.lines.entry(s.dst).or_insert(Line {
                dst: s.dst,
                attempts_per_s: 0.0,
                failures: [0; FAILURE_LABELS.len()],
                p99_ms: None,
                verdict: Verdict::Healthy,
                workload: None,
                name: None,
            });
            if let Some(a) = &s.dns
                && l.name.as_deref() != Some(a.name.as_str())
            {
                l.name = Some(a.name.clone());
            }
            l.attempts_per_s = s.attempts as f64 / window_s.max(0.001);
            for (total, n) in l.failures.iter_mut().zip(s.failures) {
                *total += n;
            }
            if let Some(c) = s.connect_ms {
                l.p99_ms = Some(c.p99);
            }
            l.verdict = s.verdict;
            if let Some((top, _)) = s.top_processes.first() {
                l.workload = name_of(top.cgroup_id);
            }
        }
    }

    /// Most failures first, then busiest, then by address.
    pub fn sorted(&self) -> Vec<&Line> {
        let mut v: Vec<&Line> = self.lines.values().collect();
        v.sort_by(|a, b| {
            let (fa, fb): (u64, u64) = (a.failures.iter().sum(), b.failures.iter().sum());
            fb.cmp(&fa)
                .then(b.attempts_per_s.total_cmp(&a.attempts_per_s))
                .then(a.dst.cmp(&b.dst))
        });
        v
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    if !std::io::stdout().is_terminal() {
        log::error!(
            "tracer top draws a live table and needs a terminal, but stdout is not one; \
             for a stream of records use `tracer run` (NDJSON)"
        );
        return ExitCode::from(2);
    }
    block_on(top(args))
}

async fn top(args: RunArgs) -> Result<(), Exit> {
    let mut sigterm = signal(SignalKind::terminate())?;
    // Nothing is printed: the table is drawn from the per-destination windows.
    let select = Select {
        failures: false,
        successes: false,
        summaries: false,
    };
    let args = RunArgs {
        summary_interval: args.summary_interval.max(1),
        ..args
    };
    let mut session = Session::start(&args, select)?;
    // Keys come from a thread: crossterm's reads block.
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if keys_tx.send(ev).is_err() {
                break;
            }
        }
    });
    let mut terminal = ratatui::try_init()?;
    let mut table = TopTable::default();
    let mut refresh = every(1);
    let mut last = WallClock::now_mono_ns();
    let result: Result<(), Exit> = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok(()),
            step = session.step(|_, _| {}) => {
                if let Err(e) = step { break Err(e); }
            }
            _ = tick(&mut refresh) => {
                let now = WallClock::now_mono_ns();
                let window_s = now.saturating_sub(last) as f64 / 1e9;
                last = now;
                let summaries = session.pipeline.close_window(now);
                let workloads = session.pipeline.workloads();
                table.update(window_s, &summaries, |id| workloads.get(id).map(|w| w.short_name()));
                if let Err(e) = terminal.draw(|f| draw(f, &table)) { break Err(e.into()); }
            }
            Some(key) = keys.recv() => {
                if let Event::Key(k) = key {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if k.code == KeyCode::Char('q') || k.code == KeyCode::Esc || ctrl_c {
                        break Ok(());
                    }
                }
                if let Event::Resize(..) = key {
                    let _ = terminal.draw(|f| draw(f, &table));
                }
            }
        }
    };
    ratatui::restore();
    result
}

fn draw(f: &mut ratatui::Frame, table: &TopTable) {
    let header = Row::new([
        "DESTINATION",
        "ATT/S",
        "REFUSED",
        "SYN_TO",
        "KEEPALIVE",
        "UNREACH",
        "RESET",
        "RTO",
        "NO_PORT",
        "BLOCKED",
        "P99 MS",
        "VERDICT",
        "TOP WORKLOAD",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = table.sorted().into_iter().map(|l| {
        let mut cells = vec![l.destination(), format!("{:.1}", l.attempts_per_s)];
        cells.extend(l.failures.iter().map(u64::to_string));
        cells.push(l.p99_ms.map_or("-".into(), |p| format!("{p:.2}")));
        cells.push(l.verdict.as_str().to_string());
        cells.push(l.workload.clone().unwrap_or_else(|| "-".into()));
        Row::new(cells)
    });
    let widths = [
        Constraint::Min(32),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(15),
        Constraint::Min(14),
    ];
    let title = format!(
        " tracer top: {} destinations, most failures first; q quits ",
        table.lines.len()
    );
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(title)),
        f.area(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::aggregate::Latency;

    fn summary(dst: &str, attempts: u64, refused: u64, verdict: Verdict) -> Summary {
        let mut failures = [0; FAILURE_LABELS.len()];
        failures[0] = refused;
        Summary {
            dst: dst.parse().unwrap(),
            window_start_ns: 0,
            window_end_ns: 1,
            attempts,
            connected: attempts - refused,
            cancelled: 0,
            failures,
            syn_retransmits: 0,
            connect_ms: (attempts > refused).then_some(Latency {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                max: 4.0,
            }),
            top_processes: vec![(
                crate::analysis::aggregate::ProcessKey {
                    pid: 7,
                    cgroup_id: attempts,
                    comm: [0; 16],
                },
                attempts,
            )],
            first_failure_ns: None,
            last_failure_ns: None,
            failure_streak: 0,
            longest_streak: 0,
            at_risk: 0,
            verdict,
            dns: None,
        }
    }

    #[test]
    fn rows_sort_by_failures_and_accumulate() {
        let mut t = TopTable::default();
        // The test's summaries put the top process in cgroup `attempts`.
        let name_of = |id: u64| (id != 10).then(|| format!("unit-{id}"));
        t.update(
            1.0,
            &[
                summary("10.0.0.1:80", 10, 0, Verdict::Healthy),
                summary("10.0.0.2:5432", 3, 3, Verdict::Refusing),
            ],
            name_of,
        );
        t.update(
            2.0,
            &[summary("10.0.0.2:5432", 4, 4, Verdict::Refusing)],
            name_of,
        );
        let rows = t.sorted();
        assert_eq!(rows[0].dst.to_string(), "10.0.0.2:5432");
        assert_eq!(rows[0].failures[0], 7);
        assert_eq!(rows[0].attempts_per_s, 2.0);
        assert_eq!(rows[0].verdict, Verdict::Refusing);
        assert_eq!(rows[1].attempts_per_s, 0.0, "idle in the last window");
        assert_eq!(rows[1].p99_ms, Some(3.0), "the last latency seen stays");
        assert_eq!(
            rows[0].workload.as_deref(),
            Some("unit-4"),
            "the last window's top"
        );
        assert_eq!(rows[1].workload, None, "an unknown workload");
        assert_eq!(
            rows[0].destination(),
            "10.0.0.2:5432",
            "no DNS answer: no name"
        );
    }

    #[test]
    fn a_destination_keeps_the_name_dns_gave_it() {
        let mut t = TopTable::default();
        let mut s = summary("10.0.0.2:5432", 3, 3, Verdict::Refusing);
        s.dns = Some(std::sync::Arc::new(crate::analysis::outcome::Answer {
            name: "orders-db.prod.svc".into(),
            chain: Vec::new(),
            server: "10.96.0.10".parse().unwrap(),
            ttl_s: 30,
            at_ns: 0,
        }));
        t.update(1.0, &[s], |_| None);
        t.update(
            1.0,
            &[summary("10.0.0.2:5432", 1, 1, Verdict::Refusing)],
            |_| None,
        );
        assert_eq!(
            t.sorted()[0].destination(),
            "orders-db.prod.svc (10.0.0.2:5432)"
        );
    }
}
