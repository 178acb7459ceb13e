//! Command-line interface (clap).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::analysis::escape::escape;

use crate::export::otlp::OtlpArgs;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Kernel-level TCP connection tracer: says why outbound connections fail.",
    long_about = "Watches every outbound TCP connect on this host with eBPF tracepoints and prints \
                  one JSON line (NDJSON) per failed connection on stdout: refused, syn_timeout, \
                  dropped_keepalive, unreachable, reset, rto_timeout, with the evidence and the \
                  process that made it. Logs go to stderr. Without a subcommand, runs `tracer run`.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream failure records to stdout until SIGINT/SIGTERM (the default).
    Run(RunArgs),
    /// Check privileges, tracefs, BTF, every tracepoint and struct field; exit 0 only if all are ok.
    Check(EnvArgs),
    /// A live terminal table per destination (attempts/s, failures by label, p99 connect
    /// latency, verdict), most failures first; q quits. Takes the same filters as `run`.
    Top(RunArgs),
    /// Print the JSON Schema of the output records.
    Schema,
}

#[derive(Args, Debug, Clone)]
pub struct EnvArgs {
    /// Where tracefs is mounted [default: /sys/kernel/tracing, then /sys/kernel/debug/tracing].
    #[arg(long, env = "TRACER_TRACEFS", value_name = "PATH")]
    pub tracefs: Option<PathBuf>,
    /// Kernel BTF to resolve struct offsets from.
    #[arg(long, env = "TRACER_BTF", value_name = "PATH", default_value = crate::kernel::btf::VMLINUX_BTF)]
    pub btf: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub env: EnvArgs,
    /// Trace only connections made in this network namespace, by inode
    /// (`stat -L -c %i /proc/PID/ns/net`). Filtered in the kernel.
    #[arg(long, env = "TRACER_NETNS", value_name = "INODE", value_parser = clap::value_parser!(u32).range(1..))]
    pub netns: Option<u32>,
    /// Where records go, repeatable: `-` (stdout, the default), `PATH` (appended; reopened on
    /// SIGHUP), `unix:PATH` or `tcp:HOST:PORT` (NDJSON to a log shipper, reconnecting).
    #[arg(long, env = "TRACER_OUTPUT", value_delimiter = ',', value_name = "TARGET", value_parser = crate::export::output::Target::parse)]
    pub output: Vec<crate::export::output::Target>,
    /// Serve Prometheus / OpenMetrics at http://ADDR/metrics, and the probes /healthz and /readyz:
    /// `PORT` (binds 127.0.0.1), `IP` (port 10140) or `IP:PORT`; the flag alone is
    /// 127.0.0.1:10140.
    #[arg(long, env = "TRACER_METRICS_ADDR", value_name = "ADDR", value_parser = crate::export::metrics::parse_addr,
          num_args = 0..=1, default_missing_value = "127.0.0.1:10140")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Destinations with their own metric series; the rest share ip="other".
    #[arg(long, env = "TRACER_METRICS_MAX_DESTINATIONS", value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub metrics_max_destinations: u64,
    /// Also print a `connect` record for every successful connect (latency, SYN retransmits).
    #[arg(long, env = "TRACER_SUCCESSES", conflicts_with_all = ["failures_only", "summaries_only"])]
    pub successes: bool,
    /// Print only `failure` records (and `stats`).
    #[arg(long, env = "TRACER_FAILURES_ONLY", conflicts_with = "summaries_only")]
    pub failures_only: bool,
    /// Print only `summary` records (and `stats`).
    #[arg(long, env = "TRACER_SUMMARIES_ONLY")]
    pub summaries_only: bool,
    /// Seconds per summary window (one `summary` record per active destination), 0 to 86400;
    /// 0 disables.
    #[arg(long, env = "TRACER_SUMMARY_INTERVAL", value_name = "SECONDS", default_value_t = 10,
          value_parser = crate::analysis::clock::parse_interval)]
    pub summary_interval: u64,
    /// Destinations held for summaries; beyond it the least recently active is evicted
    /// (counted in stats.destinations_evicted).
    #[arg(long, env = "TRACER_MAX_DESTINATIONS", value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_destinations: u64,
    /// Trace only connections to this destination port (repeatable, up to 16). Filtered in the kernel.
    #[arg(long = "port", env = "TRACER_PORT", value_delimiter = ',', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Trace only connections to this address or CIDR prefix (repeatable, up to 8), e.g.
    /// 10.0.0.0/8 or fd00::/8, filtered in the kernel; or to a DNS name (`api.example.com`,
    /// `*.example.com` for the names under it), matched against the DNS answers the client got
    /// (with a name among the values, every connect reaches userspace to be matched).
    #[arg(long = "dst", env = "TRACER_DST", value_delimiter = ',', value_name = "CIDR|NAME", value_parser = crate::filter::parse_dst)]
    pub dsts: Vec<crate::filter::Dst>,
    /// Trace only connections made by this process id (repeatable, up to 16). Filtered in the kernel.
    #[arg(long = "pid", env = "TRACER_PID", value_delimiter = ',', value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,
    /// Trace only connections made by tasks of this name (`ps -o comm`; repeatable, up to 8).
    /// Filtered in the kernel.
    #[arg(long = "comm", env = "TRACER_COMM", value_delimiter = ',', value_name = "NAME", value_parser = crate::filter::parse_comm)]
    pub comms: Vec<[u8; 16]>,
    /// Trace only connections made by this container: its id or a prefix of it (repeatable).
    /// With --pod and --unit: a connection is traced when any of them names its workload.
    #[arg(long = "container", env = "TRACER_CONTAINER", value_delimiter = ',', value_name = "ID_PREFIX",
          value_parser = crate::enrich::workload::filter::parse_container)]
    pub containers: Vec<String>,
    /// Trace only connections made by this Kubernetes pod, NAMESPACE/NAME (repeatable; names
    /// from the kubelet's logs, see --kubelet-log-root).
    #[arg(long = "pod", env = "TRACER_POD", value_delimiter = ',', value_name = "NAMESPACE/NAME", value_parser = crate::enrich::workload::filter::parse_pod)]
    pub pods: Vec<(String, String)>,
    /// Trace only connections made by this systemd unit (repeatable; `nginx` means nginx.service).
    #[arg(long = "unit", env = "TRACER_UNIT", value_delimiter = ',', value_name = "NAME", value_parser = crate::enrich::workload::filter::parse_unit)]
    pub units: Vec<String>,
    /// Where the kubelet writes container logs (`containers/`, `pods/`): Kubernetes namespace,
    /// pod and container names come from their file names.
    #[arg(long, env = "TRACER_KUBELET_LOG_ROOT", value_name = "DIR", default_value = crate::enrich::workload::KUBELET_LOG_ROOT)]
    pub kubelet_log_root: PathBuf,
    /// Workload identities (one per cgroup) held; beyond it the least recently used is evicted
    /// (counted in stats.workloads_evicted).
    #[arg(long, env = "TRACER_MAX_WORKLOADS", value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_workloads: u64,
    /// Extra Prometheus labels: `workload` adds k8s_namespace_name, k8s_pod_name,
    /// k8s_container_name, container_id and systemd_unit to the per-destination series
    /// (within the same --metrics-max-destinations limit, counted per destination and workload).
    #[arg(
        long,
        env = "TRACER_METRICS_LABELS",
        value_delimiter = ',',
        value_name = "LABELS",
        value_enum
    )]
    pub metrics_labels: Vec<MetricsLabels>,
    /// Seconds between `stats` records. One is also written as soon as every program is
    /// attached (the readiness signal) and one at exit; 0 to 86400, 0 prints only those two.
    #[arg(long, env = "TRACER_STATS_INTERVAL", value_name = "SECONDS", default_value_t = 10,
          value_parser = crate::analysis::clock::parse_interval)]
    pub stats_interval: u64,
    /// Connections tracked at once in the kernel, across all CPUs (a preallocated hash: about
    /// 400 bytes of kernel memory each). A connect beyond it is not traced, and counted in
    /// stats.insert_errors; nothing tracked is ever evicted.
    #[arg(long, env = "TRACER_MAX_SOCKETS", value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_sockets: u32,
    /// Do not attach the connect() syscall tracepoints: connects that fail inside connect() (no
    /// route, no local port, a local policy) go unseen, and every syscall on the host is spared
    /// the kernel's syscall-tracepoint path (about 20 ns each, measured by `cargo xtask bench`).
    #[arg(long, env = "TRACER_NO_CONNECT_CALLS")]
    pub no_connect_calls: bool,
    /// Attach `net:net_dev_queue`, which reads conntrack's translation of a new connection's
    /// first packet: the backend behind a Service's virtual IP (kube-proxy, DNAT) for a refused
    /// or timed-out connect, the source after SNAT, a pod's translation by its node. Opt-in:
    /// every packet the host transmits then pays the hook, about 36 ns above an empty program on
    /// it (one kernel read; `cargo xtask bench`, row `dev_queue ns / packet`). Without it, a SYN
    /// this host dropped still carries its translation, Services are still named by the address
    /// asked for, and a connect program's rewrite (socket-LB) is still seen.
    #[arg(long, env = "TRACER_NAT")]
    pub nat: bool,
    /// Do not read the network namespaces' nftables rulesets (a thread of its own, over
    /// netlink): no Service named from kube-proxy's rules, no rule named for a dropped SYN.
    #[arg(long, env = "TRACER_NO_NETFILTER")]
    pub no_netfilter: bool,
    /// Attach every program as a classic tracepoint, and keep each connect() call from its
    /// entry to its exit: what older kernels get. By default the socket state, RST-received,
    /// RST-sent, error-report and socket-freed hooks run as raw tracepoints where the kernel's
    /// BTF declares the arguments they read (cheaper: no trace record is built and copied per
    /// event), and
    /// connect()'s exit alone reads a failed call's arguments from the task's saved registers
    /// (5.15+: no entry program); `tracer check` says which. This is the way back if a kernel
    /// misbehaves with them.
    #[arg(long, env = "TRACER_CLASSIC_TRACEPOINTS")]
    pub classic_tracepoints: bool,
    /// Warn (`warning` record, label `at_risk`) when an established connection's retransmission
    /// timer has fired this many times in a row without an acknowledgement — seconds into a
    /// stall the kernel takes about 15 minutes to give up on; 0 turns the warnings off.
    #[arg(long, env = "TRACER_AT_RISK_TIMEOUTS", value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(0..=15))]
    pub at_risk_timeouts: u8,
    /// Do not capture DNS answers. By default a cgroup_skb program on the cgroup v2 root sees
    /// the DNS responses every socket of the host receives, in every network namespace (UDP and
    /// TCP port 53), and records name the destinations they gave (`dst.name`, `dns`); it costs
    /// a port check per received packet (measured by `cargo xtask bench`) and needs
    /// CAP_NET_ADMIN.
    #[arg(long, env = "TRACER_NO_DNS")]
    pub no_dns: bool,
    /// DNS answers held, one per (network namespace, answered address); beyond it the least
    /// recently used is evicted (counted in stats.dns_evicted).
    #[arg(long, env = "TRACER_DNS_CACHE", value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(16..=10_000_000))]
    pub dns_cache: u64,
    /// Do not look up this host's listening sockets (netlink sock_diag, in each network
    /// namespace): refusals then name no listeners, and listen-queue overflows are not seen.
    #[arg(long, env = "TRACER_NO_LISTENERS")]
    pub no_listeners: bool,
    /// Kernel-to-userspace ring buffer size in KiB (a power of two, ≥ 4).
    #[arg(long, env = "TRACER_RING_BUFFER_KIB", value_name = "KIB", default_value_t = 8192, value_parser = parse_ring_kib)]
    pub ring_buffer_kib: u32,
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

/// Prints a clap error and exits as clap does; a bad value that came from a `TRACER_*`
/// environment variable (and not from the command line) is named as that variable, so that a
/// setting in a unit's environment file or a pod's ConfigMap can be found. The values the error
/// quotes are escaped: a newline in one cannot start a line of its own. Never panics, whatever
/// the arguments (`args_os`: an argument that is not UTF-8 is compared lossily).
pub fn exit_with(e: clap::Error) -> ! {
    if !e.use_stderr() {
        e.exit() // --help, --version
    }
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let note = match e.kind() {
        clap::error::ErrorKind::InvalidUtf8 => {
            not_utf8(std::env::args_os(), |k| std::env::var_os(k))
        }
        _ => env_source(&e, &argv, |k| std::env::var_os(k).is_some())
            .map(|var| format!("(the value comes from the environment variable {var})")),
    };
    match render(&e, note.as_deref()) {
        Some(text) => {
            eprint!("{text}");
            std::process::exit(e.exit_code())
        }
        None => e.exit(),
    }
}

/// The error's text, when it must differ from clap's own: `note` on a line of its own after
/// the first, and the values it quotes escaped. `None`: clap's.
fn render(e: &clap::Error, note: Option<&str>) -> Option<String> {
    use clap::error::ContextValue;
    let mut msg = e.to_string();
    let mut changed = false;
    for (_, value) in e.context() {
        let values = match value {
            ContextValue::String(v) => std::slice::from_ref(v),
            ContextValue::Strings(v) => v.as_slice(),
            _ => &[],
        };
        for v in values {
            if let std::borrow::Cow::Owned(escaped) = escape(v) {
                msg = msg.replace(v.as_str(), &escaped);
                changed = true;
            }
        }
    }
    if let Some(note) = note {
        let (first, rest) = msg.split_once('\n').unwrap_or((&msg, ""));
        msg = format!("{first}\n  {}\n{rest}", escape(note));
        changed = true;
    }
    changed.then_some(msg)
}

/// clap says only that some argument is not UTF-8: which (an argument, shown lossily and
/// escaped, or a `TRACER_*` variable of a flag).
fn not_utf8(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<String> {
    use clap::CommandFactory;
    let mut bad: Vec<String> = argv
        .into_iter()
        .filter(|a| a.to_str().is_none())
        .map(|a| format!("the argument `{}`", escape(&a.to_string_lossy())))
        .collect();
    let cmd = Cli::command();
    let mut vars: Vec<String> = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()))
        .filter_map(|a| a.get_env())
        .filter_map(|v| v.to_str().map(str::to_owned))
        .filter(|v| var(v).is_some_and(|value| value.to_str().is_none()))
        .map(|v| format!("the environment variable {v}"))
        .collect();
    vars.sort();
    vars.dedup();
    bad.extend(vars);
    (!bad.is_empty()).then(|| format!("(not UTF-8: {})", bad.join(", ")))
}

/// The environment variable a rejected value came from: the error names an argument that has
/// one, the variable is set, and the flag is not on the command line.
fn env_source(e: &clap::Error, argv: &[String], is_set: impl Fn(&str) -> bool) -> Option<String> {
    use clap::{CommandFactory, error::ContextKind, error::ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let cmd = Cli::command();
    let all = cmd
        .get_arguments()
        .chain(cmd.get_subcommands().flat_map(|s| s.get_arguments()));
    let env = all
        .filter(|a| a.get_long() == Some(long))
        .find_map(|a| a.get_env())?
        .to_string_lossy()
        .into_owned();
    let on_command_line = argv
        .iter()
        .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    (is_set(&env) && !on_command_line).then_some(env)
}

/// Optional label groups of the Prometheus series.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsLabels {
    /// The workload that connected: Kubernetes namespace, pod and container, container id,
    /// systemd unit.
    Workload,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s
        .parse()
        .map_err(|_| format!("`{}` is not a whole number of KiB (e.g. 8192)", escape(s)))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!(
            "{kib} KiB: must be a power of two from 4 to 1048576 (e.g. 8192)"
        ));
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_and_need_the_endpoint() {
        let cli = Cli::try_parse_from([
            "tracer",
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--otlp-metrics-interval",
            "1",
            "--otlp-resource",
            "deployment.environment.name=prod",
            "--otlp-resource",
            "host.name=node-1,k8s.cluster.name=c1",
        ])
        .unwrap();
        let o = &cli.run.otlp;
        assert_eq!(
            o.otlp_endpoint
                .as_ref()
                .map(crate::export::otlp::Endpoint::to_string)
                .as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(o.otlp_metrics_interval, 1);
        assert_eq!(o.otlp_resource.len(), 3);
        let defaults = Cli::try_parse_from(["tracer"]).unwrap();
        assert_eq!(defaults.run.otlp.otlp_endpoint, None);
        assert_eq!(defaults.run.otlp.otlp_metrics_interval, 10);
        let err = Cli::try_parse_from(["tracer", "--otlp-metrics-interval", "5"]).unwrap_err();
        assert!(err.to_string().contains("--otlp-endpoint"), "{err}");
        let err = Cli::try_parse_from([
            "tracer",
            "--otlp-endpoint",
            "http://c:4318",
            "--otlp-resource",
            "novalue",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn a_bad_otlp_endpoint_names_the_flag() {
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "127.0.0.1:4318",
            "ftp://collector",
            "http://",
            "http://c:4318?x=1",
            "http://u:p@c:4318",
            "",
        ] {
            let err = Cli::try_parse_from(["tracer", "--otlp-endpoint", bad]).unwrap_err();
            assert!(err.to_string().contains("--otlp-endpoint"), "{err}");
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_its_flags() {
        let cli = Cli::try_parse_from(["tracer", "--netns", "4026531840"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.netns, Some(4026531840));
        assert_eq!(cli.run.stats_interval, 10);
    }

    #[test]
    fn every_run_flag_has_its_environment_variable() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").expect("run");
        for arg in run.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            if long == "help" {
                continue;
            }
            let want = format!("TRACER_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(want),
                "--{long}"
            );
        }
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable() {
        let err = Cli::try_parse_from(["tracer", "--ring-buffer-kib", "1000"]).unwrap_err();
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let set = |k: &str| k == "TRACER_RING_BUFFER_KIB";
        assert_eq!(
            env_source(&err, &argv(&["tracer"]), set).as_deref(),
            Some("TRACER_RING_BUFFER_KIB")
        );
        assert_eq!(
            env_source(&err, &argv(&["tracer", "--ring-buffer-kib", "1000"]), set),
            None,
            "given on the command line"
        );
        assert_eq!(env_source(&err, &argv(&["tracer"]), |_| false), None);
    }

    #[test]
    fn bad_values_name_the_flag_and_form() {
        let err = Cli::try_parse_from(["tracer", "--ring-buffer-kib", "1000"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--ring-buffer-kib") && msg.contains("power of two"),
            "{msg}"
        );
        let err = Cli::try_parse_from(["tracer", "--netns", "0"]).unwrap_err();
        assert!(err.to_string().contains("--netns"));
        assert!(Cli::try_parse_from(["tracer", "--bogus"]).is_err());
    }

    #[test]
    fn every_interval_is_range_checked_and_names_the_flag_and_range() {
        for flag in [
            "--stats-interval",
            "--summary-interval",
            "--otlp-metrics-interval",
        ] {
            for bad in [
                "18446744073709551615",
                "99999999999999999999999",
                "86401",
                "-1",
                "",
                "1.5",
            ] {
                let arg = format!("{flag}={bad}");
                let err = Cli::try_parse_from([
                    "tracer",
                    "run",
                    "--otlp-endpoint",
                    "http://c:4318",
                    &arg,
                ])
                .unwrap_err();
                let msg = err.to_string();
                assert_eq!(err.exit_code(), 2, "{arg}");
                assert!(
                    msg.contains(flag) && msg.contains("0 (off) to 86400"),
                    "{arg}: {msg}"
                );
            }
            for good in ["0", "1", "86400"] {
                let arg = format!("{flag}={good}");
                Cli::try_parse_from(["tracer", "run", "--otlp-endpoint", "http://c:4318", &arg])
                    .unwrap_or_else(|e| panic!("{arg}: {e}"));
            }
        }
    }

    #[test]
    fn an_otlp_port_out_of_range_names_the_flag() {
        for bad in [
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://127.0.0.1:",
        ] {
            let err = Cli::try_parse_from(["tracer", "--otlp-endpoint", bad]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("--otlp-endpoint") && msg.contains("1..=65535"),
                "{msg}"
            );
            assert_eq!(err.exit_code(), 2);
        }
    }

    /// Every flag of `run` (and so its variable, which goes through the same parser) given
    /// hostile values: an error or a value, never a panic.
    #[test]
    fn no_value_of_any_flag_panics_the_parser() {
        use std::{ffi::OsString, os::unix::ffi::OsStringExt};
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").expect("run");
        let values: Vec<OsString> = [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "-1",
            "-9223372036854775808",
            "",
            "0",
            "1e3",
            "a\nb",
            "\u{1b}[2J",
            ",,,",
            "http://[::1",
            "tcp:[::1]:99999",
            "unix:",
        ]
        .iter()
        .map(OsString::from)
        .chain([
            OsString::from_vec(vec![0xff, 0xfe]),
            OsString::from("x".repeat(100_000)),
        ])
        .collect();
        for arg in run.get_arguments().filter_map(|a| a.get_long()) {
            for v in &values {
                let mut flag = OsString::from(format!("--{arg}="));
                flag.push(v);
                for argv in [
                    vec![
                        OsString::from("tracer"),
                        OsString::from("run"),
                        flag.clone(),
                    ],
                    vec![
                        OsString::from("tracer"),
                        OsString::from("top"),
                        flag.clone(),
                    ],
                ] {
                    if let Err(e) = Cli::try_parse_from(&argv) {
                        let _ = render(&e, Some("(a note)"));
                        let _ = not_utf8(argv.clone(), |_| Some(v.clone()));
                        let _ = env_source(&e, &[], |_| true);
                    }
                }
            }
        }
    }

    #[test]
    fn a_quoted_value_cannot_start_a_line() {
        let err =
            Cli::try_parse_from(["tracer", "--port", "1\ntracer: error: forged"]).unwrap_err();
        let text = render(&err, None).expect("escaped");
        assert!(
            !text.lines().any(|l| l.starts_with("tracer: error: forged")),
            "{text}"
        );
        assert!(text.contains("1\\ntracer: error: forged"), "{text}");
        let note = "(the value comes from the environment variable TRACER_PORT)";
        let text = render(&err, Some(note)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("--port"), "{text}");
        assert_eq!(lines[1], format!("  {note}"));
        let plain = Cli::try_parse_from(["tracer", "--port", "x"]).unwrap_err();
        assert_eq!(render(&plain, None), None, "clap prints it itself");
    }

    #[test]
    fn a_value_that_is_not_utf8_is_named() {
        use std::{ffi::OsString, os::unix::ffi::OsStringExt};
        let bad = OsString::from_vec(vec![b'1', 0xff]);
        let argv = vec![
            OsString::from("tracer"),
            OsString::from("--comm"),
            bad.clone(),
        ];
        assert_eq!(
            not_utf8(argv, |_| None).as_deref(),
            Some("(not UTF-8: the argument `1\u{fffd}`)")
        );
        let env = |k: &str| (k == "TRACER_STATS_INTERVAL").then(|| bad.clone());
        assert_eq!(
            not_utf8(vec![OsString::from("tracer")], env).as_deref(),
            Some("(not UTF-8: the environment variable TRACER_STATS_INTERVAL)")
        );
        assert_eq!(not_utf8(vec![OsString::from("tracer")], |_| None), None);
    }
}
