//! The deployment artifacts (issue 14): the Kubernetes manifests (the NetworkPolicy of the
//! metrics port among them, issue 25) pass `kubernetes-validate --strict` against the newest
//! Kubernetes it knows; the systemd unit (with its file and memory limits) passes
//! `systemd-analyze verify` without a single warning; and the container image that `cargo xtask image` built,
//! run as the DaemonSet runs it (its capabilities only, a read-only root, a RuntimeDefault-like
//! seccomp profile, the hostPath mounts read-only, no host network, no host pid namespace),
//! reports a refusal in a test's network namespace, and names a client in another podman
//! container by its container id and by the Kubernetes names the kubelet's logs give.
//!
//! The shipped settings are also run (issue 26): the unit's sandbox, parsed from the unit and
//! reproduced by `deploy::Sandbox`, with every setting of `tracer.default`, and the ConfigMap's
//! settings with the DaemonSet's capabilities, each inside a test namespace where the settings'
//! metrics address and Collector are the test's; every feature they claim is checked, and the
//! unit's old address families (no AF_NETLINK) must be said on stderr and by `tracer check`.
//!
//! Every connect goes to a closed port or a test listener on the loopback of a namespace the
//! test created (or of the client container's own namespace, `--network none`).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tracer_tests::{
    Netns, Tracer, client_bin,
    deploy::{self, TracerContainer, unit_settings},
    kubelet::KubeletLogs,
    otlp::{Receiver, State, body as otlp_body},
    podman,
    process::field,
    scenario::{for_port, http_get},
    wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

/// The container tests share podman's parent cgroup (`libpod_parent`, which its cgroupfs
/// manager creates and leaves): one at a time, and the last removes it if it was not there.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds [`SERIAL`]; on drop removes podman's parent cgroup if this test made it.
struct PodmanParent {
    _serial: std::sync::MutexGuard<'static, ()>,
    parent: PathBuf,
    existed: bool,
}

impl PodmanParent {
    fn hold() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let parent = tracer_tests::cgroup::cgroup2_mount().join("libpod_parent");
        let existed = parent.exists();
        PodmanParent {
            _serial: serial,
            parent,
            existed,
        }
    }
}

impl Drop for PodmanParent {
    fn drop(&mut self) {
        if !self.existed {
            let _ = std::fs::remove_dir(&self.parent);
        }
    }
}

/// Runs `cmd`; returns (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn kubernetes_manifests_pass_strict_validation_against_the_newest_kubernetes() {
    let validator = deploy::kubernetes_validate();
    // kubernetes-validate X.Y.Z knows Kubernetes up to X.Y: validate against that.
    let (ok, version) = run(Command::new(&validator).arg("--version"));
    assert!(ok, "kubernetes-validate --version: {version}");
    let version = version.trim();
    let kubernetes = version.rsplit_once('.').map_or(version, |(mm, _)| mm);
    let files = deploy::manifest_files();
    let docs = deploy::yaml_documents(&files);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "DaemonSet",
            "NetworkPolicy"
        ],
        "applied in this order by `kubectl apply -f deploy/kubernetes/`"
    );
    let (ok, out) = run(Command::new(&validator)
        .args(["--strict", "-k", kubernetes])
        .args(&files));
    assert!(ok, "kubernetes-validate --strict -k {kubernetes}:\n{out}");
    // A kind it has no schema for is only a WARN (exit 0): every resource must have passed.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), docs.len(), "one line per resource:\n{out}");
    for line in lines {
        assert!(
            line.starts_with("INFO ") && line.contains(" passed for resource "),
            "not a pass: {line}\n{out}"
        );
    }

    // The PodMonitor (optional/) is a custom resource the validator has no schema for; it must
    // select the DaemonSet's pods and name its metrics port.
    let monitor = deploy::yaml_documents(&[
        deploy::repo_root().join("deploy/kubernetes/optional/podmonitor.yaml")
    ])
    .remove(0);
    assert_eq!(monitor["kind"], "PodMonitor");
    let ds = deploy::resource(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&pod["metadata"]["labels"][key], value, "label {key}");
    }
    let container = &pod["spec"]["containers"][0];
    let port = &monitor["spec"]["podMetricsEndpoints"][0]["port"];
    assert_eq!(&container["ports"][0]["name"], port);
    // The scrape annotations, the probes and the ConfigMap's metrics address agree on the port.
    let metrics_port = container["ports"][0]["containerPort"].clone();
    assert_eq!(metrics_port, json!(10140));
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "10140");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(&container[probe]["httpGet"]["port"], port);
    }
    let config = deploy::resource(&docs, "ConfigMap");
    assert_eq!(config["data"]["TRACER_METRICS_ADDR"], "0.0.0.0:10140");

    // The NetworkPolicy lets only the monitoring namespace reach the metrics port: it selects the
    // DaemonSet's pods, isolates them for ingress, and has one rule, from that namespace (by the
    // name label Kubernetes sets) to that port.
    let policy = deploy::resource(&docs, "NetworkPolicy");
    assert_eq!(policy["metadata"]["namespace"], ds["metadata"]["namespace"]);
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector.matchLabels")
    {
        assert_eq!(&pod["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": port, "protocol": "TCP"}],
        }]),
        "{policy}"
    );
    // The DaemonSet's memory limit, which the unit's MemoryMax= repeats.
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
}

#[test]
fn the_systemd_unit_verifies_without_a_warning_and_grants_the_daemonsets_capabilities() {
    tracer_tests::require_kernel();
    let unit_path = deploy::repo_root().join("deploy/systemd/tracer.service");
    let unit = std::fs::read_to_string(&unit_path).expect("read the unit");
    assert_eq!(
        unit_settings(&unit, "ExecStart"),
        ["/usr/local/bin/tracer run"]
    );
    // `verify` checks that ExecStart's program exists: in a mount namespace of its own, the
    // built binary is put at /usr/local/bin/tracer (a tmpfs over the host's, seen only there).
    let bin = tracer_tests::tracer_bin().unwrap();
    let (ok, out) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin && cp \"$1\" /usr/local/bin/tracer \
             && exec systemd-analyze verify \"$2\"",
        )
        .arg("sh")
        .arg(&bin)
        .arg(&unit_path));
    // It exits 0 on an unknown key or a misspelt section, with a warning: any output fails.
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify {}:\n{out}",
        unit_path.display()
    );

    // The rotation config for the file output parses without an error (`--debug` changes
    // nothing; it exits 0 on an unknown directive, with an `error:` line).
    let state = std::env::temp_dir().join(format!("tt-{}-logrotate.state", std::process::id()));
    let (ok, out) = run(Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(&state)
        .arg(deploy::repo_root().join("deploy/systemd/tracer.logrotate")));
    let _ = std::fs::remove_file(&state);
    assert!(
        ok && !out.to_lowercase().contains("error"),
        "logrotate --debug deploy/systemd/tracer.logrotate:\n{out}"
    );
    assert!(
        out.contains("considering log /var/log/tracer/records.ndjson"),
        "{out}"
    );

    // Bounded like the DaemonSet: the pod's memory limit, and a file limit under which the
    // metrics listener's connection cap (256, a quarter of the limit at most) fits four times.
    assert_eq!(
        unit_settings(&unit, "MemoryMax"),
        ["256M"],
        "256 MiB, as 256Mi"
    );
    let nofile = unit_settings(&unit, "LimitNOFILE");
    assert_eq!(nofile.len(), 1, "LimitNOFILE: {nofile:?}");
    let nofile: u64 = nofile[0].parse().expect("LimitNOFILE: one number");
    assert!((1024..=65536).contains(&nofile), "LimitNOFILE={nofile}");

    // The unit and the DaemonSet grant the same capabilities.
    let spec = deploy::PodSpec::from_manifests();
    let mut pod_caps: Vec<String> = spec
        .capabilities
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    pod_caps.sort();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let values = unit_settings(&unit, key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        let mut caps: Vec<String> = values[0].split_whitespace().map(str::to_string).collect();
        caps.sort();
        assert_eq!(caps, pod_caps, "{key}");
    }
}

/// A refusal in a network namespace this test made is reported by the containerized tracer,
/// with the client's host pid (the tracer is not in the host's pid namespace).
#[test]
fn the_image_reports_a_refusal_in_a_test_namespace() {
    let _podman = PodmanParent::hold();
    let ns = Netns::new("deploy");
    let netns = ns.inode.to_string();
    let tracer = TracerContainer::start("tracer", &[], &["--netns", &netns, "--failures-only"]);
    let client = ns.client(&["connect", "--addr", "127.0.0.1:9"]);
    let pid = client.pid();
    expect_refused(client);
    let r = tracer
        .tracer()
        .wait_failures(1, WAIT, for_port(9))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(r["netns"], json!(ns.inode), "{r}");
    assert_eq!(r["process"]["pid"], json!(pid), "the host's pid: {r}");
    assert_eq!(r["process"]["comm"], "tt-client", "{r}");
    // The DaemonSet's capabilities attach the DNS capture (NET_ADMIN) to the host's cgroup v2
    // root, mounted over the container's own view.
    let log = tracer.tracer().startup_log();
    assert!(
        log.contains("dns_ingress") && !log.contains("degraded: DNS capture"),
        "{log}"
    );
    // The DaemonSet's probes, where the kubelet sends them: the pod's own network namespace, the
    // port of its ConfigMap.
    assert_eq!(tracer.http_get(10140, "/healthz"), (200, "ok\n".into()));
    let ready = wait_until("/readyz in the container", WAIT, || {
        let answer = tracer.http_get(10140, "/readyz");
        (answer.0 == 200).then_some(answer)
    });
    assert_eq!(ready, (200, "ready\n".into()));
    tracer.finish_with(1);
}

/// A client in a podman container fails a connect; the containerized tracer names it by its
/// container id (from the cgroup v2 path the kernel read) and by the pod names of the kubelet
/// log directories mounted where the DaemonSet mounts them.
#[test]
fn the_image_names_a_client_container_by_id_and_kubelet_names() {
    let _podman = PodmanParent::hold();
    if let Err(why) = podman::available() {
        panic!("podman cannot run a container here ({why}); `cargo xtask setup` installs it");
    }
    let mut client = podman::Container::run(
        "deploy-client",
        &client_bin(),
        &["connect", "--addr", "127.0.0.1:9", "--after-line"],
    );
    client.wait_line("ready", WAIT);
    let id = client.id();
    let path = client.cgroup_path();
    let pid = client.pid();
    let logs = KubeletLogs::new("kubelet");
    let uid = "8e9b5a52-3c1d-4e8f-9a6b-2f4d7c0e1a93";
    logs.add("shop", "checkout-7d9f8", uid, "client", &id);
    let (pods, containers) = (logs.dir("pods"), logs.dir("containers"));
    let host_paths: [(&str, &Path); 2] = [
        ("/var/log/pods", pods.as_path()),
        ("/var/log/containers", containers.as_path()),
    ];
    let tracer = TracerContainer::start(
        "tracer",
        &host_paths,
        &[
            "--kubelet-log-root",
            "/host/var/log",
            "--container",
            &id[..12],
            "--failures-only",
        ],
    );
    client.send_line("go");
    let (status, lines) = client.wait(WAIT);
    assert!(status.success(), "container client: {status} {lines:?}");
    assert_eq!(
        lines.iter().find_map(|l| field(l, "result")),
        Some("ECONNREFUSED"),
        "{lines:?}"
    );
    let r: Value = tracer
        .tracer()
        .wait_failures(1, WAIT, for_port(9))
        .remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    assert_eq!(
        r["workload"],
        json!({
            "cgroup": path,
            "container.id": id,
            "container.runtime.name": "podman",
            "k8s.namespace.name": "shop",
            "k8s.pod.name": "checkout-7d9f8",
            "k8s.container.name": "client",
        }),
        "{r}"
    );
    assert_eq!(r["process"]["pid"], json!(pid), "the host's pid: {r}");
    tracer.finish_with(1);
}

/// The unit's address families before AF_NETLINK was added (issue 26): what the listener
/// lookups' netlink sockets were silently refused under.
const OLD_UNIT_FAMILIES: &str = "AF_UNIX AF_INET AF_INET6";

/// The port a Collector's OTLP/gRPC receiver listens on, which the exporter (OTLP/HTTP) does not
/// speak: a shipped endpoint there exports nothing.
const OTLP_GRPC_PORT: u16 = 4317;

/// The settings as environment variables: every one set, and every optional one documented, but
/// `TRACER_OUTPUT` pointing at a file (records would not come to the test's pipe; file outputs
/// are `outputs.rs`'s).
fn env_of(settings: &[deploy::Setting]) -> Vec<(String, String)> {
    settings
        .iter()
        .filter(|s| !(s.key == "TRACER_OUTPUT" && s.value != "-"))
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

fn setting<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} is not among the shipped settings: {env:?}"))
}

/// The OTLP endpoint's host and port (`http://HOST:PORT`).
fn otlp_host_port(endpoint: &str) -> (String, u16) {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("an http:// endpoint: {endpoint}"))
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("HOST:PORT in {endpoint}"));
    let port: u16 = port.parse().expect("a port");
    assert_ne!(
        port, OTLP_GRPC_PORT,
        "{endpoint}: {OTLP_GRPC_PORT} is a Collector's OTLP/gRPC port; the exporter speaks OTLP/HTTP"
    );
    (host.to_string(), port)
}

/// A Collector on `127.0.0.1:port` inside `ns`, where the tracer's endpoint points (its host
/// named by the sandbox's `/etc/hosts` when it is a name).
fn collector_in(ns: &Netns, port: u16, state: &Arc<State>) -> Receiver {
    let listener = ns
        .within(|| TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
        .unwrap_or_else(|e| panic!("the Collector's port {port} in {}: {e}", ns.name));
    Receiver::on(listener, state.clone())
}

/// Starts `tracer run` with `env` in `sandbox`, inside `ns` (its own network namespace is the
/// test's: the metrics address and the Collector of the settings are there), reporting only
/// `ns`'s connections (`--netns`: records of other tests stay out).
fn start_in(sandbox: &deploy::Sandbox, ns: &Netns, env: &[(String, String)]) -> Tracer {
    let bin = tracer_tests::tracer_bin().unwrap();
    let netns = ns.inode.to_string();
    let mut cmd = sandbox.command(ns, &bin, &["run", "--netns", &netns]);
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Tracer::start_command(cmd)
}

/// `tracer check` in `sandbox` inside `ns`: (exit code, stdout).
fn check_in(sandbox: &deploy::Sandbox, ns: &Netns) -> (Option<i32>, String) {
    let bin = tracer_tests::tracer_bin().unwrap();
    let out = sandbox
        .command(ns, &bin, &["check"])
        .stdin(Stdio::null())
        .output()
        .expect("tracer check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The line of `tracer check`'s output for `name`.
fn check_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line in tracer check:\n{out}"))
}

/// A listener of the test client in `ns` on `addr` (`extra`: more `listen` flags); its port.
fn listen(ns: &Netns, addr: &str, extra: &[&str]) -> (tracer_tests::Proc, u64) {
    let mut args = vec!["listen", "--addr", addr];
    args.extend_from_slice(extra);
    let server = ns.client(&args);
    let port = field(&server.wait_line("listening", WAIT), "port")
        .expect("the listener says its port")
        .parse()
        .expect("a port");
    (server, port)
}

/// Waits for a test client's connect and checks that it was refused.
fn expect_refused(client: tracer_tests::Proc) {
    let (status, lines) = client.wait(WAIT);
    assert!(status.success(), "client: {status} {lines:?}");
    assert_eq!(
        lines.iter().find_map(|l| field(l, "result")),
        Some("ECONNREFUSED"),
        "{lines:?}"
    );
}

/// A connect to 127.0.0.1:`port` in `ns` is refused; its record.
fn refusal(tracer: &Tracer, ns: &Netns, port: u64) -> Value {
    expect_refused(ns.client(&["connect", "--addr", &format!("127.0.0.1:{port}")]));
    let r = tracer.wait_failures(1, WAIT, for_port(port)).remove(0);
    assert_eq!(r["label"], "refused", "{r}");
    r
}

/// Every feature the shipped settings claim, with the tracer they started in `ns`: a refusal
/// beside a listener on another address names it (`evidence.listeners`, sock_diag); a full
/// accept queue is a `listen_overflow` record; the metrics and probes answer at
/// `TRACER_METRICS_ADDR`; the records reach the Collector at `TRACER_OTLP_ENDPOINT`.
fn assert_every_feature(tracer: &Tracer, ns: &Netns, env: &[(String, String)], otlp: &State) {
    // Listening before the drops: the listeners' first poll is their baseline.
    let (_full, full_port) = listen(ns, "127.0.0.1:0", &["--backlog", "1", "--no-accept"]);
    let (_other, port) = listen(ns, "127.0.0.2:0", &[]);
    let r = refusal(tracer, ns, port);
    assert_eq!(
        r["evidence"]["listeners"],
        json!([{"ip": "127.0.0.2", "port": port}]),
        "the listener on 127.0.0.2 (its owner root's, which the sandbox cannot read): {r}"
    );

    // 8 connects at once to the backlog-1 listener that never accepts, again until an overflow
    // is reported: the worker's first poll of a listener (every 2 s) is its baseline, and a
    // listener's drops go out once per summary window (10 s by default).
    let overflowed = |r: &Value| {
        r["label"] == "listen_overflow"
            && r["evidence"]["listen"]["ip"] == "127.0.0.1"
            && r["evidence"]["listen"]["port"] == json!(full_port)
    };
    let deadline = std::time::Instant::now() + WAIT * 2;
    let overflow = wait_until("a listen_overflow record", WAIT * 3, || {
        assert!(
            std::time::Instant::now() < deadline,
            "no listen_overflow record of 127.0.0.1:{full_port}: {:#?}\n{}",
            tracer.failures(),
            tracer.stderr()
        );
        let (status, lines) = ns
            .client(&[
                "connect",
                "--addr",
                &format!("127.0.0.1:{full_port}"),
                "--count",
                "8",
                "--give-up-ms",
                "2000",
            ])
            .wait(WAIT);
        assert!(status.success(), "client: {status} {lines:?}");
        let until = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(r) = tracer.failures().into_iter().find(overflowed) {
                return Some(r);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(
        overflow["evidence"]["listen"]["dropped"].as_u64() > Some(0),
        "{overflow}"
    );

    let metrics_addr: SocketAddr = setting(env, "TRACER_METRICS_ADDR")
        .replace("0.0.0.0", "127.0.0.1")
        .parse()
        .expect("TRACER_METRICS_ADDR is ADDR:PORT");
    let metrics = ns
        .within(|| http_get(metrics_addr, "/metrics"))
        .unwrap_or_else(|e| panic!("GET /metrics at {metrics_addr} in the namespace: {e}"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tracer_connect_failures") && l.contains(&format!("\"{port}\""))),
        "no tracer_connect_failures series for port {port}:\n{metrics}"
    );
    let ready = wait_until("/readyz", WAIT, || {
        ns.within(|| http_get(metrics_addr, "/readyz")).ok()
    });
    assert_eq!(ready, "ready\n");

    let exported = wait_until("the refusal at the Collector", WAIT, || {
        otlp.failure_logs()
            .into_iter()
            .map(|(_, r)| otlp_body(&r))
            .find(|b| b["dst"]["port"] == json!(port))
    });
    assert_eq!(exported["label"], "refused", "{exported}");
    assert_eq!(
        exported["evidence"]["listeners"],
        r["evidence"]["listeners"]
    );
}

/// The shipped unit's sandbox (its user, capabilities, no_new_privs, `/proc`, file limit and
/// address families, parsed from the unit) with the settings of `tracer.default` (every optional
/// one turned on): every feature they claim works, the listeners' netlink sockets are allowed,
/// and what the sandbox does cost (a listener's process is not named) is said on stderr and by
/// `tracer check`.
#[test]
fn the_shipped_unit_and_its_settings_keep_every_feature() {
    let sandbox = deploy::Sandbox::of_unit(&deploy::unit());
    let env = env_of(&deploy::default_settings());
    let ns = Netns::new("unit");
    let otlp = Arc::new(State::default());
    let (host, port) = otlp_host_port(setting(&env, "TRACER_OTLP_ENDPOINT"));
    assert!(
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        "the unit's Collector is the node's: {host}"
    );
    let _collector = collector_in(&ns, port, &otlp);
    let tracer = start_in(&sandbox, &ns, &env);
    let log = tracer.startup_log();
    assert!(!log.contains("degraded: listeners:"), "{log}");
    assert!(
        log.contains("degraded: listener owners:") && log.contains("hidepid"),
        "ProtectProc=invisible and DynamicUser hide the listeners' processes, and it is said:\n{log}"
    );
    assert_every_feature(&tracer, &ns, &env, &otlp);
    tracer.finish();

    let (code, out) = check_in(&sandbox, &ns);
    assert!(check_line(&out, "listeners").starts_with("ok "), "{out}");
    let owners = check_line(&out, "listener owners");
    assert!(
        owners.starts_with("missing ") && owners.contains("CAP_SYS_PTRACE"),
        "{out}"
    );
    assert_eq!(
        code,
        Some(1),
        "a missing check fails `tracer check`:\n{out}"
    );
}

/// The unit's old address families (no AF_NETLINK): the listener lookups cannot work, and the
/// tracer says so once on stderr with what it costs, and `tracer check` fails their line;
/// refusals then carry no listeners.
#[test]
fn the_old_units_address_families_are_said_on_stderr_and_in_check() {
    let mut sandbox = deploy::Sandbox::of_unit(&deploy::unit());
    sandbox.families = Some(OLD_UNIT_FAMILIES.split(' ').map(str::to_string).collect());
    let ns = Netns::new("unit-old");
    let tracer = start_in(&sandbox, &ns, &[]);
    let log = tracer.startup_log();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("degraded: listeners:"))
        .collect();
    assert_eq!(said.len(), 1, "once:\n{log}");
    assert!(
        said[0].contains("AF_NETLINK") && said[0].contains("listen_overflow"),
        "{log}"
    );
    let (_listener, port) = listen(&ns, "127.0.0.2:0", &[]);
    let r = refusal(&tracer, &ns, port);
    assert!(r["evidence"]["listeners"].is_null(), "{r}");
    tracer.finish_with(1);

    let (code, out) = check_in(&sandbox, &ns);
    let line = check_line(&out, "listeners");
    assert!(
        line.starts_with("missing ") && line.contains("AF_NETLINK"),
        "{out}"
    );
    assert_eq!(code, Some(1), "{out}");
}

/// The ConfigMap's settings (every optional one turned on, its Collector's name resolving to
/// the test's receiver) with the DaemonSet's capabilities and no_new_privs: every feature they
/// claim works.
#[test]
fn the_configmaps_settings_keep_every_feature() {
    let spec = deploy::PodSpec::from_manifests();
    let env = env_of(&deploy::configmap_settings());
    let ns = Netns::new("configmap");
    let otlp = Arc::new(State::default());
    let (host, port) = otlp_host_port(setting(&env, "TRACER_OTLP_ENDPOINT"));
    let dir = TempDir::new("configmap");
    let hosts = dir.0.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost {host}\n")).expect("write hosts");
    let mut sandbox = deploy::Sandbox::of_pod(&spec);
    sandbox.hosts = Some(hosts);
    let _collector = collector_in(&ns, port, &otlp);
    let tracer = start_in(&sandbox, &ns, &env);
    let log = tracer.startup_log();
    assert!(!log.contains("degraded: listeners:"), "{log}");
    assert_every_feature(&tracer, &ns, &env, &otlp);
    tracer.finish();
}

/// A directory of the test's, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tt-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
